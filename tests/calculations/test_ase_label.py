"""Tests of ``TbliteCalculation`` (``lisei.tblite``): validation, the submission folder, and real runs.

The unit-convention test labels the same frames through the CalcJob and with a direct ASE ``TBLite``
evaluation: energies (eV), forces (eV/Å) and virials (``-stress * V``, eV) must agree.
"""

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
from aiida.plugins import CalculationFactory
from ase import Atoms
from ase.build import bulk
from tblite.ase import TBLite

from aiida_lisei.data.frames import resolve_frame_tags
from aiida_lisei.engines.calculators import CALCULATORS
from aiida_lisei.formats.frames_npz import read_structures

TbliteCalculation = CalculationFactory('lisei.tblite')


@pytest.fixture
def tblite_code(venv_code) -> orm.InstalledCode:
    """This environment's ``lisei-tblite`` as a code on ``localhost``."""
    return venv_code('lisei-tblite', 'lisei.tblite')


def li2s(amplitude: float = 0.0, seed: int = 0) -> Atoms:
    """Antifluorite Li2S, conventional cell (Li8S4, a = 5.70 Å), displaced by a seeded normal noise (Å)."""
    atoms = bulk('SLi2', 'fluorite', a=5.70, cubic=True)
    atoms.positions += np.random.default_rng(seed).normal(scale=amplitude, size=atoms.positions.shape)
    return atoms


def structures(*frames: Atoms) -> dict[str, orm.StructureData]:
    """Return ``{'frame_<i>': StructureData}`` of ``frames``."""
    return {f'frame_{index}': orm.StructureData(ase=atoms) for index, atoms in enumerate(frames)}


def inputs(code: orm.InstalledCode, frames: dict[str, orm.StructureData], **extra) -> dict:
    """Return complete inputs for a batch of ``frames``."""
    return {
        'code': code,
        'structures': frames,
        'parameters': orm.Dict({'method': 'GFN1-xTB', 'electronic_temperature': 300.0}),
        'system_label': orm.Str('li2s'),
        **extra,
    }


def test_spec() -> None:
    """One serial process; the exit codes sit in their ranges; 300s and 400 invalidate the cache."""
    options = TbliteCalculation.spec().inputs['metadata']['options']
    assert options['resources'].default() == {'num_machines': 1, 'num_mpiprocs_per_machine': 1}
    assert options['withmpi'].default is False
    assert options['parser_name'].default == 'lisei.tblite'
    codes = TbliteCalculation.exit_codes
    assert [codes[name].status for name in codes if not name.startswith('ERROR_SCHEDULER')][-5:] == [
        302,
        310,
        312,
        400,
        410,
    ]
    assert all(
        codes[name].invalidates_cache == (codes[name].status < 410)
        for name in codes
        if codes[name].status >= 300
    )


def overlap() -> Atoms:
    """Li2S with two atoms 0.3 Å apart."""
    atoms = li2s()
    atoms.positions[1] = atoms.positions[0] + [0.3, 0.0, 0.0]
    return atoms


@pytest.mark.parametrize(
    ('frames', 'extra', 'message'),
    [
        ({}, {}, 'the batch is empty'),
        ({'a': overlap()}, {}, 'structure `a`: atoms 0 and 1 are 0.300 Å apart'),
        ({'a': Atoms('LiU', [[0, 0, 0], [2, 2, 2]], cell=[4, 4, 4], pbc=True)}, {}, "elements ['U']"),
        (
            {'a': Atoms('Li2S', [[0, 0, 0], [2, 2, 2], [0, 2, 2]], cell=[4, 4, 4], pbc=False)},
            {},
            'not periodic',
        ),
        ({'a': li2s(), 'b': bulk('Li', 'bcc', a=3.42, cubic=True)}, {}, 'different atom lists'),
        ({'a': li2s()}, {'parameters': {'electronic_temperature': 0.0}}, 'must be a positive'),
        ({'a': li2s()}, {'parameters': {'method': 'GFN0-xTB'}}, 'is not one of'),
        ({'a': li2s()}, {'tags': {'b': {'temperature': 300}}}, 'not a key of `structures`'),
    ],
)
def test_validation(tblite_code, frames: dict, extra: dict, message: str) -> None:
    """Invalid batches are refused before submission, with a message naming the frame."""
    batch = {key: orm.StructureData(ase=atoms) for key, atoms in frames.items()}
    extra = {name: orm.Dict(value) for name, value in extra.items()}
    error = TbliteCalculation.spec().inputs.validate(inputs(tblite_code, batch, **extra))
    assert error is not None
    assert message in error.message


