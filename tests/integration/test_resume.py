"""Resume after a daemon crash: ``lisei.concurrent_learning`` killed mid-iteration and ``lisei.restraint_md``
killed mid-segment finish, no CalcJob twice.

The work chain is submitted to the daemon of the production profile; while the ensemble trains (some
``lisei.dp_train`` jobs finished, others running) every daemon process is killed with SIGKILL, then the
daemon is started again. The checkpoints in the database and the unacknowledged tasks in RabbitMQ let the
new workers take the processes over: running jobs are polled and retrieved, finished ones are not redone.
"""

from __future__ import annotations

import time
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from aiida import orm
from aiida.common.links import LinkType
from aiida.engine import run_get_node, submit
from daemon_helpers import kill_daemon_hard, wait_for

from aiida_lisei.workchains.concurrent_learning import ConcurrentLearningWorkChain
from aiida_lisei.workchains.label import LabelWorkChain

# a daemon restart under load takes minutes: longer than the suite's per-test limit
pytestmark = [pytest.mark.production, pytest.mark.timeout(1500)]


def calcjobs_below(node: orm.WorkflowNode) -> list[tuple[orm.WorkflowNode, orm.CalcJobNode]]:
    """Return ``(caller, calcjob)`` for every CalcJob called at any depth below ``node``."""
    found = []
    for child in node.called:
        if isinstance(child, orm.CalcJobNode):
            found.append((node, child))
        elif isinstance(child, orm.WorkflowNode):
            found.extend(calcjobs_below(child))
    return found


def process_tree(node: orm.ProcessNode, indent: str = '') -> str:
    """Return the state of ``node`` and of every process below it, one line each."""
    state = f'{node.process_state} {node.exit_status} {node.process_status}'
    lines = [f'{indent}{node.process_label}<{node.pk}> {state}']
    for child in sorted(node.called, key=lambda child: child.ctime):
        lines.append(process_tree(child, indent + '  '))
    return '\n'.join(lines)


def test_concurrent_learning_survives_daemon_kill(started_daemon_client, one_thread_code, li16) -> None:
    """Kill -9 the daemon while the ensemble trains; after a restart the run finishes, no job ran twice."""
    tblite = one_thread_code('lisei-tblite', 'lisei.tblite')
    dp = one_thread_code('dp', 'lisei.dp_train')
    lmp = one_thread_code('lmp', 'lisei.exploration')
    initial = LabelWorkChain.get_builder_from_protocol(
        tblite, [li16(0.05, seed) for seed in range(4)], system_label='bcc_lithium'
    )
    _, initial_node = run_get_node(initial)
    assert initial_node.is_finished_ok, initial_node.exit_message

    overrides = {
        'train': {
            'overrides': {
                'dp_train': {
                    'parameters': {'training': {'numb_steps': 300, 'disp_freq': 50, 'save_freq': 300}},
                    'settings': {'skip_neighbor_stat': True},
                }
            }
        },
        'schedule': [[{'system': 'bcc_lithium', 'temperatures': [300], 'n_steps': 40, 'stride': 10}]],
        'trust_levels': {'bcc_lithium': {'f_lo': 1e-6, 'f_hi': 1e3}},  # every frame a candidate
        'selection': {'model_devi_skip': 1},
        'fp_task_max': 2,
        'max_iterations': 1,
    }
    builder = ConcurrentLearningWorkChain.get_builder_from_protocol(
        dp,
        lmp,
        tblite,
        initial_node.outputs.training_set,
        {'bcc_lithium': li16()},
        overrides=overrides,
        seed=5,
    )
    node = submit(builder)

    def training_half_done():
        jobs = [
            job for _, job in calcjobs_below(node) if job.process_type == 'aiida.calculations:lisei.dp_train'
        ]
        finished = [job for job in jobs if job.is_terminated]
        return jobs if len(jobs) == 4 and 0 < len(finished) < 4 else None

    before = wait_for(training_half_done, 300, 'the ensemble of iteration 1 never was partly trained', 0.2)
    unfinished = {job.pk for job in before if not job.is_terminated}
    try:
        killed = kill_daemon_hard(started_daemon_client)
    finally:  # the later tests of the session need a daemon, whatever happened here
        time.sleep(2)
        started_daemon_client.start_daemon()
    assert killed >= 2  # circus and at least one worker
    assert unfinished, 'every training finished before the kill: nothing was interrupted'

    wait_for(
        lambda: node.is_terminated, 900, f'{node.process_label}<{node.pk}> did not finish after the restart'
    )
    assert node.is_finished_ok, diagnose(node, started_daemon_client)

    pairs = calcjobs_below(node)
    labels = Counter(
        (caller.pk, job.base.attributes.get('process_label'), _call_label(job)) for caller, job in pairs
    )
    assert all(count == 1 for count in labels.values()), labels  # no CalcJob ran twice
    assert all(job.is_finished_ok for _, job in pairs)
    trainings = [job for _, job in pairs if job.process_type == 'aiida.calculations:lisei.dp_train']
    assert len(trainings) == 4  # 4 models, none resubmitted
    assert {job.pk for job in before} <= {job.pk for job in trainings}  # the interrupted ones were taken over
    assert not any(job.base.caching.is_created_from_cache for _, job in pairs)


def diagnose(node: orm.ProcessNode, daemon_client) -> str:
    """Return the state, exception and report of ``node`` and the tail of the daemon log (for a failure)."""
    from aiida.cmdline.utils.common import get_workchain_report

    log = Path(daemon_client.daemon_log_file)
    tail = '\n'.join(log.read_text().splitlines()[-60:]) if log.is_file() else '(no daemon log)'
    return (
        f'{node.process_state} {node.exit_status} {node.exit_message}\n{node.exception}\n'
        f'{get_workchain_report(node, "REPORT")}\n--- daemon log ---\n{tail}'
    )


