"""Dense Ewald summation against known Madelung constants and its invariances."""

from __future__ import annotations

import numpy as np
import pytest
from ase.build import bulk

from aiida_lisei.science.ewald import COULOMB_CONSTANT, ewald_energy, ewald_energy_matrix

NACL_MADELUNG = 1.747565
CSCL_MADELUNG = 1.762675


def _ionic(atoms, cation: str) -> np.ndarray:
    return np.array([1.0 if s == cation else -1.0 for s in atoms.get_chemical_symbols()])


@pytest.mark.parametrize('cubic', [True, False])
def test_rocksalt_madelung(cubic):
    """E per ion pair = -M k_e / r0 with r0 = a/2, for the conventional and the primitive fcc cell."""
    a = 5.64
    atoms = bulk('NaCl', 'rocksalt', a=a, cubic=cubic)
    energy = ewald_energy(atoms.positions, atoms.cell[:], _ionic(atoms, 'Na'))
    madelung = -energy / (len(atoms) / 2) * (a / 2) / COULOMB_CONSTANT
    assert madelung == pytest.approx(NACL_MADELUNG, abs=2e-6)


def test_cesium_chloride_madelung():
    a = 4.12
    atoms = bulk('CsCl', 'cesiumchloride', a=a)
    energy = ewald_energy(atoms.positions, atoms.cell[:], [1.0, -1.0])
    assert -energy * (a * np.sqrt(3) / 2) / COULOMB_CONSTANT == pytest.approx(CSCL_MADELUNG, abs=2e-6)


def _random_system(n: int = 12, seed: int = 3, neutral: bool = True):
    rng = np.random.default_rng(seed)
    cell = np.array([[7.0, 0.0, 0.0], [1.2, 6.5, 0.0], [-0.8, 0.6, 8.3]])  # triclinic
    positions = rng.random((n, 3)) @ cell
    charges = rng.normal(size=n)
    if neutral:
        charges -= charges.mean()
    return positions, cell, charges


@pytest.mark.parametrize('neutral', [True, False])
def test_independent_of_splitting_parameter(neutral):
    """The total energy does not depend on alpha (charged cells: with the neutralising background)."""
    positions, cell, charges = _random_system(neutral=neutral)
    energies = [ewald_energy(positions, cell, charges, alpha=alpha) for alpha in (None, 0.25, 0.45, 0.9)]
    assert np.ptp(energies) < 1e-6 * max(1.0, abs(energies[0]))


def test_matrix_properties():
    """Symmetric; ½ qᵀMq is the energy; invariant to translations and to wrapping atoms into the cell."""
    positions, cell, charges = _random_system()
    matrix = ewald_energy_matrix(positions, cell)
    assert np.allclose(matrix, matrix.T)
    assert 0.5 * charges @ matrix @ charges == pytest.approx(
        ewald_energy(positions, cell, charges), rel=1e-12
    )
    moved = positions + [0.3, -1.7, 2.2] + 2 * cell[0] - cell[2]
    assert np.allclose(ewald_energy_matrix(moved, cell), matrix, atol=1e-7)
    assert np.allclose(np.diag(matrix), matrix[0, 0])  # one self term for every site


def test_scales_as_inverse_length():
    positions, cell, charges = _random_system()
    assert ewald_energy(2 * positions, 2 * cell, charges) == pytest.approx(
        0.5 * ewald_energy(positions, cell, charges), rel=1e-7
    )


def test_errors():
    positions, cell, charges = _random_system()
    with pytest.raises(ValueError, match='charges'):
        ewald_energy(positions, cell, charges[:-1])
    with pytest.raises(ValueError, match='singular'):
        ewald_energy_matrix(positions, np.zeros((3, 3)))
    with pytest.raises(ValueError, match='alpha'):
        ewald_energy_matrix(positions, cell, alpha=-1.0)
