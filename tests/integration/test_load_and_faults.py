"""Load and faults on the production profile: many CalcJobs at once, a daemon worker killed with SIGKILL and
RabbitMQ restarted while they run; every job finishes, none is lost, none runs twice.

``LISEI_LOAD_JOBS`` sets the number of jobs (default 40, the CI size; ``docs/benchmarks.md`` records a run
of 200). Each job is ``lisei.probe`` on ``localhost`` (``core.direct``) after a ``sleep`` of
``LOAD_JOB_SLEEP`` s, and appends its working directory to a log: a job run twice shows there twice.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
from collections import Counter

import pytest
from aiida import orm
from aiida.engine import submit
from daemon_helpers import daemon_workers, wait_for

pytestmark = [pytest.mark.production, pytest.mark.timeout(1500)]

#: Jobs submitted at once (``LISEI_LOAD_JOBS``).
LOAD_JOBS = int(os.environ.get('LISEI_LOAD_JOBS', '40'))
#: Seconds each job sleeps before the probe runs: the faults must find jobs running.
LOAD_JOB_SLEEP = 3
#: Daemon workers during the test (one of them is killed).
WORKERS = 2


def rabbitmqctl(*arguments: str) -> subprocess.CompletedProcess:
    """Run ``rabbitmqctl`` (as the broker's administrator: root here, as in CI)."""
    executable = shutil.which('rabbitmqctl') or shutil.which('rabbitmqctl', path='/usr/sbin')
    if executable is None:
        pytest.fail('rabbitmqctl not found: the broker fault needs it (Debian package rabbitmq-server)')
    return subprocess.run([executable, *arguments], capture_output=True, text=True, timeout=120, check=False)


def restart_broker() -> float:
    """Stop and start RabbitMQ's application (the node stays up); return the seconds it was down."""
    start = time.monotonic()
    stopped = rabbitmqctl('stop_app')
    assert stopped.returncode == 0, stopped.stderr
    time.sleep(3)
    started = rabbitmqctl('start_app')
    assert started.returncode == 0, started.stderr
    rabbitmqctl('await_startup')
    return time.monotonic() - start


def test_many_jobs_survive_a_killed_worker_and_a_broker_restart(
    started_daemon_client, probe_code_local, tmp_path
) -> None:
    """``LOAD_JOBS`` probes at once; a worker killed at a quarter done, RabbitMQ restarted at half done."""
    runs_log = tmp_path / 'runs.log'
    code = probe_code_local
    started_daemon_client.increase_workers(WORKERS - 1)
    try:
        start = time.monotonic()
        nodes = []
        for index in range(LOAD_JOBS):
            builder = code.get_builder()
            builder.metadata.label = f'load-{index}'
            builder.metadata.options.prepend_text = f'sleep {LOAD_JOB_SLEEP}\necho "$PWD" >> {runs_log}'
            nodes.append(submit(builder))
        submitted = time.monotonic() - start

        def done(fraction: float):
            return sum(node.is_terminated for node in nodes) >= fraction * LOAD_JOBS

        wait_for(lambda: done(0.25), 600, 'a quarter of the jobs never finished', 0.5)
        workers = daemon_workers(started_daemon_client)
        assert len(workers) == WORKERS, workers
        workers[0].send_signal(signal.SIGKILL)  # circus starts a new one
        killed_at = sum(node.is_terminated for node in nodes)

        wait_for(lambda: done(0.5), 600, 'half of the jobs never finished after the worker kill', 0.5)
        restarted_at = sum(node.is_terminated for node in nodes)
        broker_down = restart_broker()

        def state() -> str:
            counts = Counter(f'{node.process_state.value}' for node in nodes)
            return f'process states: {dict(counts)}'

        wait_for(lambda: done(1.0), 900, 'not every job finished after the faults', 1.0, explain=state)
        wall = time.monotonic() - start
    finally:
        started_daemon_client.decrease_workers(WORKERS - 1)

    failed = [(node.pk, node.exit_status, node.exit_message) for node in nodes if not node.is_finished_ok]
    directories = runs_log.read_text().split()
    twice = [directory for directory, count in Counter(directories).items() if count > 1]
    job_ids = [node.get_job_id() for node in nodes]
    print(
        f'\nload and faults: {LOAD_JOBS} jobs, {WORKERS} workers; submitted in {submitted:.1f} s; a worker '
        f'killed at {killed_at} done, RabbitMQ restarted at {restarted_at} done ({broker_down:.1f} s down); '
        f'all terminated after {wall:.1f} s; {len(failed)} failed, {len(twice)} run twice, '
        f'{len(directories)} runs logged'
    )
    assert not failed, failed
    assert not twice, twice
    assert len(directories) == LOAD_JOBS
    assert all(job_ids), job_ids  # core.direct's job ids are pids: they may repeat once pids wrap around
    calcjobs = orm.QueryBuilder().append(orm.CalcJobNode, filters={'label': {'like': 'load-%'}}).count()
    assert calcjobs == LOAD_JOBS  # nothing submitted twice either
    logged = {os.path.realpath(directory) for directory in directories}
    for node in nodes:
        assert os.path.realpath(node.outputs.remote_folder.get_remote_path()) in logged
