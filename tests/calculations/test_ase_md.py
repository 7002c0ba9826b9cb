"""Tests of ``AseMdCalculation`` and its parser (``lisei.tblite_md``): spec, inputs, runs, failures."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from aiida import orm
from aiida.common.folders import Folder
from aiida.engine import run_get_node
from aiida.engine.utils import instantiate_process
from aiida.manage import get_manager
from aiida.plugins import CalculationFactory, ParserFactory
from ase.build import bulk

from aiida_lisei.data.structure import GroupedStructureData
from aiida_lisei.engines.ase_md import run_task
from aiida_lisei.formats.frames_npz import read_structures

TbliteMdCalculation = CalculationFactory('lisei.tblite_md')
TbliteMdParser = ParserFactory('lisei.tblite_md')


@pytest.fixture
def md_code(venv_code) -> orm.InstalledCode:
    """This environment's ``lisei-tblite-md`` as a code on ``localhost``."""
    return venv_code('lisei-tblite-md', 'lisei.tblite_md')


def li16(amplitude: float = 0.0, seed: int = 0) -> GroupedStructureData:
    """bcc Li16 (a = 3.42 Å) with its atom group, displaced by seeded normal noise (Å)."""
    atoms = bulk('Li', 'bcc', a=3.42, cubic=True).repeat(2)
    atoms.positions += np.random.default_rng(seed).normal(scale=amplitude, size=atoms.positions.shape)
    structure = GroupedStructureData(ase=atoms)
    structure.set_atom_groups(['bulk_Li'] * len(atoms))
    return structure


MD = {'task': 'md', 'md': {'n_steps': 3, 'stride': 1}}
RELAX = {'task': 'relax', 'relax': {'fmax': 0.01, 'max_steps': 1}}


def test_spec() -> None:
    """Exit codes in their ranges; 300s and 400 invalidate the cache, 410+ do not."""
    codes = TbliteMdCalculation.exit_codes
    own = {codes[name].status for name in codes if not name.startswith('ERROR_SCHEDULER')}
    assert {302, 310, 312, 400, 410, 411} <= own
    assert all(
        codes[name].invalidates_cache == (codes[name].status < 410)
        for name in codes
        if codes[name].status >= 300
    )
    assert (
        TbliteMdCalculation.spec().inputs['metadata']['options']['parser_name'].default == 'lisei.tblite_md'
    )


def test_validation(md_code) -> None:
    """MD needs a seed; a relaxation does not; bad parameters are refused."""
    spec = TbliteMdCalculation.spec().inputs
    base = {'code': md_code, 'structure': li16()}
    assert spec.validate({**base, 'parameters': orm.Dict(RELAX)}) is None
    assert 'needs a `seed`' in spec.validate({**base, 'parameters': orm.Dict(MD)}).message
    assert spec.validate({**base, 'parameters': orm.Dict(MD), 'seed': orm.Int(1)}) is None
    bad = spec.validate({**base, 'parameters': orm.Dict({'task': 'npt'}), 'seed': orm.Int(1)})
    assert 'task' in bad.message


def test_prepare_for_submission(md_code, tmp_path: Path) -> None:
    """The structure, the complete parameters and the seed reach the engine's command line."""
    inputs = {'code': md_code, 'structure': li16(), 'parameters': orm.Dict(MD), 'seed': orm.Int(5)}
    process = instantiate_process(get_manager().get_runner(), TbliteMdCalculation, **inputs)
    calc_info = process.prepare_for_submission(Folder(str(tmp_path)))
    assert calc_info.codes_info[0].cmdline_params == [
        '--structure',
        'structure.npz',
        '--parameters',
        'parameters.json',
        '--seed',
        '5',
        '--output',
        'trajectory.jsonl',
    ]
    parameters = json.loads((tmp_path / 'parameters.json').read_text())
    assert parameters['md']['n_steps'] == 3 and parameters['tblite']['method'] == 'GFN1-xTB'
    [(_, atoms)] = read_structures(tmp_path / 'structure.npz')
    np.testing.assert_array_equal(atoms.positions, inputs['structure'].get_ase().positions)


