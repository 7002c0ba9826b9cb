"""Tests of ``InitialDataWorkChain`` (``lisei.initial_data``): protocol, validation, a tiny run, caching."""

from __future__ import annotations

import numpy as np
import pytest
from aiida import orm
from aiida.engine import run_get_node
from aiida.manage.caching import enable_caching
from aiida.plugins import WorkflowFactory
from ase.build import bulk

from aiida_lisei.common.seeds import derive_label_seed
from aiida_lisei.data.structure import GroupedStructureData

InitialDataWorkChain = WorkflowFactory('lisei.initial_data')

#: Demo-like settings scaled down for a test: 3 relaxation steps, 2 copies, 2 MD steps, frames 0 and 2.
TINY = {
    'relax': {'parameters': {'relax': {'fmax': 0.2, 'max_steps': 3}}},
    'md': {'parameters': {'md': {'n_steps': 2, 'stride': 1}}},
    'sampling': {'stride': 2},
}


@pytest.fixture
def codes(venv_code) -> tuple[orm.InstalledCode, orm.InstalledCode]:
    """This environment's ``lisei-tblite-md`` and ``lisei-tblite`` as codes on ``localhost``."""
    return venv_code('lisei-tblite-md', 'lisei.tblite_md'), venv_code('lisei-tblite', 'lisei.tblite')


def systems() -> dict[str, orm.StructureData]:
    """bcc Li16 (with its atom group) and antifluorite Li8S4 (a = 5.70 Å)."""
    li16 = GroupedStructureData(ase=bulk('Li', 'bcc', a=3.42, cubic=True).repeat(2))
    li16.set_atom_groups(['bulk_Li'] * 16)
    return {'li16': li16, 'li2s': orm.StructureData(ase=bulk('SLi2', 'fluorite', a=5.70, cubic=True))}


def test_builder_from_protocol(codes) -> None:
    """``demo`` is short and sets the interface's overrides only when an interface is given."""
    md_code, label_code = codes
    builder = InitialDataWorkChain.get_builder_from_protocol(md_code, label_code, systems())
    assert builder.perturbation['n_copies'] == 2 and builder.relax_must_converge.value is False
    assert builder.md.parameters['md']['n_steps'] == 20 and builder.md.parameters['task'] == 'md'
    assert builder.relax.parameters['relax'] == {
        'optimizer': 'BFGS',
        'fmax': 0.2,
        'max_steps': 20,
        'cell': True,
        'stride': 5,
    }
    assert builder.label.tblite.code.uuid == label_code.uuid and builder.label.batch_size.value == 10
    assert not builder.system_overrides
    interface = {'interface': systems()['li16']}
    paper = InitialDataWorkChain.get_builder_from_protocol(md_code, label_code, interface, protocol='paper')
    assert paper.md.parameters['md']['n_steps'] == 20000
    assert paper.system_overrides['interface'].get_dict() == {'relax': {'cell': False}}
    assert paper.label.tblite.parameters['accuracy'] == 0.1


def test_validation(codes) -> None:
    """Wrong tasks, overrides of unknown systems and bad labels are refused before anything runs."""
    builder = InitialDataWorkChain.get_builder_from_protocol(*codes, systems())
    inputs = builder._inputs(prune=True)
    spec = InitialDataWorkChain.spec().inputs
    assert spec.validate(inputs) is None
    relax = {**inputs['relax'], 'parameters': orm.Dict({'task': 'md'})}
    assert 'must have task `relax`' in spec.validate({**inputs, 'relax': relax}).message
    overrides = {'system_overrides': {'bulk': orm.Dict({})}}
    assert 'not keys of `structures`' in spec.validate({**inputs, **overrides}).message
    bad = {
        **inputs,
        'perturbation': orm.Dict({'n_copies': 0, 'cell_perturbation': 0, 'atom_perturbation': 0}),
    }
    assert 'n_copies' in spec.validate(bad).message


