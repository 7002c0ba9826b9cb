"""Tests of ``LabelWorkChain`` (``lisei.label``) with tblite and CHGNet: real runs, throttling, failures."""

from __future__ import annotations

import numpy as np
import pytest
from aiida import orm
from aiida.engine import run_get_node
from aiida.manage.caching import enable_caching
from aiida.plugins import WorkflowFactory
from ase.build import bulk

from aiida_lisei.workchains.label import ENGINES

LabelWorkChain = WorkflowFactory('lisei.label')


@pytest.fixture
def tblite_code(venv_code) -> orm.InstalledCode:
    """This environment's ``lisei-tblite`` as a code on ``localhost``."""
    return venv_code('lisei-tblite', 'lisei.tblite')


def perturbed_li16(amplitudes: list[float], seed: int = 20241125) -> list[orm.StructureData]:
    """bcc Li16 (a = 3.42 Å) copies displaced by seeded normal noise of the given amplitudes (Å)."""
    rng = np.random.default_rng(seed)
    frames = []
    for amplitude in amplitudes:
        atoms = bulk('Li', 'bcc', a=3.42, cubic=True).repeat(2)
        atoms.positions += rng.normal(scale=amplitude, size=atoms.positions.shape)
        frames.append(orm.StructureData(ase=atoms))
    return frames


def test_builder_from_protocol(tblite_code) -> None:
    """The ``demo`` and ``precise`` protocols fill the tblite namespace; sequences get ``frame_<i>`` keys."""
    frames = perturbed_li16([0.0, 0.0])
    builder = LabelWorkChain.get_builder_from_protocol(tblite_code, frames, system_label='li16')
    assert sorted(builder.structures) == ['frame_0000', 'frame_0001']
    assert (builder.engine.value, builder.max_concurrent.value, builder.batch_size.value) == ('tblite', 2, 10)
    assert builder.tblite.code.uuid == tblite_code.uuid
    assert builder.tblite.parameters.get_dict() == {
        'method': 'GFN1-xTB',
        'electronic_temperature': 300.0,
        'accuracy': 1.0,
        'max_iterations': 250,
    }
    assert builder.tblite.metadata.options['environment_variables'] == {'OMP_NUM_THREADS': '1'}
    precise = LabelWorkChain.get_builder_from_protocol(
        tblite_code,
        {'a': frames[0]},
        system_label='li16',
        protocol='precise',
        overrides={'batch_size': 7},
        tags={'source': 'aimd'},
    )
    assert precise.tblite.parameters['accuracy'] == 0.1
    assert (precise.max_concurrent.value, precise.batch_size.value) == (4, 7)
    assert precise.tags.get_dict() == {'source': 'aimd'}
    with pytest.raises(ValueError, match='unknown engine `gaussian`'):
        LabelWorkChain.get_builder_from_protocol(tblite_code, frames, system_label='li16', engine='gaussian')


def test_validation(tblite_code) -> None:
    """Unknown or unwired engines, a missing engine namespace and bad tags are refused up front."""
    builder = LabelWorkChain.get_builder_from_protocol(
        tblite_code, perturbed_li16([0.0]), system_label='li16'
    )
    inputs = builder._inputs(prune=True)
    spec = LabelWorkChain.spec().inputs
    assert spec.validate(inputs) is None
    assert set(ENGINES) == {'tblite', 'chgnet', 'cp2k', 'vasp'}
    assert 'unknown engine' in spec.validate({**inputs, 'engine': orm.Str('gaussian')}).message
    assert (
        'needs its inputs in the `cp2k` namespace'
        in spec.validate({**inputs, 'engine': orm.Str('cp2k')}).message
    )
    without_namespace = {key: value for key, value in inputs.items() if key != 'tblite'}
    assert 'needs its inputs in the `tblite` namespace' in spec.validate(without_namespace).message
    bad_tags = {**inputs, 'tags': orm.Dict({'frame_0009': {'temperature': 300}})}
    assert 'not a key of `structures`' in spec.validate(bad_tags).message


def test_chgnet_engine(venv_code) -> None:
    """The ``chgnet`` engine: protocol settings, batches of ``lisei.chgnet`` and one CHGNet training set."""
    code = venv_code('lisei-chgnet', 'lisei.chgnet')
    builder = LabelWorkChain.get_builder_from_protocol(
        code,
        perturbed_li16([0.05, 0.05, 0.05]),
        system_label='li16',
        engine='chgnet',
        overrides={'batch_size': 2},
        tags={'source': 'test'},
    )
    assert builder.chgnet.parameters.get_dict() == {'model': '0.3.0', 'threads': 1}
    assert builder.chgnet.metadata.options['environment_variables'] == {'OMP_NUM_THREADS': '1'}
    results, node = run_get_node(builder)
    assert node.is_finished_ok, node.exit_message
    training_set = results['training_set']
    assert training_set.level_of_theory['method'] == 'CHGNet-0.3.0'
    assert training_set.get_system('li16').nframes == 3
    calls = sorted(child.process_label for child in node.called if child.process_label != 'merge_labels')
    assert calls.count('ChgnetCalculation') == 2  # 3 frames in batches of 2


