"""Real VASP outputs into training frames through :func:`vasp_training_frames` (the workchain's conversion).

The quantities come from aiida-vasp's own vasprun.xml content parser (what ``VaspParser`` puts in
``misc``); the reference is an independent read with ``ase.io.read(..., format='vasp-xml')``.
Files: the 104-atom Zn3(PS4)2 run of aiida-vasp's test data (``tests/fixtures/vasp/registry``) and the
two vasprun.xml files in ASE's wheel.
"""

from __future__ import annotations

from pathlib import Path

import ase
import ase.io
import numpy as np
import pytest
from aiida_vasp.parsers.content_parsers.vasprun import VasprunParser

from aiida_lisei.data.training_set import ase_virial
from aiida_lisei.formats.vasp import (
    KBAR_TO_EV_PER_A3,
    VaspOutputError,
    vasp_level_of_theory,
    vasp_method,
    vasp_training_frames,
    vasp_virial,
)

ZN_ENTRY = Path(__file__).parents[1] / 'fixtures' / 'vasp' / 'registry' / 'zn3ps42_phonon_disp'
ASE_VASP = Path(ase.__file__).parent / 'test' / 'testdata' / 'vasp'
VASPRUNS = {
    'zn3ps42': ZN_ENTRY / 'out' / 'vasprun.xml',
    'ase_dfpt': ASE_VASP / 'vasprun_dfpt.xml',
    'ase_pstress': ASE_VASP / 'vasprun_pstress.xml',
}
LEVEL = vasp_level_of_theory({'gga': 'PE', 'encut': 600}, 'PBE.54', {'Li': 'Li_sv'}, 'energy_free')


def parse_misc(path: Path) -> dict:
    """Energies, forces and stress of ``path`` as aiida-vasp's parser puts them in ``misc``."""
    with path.open('rb') as handle:
        parser = VasprunParser(
            handler=handle, settings={'energy_type': ['energy_free', 'energy_extrapolated']}
        )
        return {key: parser.get_quantity(key) for key in ('total_energies', 'forces', 'stress')}


def frames_from(path: Path, energy_type: str = 'energy_free'):
    """Convert ``path`` to training frames; return them with ASE's independent read of the last step."""
    atoms = ase.io.read(path, format='vasp-xml', index=-1)
    level = {**LEVEL, 'energy_type': energy_type}
    frames = vasp_training_frames(
        atoms.get_chemical_symbols(), atoms.positions, atoms.cell.array, parse_misc(path),
        system_label='test', level_of_theory=level,
    )  # fmt: skip
    return frames, atoms


@pytest.mark.parametrize('name', ['zn3ps42', 'ase_dfpt'])
def test_labels_match_ase(name):
    """Energy (free and sigma -> 0), forces and DeePMD virial equal ASE's read of the same vasprun.xml."""
    frames, atoms = frames_from(VASPRUNS[name])
    system = frames.systems[0]
    assert frames.type_map == list(dict.fromkeys(atoms.get_chemical_symbols()))
    assert system.energies[0] == pytest.approx(atoms.get_potential_energy(force_consistent=True), abs=1e-8)
    np.testing.assert_allclose(system.forces[0], atoms.get_forces(), atol=1e-8)
    np.testing.assert_allclose(system.virials[0], ase_virial(atoms), atol=1e-6)
    extrapolated, _ = frames_from(VASPRUNS[name], 'energy_extrapolated')
    assert extrapolated.systems[0].energies[0] == pytest.approx(atoms.get_potential_energy(), abs=1e-8)


def test_zn3ps42_labels_are_the_runs_numbers():
    """The 104-atom run: F = -459.8761413 eV, the displaced atom's force and OUTCAR's ``in kB`` line."""
    frames, atoms = frames_from(VASPRUNS['zn3ps42'])
    system = frames.systems[0]
    assert system.natoms == 104
    assert system.energies[0] == pytest.approx(-459.8761413, abs=1e-7)
    np.testing.assert_allclose(system.forces[0][0], [-0.232721, -0.011159, 0.034497], atol=1e-6)
    in_kb = np.array([0.57128, 0.52553, -0.56768, 0.01325, 0.00310, -0.11017])  # xx yy zz xy yz zx
    virial = system.virials[0]
    voigt = [virial[0, 0], virial[1, 1], virial[2, 2], virial[0, 1], virial[1, 2], virial[2, 0]]
    # OUTCAR prints 5 decimals: 5e-6 kBar is 7e-6 eV on this 2153 Å^3 cell
    np.testing.assert_allclose(voigt, in_kb * KBAR_TO_EV_PER_A3 * atoms.get_volume(), atol=2e-5)


