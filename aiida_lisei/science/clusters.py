"""Metallic Li clusters: connected components of metallic Li, isolated from the anode and the source.

Pure NumPy/SciPy (no AiiDA imports). Lengths in Å.

Metallic Li atoms (class ``metallic`` of :mod:`aiida_lisei.science.environments`) closer than
``link_cutoff`` are joined into clusters (connected components of that graph, periodic). The bulk
metal of the anode and of the source is metallic too, so every component that has at least one atom
in the ``anode`` or ``source`` region (:mod:`aiida_lisei.science.regions`) is *attached*: the anode
itself, or a protrusion growing from it. The remaining components are *isolated* clusters — the
paper's Li nucleus inside the SEI. Components are found over all metallic Li (not only those outside
the anode), so a protrusion connected to the anode is never mistaken for an isolated cluster.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components

from aiida_lisei.science.environments import NeighbourPairs, neighbour_pairs

__all__ = (
    'ORIGINS',
    'ClusterParameters',
    'Clusters',
    'cluster_centre',
    'find_clusters',
    'first_onset',
    'min_distance',
    'origin_fractions',
)

#: Origins reported by :func:`origin_fractions` (see :func:`aiida_lisei.science.regions.initial_origin`).
ORIGINS: tuple[str, ...] = ('electrolyte', 'anode', 'source', 'other')


@dataclass(frozen=True)
class ClusterParameters:
    """Parameters of cluster detection and onset.

    * ``link_cutoff`` 3.2 Å: metallic Li closer than this belong to the same cluster; between the first
      (2.96 Å) and second (3.42 Å) neighbour shells of bcc Li, as the Li-Li cut-off of the environments.
    * ``onset_size`` 10 atoms: a cluster counts as nucleated from this size on (a bcc Li cluster of 10
      atoms is about one conventional cell with its neighbours; thermal fluctuations of a SEI make
      metallic groups of 2-5 atoms).
    * ``onset_frames`` 1: number of consecutive frames the largest isolated cluster must stay at or above
      ``onset_size`` for the first of them to be the onset.
    """

    link_cutoff: float = 3.2
    onset_size: int = 10
    onset_frames: int = 1

    def __post_init__(self) -> None:
        if not self.link_cutoff > 0 or self.onset_size < 1 or self.onset_frames < 1:
            raise ValueError('link_cutoff must be positive, onset_size and onset_frames >= 1')

    def as_dict(self) -> dict[str, Any]:
        """JSON-serialisable copy of the parameters."""
        return asdict(self)


@dataclass(frozen=True)
class Clusters:
    """Connected components of metallic Li in one frame.

    ``labels`` (N,): component index of each metallic atom, -1 for the others; ``sizes`` (M,) atoms per
    component; ``attached`` (M,) bool, the component has an atom in an excluded region (anode, source).
    """

    labels: np.ndarray
    sizes: np.ndarray
    attached: np.ndarray

    @property
    def isolated_sizes(self) -> np.ndarray:
        """Sizes of the isolated components, largest first."""
        return np.sort(self.sizes[~self.attached])[::-1]

    def members(self, component: int) -> np.ndarray:
        """Atom indices of ``component``."""
        return np.flatnonzero(self.labels == component)

    def largest_isolated(self) -> np.ndarray:
        """Atom indices of the largest isolated cluster (lowest component index on ties; empty if none)."""
        candidates = np.flatnonzero(~self.attached)
        if not len(candidates):
            return np.zeros(0, dtype=np.int64)
        return self.members(int(candidates[np.argmax(self.sizes[candidates])]))

    def attached_members(self) -> np.ndarray:
        """Atom indices of all components attached to an excluded region (empty without components)."""
        if not self.attached.size:
            return np.zeros(0, dtype=np.int64)
        return np.flatnonzero((self.labels >= 0) & self.attached[np.maximum(self.labels, 0)])


def find_clusters(
    positions: np.ndarray,
    cell: np.ndarray,
    metallic: np.ndarray,
    excluded: np.ndarray | None = None,
    params: ClusterParameters | None = None,
    pairs: NeighbourPairs | None = None,
) -> Clusters:
    """Connected components of the metallic atoms (periodic), flagged when they touch ``excluded`` atoms.

    :param positions: (N, 3) positions (Å).
    :param cell: (3, 3) cell (Å).
    :param metallic: (N,) bool, the atoms that may form clusters.
    :param excluded: (N,) bool, atoms of the bulk metal regions (anode, source); ``None``: none.
    :param pairs: a full neighbour list of the same frame with cut-off >= ``link_cutoff`` to reuse.
    """
    params = params or ClusterParameters()
    metallic = np.asarray(metallic, dtype=bool)
    n = len(metallic)
    members = np.flatnonzero(metallic)
    labels = np.full(n, -1, dtype=np.int64)
    if not len(members):
        return Clusters(labels, np.zeros(0, dtype=np.int64), np.zeros(0, dtype=bool))
    if pairs is not None and pairs.cutoff >= params.link_cutoff:
        keep = metallic[pairs.i] & metallic[pairs.j] & (pairs.distance < params.link_cutoff)
        i, j = pairs.i[keep], pairs.j[keep]
        local = np.full(n, -1, dtype=np.int64)
        local[members] = np.arange(len(members))
        i, j = local[i], local[j]
    else:
        sub = neighbour_pairs(np.asarray(positions)[members], cell, params.link_cutoff)
        i, j = sub.i, sub.j
    graph = coo_matrix((np.ones(len(i), dtype=np.int8), (i, j)), shape=(len(members), len(members)))
    n_comp, comp = connected_components(graph, directed=False)
    labels[members] = comp
    sizes = np.bincount(comp, minlength=n_comp)
    attached = np.zeros(n_comp, dtype=bool)
    if excluded is not None:
        hit = np.asarray(excluded, dtype=bool)[members]
        attached[np.unique(comp[hit])] = True
    return Clusters(labels, sizes, attached)


def cluster_centre(positions: np.ndarray, cell: np.ndarray) -> np.ndarray:
    """Centre (Å) of a compact set of atoms under periodic boundaries (minimum image to the first atom).

    Valid when the set spans less than half of each cell length.
    """
    positions = np.asarray(positions, dtype=float)
    if not len(positions):
        return np.full(3, np.nan)
    cell = np.asarray(cell, dtype=float)
    delta = positions - positions[0]
    frac = np.linalg.solve(cell.T, delta.T).T
    delta = (frac - np.round(frac)) @ cell
    return positions[0] + delta.mean(axis=0)


def min_distance(first: np.ndarray, second: np.ndarray, cell: np.ndarray) -> float:
    """Smallest minimum-image distance (Å) between two sets of positions (NaN if one is empty).

    Exact for orthorhombic cells (and for any cell when the distances are short against its widths).
    """
    first, second = np.asarray(first, dtype=float), np.asarray(second, dtype=float)
    if not len(first) or not len(second):
        return float('nan')
    cell = np.asarray(cell, dtype=float)
    inverse = np.linalg.inv(cell)
    best = np.inf
    for chunk in np.array_split(first, max(1, len(first) * len(second) // 2_000_000 + 1)):
        frac = (chunk[:, None, :] - second[None, :, :]) @ inverse
        delta = (frac - np.round(frac)) @ cell
        best = min(best, float(np.sqrt(np.einsum('ijk,ijk->ij', delta, delta).min())))
    return best


def origin_fractions(atoms: np.ndarray, origin: Sequence[str] | np.ndarray) -> dict[str, float]:
    """Fraction of ``atoms`` (indices) of each initial origin (keys :data:`ORIGINS`; all 0 if empty).

    :param origin: (N,) initial origin of every atom, e.g. from
        :func:`aiida_lisei.science.regions.initial_origin`.
    """
    atoms = np.asarray(atoms, dtype=np.int64)
    values = np.asarray(origin)[atoms]
    total = len(values)
    return {name: (float(np.count_nonzero(values == name)) / total if total else 0.0) for name in ORIGINS}


def first_onset(
    sizes: Sequence[int] | np.ndarray, params: ClusterParameters | Mapping[str, Any] | None = None
) -> int:
    """Index of the first frame of the first run of ``onset_frames`` frames with size >= ``onset_size``.

    :param sizes: largest isolated cluster size per frame.
    :return: the frame index, or -1 if the threshold is never held long enough.
    """
    if params is None:
        params = ClusterParameters()
    elif isinstance(params, Mapping):
        params = ClusterParameters(**params)
    above = np.asarray(sizes) >= params.onset_size
    run = params.onset_frames
    if len(above) < run:
        return -1
    windows = np.convolve(above.astype(np.int64), np.ones(run, dtype=np.int64), mode='valid')
    hits = np.flatnonzero(windows == run)
    return int(hits[0]) if len(hits) else -1