def test_initial_data_two_systems_and_caching(codes) -> None:
    """Li16 + Li8S4: one training set each (2 copies x frames 0 and 2), tagged, seeded; a cached rerun."""
    builder = InitialDataWorkChain.get_builder_from_protocol(*codes, systems(), overrides=TINY)
    results, node = run_get_node(builder)
    assert node.is_finished_ok, node.exit_message

    assert set(results['training_sets']) == {'li16', 'li2s'}
    summary = results['summary'].get_dict()
    assert summary == {
        'li16': {'nframes': 4, 'natoms': 16, 'formula': 'Li16'},
        'li2s': {'nframes': 4, 'natoms': 12, 'formula': 'Li8S4'},
    }
    system = results['training_sets']['li2s'].get_system('li2s')
    assert [(tags['copy'], tags['md_step']) for tags in system.tags] == [(0, 0), (0, 2), (1, 0), (1, 2)]
    assert {tags['source'] for tags in system.tags} == {'aimd'}
    assert {tags['temperature'] for tags in system.tags} == {300.0}

    md_runs = [
        child
        for child in node.called
        if isinstance(child, orm.CalcJobNode) and child.inputs.parameters['task'] == 'md'
    ]
    assert len(md_runs) == 4
    seeds = {run.inputs.seed.value for run in md_runs}
    assert seeds == {
        derive_label_seed(20241125, f'{name}_copy_{i:04d}') for name in ('li16', 'li2s') for i in (0, 1)
    }
    reports = [log.message for log in orm.Log.collection.get_logs_for(node)]
    assert any('li2s: 4 frames sampled for labelling' in message for message in reports), reports
    assert any('training sets: li16 4, li2s 4 frames' in message for message in reports), reports

    with enable_caching():
        rerun, rerun_node = run_get_node(builder)
    assert rerun_node.is_finished_ok, rerun_node.exit_message
    rerun_calcjobs = [child for child in rerun_node.called_descendants if isinstance(child, orm.CalcJobNode)]
    assert len(rerun_calcjobs) == 8  # 2 relaxations, 4 MD runs, 2 labelling jobs
    assert all(calc.base.caching.is_created_from_cache for calc in rerun_calcjobs)
    np.testing.assert_array_equal(rerun['training_sets']['li2s'].get_system('li2s').forces, system.forces)


def test_initial_data_chgnet(venv_code) -> None:
    """``lisei.initial_data.chgnet`` with ``demo_chgnet``: CHGNet relaxes, runs MD and labels Li16 + Li8S4;
    the ``tblite`` section of the shared defaults is dropped, and the labels are CHGNet's level."""
    md_code, label_code = (
        venv_code('lisei-chgnet-md', 'lisei.chgnet_md'),
        venv_code('lisei-chgnet', 'lisei.chgnet'),
    )
    chgnet = WorkflowFactory('lisei.initial_data.chgnet')
    builder = chgnet.get_builder_from_protocol(md_code, label_code, systems(), protocol='demo_chgnet')
    assert builder.md.parameters.get_dict()['chgnet'] == {'model': '0.3.0', 'threads': 1}
    assert (
        'tblite' not in builder.md.parameters.get_dict()
        and 'tblite' not in builder.relax.parameters.get_dict()
    )
    assert builder.label.engine.value == 'chgnet' and builder.label.chgnet.code.uuid == label_code.uuid
    interface = chgnet.get_builder_from_protocol(
        md_code, label_code, {'interface': systems()['li2s']}, protocol='demo_chgnet'
    )
    assert interface.system_overrides['interface'].get_dict() == {
        'relax': {'cell': False, 'max_steps': 20},
        'md': {'n_steps': 20, 'stride': 5},
    }
    tblite = InitialDataWorkChain.get_builder_from_protocol(  # its own engine: CHGNet codes are refused
        venv_code('lisei-tblite-md', 'lisei.tblite_md'), venv_code('lisei-tblite', 'lisei.tblite'), systems()
    )
    assert 'chgnet' not in tblite.md.parameters.get_dict()

    builder = chgnet.get_builder_from_protocol(
        md_code, label_code, systems(), protocol='demo_chgnet', overrides=TINY
    )
    results, node = run_get_node(builder)
    assert node.is_finished_ok, node.exit_message
    assert results['summary'].get_dict()['li2s'] == {'nframes': 4, 'natoms': 12, 'formula': 'Li8S4'}
    for label, training_set in results['training_sets'].items():
        assert training_set.level_of_theory['method'] == 'CHGNet-0.3.0', label
    jobs = {child.process_label for child in node.called_descendants if isinstance(child, orm.CalcJobNode)}
    assert jobs == {'ChgnetMdCalculation', 'ChgnetCalculation'}
