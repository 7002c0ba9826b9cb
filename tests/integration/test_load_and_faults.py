"""Load and faults on the production profile: many CalcJobs at once, a daemon worker killed with SIGKILL and
RabbitMQ restarted while they run; every job finishes ok and none is lost. Jobs stuck after the faults are
recovered as aiida-core's checklist says (daemon restart, then re-created tasks) and reported. Two losses of
aiida-core's own are bounded and reported, not hidden: a job run twice, a ``remote_folder`` link missing
(see the test and ``docs/reliability.md``).

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
from pathlib import Path

import pytest
from aiida import orm
from aiida.engine import submit
from daemon_helpers import daemon_workers, wait_for, wait_until

pytestmark = [pytest.mark.production, pytest.mark.timeout(1500)]

#: Jobs submitted at once (``LISEI_LOAD_JOBS``).
LOAD_JOBS = int(os.environ.get('LISEI_LOAD_JOBS', '40'))
#: Seconds the first job sleeps before the probe runs: the faults must find jobs running.
LOAD_JOB_SLEEP = 3
#: Seconds each further job sleeps longer than the one before: the jobs run at once under ``core.direct``,
#: and without a stagger they all end in one burst, so that the worker kill and the broker restart overlap
#: (seen under load: both at 24 of 40 done, and aiida-core then ran a job in two workers at once).
LOAD_JOB_STAGGER = 0.5
#: Daemon workers during the test (one of them is killed).
WORKERS = 2
#: Seconds after the broker restart, and then after the daemon restart, before jobs count as stuck
#: (``LISEI_LOAD_STUCK_AFTER``: 1 exercises the recovery).
STUCK_AFTER = float(os.environ.get('LISEI_LOAD_STUCK_AFTER', '300'))


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


def repair_stuck_jobs(daemon_client) -> int:
    """``verdi process repair`` (without its database-connection clean-up): with the daemon stopped, every
    unacknowledged task is back in the queue; re-create the task of each active process that has none, with
    the daemon started again (``WORKERS`` workers). Return how many tasks were re-created."""
    from aiida.engine.processes.control import get_active_processes, get_process_tasks, revive_processes
    from aiida.manage import get_manager

    daemon_client.stop_daemon(wait=True)
    get_manager().reset_broker()  # this process's connection may not have survived the broker restart
    tasks = get_process_tasks(get_manager().get_broker())
    without_task = sorted(set(get_active_processes(project='id')) - set(tasks))
    daemon_client.start_daemon(number_workers=WORKERS)
    revive_processes([orm.load_node(pk) for pk in without_task])
    return len(without_task)


def unfinished_jobs_and_daemon_log(nodes, daemon_client, log_lines: int = 200) -> str:
    """What a failed load test leaves to read: the state and log of each job not finished ok with its
    ``remote_folder``, the daemon log's tail."""
    lines = []
    for node in nodes:
        if node.is_finished_ok and 'remote_folder' in node.outputs:
            continue
        logs = orm.Log.collection.get_logs_for(node)
        lines.append(
            f'job {node.pk} {node.label}: {node.process_state.value}, calc_job_state {node.get_state()}, '
            f'scheduler_state {node.get_scheduler_state()}, job id {node.get_job_id()}, '
            f'checkpoint {"yes" if node.checkpoint else "no"}'
        )
        lines.extend(f'    {entry.time:%H:%M:%S} {entry.message}' for entry in logs[-10:])
    log_file = daemon_client.daemon_log_file
    try:
        with open(log_file, encoding='utf-8', errors='replace') as handle:
            tail = handle.readlines()[-log_lines:]
    except OSError as error:
        tail = [f'({log_file} unreadable: {error})\n']
    return '\n'.join(lines) + f'\n--- the last {len(tail)} lines of {log_file}:\n' + ''.join(tail)


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
            sleep = LOAD_JOB_SLEEP + index * LOAD_JOB_STAGGER
            builder.metadata.options.prepend_text = f'sleep {sleep:g}\necho "$PWD" >> {runs_log}'
            nodes.append(submit(builder))
        submitted = time.monotonic() - start

        def done(fraction: float):
            return sum(node.is_terminated for node in nodes) >= fraction * LOAD_JOBS

        wait_for(lambda: done(0.25), 600, 'a quarter of the jobs never finished', 0.5)
        workers = daemon_workers(started_daemon_client)
        assert len(workers) == WORKERS, workers
        killed = workers[0]
        killed_at = sum(node.is_terminated for node in nodes)
        killed.send_signal(signal.SIGKILL)  # circus starts a new one

        def recovered_from_the_kill() -> bool:
            """Half done, more than when the worker was killed, and its replacement running."""
            running = daemon_workers(started_daemon_client)
            replaced = [worker for worker in running if worker.pid != killed.pid]
            terminated = sum(node.is_terminated for node in nodes)
            return done(0.5) and len(replaced) == WORKERS and terminated > killed_at

        wait_for(recovered_from_the_kill, 600, 'half of the jobs never finished after the worker kill', 0.5)
        restarted_at = sum(node.is_terminated for node in nodes)
        assert restarted_at < LOAD_JOBS, 'every job finished before the broker restart: it would test nothing'
        broker_down = restart_broker()

        def state() -> str:
            counts = Counter(f'{node.process_state.value}' for node in nodes)
            explained = unfinished_jobs_and_daemon_log(nodes, started_daemon_client)
            return f'process states: {dict(counts)}\n{explained}'

        recovery = 'none'
        if not wait_until(lambda: done(1.0), STUCK_AFTER):
            # aiida-core's checklist for stuck processes (`revive_processes`): restart the daemon, then
            # repair (re-create the task of every active process that has none). Seen in CI: 3 jobs left
            # `waiting` for 900 s after the faults.
            stuck = sum(not node.is_terminated for node in nodes)
            print(f'\n{stuck} jobs stuck {STUCK_AFTER:g} s after the faults:\n{state()}')
            recovery = f'{stuck} stuck jobs: daemon restarted'
            started_daemon_client.restart_daemon(wait=True)
            if not wait_until(lambda: done(1.0), STUCK_AFTER):
                revived = repair_stuck_jobs(started_daemon_client)
                recovery += f', repaired ({revived} tasks re-created)'
        wait_for(lambda: done(1.0), 600, 'not every job finished after the recovery', 1.0, explain=state)
        wall = time.monotonic() - start
    finally:
        started_daemon_client.decrease_workers(WORKERS - 1)

    failed = [(node.pk, node.exit_status, node.exit_message) for node in nodes if not node.is_finished_ok]
    directories = runs_log.read_text().split()
    twice = [directory for directory, count in Counter(directories).items() if count > 1]
    job_ids = [node.get_job_id() for node in nodes]
    unlinked = [node for node in nodes if 'remote_folder' not in node.outputs]
    print(
        f'\nload and faults: {LOAD_JOBS} jobs, {WORKERS} workers; submitted in {submitted:.1f} s; a worker '
        f'killed at {killed_at} done, RabbitMQ restarted at {restarted_at} done ({broker_down:.1f} s down); '
        f'all terminated after {wall:.1f} s; {len(failed)} failed, {len(twice)} run twice, '
        f'{len(directories)} runs logged, {len(unlinked)} without their remote_folder link; '
        f'recovery: {recovery}'
    )
    assert not failed, failed
    # aiida-core runs a job at least once, not exactly once, when a worker dies or loses the broker at the
    # wrong moment: one job of 40 ran twice in 1 of 8 runs here under load (docs/reliability.md)
    assert len(twice) <= 1, twice
    ran = {os.path.realpath(directory) for directory in directories}
    assert ran == {os.path.realpath(node.get_remote_workdir()) for node in nodes}  # every job ran, none lost
    assert all(job_ids), job_ids  # core.direct's job ids are pids: they may repeat once pids wrap around
    calcjobs = orm.QueryBuilder().append(orm.CalcJobNode, filters={'label': {'like': 'load-%'}}).count()
    assert calcjobs == LOAD_JOBS  # nothing submitted twice either
    # aiida-core 2.9.4 loses the `remote_folder` output of a job whose worker died between the upload and the
    # next checkpoint: the reloaded job skips the upload (`task_upload_job` finds the node UNSTASHING, set
    # after the first upload, and says so in the daemon log), and the RemoteData of the first upload was
    # never stored (outputs are stored at the next checkpoint). The job itself runs once and finishes ok, its
    # working directory on the node (checked above). docs/reliability.md.
    daemon_log = Path(started_daemon_client.daemon_log_file).read_text(encoding='utf-8', errors='replace')
    for node in unlinked:
        signature = f'CalcJob<{node.pk}> already marked as UNSTASHING, skipping'
        assert signature in daemon_log, unfinished_jobs_and_daemon_log(unlinked, started_daemon_client)
    for node in nodes:
        if 'remote_folder' in node.outputs:
            assert node.outputs.remote_folder.get_remote_path() == node.get_remote_workdir()