def test_pstress_shifts_the_energy_by_pv():
    """With PSTRESS, VASP's (and aiida-vasp's) free energy includes p·V: why the workchain refuses PSTRESS."""
    frames, atoms = frames_from(VASPRUNS['ase_pstress'])
    with VASPRUNS['ase_pstress'].open() as handle:
        pstress = float(next(line for line in handle if 'PSTRESS' in line).split('>')[1].split('<')[0])
    shift = frames.systems[0].energies[0] - atoms.get_potential_energy(force_consistent=True)
    assert pstress != 0
    assert shift == pytest.approx(pstress * KBAR_TO_EV_PER_A3 * atoms.get_volume(), rel=1e-6)


def test_virial_sign_positive_under_compression():
    """VASP stress > 0 (compressed) gives a positive DeePMD virial, -stress_ASE * V."""
    cell = np.eye(3) * 2.0
    np.testing.assert_allclose(
        vasp_virial(np.eye(3) * 10.0, cell), np.eye(3) * 10.0 * KBAR_TO_EV_PER_A3 * 8.0
    )
    with pytest.raises(VaspOutputError, match='shape'):
        vasp_virial(np.zeros(3), cell)


def test_missing_quantities_are_named():
    """A missing energy type or forces says which parser setting to change."""
    misc = parse_misc(VASPRUNS['ase_dfpt'])
    args = (['Si', 'Si'], np.zeros((2, 3)), np.eye(3) * 5)
    with pytest.raises(VaspOutputError, match=r"'energy_no_entropy'.*parser_settings"):
        vasp_training_frames(
            *args, misc, system_label='x', level_of_theory={**LEVEL, 'energy_type': 'energy_no_entropy'}
        )
    with pytest.raises(VaspOutputError, match="no 'forces'"):
        vasp_training_frames(*args, {**misc, 'forces': None}, system_label='x', level_of_theory=LEVEL)
    with pytest.raises(VaspOutputError, match='not in type_map'):
        vasp_training_frames(*args, misc, system_label='x', level_of_theory=LEVEL, type_map=['Li'])


@pytest.mark.parametrize(
    ('incar', 'method'),
    [
        ({'GGA': 'PE'}, 'PBE'),
        ({'gga': 'ps'}, 'PBEsol'),
        ({}, 'GGA-from-POTCAR'),
        ({'metagga': 'R2SCAN', 'gga': 'PE'}, 'R2SCAN'),
        ({'gga': 'PE', 'lhfcalc': True}, 'hybrid-PBE'),
    ],
)
def test_vasp_method(incar, method):
    """The functional is named from GGA/METAGGA/LHFCALC."""
    assert vasp_method(incar) == method


def test_level_of_theory_keeps_hamiltonian_tags_only():
    """k-points, LREAL, EDIFF and parallel settings are not part of the level of theory."""
    incar = {
        'ENCUT': 600,
        'PREC': 'Accurate',
        'ISMEAR': 0,
        'SIGMA': 0.05,
        'EDIFF': 1e-6,
        'LREAL': 'Auto',
        'NCORE': 4,
    }
    level = vasp_level_of_theory(incar, 'PBE.54', {'Li': 'Li_sv'}, 'energy_free')
    assert level['incar'] == {'encut': 600, 'prec': 'accurate', 'ismear': 0, 'sigma': 0.05}
    assert (level['engine'], level['method'], level['energy_type']) == (
        'vasp',
        'GGA-from-POTCAR',
        'energy_free',
    )
    with pytest.raises(ValueError, match='energy_type'):
        vasp_level_of_theory(incar, 'PBE.54', {}, 'toten')