def test_label_throttled_with_failure_and_caching(tblite_code) -> None:
    """6 Li16 frames in batches of 2, at most 2 jobs at a time; one frame fails its SCF and is left out.

    ``max_iterations = 6``: frames displaced by 0.03 Å converge in 5 SCF cycles, the one displaced by
    0.3 Å needs 7 and fails (real tblite behaviour). A rerun with caching enabled computes nothing.
    """
    frames = perturbed_li16([0.03, 0.03, 0.03, 0.3, 0.03, 0.03])
    tags = {'source': 'perturbation', 'temperature': 300, 'frame_0001': {'temperature': 600}}
    builder = LabelWorkChain.get_builder_from_protocol(
        tblite_code,
        frames,
        system_label='li16',
        overrides={'max_concurrent': 2, 'batch_size': 2, 'tblite': {'parameters': {'max_iterations': 6}}},
        tags=tags,
    )
    results, node = run_get_node(builder)

    assert node.is_finished_ok, node.exit_message
    calcs = sorted(node.called, key=lambda child: child.ctime)
    calcjobs = [child for child in calcs if isinstance(child, orm.CalcJobNode)]
    assert len(calcjobs) == 3
    # Throttle: the third job was created only after the first wave had finished (its results retrieved).
    first_wave_done = max(calc.outputs.retrieved.ctime for calc in calcjobs[:2])
    assert calcjobs[2].ctime > first_wave_done
    reports = [log.message for log in orm.Log.collection.get_logs_for(node)]
    assert any('wave 1/2: submitted 2 process(es) for 4 frames' in message for message in reports), reports
    assert any('wave 2/2: submitted 1 process(es) for 2 frames' in message for message in reports), reports

    training_set = results['training_set']
    assert training_set.nframes == 5
    assert training_set.level_of_theory['engine'] == 'tblite'
    failed = results['failed_frames'].get_dict()
    failing_calc = next(calc for calc in calcjobs if 'frame_0003' in calc.inputs.structures)
    assert failed == {
        'frame_0003': {'reason': 'CalculationFailed: SCF not converged in 6 cycles', 'pk': failing_calc.pk}
    }
    assert any('frame frame_0003 left out' in message for message in reports), reports
    system = training_set.get_system('li16')
    assert [tags['temperature'] for tags in system.tags] == [300, 600, 300, 300, 300]
    assert set(system.labelled_by) == {calc.uuid for calc in calcjobs}
    expected_coords = [frames[index].get_ase().positions for index in (0, 1, 2, 4, 5)]
    np.testing.assert_array_equal(system.coords, expected_coords)

    with enable_caching():
        rerun, rerun_node = run_get_node(builder)
    assert rerun_node.is_finished_ok, rerun_node.exit_message
    rerun_calcjobs = [child for child in rerun_node.called if isinstance(child, orm.CalcJobNode)]
    assert len(rerun_calcjobs) == 3
    assert all(calc.base.caching.is_created_from_cache for calc in rerun_calcjobs)
    np.testing.assert_array_equal(rerun['training_set'].get_system('li16').forces, system.forces)
    assert rerun['failed_frames'].get_dict().keys() == failed.keys()


def test_all_frames_failed(tblite_code) -> None:
    """No frame converges within 2 SCF cycles: exit 410, every frame recorded in ``failed_frames``."""
    builder = LabelWorkChain.get_builder_from_protocol(
        tblite_code,
        perturbed_li16([0.03, 0.03]),
        system_label='li16',
        overrides={'tblite': {'parameters': {'max_iterations': 2}}},
    )
    results, node = run_get_node(builder)
    assert node.exit_status == LabelWorkChain.exit_codes.ERROR_ALL_FRAMES_FAILED.status == 410
    assert 'training_set' not in results
    failed = results['failed_frames'].get_dict()
    assert sorted(failed) == ['frame_0000', 'frame_0001']
    assert all('SCF not converged in 2 cycles' in entry['reason'] for entry in failed.values())


def test_cp2k_engine_labels_frames_for_real(cp2k_code) -> None:
    """``engine='cp2k'``: one ``lisei.cp2k.label`` per frame (GFN1-xTB), merged into one training set."""
    frames = perturbed_li16([0.05, 0.05], seed=3)
    builder = LabelWorkChain.get_builder_from_protocol(
        cp2k_code,
        frames,
        system_label='li16',
        engine='cp2k',
        engine_protocol='gfn1_xtb',
        options={
            'resources': {'num_machines': 1, 'num_mpiprocs_per_machine': 2},
            'max_wallclock_seconds': 600,
        },
        tags={'source': 'test'},
    )
    assert builder.cp2k.cp2k.code.uuid == cp2k_code.uuid
    _, node = run_get_node(builder)
    assert node.is_finished_ok, node.exit_status
    training_set = node.outputs.training_set
    assert training_set.nframes == 2
    assert training_set.level_of_theory['engine'] == 'cp2k'
    assert training_set.level_of_theory['method'] == 'GFN1-xTB'
    assert len(training_set.select_frames(source='test')) == 2
    labellers = [child for child in node.called if child.process_label == 'Cp2kLabelWorkChain']
    assert len(labellers) == 2 and all(child.is_finished_ok for child in labellers)
