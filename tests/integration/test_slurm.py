"""A CalcJob of ours through the daemon, over SSH, into Slurm and back.

The localhost sshd (127.0.0.1:2222, alias ``slurm-localhost`` in ``~/.ssh/config``) and the single-node Slurm
with slurmdbd must be running: ``make hpc`` (or ``bash scripts/hpc/setup-localhost-hpc.sh``) starts them.
Without them every test here is skipped, with the reason (fails with LISEI_REQUIRE_SERVICES=1).
"""

from __future__ import annotations

import functools
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from aiida import orm
from aiida.engine import submit
from daemon_helpers import wait_for

pytestmark = [pytest.mark.slurm, pytest.mark.production]

SSH_ALIAS = 'slurm-localhost'
SSH_PORT = 2222
LISEI_PROBE = Path(sys.executable).parent / 'lisei-probe'


def _run(*command: str, timeout: float = 30) -> subprocess.CompletedProcess:
    return subprocess.run(
        command, capture_output=True, text=True, timeout=timeout, check=False, stdin=subprocess.DEVNULL
    )


@functools.cache
def _hpc_missing() -> str | None:
    """Return why the localhost sshd + Slurm cannot be used, or ``None`` if they can."""
    hint = 'run `bash scripts/hpc/setup-localhost-hpc.sh` (make hpc) first'
    for tool in ('ssh', 'sbatch', 'squeue', 'sacct', 'scontrol'):
        if shutil.which(tool) is None:
            return f'`{tool}` not found: {hint}'
    try:
        ssh = _run('ssh', '-o', 'BatchMode=yes', '-o', 'ConnectTimeout=5', SSH_ALIAS, 'true')
        if ssh.returncode != 0:
            return f'ssh {SSH_ALIAS} (127.0.0.1:{SSH_PORT}) fails: {ssh.stderr.strip()[-200:]}; {hint}'
        ping = _run('scontrol', 'ping')
        if 'is UP' not in ping.stdout:
            return f'slurmctld is not up ({(ping.stdout + ping.stderr).strip()[-200:]}); {hint}'
        state = _run('sinfo', '-h', '-o', '%t').stdout.split()
        if not any(s.startswith(('idle', 'mix', 'alloc')) for s in state):
            return f'no usable Slurm node (sinfo states: {state}); {hint}'
        sacct = _run('sacct', '-n', '-X', '-S', 'now-1minute')
        if sacct.returncode != 0:
            return f'sacct fails (slurmdbd down?): {sacct.stderr.strip()[-200:]}; {hint}'
    except subprocess.TimeoutExpired as exception:
        command = exception.cmd[0]
        why = ' (does the login shell wait on something, a stale pyenv lock?)' if command == 'ssh' else ''
        return f'{command} timed out after {exception.timeout:g} s{why}; {hint}'
    return None


@pytest.fixture(autouse=True)
def _require_hpc(skip_or_fail) -> None:
    reason = _hpc_missing()
    if reason:
        skip_or_fail(reason)


@pytest.fixture
def slurm_computer(aiida_computer) -> orm.Computer:
    """``core.ssh_async`` + ``core.slurm`` on the localhost sshd; polls every 1 s, safe interval 0.1 s."""
    computer = aiida_computer(
        label='slurm-localhost',
        hostname='localhost',
        scheduler_type='core.slurm',
        transport_type='core.ssh_async',
        minimum_job_poll_interval=1,
    )
    computer.configure(host=SSH_ALIAS, backend='asyncssh', use_login_shell=False, safe_interval=0.1)
    return computer


@pytest.fixture
def probe_code_slurm(aiida_code, slurm_computer) -> orm.InstalledCode:
    """This environment's ``lisei-probe`` as a code on the Slurm computer (same machine, same path)."""
    if not LISEI_PROBE.is_file():
        pytest.skip(f'{LISEI_PROBE} not found: install the package (pip install -e .)')
    return aiida_code(
        'core.code.installed',
        label='lisei-probe-slurm',
        computer=slurm_computer,
        filepath_executable=str(LISEI_PROBE),
        default_calc_job_plugin='lisei.probe',
    )


def _sacct_state(job_id: str, wait: float = 20.0) -> str:
    """The job's state in Slurm accounting; waits up to ``wait`` (s) for a final state (slurmdbd lags)."""
    deadline = time.monotonic() + wait
    while True:
        out = _run('sacct', '-n', '-X', '-P', '-j', job_id, '-o', 'State').stdout.split()
        state = out[0] if out else ''
        if (state and state not in ('PENDING', 'RUNNING', 'COMPLETING')) or time.monotonic() >= deadline:
            return state
        time.sleep(0.5)


