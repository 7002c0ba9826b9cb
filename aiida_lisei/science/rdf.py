"""Radial distribution functions of atom sets and the position of their first peak.

Pure NumPy/SciPy + vesin (no AiiDA imports). Lengths in Å.

:class:`RdfAccumulator` pools the pair distances within a set of atoms (e.g. the Li of a cluster, which
may change from frame to frame) over frames:

``g(r) = H(r) / (Σ_f N_f rho_f 4π r² Δr)`` with ``H`` the histogram of distances (each pair twice),
``N_f`` the set size and ``rho_f = N_f / V_f`` in frame ``f``. For a set that fills the cell this is the
usual g(r) (→ 1 at large r); for a finite cluster g(r) keeps its peak positions but decays with r, and
the running coordination number ``n(r) = Σ_{r' < r} H / Σ_f N_f`` (neighbours per atom) is the
meaningful amplitude. :func:`first_peak_position` locates the first maximum of the Gaussian-smoothed
g(r) with sub-bin precision (a parabola through the three highest grid points).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from scipy.ndimage import gaussian_filter1d

from aiida_lisei.science.environments import neighbour_pairs

__all__ = ('BCC_LI_NN_DISTANCE', 'Rdf', 'RdfAccumulator', 'first_peak_position', 'radial_distribution')

#: Nearest-neighbour distance (Å) of bcc Li with a = 3.42 Å: √3/2 a.
BCC_LI_NN_DISTANCE = float(np.sqrt(3.0) / 2.0 * 3.42)


@dataclass(frozen=True)
class Rdf:
    """A radial distribution: bin centres ``r`` (Å), ``g`` (dimensionless), running coordination number
    ``n`` (neighbours per atom within r), ``n_pairs`` distances counted and ``n_frames`` frames pooled."""

    r: np.ndarray
    g: np.ndarray
    n: np.ndarray
    n_pairs: int
    n_frames: int

    def first_peak(self, smoothing: float = 0.03, min_height: float = 0.3) -> float:
        """First peak position (Å); see :func:`first_peak_position`."""
        return first_peak_position(self.r, self.g, smoothing=smoothing, min_height=min_height)


@dataclass
class RdfAccumulator:
    """Pools the pair distances within atom sets over frames (see the module docstring).

    :param r_max: largest distance (Å).
    :param bin_width: histogram bin (Å).
    """

    r_max: float = 6.0
    bin_width: float = 0.005
    histogram: np.ndarray = field(init=False)
    norm: float = field(init=False, default=0.0)
    n_atoms: int = field(init=False, default=0)
    n_frames: int = field(init=False, default=0)

    def __post_init__(self) -> None:
        if not (self.r_max > 0 and 0 < self.bin_width < self.r_max):
            raise ValueError('need 0 < bin_width < r_max')
        self.histogram = np.zeros(int(np.ceil(self.r_max / self.bin_width)), dtype=np.int64)

    def add(self, positions: np.ndarray, cell: np.ndarray, atoms: np.ndarray | None = None) -> None:
        """Add the distances between the atoms ``atoms`` (indices; all if ``None``) of one frame.

        :param positions: (N, 3) positions (Å).
        :param cell: (3, 3) periodic cell (Å).
        """
        positions = np.asarray(positions, dtype=float)
        if atoms is not None:
            positions = positions[np.asarray(atoms, dtype=np.int64)]
        n = len(positions)
        if n == 0:
            return
        pairs = neighbour_pairs(positions, cell, self.r_max)
        index = (pairs.distance / self.bin_width).astype(np.int64)  # full list: every pair twice
        self.histogram += np.bincount(index[index < len(self.histogram)], minlength=len(self.histogram))
        volume = abs(np.linalg.det(np.asarray(cell, dtype=float)))
        self.norm += n * n / volume
        self.n_atoms += n
        self.n_frames += 1

    def result(self) -> Rdf:
        """The pooled :class:`Rdf` (zeros if nothing was added)."""
        edges = np.arange(len(self.histogram) + 1) * self.bin_width
        r = 0.5 * (edges[1:] + edges[:-1])
        shell = 4.0 / 3.0 * np.pi * (edges[1:] ** 3 - edges[:-1] ** 3)
        g = self.histogram / (self.norm * shell) if self.norm else np.zeros_like(r)
        n = np.cumsum(self.histogram) / self.n_atoms if self.n_atoms else np.zeros_like(r)
        return Rdf(r, g, n, int(self.histogram.sum()) // 2, self.n_frames)


def radial_distribution(
    positions: np.ndarray,
    cell: np.ndarray,
    atoms: np.ndarray | None = None,
    r_max: float = 6.0,
    bin_width: float = 0.005,
) -> Rdf:
    """g(r) of the atoms ``atoms`` (indices; all if ``None``) pooled over frames.

    :param positions: (N, 3) or (F, N, 3) positions (Å).
    :param cell: (3, 3) or (F, 3, 3) cells (Å).
    """
    positions = np.asarray(positions, dtype=float)
    frames = positions[None] if positions.ndim == 2 else positions
    cells = np.asarray(cell, dtype=float)
    cells = np.broadcast_to(cells, (len(frames), 3, 3)) if cells.ndim == 2 else cells
    accumulator = RdfAccumulator(r_max=r_max, bin_width=bin_width)
    for frame, frame_cell in zip(frames, cells, strict=True):
        accumulator.add(frame, frame_cell, atoms)
    return accumulator.result()


def first_peak_position(
    r: np.ndarray, g: np.ndarray, smoothing: float = 0.03, min_height: float = 0.3
) -> float:
    """Position (Å) of the first maximum of g(r) higher than ``min_height`` x its global maximum.

    g is smoothed with a Gaussian of sigma = ``smoothing`` (Å) first (0: none); the maximum is refined by
    a parabola through the highest grid point and its two neighbours. NaN if g is zero everywhere.
    """
    r, g = np.asarray(r, dtype=float), np.asarray(g, dtype=float)
    if len(r) < 3 or not np.any(g > 0):
        return float('nan')
    step = float(r[1] - r[0])
    smooth = gaussian_filter1d(g, smoothing / step, mode='constant') if smoothing > 0 else g
    threshold = min_height * smooth.max()
    rising = np.flatnonzero(smooth >= threshold)
    k = int(rising[0])
    while k + 1 < len(smooth) and smooth[k + 1] >= smooth[k]:
        k += 1
    if 0 < k < len(smooth) - 1:
        left, centre, right = smooth[k - 1 : k + 2]
        curvature = left - 2 * centre + right
        if curvature < 0:
            return float(r[k] + 0.5 * step * (left - right) / curvature)
    return float(r[k])
