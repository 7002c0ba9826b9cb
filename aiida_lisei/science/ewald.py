"""Dense Ewald summation of point charges in a 3D-periodic cell (no AiiDA imports).

The interaction matrix ``M`` (eV per e², positions in Å) is built once so that the
electrostatic energy of any charge vector ``q`` (in e) is ``E = ½ qᵀ M q`` (eV).
``M`` contains the real-space (erfc) and reciprocal-space parts, the Gaussian
self-interaction on its diagonal and the uniform neutralising-background term, so
``E`` is independent of the splitting parameter ``alpha`` for any total charge
(for a neutral system the background term vanishes). It is the reference for the
charge-equilibration solver and fine for ``N ≲ 500`` sites (memory and time ∝ N²).
"""

from __future__ import annotations

import math

import numpy as np
from scipy.special import erfc

__all__ = (
    'COULOMB_CONSTANT',
    'default_alpha',
    'ewald_energy',
    'ewald_energy_matrix',
    'gaussian_ewald_energy_matrix',
)

#: e² / (4 π ε0) in eV·Å (CODATA 2018, as in ASE's units).
COULOMB_CONSTANT = 14.399645353


def _plane_spacings(cell: np.ndarray) -> np.ndarray:
    """Distances between neighbouring lattice planes (same unit as ``cell``) for the three axes."""
    reciprocal = np.linalg.inv(cell).T  # rows b_i with a_i · b_j = δ_ij
    return 1.0 / np.linalg.norm(reciprocal, axis=1)


def default_alpha(cell: np.ndarray, accuracy: float = 1e-8) -> float:
    """Splitting parameter (1/Å) whose real-space cut-off equals the smallest plane spacing of ``cell``.

    With minimum-image differences this needs only the 27 nearest images in real space, while the
    number of reciprocal vectors (summed by matrix products) stays ≈ 420 for any cell size.
    """
    cell = np.asarray(cell, dtype=float).reshape(3, 3)
    return math.sqrt(-math.log(accuracy)) / float(_plane_spacings(cell).min())


def _integer_ranges(cell: np.ndarray, cutoff: float, half_width: float) -> list[np.ndarray]:
    """Integer ranges along each lattice vector covering a sphere of ``cutoff`` (Å or 1/Å).

    ``half_width`` is the largest fractional offset of the centre (0.5 for minimum-image vectors).
    """
    counts = np.floor(cutoff / _plane_spacings(cell) + half_width).astype(int)
    return [np.arange(-n, n + 1) for n in counts]


def _lattice_grid(cell: np.ndarray, cutoff: float, half_width: float = 0.0) -> np.ndarray:
    """Integer triples (rows) whose lattice vectors cover a sphere of ``cutoff`` (see ``_integer_ranges``)."""
    ranges = _integer_ranges(cell, cutoff, half_width)
    return np.stack(np.meshgrid(*ranges, indexing='ij'), axis=-1).reshape(-1, 3)


def ewald_energy_matrix(
    positions: np.ndarray, cell: np.ndarray, alpha: float | None = None, accuracy: float = 1e-8
) -> np.ndarray:
    """Return the symmetric Ewald interaction matrix ``M`` (eV/e²) with ``E = ½ qᵀ M q``.

    :param positions: (N, 3) Cartesian positions in Å.
    :param cell: (3, 3) lattice vectors in Å as rows; the cell is periodic in all three directions.
    :param alpha: Gaussian splitting parameter in 1/Å; :func:`default_alpha` if ``None``.
    :param accuracy: relative truncation error of both sums, sets the cut-offs
        ``r_c = s/alpha`` and ``k_c = 2 s alpha`` with ``s = sqrt(-ln accuracy)``.
    :return: (N, N) matrix; off-diagonal ``M_ij`` is the potential at ``i`` of a unit charge
        at ``j`` and all its images; the diagonal holds the interaction of a charge with its
        own images minus its Gaussian self energy; every element includes ``-π/(V alpha²)``
        (neutralising background).
    """
    positions = np.asarray(positions, dtype=float).reshape(-1, 3)
    cell = np.asarray(cell, dtype=float).reshape(3, 3)
    volume = abs(np.linalg.det(cell))
    if volume < 1e-12:
        raise ValueError('the cell is singular')
    if not 0.0 < accuracy < 1.0:
        raise ValueError(f'accuracy must be in (0, 1), got {accuracy}')
    alpha = default_alpha(cell, accuracy) if alpha is None else float(alpha)
    if alpha <= 0.0:
        raise ValueError(f'alpha must be positive, got {alpha}')
    scale = math.sqrt(-math.log(accuracy))
    r_cut, k_cut = scale / alpha, 2.0 * scale * alpha

    # Minimum-image differences: fractional components in [-1/2, 1/2).
    fractional = np.linalg.solve(cell.T, positions.T).T
    frac_delta = fractional[:, None, :] - fractional[None, :, :]
    delta = (frac_delta - np.round(frac_delta)) @ cell  # r_i - r_j (+ a lattice vector), (N, N, 3)

    real = np.zeros(delta.shape[:2])
    for shift in _lattice_grid(cell, r_cut, half_width=0.5) @ cell:
        dist = np.linalg.norm(delta + shift, axis=-1)
        mask = (dist < r_cut) & (dist > 1e-10)
        real[mask] += erfc(alpha * dist[mask]) / dist[mask]

    # Reciprocal space: one of each ±k pair (k != 0), counted twice in the weights.
    kcell = 2.0 * math.pi * np.linalg.inv(cell).T
    grid = _lattice_grid(kcell, k_cut)
    positive = (grid[:, 0] > 0) | (
        (grid[:, 0] == 0) & ((grid[:, 1] > 0) | ((grid[:, 1] == 0) & (grid[:, 2] > 0)))
    )
    kvecs = grid[positive] @ kcell
    ksq = np.einsum('ij,ij->i', kvecs, kvecs)
    kvecs, ksq = kvecs[ksq < k_cut**2], ksq[ksq < k_cut**2]
    weights = 2.0 * (4.0 * math.pi / volume) * np.exp(-ksq / (4.0 * alpha**2)) / ksq
    phase = positions @ kvecs.T  # (N, K)
    cos, sin = np.cos(phase), np.sin(phase)
    recip = (cos * weights) @ cos.T + (sin * weights) @ sin.T

    matrix = real + recip - math.pi / (volume * alpha**2)
    matrix[np.diag_indices_from(matrix)] -= 2.0 * alpha / math.sqrt(math.pi)
    matrix = 0.5 * (matrix + matrix.T)
    return COULOMB_CONSTANT * matrix


