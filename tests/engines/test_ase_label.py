"""Tests of the ``lisei-tblite`` / ``lisei-chgnet`` engine (no AiiDA): frame checks, formats, real runs."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from ase import Atoms
from ase.build import bulk
from ase.io import write
from tblite.ase import TBLite

from aiida_lisei.engines.ase_label import label_frames, main_chgnet, main_tblite
from aiida_lisei.engines.calculators import CALCULATORS
from aiida_lisei.formats.frames_npz import read_structures, write_structures
from aiida_lisei.science.geometry import validate_frame

LISEI_TBLITE = Path(sys.executable).parent / 'lisei-tblite'
TBLITE = CALCULATORS['tblite']


def li16(amplitude: float = 0.0, seed: int = 0) -> Atoms:
    """bcc Li, 2x2x2 conventional cells (16 atoms, a = 3.42 Å), displaced by a seeded normal noise (Å)."""
    atoms = bulk('Li', 'bcc', a=3.42, cubic=True).repeat(2)
    atoms.positions += np.random.default_rng(seed).normal(scale=amplitude, size=atoms.positions.shape)
    return atoms


def test_check_parameters() -> None:
    """Defaults fill missing keys; unknown keys, methods and non-positive values are refused."""
    check_parameters = TBLITE.check_parameters
    assert check_parameters({}) == TBLITE.defaults
    assert check_parameters({'electronic_temperature': 1000})['electronic_temperature'] == 1000.0
    for bad, match in [
        ({'electronic_temperature': 0}, 'electronic_temperature must be a positive'),
        ({'electronic_temperature': -300.0}, 'electronic_temperature must be a positive'),
        ({'accuracy': float('nan')}, 'accuracy must be a positive'),
        ({'max_iterations': 0}, 'max_iterations'),
        ({'method': 'PBE'}, 'method'),
        ({'kpoints': [2, 2, 2]}, 'unknown tblite parameters'),
    ]:
        with pytest.raises(ValueError, match=match):
            check_parameters(bad)


def test_validate_frame() -> None:
    """Overlapping atoms (periodic images included), missing periodicity and heavy elements are reported."""
    assert validate_frame(li16()) is None
    overlap = li16()
    overlap.positions[1] = overlap.positions[0] + [0.3, 0.0, 0.0]
    assert 'atoms 0 and 1 are 0.300 Å apart' in validate_frame(overlap)
    across = Atoms('Li2', positions=[[0.1, 0, 0], [4.9, 0, 0]], cell=[5.0, 5.0, 5.0], pbc=True)
    assert '0.200 Å apart' in validate_frame(across)
    slab = li16()
    slab.pbc = [True, True, False]
    assert 'not periodic in 3D' in validate_frame(slab)
    heavy = Atoms('LiOg', positions=[[0, 0, 0], [2, 2, 2]], cell=[4.0, 4.0, 4.0], pbc=True)
    assert validate_frame(heavy) is None
    assert "elements ['Og']" in validate_frame(heavy, max_atomic_number=86)


def test_frames_round_trip(tmp_path: Path) -> None:
    """The npz format is exact; an extxyz file is read with its ``key`` infos."""
    frames = {'b': li16(0.1, seed=1), 'a': bulk('SLi2', 'fluorite', a=5.70, cubic=True)}
    write_structures(tmp_path / 'frames.npz', frames)
    read_back = read_structures(tmp_path / 'frames.npz')
    for (key, atoms), (expected_key, expected) in zip(read_back, frames.items(), strict=True):
        assert key == expected_key
        assert atoms.get_chemical_symbols() == expected.get_chemical_symbols()
        assert np.array_equal(atoms.positions, expected.positions)
        assert np.array_equal(atoms.cell.array, expected.cell.array)
        assert atoms.pbc.all()
    images = [atoms.copy() for atoms in frames.values()]
    for key, atoms in zip(frames, images, strict=True):
        atoms.info['key'] = key
    write(tmp_path / 'frames.xyz', images, format='extxyz')
    assert [key for key, _ in read_structures(tmp_path / 'frames.xyz')] == ['b', 'a']


def test_scf_iteration_cap() -> None:
    """``max_iterations`` reaches tblite: a rattled Li16 (7 SCF cycles) fails with 6, converges with 7."""
    frames = [('rattled', li16(0.3, seed=2))]
    for cap, outcome in ((6, 'failure'), (7, 'frame')):
        _, record, _ = label_frames(frames, 'tblite', {'max_iterations': cap})
        assert record['type'] == outcome, record.get('reason')


def test_console_script_with_failing_frames(tmp_path: Path) -> None:
    """A real batch at default settings: one frame labelled, three failed (SCF, element, overlap)."""
    overlap = li16()
    overlap.positions[1] = overlap.positions[0] + [0.2, 0.0, 0.0]
    frames = {
        'converges': li16(),
        'scf_fails': bulk('SLi2', 'fluorite', a=5.70),  # primitive Li2S: charge sloshing, no convergence
        'no_parameters': Atoms('LiOg', positions=[[0, 0, 0], [2, 2, 2]], cell=[4.0, 4.0, 4.0], pbc=True),
        'overlap': overlap,
    }
    write_structures(tmp_path / 'frames.npz', frames)
    (tmp_path / 'parameters.json').write_text(json.dumps({'method': 'GFN1-xTB'}))
    command = [str(LISEI_TBLITE), '--frames', 'frames.npz', '--parameters', 'parameters.json']
    process = subprocess.run(
        [*command, '--output', 'results.jsonl'], cwd=tmp_path, capture_output=True, text=True, timeout=120
    )
    assert process.returncode == 0, process.stderr

    header, *records, footer = map(json.loads, (tmp_path / 'results.jsonl').read_text().splitlines())
    assert header == {
        'type': 'header',
        'program': 'lisei-tblite',
        'calculator': 'tblite',
        'version': TBLITE.version(),
        'parameters': TBLITE.defaults,
        'nframes': 4,
    }
    assert footer['type'] == 'footer'
    assert (footer['labelled'], footer['failed']) == (1, 3)
    by_key = {record['key']: record for record in records}
    assert [record['key'] for record in records] == list(frames)
    assert by_key['converges']['type'] == 'frame'
    assert by_key['scf_fails']['reason'] == 'CalculationFailed: SCF not converged in 250 cycles'
    assert by_key['no_parameters']['reason'].startswith('InputError: No support for elements with Z >86')
    assert 'atoms 0 and 1 are 0.200 Å apart' in by_key['overlap']['reason']
    assert 'FAILED: CalculationFailed' in process.stdout

    reference = li16()
    reference.calc = TBLite(method='GFN1-xTB', electronic_temperature=300, verbosity=0)
    record = by_key['converges']
    assert record['energy'] == pytest.approx(reference.get_potential_energy(), rel=1e-10)
    np.testing.assert_allclose(record['forces'], reference.get_forces(), atol=1e-10)
    np.testing.assert_allclose(record['stress'], reference.get_stress(voigt=False), atol=1e-12)


def test_console_script_rejects_bad_parameters(tmp_path: Path) -> None:
    """Invalid parameters stop the script with a usage error before any frame is read."""
    (tmp_path / 'parameters.json').write_text(json.dumps({'electronic_temperature': -1}))
    with pytest.raises(SystemExit) as error:
        main_tblite(
            ['--frames', 'x.npz', '--parameters', str(tmp_path / 'parameters.json'), '--output', 'r.jsonl']
        )
    assert error.value.code == 2


def test_chgnet_console_script(tmp_path: Path) -> None:
    """``lisei-chgnet`` labels a batch with CHGNet 0.3.0 (same numbers as its own ASE calculator) and
    fails an overlapping frame and one with isolated atoms (no neighbour within CHGNet's 6 Å graph cutoff);
    a model it does not know is a usage error."""
    from chgnet.model import CHGNet
    from chgnet.model.dynamics import CHGNetCalculator

    overlap = li16()
    overlap.positions[1] = overlap.positions[0] + [0.2, 0.0, 0.0]
    frames = {
        'rattled': li16(0.1, seed=3),
        'li2s': bulk('SLi2', 'fluorite', a=5.70, cubic=True),
        'bad': overlap,
        'isolated': Atoms('Li2', positions=[[0, 0, 0], [10, 10, 10]], cell=[20.0, 20.0, 20.0], pbc=True),
    }
    write_structures(tmp_path / 'frames.npz', frames)
    output = tmp_path / 'results.jsonl'
    assert main_chgnet(['--frames', str(tmp_path / 'frames.npz'), '--output', str(output)]) == 0
    header, *records, footer = map(json.loads, output.read_text().splitlines())
    assert header['calculator'] == 'chgnet' and header['program'] == 'lisei-chgnet'
    assert header['parameters'] == {'model': '0.3.0', 'threads': 1}
    assert (footer['labelled'], footer['failed']) == (2, 2)
    by_key = {record['key']: record for record in records}
    assert 'atoms 0 and 1 are 0.200 Å apart' in by_key['bad']['reason']
    assert by_key['isolated']['reason'].startswith(
        'ValueError: Structure graph_id=None has 2 isolated atom(s)'
    )
    for key in ('rattled', 'li2s'):
        reference = frames[key].copy()
        reference.calc = CHGNetCalculator(CHGNet.load(model_name='0.3.0', verbose=False), use_device='cpu')
        assert by_key[key]['energy'] == pytest.approx(reference.get_potential_energy(), abs=1e-5)
        np.testing.assert_allclose(by_key[key]['forces'], reference.get_forces(), atol=1e-5)
        np.testing.assert_allclose(by_key[key]['stress'], reference.get_stress(voigt=False), atol=1e-7)

    (tmp_path / 'parameters.json').write_text(json.dumps({'model': '0.1.0'}))
    with pytest.raises(SystemExit) as error:
        main_chgnet(['--frames', 'x.npz', '--parameters', str(tmp_path / 'parameters.json'), '--output', 'r'])
    assert error.value.code == 2
