"""Helpers of the integration tests that drive the daemon: wait for a condition, kill daemon processes."""

from __future__ import annotations

import signal
import time

import psutil
import pytest


def kill_daemon_hard(daemon_client) -> int:
    """SIGKILL the daemon (circus), its workers and helpers; return how many processes were killed.

    The jobs of ``core.direct`` are not among them: their submission shell exits at once, so they are
    children of init, as on a real machine where the scheduler owns them.
    """
    return kill_processes(daemon_processes(daemon_client))


def daemon_processes(daemon_client) -> list[psutil.Process]:
    """Return the daemon's circus process and all its descendants (none when it does not run)."""
    pid = daemon_client.get_daemon_pid()
    if pid is None:
        return []
    try:
        circus = psutil.Process(pid)
        return [circus, *circus.children(recursive=True)]
    except psutil.NoSuchProcess:  # a stale pid file: nothing left
        return []


def kill_processes(victims: list[psutil.Process]) -> int:
    """SIGKILL the processes still alive among ``victims``; return how many were killed."""
    killed = 0
    for process in victims:
        try:
            process.send_signal(signal.SIGKILL)
            killed += 1
        except psutil.NoSuchProcess:  # a short-lived child (a `ps` poll) that ended in between
            pass
    psutil.wait_procs(victims, timeout=30)
    return killed


def wait_until(condition, timeout: float, interval: float = 1.0):
    """Poll ``condition()`` for up to ``timeout`` s; return its first truthy value, or ``None``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(interval)
    return None


def wait_for(condition, timeout: float, message: str, interval: float = 1.0, explain=None):
    """Poll ``condition()`` until it returns a truthy value; fail with ``message`` (and ``explain()``, the
    state of what was waited for) after ``timeout`` (s)."""
    value = wait_until(condition, timeout, interval)
    if value is None:
        pytest.fail(f'timed out after {timeout:g} s: {message}' + (f'\n{explain()}' if explain else ''))
    return value


def daemon_workers(daemon_client) -> list[psutil.Process]:
    """Return the daemon's worker processes (``verdi ... daemon worker``), children of circus."""
    circus = psutil.Process(daemon_client.get_daemon_pid())
    workers = []
    for process in circus.children(recursive=True):
        try:
            if 'worker' in ' '.join(process.cmdline()):
                workers.append(process)
        except (psutil.ZombieProcess, psutil.NoSuchProcess):  # a killed worker circus has not reaped yet
            pass
    return workers
