"""Dense Ewald matrix of Gaussian charges against an independent reciprocal-space sum and known limits."""

from __future__ import annotations

import math

import numpy as np
import pytest

from aiida_lisei.science.ewald import COULOMB_CONSTANT, ewald_energy_matrix, gaussian_ewald_energy_matrix


def _system(n: int = 5, seed: int = 4):
    rng = np.random.default_rng(seed)
    cell = np.array([[7.2, 0.0, 0.0], [0.9, 6.8, 0.0], [-0.5, 0.7, 7.5]])  # triclinic
    positions = rng.random((n, 3)) @ cell
    widths = rng.uniform(0.9, 1.3, size=n)
    return positions, cell, widths


def _reciprocal_only(positions: np.ndarray, cell: np.ndarray, widths: np.ndarray) -> np.ndarray:
    """``M`` of Gaussian charges as a pure k-space sum: the pair kernel is already smooth.

    ``M_ij = k_e [(4π/V) Σ_{k≠0} exp(-s²k²/2) cos(k·r_ij)/k² - 2π s²/V]`` with ``s² = s_i² + s_j²``
    (the self-energy is included: it cancels the Ewald self term of the same width).
    """
    volume = abs(np.linalg.det(cell))
    kcell = 2.0 * math.pi * np.linalg.inv(cell).T
    n = 12
    grid = np.stack(np.meshgrid(*[np.arange(-n, n + 1)] * 3, indexing='ij'), axis=-1).reshape(-1, 3)
    kvecs = grid[np.any(grid != 0, axis=1)] @ kcell
    ksq = np.einsum('ij,ij->i', kvecs, kvecs)
    s2 = widths[:, None] ** 2 + widths[None, :] ** 2
    delta = positions[:, None, :] - positions[None, :, :]
    matrix = np.empty((len(widths), len(widths)))
    for i in range(len(widths)):
        for j in range(len(widths)):
            terms = np.exp(-0.5 * s2[i, j] * ksq) * np.cos(kvecs @ delta[i, j]) / ksq
            matrix[i, j] = 4.0 * math.pi / volume * terms.sum() - 2.0 * math.pi * s2[i, j] / volume
    return COULOMB_CONSTANT * matrix


def test_equals_reciprocal_space_sum():
    positions, cell, widths = _system()
    matrix = gaussian_ewald_energy_matrix(positions, cell, widths, accuracy=1e-12)
    reference = _reciprocal_only(positions, cell, widths)
    assert np.abs(matrix - reference).max() < 1e-8 * np.abs(reference).max()


@pytest.mark.parametrize('alpha', [0.3, 0.5, 0.8])
def test_independent_of_splitting_parameter(alpha):
    positions, cell, widths = _system()
    reference = gaussian_ewald_energy_matrix(positions, cell, widths, accuracy=1e-12)
    matrix = gaussian_ewald_energy_matrix(positions, cell, widths, alpha=alpha, accuracy=1e-12)
    assert np.abs(matrix - reference).max() < 1e-7


def test_narrow_gaussians_are_point_charges():
    """For widths → 0 (and without the self-energy) the matrix tends to the point-charge Ewald matrix."""
    positions, cell, _ = _system()
    widths = np.full(len(positions), 0.05)
    matrix = gaussian_ewald_energy_matrix(positions, cell, widths, self_energy=False)
    assert np.allclose(matrix, ewald_energy_matrix(positions, cell), atol=1e-6)
    with_self = gaussian_ewald_energy_matrix(positions, cell, widths)
    assert np.allclose(np.diag(with_self - matrix), COULOMB_CONSTANT / (math.sqrt(math.pi) * widths))


def test_positive_definite_and_symmetric():
    """Gaussian charges (with their self-energy) have a positive semi-definite Coulomb matrix."""
    positions, cell, widths = _system(n=12, seed=9)
    positions[1] = positions[0] + [0.4, 0.0, 0.0]  # a close pair: point charges would be indefinite here
    matrix = gaussian_ewald_energy_matrix(positions, cell, widths)
    assert np.allclose(matrix, matrix.T)
    # the neutralising-background constant only shifts the 1-direction: test charge-neutral vectors
    basis = np.linalg.svd(np.ones((1, len(widths))))[2][1:]
    assert np.linalg.eigvalsh(basis @ matrix @ basis.T).min() > 0.0


def test_rejects_bad_widths():
    positions, cell, widths = _system()
    with pytest.raises(ValueError, match='widths'):
        gaussian_ewald_energy_matrix(positions, cell, widths[:-1])
    with pytest.raises(ValueError, match='widths'):
        gaussian_ewald_energy_matrix(positions, cell, -widths)