def test_md_run(md_code) -> None:
    """3 MD steps: a trajectory of 4 frames with energies, forces, stresses, temperatures; exit 0."""
    inputs = {'code': md_code, 'structure': li16(), 'parameters': orm.Dict(MD), 'seed': orm.Int(5)}
    results, node = run_get_node(TbliteMdCalculation, **inputs)
    assert node.is_finished_ok, node.exit_message
    trajectory = results['trajectory']
    assert trajectory.numsteps == 4 and list(trajectory.get_stepids()) == [0, 1, 2, 3]
    assert trajectory.get_array('forces').shape == (4, 16, 3)
    assert trajectory.get_array('stresses').shape == (4, 3, 3)
    assert trajectory.get_array('temperatures')[0] == pytest.approx(300.0)
    np.testing.assert_array_equal(trajectory.get_array('times'), [0.0, 1.0, 2.0, 3.0])
    summary = results['output_parameters'].get_dict()
    assert summary['task'] == 'md' and summary['steps'] == 3 and summary['seed'] == 5
    assert abs(summary['conserved_energy_drift']) < 0.01
    # StructureData attributes keep 14 significant digits
    np.testing.assert_allclose(
        results['structure'].get_ase().positions, trajectory.get_positions()[-1], atol=1e-12
    )


def test_relax_not_converged_keeps_the_last_structure(md_code) -> None:
    """One BFGS step towards 0.01 eV/Å: exit 410, the last structure attached (same class and groups)."""
    inputs = {'code': md_code, 'structure': li16(0.05, seed=3), 'parameters': orm.Dict(RELAX)}
    results, node = run_get_node(TbliteMdCalculation, **inputs)
    assert node.exit_status == TbliteMdCalculation.exit_codes.ERROR_RELAX_NOT_CONVERGED.status == 410
    structure = results['structure']
    assert isinstance(structure, GroupedStructureData)
    assert structure.atom_groups == ['bulk_Li'] * 16
    assert not np.allclose(structure.get_ase().positions, inputs['structure'].get_ase().positions)
    assert results['output_parameters']['converged'] is False


@pytest.fixture(scope='module')
def md_lines() -> list[str]:
    """JSON Lines of a real 2-step MD run of Li16 (header, 3 frames, footer)."""
    records = run_task(li16().get_ase(), {'task': 'md', 'md': {'n_steps': 2, 'stride': 1}}, seed=9)
    return [json.dumps(record) for record in records]


@pytest.fixture
def calc_job_node(generate_calc_job_node):
    """Return a factory: a stored ``lisei.tblite_md`` node with a Li16 input and ``retrieved`` files."""

    def factory(files: dict[str, str], exit_status: int | None = None) -> orm.CalcJobNode:
        return generate_calc_job_node(
            'lisei.tblite_md', {'structure': li16()}, files, exit_status=exit_status
        )

    return factory


@pytest.mark.parametrize(('exit_status', 'expected'), [(None, 312), (120, 400)])
def test_parser_engine_stopped_early(calc_job_node, md_lines, exit_status, expected) -> None:
    """A job killed while writing frame 3: frames 1-2 kept as the trajectory; 312, or 400 on walltime."""
    text = '\n'.join(md_lines[:3]) + '\n' + md_lines[3][:30]
    results, calcfunction = TbliteMdParser.parse_from_node(
        calc_job_node({'trajectory.jsonl': text}, exit_status)
    )
    assert calcfunction.exit_status == expected
    assert results['trajectory'].numsteps == 2
    np.testing.assert_allclose(
        results['structure'].get_ase().positions, json.loads(md_lines[2])['positions'], atol=1e-12
    )


def test_parser_missing_unreadable_or_failed(calc_job_node, md_lines) -> None:
    """No file: 302 (or the scheduler's code); a corrupt inner line: 310; an error footer: 411."""
    _, calcfunction = TbliteMdParser.parse_from_node(calc_job_node({'aiida.out': ''}))
    assert calcfunction.exit_status == 302
    _, calcfunction = TbliteMdParser.parse_from_node(calc_job_node({'aiida.out': ''}, exit_status=120))
    assert calcfunction.exit_status == 120
    corrupt = '\n'.join([md_lines[0], '{"type": "fra', md_lines[2]])
    _, calcfunction = TbliteMdParser.parse_from_node(calc_job_node({'trajectory.jsonl': corrupt}))
    assert calcfunction.exit_status == 310
    footer = {**json.loads(md_lines[-1]), 'error': 'CalculationFailed: SCF not converged'}
    failed = '\n'.join([*md_lines[:2], json.dumps(footer)])
    results, calcfunction = TbliteMdParser.parse_from_node(calc_job_node({'trajectory.jsonl': failed}))
    assert calcfunction.exit_status == 411 and 'SCF not converged' in calcfunction.exit_message
    assert calcfunction.exit_message.startswith('The calculator failed after')
    assert results['trajectory'].numsteps == 1
