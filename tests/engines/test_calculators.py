"""Tests of the ASE calculator registry: parameters, levels of theory, and CHGNet's forces and stress."""

from __future__ import annotations

import numpy as np
import pytest
from ase import Atoms
from ase.build import bulk
from ase.calculators.fd import calculate_numerical_forces, calculate_numerical_stress

from aiida_lisei.data.level_of_theory import LevelOfTheoryError, check_same_level, level_of_theory_key
from aiida_lisei.engines.calculators import CALCULATORS, get_calculator

CHGNET = CALCULATORS['chgnet']


def strained_li16() -> Atoms:
    """bcc Li16 (a = 3.44 Å) under a general 1-2 % strain, rattled by 0.05 Å (seeded)."""
    atoms = bulk('Li', 'bcc', a=3.44, cubic=True).repeat(2)
    strain = np.array([[0.02, 0.01, 0.0], [0.01, -0.015, 0.005], [0.0, 0.005, 0.01]])
    atoms.set_cell(atoms.cell.array @ (np.eye(3) + strain), scale_atoms=True)
    atoms.rattle(0.05, seed=1)
    return atoms


def test_chgnet_parameters() -> None:
    """Defaults fill missing keys; unknown models, keys and thread counts are refused."""
    assert CHGNET.check_parameters({}) == {'model': '0.3.0', 'threads': 1}
    for bad, match in [
        ({'model': '0.1.0'}, 'model'),
        ({'threads': 0}, 'threads'),
        ({'threads': True}, 'threads'),
        ({'method': 'GFN1-xTB'}, 'unknown chgnet parameters'),
    ]:
        with pytest.raises(ValueError, match=match):
            CHGNET.check_parameters(bad)
    with pytest.raises(ValueError, match=r"unknown calculator 'mace'; known: \['chgnet', 'tblite'\]"):
        get_calculator('mace')


def test_levels_of_theory_differ() -> None:
    """CHGNet is its own level (method ``CHGNet-<model>``, threads left out), never tblite's."""
    chgnet = CHGNET.level_of_theory({'threads': 4}, '0.4.2')
    assert chgnet == {'engine': 'chgnet', 'method': 'CHGNet-0.3.0', 'version': '0.4.2', 'settings': {}}
    assert chgnet == CHGNET.level_of_theory({}, '0.4.2')
    assert level_of_theory_key(chgnet).startswith('chgnet/CHGNet-0.3.0/')
    assert CHGNET.level_of_theory({'model': 'r2scan'})['method'] == 'CHGNet-r2scan'
    tblite = CALCULATORS['tblite'].level_of_theory({'max_iterations': 50}, '0.8.0')
    assert tblite['settings'] == {'electronic_temperature': 300.0, 'accuracy': 1.0}
    with pytest.raises(LevelOfTheoryError):
        check_same_level(chgnet, tblite)
    with pytest.raises(LevelOfTheoryError):
        check_same_level(chgnet, CHGNET.level_of_theory({'model': '0.2.0'}, '0.4.2'))


def test_chgnet_forces_and_stress_are_derivatives() -> None:
    """CHGNet's forces are -dE/dx and its stress (eV/Å³, ASE sign) is 1/V dE/dε, by central differences
    on a strained, rattled Li16: its virials (-stress * V) can be trained on."""
    atoms = strained_li16()
    atoms.calc = CHGNET.make_calculator({})
    forces, stress = atoms.get_forces(), atoms.get_stress(voigt=False)
    assert np.abs(forces).max() > 0.05 and np.abs(stress).max() > 1e-3  # not at a minimum
    np.testing.assert_allclose(stress, stress.T, atol=1e-7)
    # float32 energies (~1e-6 eV on -30 eV) limit the step: 0.01 Å and 1 % strain are well in the linear range
    numerical_forces = calculate_numerical_forces(atoms, eps=1e-2)
    np.testing.assert_allclose(forces, numerical_forces, atol=2e-3)
    numerical_stress = calculate_numerical_stress(atoms, eps=1e-2, voigt=False, force_consistent=False)
    np.testing.assert_allclose(stress, numerical_stress, atol=5e-5)
    # compressing the cell raises the pressure: the ASE sign (negative stress under compression)
    compressed = bulk('Li', 'bcc', a=3.20, cubic=True).repeat(2)
    compressed.calc = CHGNET.make_calculator({})
    assert np.trace(compressed.get_stress(voigt=False)) < 0
