"""``aiida-lisei export``: what comes out is read by plain ``dp test``, plain ``lmp`` and DP-GEN's code."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import dpdata
import numpy as np
import pytest
from aiida import orm
from aiida.common.links import LinkType
from aiida.plugins.entry_point import format_entry_point_string
from local_codes import VENV_BIN

from aiida_lisei.data.training_set import TrainingSetData
from aiida_lisei.formats.lammps import parse_log

FIXTURES = Path(__file__).parents[1] / 'fixtures'
MODELS = FIXTURES / 'models'
EXPLORATIONS = FIXTURES / 'parsers' / 'exploration'
#: One thread for DeePMD-kit and LAMMPS (2 cores shared), TensorFlow quiet.
ENV = {
    **os.environ,
    'OMP_NUM_THREADS': '1',
    'DP_INTRA_OP_PARALLELISM_THREADS': '1',
    'DP_INTER_OP_PARALLELISM_THREADS': '1',
    'TF_CPP_MIN_LOG_LEVEL': '2',
}


def plain(*command: str | Path, cwd: Path) -> subprocess.CompletedProcess:
    """Run an engine of this environment as a user would, outside AiiDA."""
    return subprocess.run(
        [str(VENV_BIN / str(command[0])), *map(str, command[1:])],
        cwd=cwd,
        env=ENV,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


def test_training_set_and_model_with_plain_dp_test(run_cli, tmp_path, tiny_deep_potential):
    """The exported set (deepmd/npy + provenance) and model are what plain ``dp test`` reads."""
    training_set = TrainingSetData.from_deepmd_npy(
        [FIXTURES / 'dp_training_set' / 'bcc_li', FIXTURES / 'dp_training_set' / 'li2s']
    ).store()
    model = tiny_deep_potential()
    result = run_cli('export', 'training-set', training_set.pk, tmp_path / 'data')
    assert result.exit_code == 0, result.output
    assert sorted(path.name for path in (tmp_path / 'data').iterdir()) == [
        'bcc_li',
        'li2s',
        'provenance.json',
    ]
    note = json.loads((tmp_path / 'data' / 'provenance.json').read_text())
    assert note['training_set']['uuid'] == training_set.uuid
    assert note['systems']['bcc_li'] == {'folder': 'bcc_li', 'nframes': 8, 'formula': 'Li16'}
    assert note['labelled_by'] == training_set.base.attributes.get('labelled_by')
    result = run_cli('export', 'model', model.uuid, tmp_path / 'graph.pb')
    assert result.exit_code == 0, result.output
    assert (tmp_path / 'graph.pb').read_bytes() == (MODELS / 'model_1.pb').read_bytes()
    assert json.loads((tmp_path / 'graph.pb.provenance.json').read_text())['model']['uuid'] == model.uuid

    tested = plain('dp', '--tf', 'test', '-m', 'graph.pb', '-s', 'data/bcc_li', '-n', '8', cwd=tmp_path)
    assert tested.returncode == 0, tested.stderr
    assert 'number of test data : 8' in tested.stdout + tested.stderr
    assert 'Energy RMSE' in tested.stdout + tested.stderr


def test_model_with_plain_lammps(run_cli, tmp_path, tiny_deep_potential):
    """Plain ``lmp`` with ``pair_style deepmd`` on the exported model gives the exploration's energy."""
    model = tiny_deep_potential()
    assert run_cli('export', 'model', model.pk, tmp_path / 'graph.pb').exit_code == 0
    refused = run_cli('export', 'model', model.pk, tmp_path / 'compressed.pb', '--compressed')
    assert refused.exit_code == 1 and 'has no compressed version' in refused.output
    wrong = run_cli('export', 'training-set', model.pk, tmp_path / 'data')
    assert wrong.exit_code == 1 and 'is a DeepPotentialData: give a TrainingSetData' in wrong.output
    case = (
        EXPLORATIONS / 'nvt_300k'
    )  # explored with model_1.pb driving the MD: PotEng -177.17277 eV at step 0
    (tmp_path / 'structure.data').write_text((case / 'structure.data').read_text())
    (tmp_path / 'in.lammps').write_text(
        'units metal\natom_style atomic\nboundary p p p\nread_data structure.data\n'
        'pair_style deepmd graph.pb\npair_coeff * * Li P S Cl\nthermo_style custom step pe\nrun 0\n'
    )
    ran = plain('lmp', '-in', 'in.lammps', '-log', 'log.lammps', '-nocite', cwd=tmp_path)
    assert ran.returncode == 0, ran.stdout + ran.stderr
    ours = parse_log((tmp_path / 'log.lammps').read_text())
    reference = parse_log((case / 'log.lammps').read_text())
    assert ours.thermo['PotEng'][0] == pytest.approx(reference.thermo['PotEng'][0], abs=1e-4)