def test_probe_over_ssh_into_slurm(submit_and_await, probe_code_slurm) -> None:
    """``lisei.probe``: daemon -> SSH -> sbatch -> back; its Slurm job id is in the graph, COMPLETED."""
    builder = probe_code_slurm.get_builder()
    builder.metadata.options.max_wallclock_seconds = 120

    node = submit_and_await(builder, timeout=180)

    assert node.is_finished_ok, (node.exit_status, node.exit_message)
    job_id = node.get_job_id()
    assert job_id and job_id.isdigit(), job_id
    loaded = orm.load_node(node.pk)  # from the database, not from memory
    assert loaded.get_job_id() == job_id
    assert loaded.computer.scheduler_type == 'core.slurm'
    assert loaded.computer.transport_type == 'core.ssh_async'
    assert _sacct_state(job_id) == 'COMPLETED'
    # the detailed job info AiiDA fetched with sacct after the job is stored on the node too
    detailed = loaded.get_detailed_job_info()
    assert detailed is not None
    assert job_id in detailed.get('stdout', '')

    report = node.outputs.engines.get_dict()
    assert report['engines']
    assert isinstance(report['missing'], list)
    # the remote working directory is on this machine: read the submit script the daemon wrote there
    script = (Path(node.outputs.remote_folder.get_remote_path()) / '_aiidasubmit.sh').read_text()
    assert '#SBATCH --time=00:02:00' in script
    assert f"'{LISEI_PROBE}' '--output' 'probe.json'" in script


@pytest.mark.slow
def test_walltime_kill(submit_and_await, probe_code_slurm) -> None:
    """A job past its 1 min walltime is killed by Slurm: exit code 120 (ERROR_SCHEDULER_OUT_OF_WALLTIME)."""
    builder = probe_code_slurm.get_builder()
    builder.metadata.options.max_wallclock_seconds = 60  # Slurm's resolution is one minute
    builder.metadata.options.prepend_text = 'sleep 600'

    node = submit_and_await(builder, timeout=240)

    assert node.exit_status == builder.process_class.exit_codes.ERROR_SCHEDULER_OUT_OF_WALLTIME.status, (
        node.exit_status,
        node.exit_message,
    )
    assert _sacct_state(node.get_job_id()) == 'TIMEOUT'


#: The localhost sshd of ``scripts/hpc/setup-localhost-hpc.sh`` (its ``BASE``): config and pid file.
SSHD_DIR = Path('/tmp/lisei-hpc/sshd')


def _running_job_id(node: orm.CalcJobNode) -> str | None:
    """The Slurm job id of ``node`` once Slurm runs it, else ``None``."""
    job_id = node.get_job_id()
    return job_id if job_id and _sacct_state(job_id, wait=0) == 'RUNNING' else None


@pytest.mark.slow
def test_cancelled_job_ends_with_its_exit_code(started_daemon_client, probe_code_slurm) -> None:
    """A running job cancelled with ``scancel``: the CalcJob ends, not stuck, with 302 (output missing)."""
    builder = probe_code_slurm.get_builder()
    builder.metadata.options.max_wallclock_seconds = 300
    builder.metadata.options.prepend_text = 'sleep 240'
    node = submit(builder)

    job_id = wait_for(lambda: _running_job_id(node), 120, 'the job never ran in Slurm', 0.5)
    assert _run('scancel', job_id).returncode == 0
    wait_for(lambda: node.is_terminated, 180, f'CalcJob<{node.pk}> did not end after scancel')

    assert _sacct_state(job_id) == 'CANCELLED'
    assert node.exit_status == builder.process_class.exit_codes.ERROR_OUTPUT_MISSING.status, node.exit_message


@pytest.mark.slow
def test_ssh_refused_for_a_while(started_daemon_client, probe_code_slurm) -> None:
    """The sshd stops accepting logins while a job runs, and comes back 30 s later: AiiDA's transport tasks
    retry (exponential backoff) and the job finishes ok, polled and retrieved once sshd answers again."""
    builder = probe_code_slurm.get_builder()
    builder.metadata.options.max_wallclock_seconds = 300
    builder.metadata.options.prepend_text = 'sleep 20'
    node = submit(builder)
    wait_for(lambda: _running_job_id(node), 120, 'the job never ran in Slurm', 0.5)

    pid = int((SSHD_DIR / 'sshd.pid').read_text())
    os.kill(pid, signal.SIGTERM)  # the listener: new logins are refused; open sessions keep their processes
    try:
        refused = lambda: _run('ssh', '-o', 'ConnectTimeout=5', SSH_ALIAS, 'true').returncode != 0  # noqa: E731
        wait_for(refused, 30, 'sshd still accepts logins')
        time.sleep(30)
    finally:
        sshd = ['/usr/sbin/sshd', '-f', str(SSHD_DIR / 'sshd_config'), '-E', str(SSHD_DIR / 'sshd.log')]
        subprocess.run(sshd, check=True)
    wait_for(lambda: node.is_terminated, 600, f'CalcJob<{node.pk}> did not finish after sshd came back')
    assert node.is_finished_ok, (node.exit_status, node.exit_message)
    assert _sacct_state(node.get_job_id()) == 'COMPLETED'