def test_resolve_frame_tags() -> None:
    """Scalar tags apply to every frame, a dict under a frame key overrides them for that frame."""
    tags = {'source': 'aimd', 'temperature': 300, 'b': {'temperature': 600, 'iteration': 2}}
    assert resolve_frame_tags(tags, ['a', 'b']) == {
        'a': {'source': 'aimd', 'temperature': 300},
        'b': {'source': 'aimd', 'temperature': 600, 'iteration': 2},
    }
    assert resolve_frame_tags(None, ['a']) == {'a': {}}


def test_prepare_for_submission(tblite_code, tmp_path: Path) -> None:
    """Frames in sorted key order and the complete parameters are written; results and stdout retrieved."""
    batch = {'z': orm.StructureData(ase=li2s(0.05, seed=1)), 'a': orm.StructureData(ase=li2s())}
    process = instantiate_process(get_manager().get_runner(), TbliteCalculation, **inputs(tblite_code, batch))
    calc_info = process.prepare_for_submission(Folder(str(tmp_path)))

    assert sorted(path.name for path in tmp_path.iterdir()) == ['frames.npz', 'parameters.json']
    frames = read_structures(tmp_path / 'frames.npz')
    assert [key for key, _ in frames] == ['a', 'z']
    assert np.array_equal(frames[1][1].positions, batch['z'].get_ase().positions)
    assert json.loads((tmp_path / 'parameters.json').read_text()) == CALCULATORS['tblite'].defaults
    (code_info,) = calc_info.codes_info
    assert code_info.cmdline_params == [
        '--frames',
        'frames.npz',
        '--parameters',
        'parameters.json',
        '--output',
        'results.jsonl',
    ]
    assert code_info.withmpi is False
    assert sorted(calc_info.retrieve_list) == ['aiida.out', 'results.jsonl']


def test_unit_convention(tblite_code) -> None:
    """The CalcJob's labels equal a direct ASE evaluation: eV, eV/Å and virial = -stress * V (eV)."""
    frames = [li2s(0.05, seed=3), li2s(0.05, seed=4)]
    tags = {'source': 'perturbation', 'temperature': 300, 'frame_1': {'temperature': 600}}
    results, node = run_get_node(
        TbliteCalculation, **inputs(tblite_code, structures(*frames), tags=orm.Dict(tags))
    )

    assert node.is_finished_ok, node.exit_message
    assert 'failed_frames' not in results
    labels = results['labels']
    assert labels.level_of_theory == {
        'engine': 'tblite',
        'method': 'GFN1-xTB',
        'version': CALCULATORS['tblite'].version(),
        'settings': {'accuracy': 1, 'electronic_temperature': 300},
    }
    assert labels.type_map == ['Li', 'P', 'S', 'Cl']
    system = labels.get_system('li2s')
    assert system.labelled_by == [node.uuid, node.uuid]
    assert system.tags == [
        {'source': 'perturbation', 'temperature': 300},
        {'source': 'perturbation', 'temperature': 600},
    ]
    for index, atoms in enumerate(frames):
        atoms = atoms.copy()
        atoms.calc = TBLite(method='GFN1-xTB', electronic_temperature=300, verbosity=0)
        virial = -atoms.get_stress(voigt=False) * atoms.get_volume()
        np.testing.assert_allclose(system.coords[index], atoms.positions, rtol=0, atol=1e-12)
        assert system.energies[index] == pytest.approx(atoms.get_potential_energy(), rel=1e-6)
        np.testing.assert_allclose(system.forces[index], atoms.get_forces(), rtol=1e-6, atol=1e-8)
        np.testing.assert_allclose(system.virials[index], virial, rtol=1e-6, atol=1e-8)
        assert np.abs(system.forces[index]).max() > 0.1  # the frames are not trivially at equilibrium