def kill_restart_and_await(daemon_client, node: orm.ProcessNode, timeout: float) -> None:
    """Kill -9 every daemon process, start the daemon again and wait (s) until ``node`` terminates."""
    try:
        kill_daemon_hard(daemon_client)
    finally:  # the later tests of the session need a daemon, whatever happened here
        time.sleep(2)
        daemon_client.start_daemon()
    wait_for(
        lambda: node.is_terminated,
        timeout,
        f'{node.process_label}<{node.pk}> did not finish after the restart',
        explain=lambda: f'{process_tree(node)}\n{diagnose(node, daemon_client)}',
    )


def _call_label(node: orm.ProcessNode) -> str:
    """Return the ``CALL`` link label by which ``node`` was called."""
    return node.base.links.get_incoming(link_type=(LinkType.CALL_CALC, LinkType.CALL_WORK)).one().link_label


def test_restraint_md_survives_daemon_kill(
    started_daemon_client, restraint_code, small_sandwich, tiny_model
) -> None:
    """Kill -9 the daemon while a segment of ``lisei.restraint_md`` runs; the run finishes, nothing redone."""
    from aiida_lisei.workchains.restraint_md import RestraintMdWorkChain

    overrides = {
        'md': {
            'parameters': {'ensemble': 'nvt', 'n_steps': 600, 'dump_stride': 50, 'restart_stride': 100},
            'guards': {'enabled': False},  # the tiny Li-only model is not physical on the sandwich
        },
        'restraint': {'d_max': 5.0, 'anode_layers': 2, 'colvar_stride': 10},
        'segment_steps': 200,
    }
    builder = RestraintMdWorkChain.get_builder_from_protocol(
        restraint_code, small_sandwich, tiny_model, overrides=overrides
    )
    node = submit(builder)

    def segment_running():
        jobs = [job for _, job in calcjobs_below(node)]
        return jobs if jobs and not jobs[-1].is_terminated and jobs[-1].get_job_id() else None

    before = wait_for(segment_running, 300, 'no segment started', 0.2)
    kill_restart_and_await(started_daemon_client, node, 540)
    assert node.is_finished_ok, diagnose(node, started_daemon_client)
    segments = [job for _, job in calcjobs_below(node)]
    assert len(segments) == 3 and all(job.is_finished_ok for job in segments)  # nothing ran twice
    assert {job.pk for job in before} <= {job.pk for job in segments}
    time_ps = node.outputs.colvar.get_array('time')
    assert np.allclose(time_ps, np.arange(0, 601, 10) * 1e-3)  # one continuous series


def test_study_survives_daemon_kill(
    started_daemon_client, restraint_code, one_thread_code, small_sandwich, tiny_deep_potential
) -> None:
    """Kill -9 the daemon while ``lisei.study`` is two levels down (a restraint segment running, one done);
    after a restart the study goes on to the analysis and finishes, no CalcJob ran twice."""
    from aiida_lisei.workchains.study import STEPS, StudyWorkChain

    codes = {
        'lmp_plumed': restraint_code,
        'lmp': one_thread_code('lmp', 'lisei.exploration'),
        'qeq': one_thread_code('lisei-qeq', 'lisei.qeq'),
    }
    no_guards = {'enabled': False}  # the tiny Li-only models are not physical on the sandwich
    restraint = {
        'md': {
            'parameters': {'n_steps': 300, 'thermo_stride': 10, 'dump_stride': 50, 'restart_stride': 50},
            'guards': no_guards,
        },
        'equilibration': {'parameters': {'n_steps': 20, 'stride': 10}, 'guards': no_guards},
        'restraint': {'d_max': 5.0, 'anode_layers': 2, 'colvar_stride': 10},
        'segment_steps': 100,
    }
    steps = dict.fromkeys(STEPS)
    steps['restraint_md'] = {'protocol': 'demo', 'system': 'sandwich', 'overrides': restraint}
    steps['nucleation_analysis'] = {'protocol': 'demo', 'allow_failed_guards': True}
    builder = StudyWorkChain.get_builder_from_protocol(
        codes,
        overrides={'steps': steps, 'paper_size_models': False},
        structures={'sandwich': small_sandwich},
        models={f'model_{index}': tiny_deep_potential(index) for index in (1, 2)},
        seed=9,
    )
    node = submit(builder)

    def second_segment_running():
        jobs = [job for _, job in calcjobs_below(node) if job.process_label == 'RestraintMdCalculation']
        return jobs if len(jobs) == 2 and not jobs[-1].is_terminated and jobs[-1].get_job_id() else None

    before = wait_for(second_segment_running, 600, 'the second restraint segment never ran', 0.2)
    kill_restart_and_await(started_daemon_client, node, 900)
    assert node.is_finished_ok, f'{process_tree(node)}\n{diagnose(node, started_daemon_client)}'
    pairs = calcjobs_below(node)
    labels = Counter(
        (caller.pk, job.base.attributes.get('process_label'), _call_label(job)) for caller, job in pairs
    )
    assert all(count == 1 for count in labels.values()), labels  # no CalcJob ran twice
    assert all(job.is_finished_ok for _, job in pairs), process_tree(node)
    segments = [job for _, job in pairs if job.process_label == 'RestraintMdCalculation']
    assert len(segments) == 3 and {job.pk for job in before} <= {job.pk for job in segments}
    called = {link.link_label for link in node.base.links.get_outgoing(link_type=LinkType.CALL_WORK).all()}
    assert called == {'restraint_md', 'nucleation_analysis'}  # the study went on after the restart
    assert 'summary' in node.outputs