def ewald_energy(
    positions: np.ndarray,
    cell: np.ndarray,
    charges: np.ndarray,
    alpha: float | None = None,
    accuracy: float = 1e-8,
) -> float:
    """Electrostatic energy (eV) of point ``charges`` (e) at ``positions`` (Å) in a periodic ``cell`` (Å)."""
    charges = np.asarray(charges, dtype=float).ravel()
    matrix = ewald_energy_matrix(positions, cell, alpha=alpha, accuracy=accuracy)
    if matrix.shape[0] != charges.size:
        raise ValueError(f'got {charges.size} charges for {matrix.shape[0]} positions')
    return float(0.5 * charges @ matrix @ charges)


def gaussian_ewald_energy_matrix(
    positions: np.ndarray,
    cell: np.ndarray,
    widths: np.ndarray,
    alpha: float | None = None,
    accuracy: float = 1e-8,
    self_energy: bool = True,
) -> np.ndarray:
    """Return ``M`` (eV/e²) with ``E = ½ qᵀ M q`` for spherical Gaussian charges in a periodic ``cell``.

    Charge ``i`` is ``q_i (2π s_i²)^(-3/2) exp(-|r - r_i|²/(2 s_i²))`` with width ``s_i = widths[i]``;
    two such charges interact through ``k_e erf(r/√(2(s_i²+s_j²)))/r``. ``M`` is :func:`ewald_energy_matrix`
    (point charges) minus ``k_e erfc(r/√(2(s_i²+s_j²)))/r`` summed over all pairs and periodic images (a
    charge's own images included) plus, with ``self_energy``, the self-energy ``k_e/(√π s_i)`` on the
    diagonal.

    :param widths: (N,) Gaussian standard deviations ``s_i`` in Å.
    :param accuracy: truncation of the Ewald sums and of the erfc correction.
    """
    positions = np.asarray(positions, dtype=float).reshape(-1, 3)
    cell = np.asarray(cell, dtype=float).reshape(3, 3)
    widths = np.asarray(widths, dtype=float).ravel()
    if widths.shape != (len(positions),) or np.any(widths <= 0.0):
        raise ValueError('widths must hold one positive width per position')
    matrix = ewald_energy_matrix(positions, cell, alpha=alpha, accuracy=accuracy) / COULOMB_CONSTANT

    pair_width = np.sqrt(2.0 * (widths[:, None] ** 2 + widths[None, :] ** 2))
    r_cut = float(pair_width.max()) * math.sqrt(-math.log(accuracy)) * 1.1  # erfc(x) < e^{-x²}
    fractional = np.linalg.solve(cell.T, positions.T).T
    frac_delta = fractional[:, None, :] - fractional[None, :, :]
    delta = (frac_delta - np.round(frac_delta)) @ cell
    for shift in _lattice_grid(cell, r_cut, half_width=0.5) @ cell:
        dist = np.linalg.norm(delta + shift, axis=-1)
        mask = (dist < r_cut) & (dist > 1e-10)
        matrix[mask] -= erfc(dist[mask] / pair_width[mask]) / dist[mask]
    if self_energy:
        matrix[np.diag_indices_from(matrix)] += 1.0 / (math.sqrt(math.pi) * widths)
    matrix = 0.5 * (matrix + matrix.T)
    return COULOMB_CONSTANT * matrix