def _exploration(generate_calc_job_node, case: str, inputs: dict, caller: tuple) -> orm.Node:
    """A finished ``lisei.exploration`` of bcc Li16 with the real outputs of a parser fixture case."""
    parameters = json.loads((EXPLORATIONS / case / 'case.json').read_text())['parameters']
    return generate_calc_job_node(
        'lisei.exploration',
        inputs={'parameters': orm.Dict(parameters), **inputs},
        retrieved=EXPLORATIONS / case,
        finished=True,
        caller=caller,
    )


def test_iteration_in_dpgen_layout_read_by_dpgen(
    run_cli, tmp_path, generate_calc_job_node, li16, tiny_deep_potential
):
    """One iteration's explorations in DP-GEN's folders; DP-GEN's own selection and dpdata read them, and
    plain ``lmp`` reruns a task in place (its models linked from ``00.train``) to the same deviations."""
    from dpgen.generator.run import _select_by_model_devi_standard

    structure = li16()
    inputs = {
        'structure': structure,
        'models': {f'model_{index}': tiny_deep_potential(index) for index in range(1, 5)},
    }
    workflow = orm.WorkflowNode(
        process_type=format_entry_point_string('aiida.workflows', 'lisei.concurrent_learning')
    )
    workflow.set_process_label('ConcurrentLearningWorkChain')
    workflow.base.links.add_incoming(structure.store(), LinkType.INPUT_WORK, 'structures__bcc_lithium')
    workflow.store()
    calculations = {}
    for case, temperature in (('nvt_800k', 800), ('nvt_300k', 300)):
        caller = (workflow, f'iteration_01_explore_bcc_lithium_T{temperature}')
        calculations[temperature] = _exploration(generate_calc_job_node, case, inputs, caller)

    result = run_cli('export', 'iteration', workflow.pk, tmp_path)
    assert result.exit_code == 0, result.output
    root = tmp_path / 'iter.000000' / '01.model_devi'
    tasks = sorted(str(path) for path in root.glob('task.*'))
    assert [Path(task).name for task in tasks] == ['task.000.000000', 'task.000.000001']
    job = json.loads((root / 'task.000.000000' / 'job.json').read_text())
    assert job['temps'] == 300 and job['calcjob_uuid'] == calculations[300].uuid
    provenance = json.loads((root / 'provenance.json').read_text())
    assert provenance['workflow']['uuid'] == workflow.uuid and provenance['iteration'] == 1

    _, candidates, _, counter = _select_by_model_devi_standard(tasks, 0.05, 0.15, 1e10, 1e10, None, 'lammps')
    rows = sum(len(np.loadtxt(Path(task) / 'model_devi.out', ndmin=2)) for task in tasks)
    assert counter['accurate'] + counter['candidate'] + counter['failed'] == rows
    assert candidates
    task, step = candidates[0]
    frame = dpdata.System(
        Path(task) / 'traj' / f'{step}.lammpstrj', fmt='lammps/dump', type_map=['Li', 'P', 'S', 'Cl']
    )
    assert frame.get_natoms() == 16 and frame.get_nframes() == 1
    assert (Path(task) / 'input.lammps').read_text().startswith('# aiida-lisei exploration')

    graphs = sorted(path.name for path in (tmp_path / 'iter.000000' / '00.train').iterdir())
    assert graphs == ['graph.000.pb', 'graph.001.pb', 'graph.002.pb', 'graph.003.pb']
    task = root / 'task.000.000000'  # 300 K: rerun it where it lies
    ran = plain('lmp', '-in', 'input.lammps', '-log', 'rerun.log', '-nocite', cwd=task)
    assert ran.returncode == 0, ran.stdout + ran.stderr
    rerun = np.loadtxt(task / 'model_devi.out')
    assert rerun == pytest.approx(
        np.loadtxt(EXPLORATIONS / 'nvt_300k' / 'model_devi.out'), rel=1e-4, abs=1e-8
    )

    again = run_cli('export', 'iteration', workflow.pk, tmp_path / 'again', '--iteration', 2)
    assert again.exit_code == 1 and 'no exploration in iteration 2' in again.output
