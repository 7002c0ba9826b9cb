"""Regions of a Li|electrolyte|Li slab along z, frame by frame: anode, SEI, electrolyte, source.

Pure NumPy/SciPy (no AiiDA imports). Lengths in Å. The slab normal must be z: the third lattice
vector along z and the first two in the xy-plane (orthorhombic cells, or LAMMPS cells with an xy tilt).

Rule (see ``docs/nucleation_analysis.md``):

1. **Heights.** z is cut in the middle of the widest empty window along z (the vacuum) and measured
   from there, upwards from the anode: the height axis points from the atoms that were initially
   ``anode_Li`` to the rest (it is flipped if the anode lies above).
2. **Profiles.** Along the height, atoms are binned (``bin_width``) and smoothed with a Gaussian of
   standard deviation ``smoothing``. Two fractions are formed where the smoothed density of atoms
   exceeds ``density_floor`` (elsewhere undefined, e.g. in the vacuum or an empty gap):
   the *metal fraction* = anion-poor Li (at most ``metallic_max_anions`` anion neighbours) / all atoms,
   and the *electrolyte fraction* = thiophosphate anions (S and P of intact PS4 units) / all anions
   (S, P, Cl): 20/28 = 0.71 in Li6PS5Cl, 0 in its decomposition products Li2S, Li3P, LiCl.
3. **Anode.** From the median height of the initially-anode atoms upwards, the anode extends while the
   metal fraction is >= ``metal_fraction``; the first bin where it is not (or is undefined) starts the
   SEI: its lower edge is the **anode/SEI boundary**.
4. **Source.** Likewise downwards from the median height of the initially-source atoms (if any).
5. **Electrolyte.** Between the two, the bins whose electrolyte fraction is >= ``electrolyte_fraction``;
   from the first to the last of them is electrolyte. Between the anode and the electrolyte is the
   ``sei``, between the electrolyte and the source the ``source_sei``. Without any electrolyte bin the
   whole space between anode and source is ``sei``.

Every atom gets the region of its height (codes of :class:`Region`, names in :data:`REGIONS`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
from scipy.ndimage import gaussian_filter1d

from aiida_lisei.science.environments import ANION_SPECIES

__all__ = (
    'REGIONS',
    'Region',
    'RegionParameters',
    'Regions',
    'assign_regions',
    'check_slab_cell',
    'initial_origin',
    'slab_heights',
)


class Region:
    """Integer codes of the regions along z, in order of height."""

    ANODE = 0
    SEI = 1
    ELECTROLYTE = 2
    SOURCE_SEI = 3
    SOURCE = 4


#: Region names indexed by code.
REGIONS: tuple[str, ...] = ('anode', 'sei', 'electrolyte', 'source_sei', 'source')


def initial_origin(labels: Sequence[str] | np.ndarray) -> np.ndarray:
    """Origin of each atom from its builder label: ``anode``, ``electrolyte``, ``source`` or ``other``.

    ``anode_Li`` → ``anode``; ``electrolyte_<X>`` → ``electrolyte``; ``source_Li`` → ``source``;
    anything else (``bulk_Li``, unknown) → ``other``.
    """
    labels = np.asarray(labels, dtype=str)
    origin = np.full(len(labels), 'other', dtype=object)
    origin[labels == 'anode_Li'] = 'anode'
    origin[np.char.startswith(labels, 'electrolyte_')] = 'electrolyte'
    origin[labels == 'source_Li'] = 'source'
    return origin.astype(str)


@dataclass(frozen=True)
class RegionParameters:
    """Parameters of :func:`assign_regions` (lengths in Å, densities in atoms/Å³).

    * ``bin_width`` 0.2 Å: resolution of the boundaries (well below a bcc (001) layer spacing, 1.71 Å).
    * ``smoothing`` 1.0 Å: Gaussian sigma; smooths out the layering of crystals and single stray atoms.
    * ``metal_fraction`` 0.5: a slice is metal while at least half of its atoms are anion-poor Li
      (1.0 in bulk Li, 0 in Li6PS5Cl, Li2S, Li3P, LiCl).
    * ``electrolyte_fraction`` 0.5: a slice is electrolyte while at least half of its anions belong to
      PS4 units (0.71 in Li6PS5Cl, 0 in Li2S, Li3P, LiCl): a 30 % loss of PS4 makes a slice SEI.
    * ``density_floor`` 0.005 atoms/Å³ (a tenth of the density of Li or Li6PS5Cl): below it a slice
      counts as empty (vacuum, gaps) and its fractions are undefined.
    """

    bin_width: float = 0.2
    smoothing: float = 1.0
    metal_fraction: float = 0.5
    electrolyte_fraction: float = 0.5
    density_floor: float = 0.005

    def __post_init__(self) -> None:
        if not (self.bin_width > 0 and self.smoothing >= 0 and self.density_floor > 0):
            raise ValueError('bin_width and density_floor must be positive, smoothing non-negative')
        for name in ('metal_fraction', 'electrolyte_fraction'):
            if not 0 < getattr(self, name) <= 1:
                raise ValueError(f'{name} must be in (0, 1]')

    def as_dict(self) -> dict[str, Any]:
        """JSON-serialisable copy of the parameters."""
        return asdict(self)


@dataclass(frozen=True)
class Regions:
    """Regions of one frame.

    ``heights`` (N,) are the atoms' heights (Å) above the cut in the vacuum, along the anode → source
    direction; ``codes`` (N,) their :class:`Region`. ``boundaries`` are heights (Å) of the anode/SEI,
    SEI/electrolyte, electrolyte/source-SEI and source-SEI/source boundaries (NaN where a region is
    missing: no anode or no source found). A height ``h`` is the cell coordinate
    ``z = (origin + direction * h) mod Lz``. ``grid``, ``metal_fraction`` and ``electrolyte_fraction``
    are the smoothed profiles (bin centres, NaN where empty), for plots and checks.
    """

    heights: np.ndarray
    codes: np.ndarray
    boundaries: dict[str, float]
    origin: float
    direction: int
    cell_z: float
    grid: np.ndarray
    metal_fraction: np.ndarray
    electrolyte_fraction: np.ndarray

    def to_cell_z(self, height: float) -> float:
        """Cell z coordinate (Å, in [0, Lz)) of a height; NaN stays NaN."""
        if not np.isfinite(height):
            return float('nan')
        return float(np.mod(self.origin + self.direction * height, self.cell_z))

    @property
    def sei_thickness(self) -> float:
        """Thickness (Å) of the anode-side SEI; NaN without an anode."""
        return float(self.boundaries['sei_electrolyte'] - self.boundaries['anode_sei'])

    def mask(self, region: int) -> np.ndarray:
        """Boolean mask of the atoms in ``region`` (a :class:`Region` code)."""
        return self.codes == region


def check_slab_cell(cell: np.ndarray) -> float:
    """Return Lz (Å) if the third lattice vector is along z and the first two lie in the xy-plane."""
    cell = np.asarray(cell, dtype=float)
    if cell.shape != (3, 3):
        raise ValueError(f'cell must be (3, 3), got {cell.shape}')
    scale = np.abs(cell).max()
    if (
        abs(cell[0, 2]) + abs(cell[1, 2]) + abs(cell[2, 0]) + abs(cell[2, 1]) > 1e-8 * scale
        or cell[2, 2] <= 0
    ):
        raise ValueError('slab analysis needs c along +z and a, b in the xy-plane (orthorhombic or xy tilt)')
    return float(cell[2, 2])


def slab_heights(
    z: np.ndarray, cell_z: float, anode: np.ndarray | None = None
) -> tuple[np.ndarray, float, int]:
    """Heights (Å) above the middle of the widest empty z-window, pointing from the anode to the rest.

    :param z: (N,) Cartesian z (Å), wrapped or not.
    :param anode: (N,) bool, the atoms initially in the anode; if given (and not all or none), the axis
        is flipped when their median height lies above the median of the others.
    :return: heights, origin (cell z of height 0) and direction (+1 or -1).
    """
    zw = np.mod(np.asarray(z, dtype=float), cell_z)
    order = np.sort(zw)
    gaps = np.diff(np.append(order, order[0] + cell_z))
    widest = int(np.argmax(gaps))
    origin = float(np.mod(order[widest] + 0.5 * gaps[widest], cell_z))
    heights = np.mod(zw - origin, cell_z)
    direction = 1
    flip = anode is not None and 0 < np.count_nonzero(anode) < len(heights)
    if flip and np.median(heights[anode]) > np.median(heights[~anode]):
        heights = cell_z - heights
        direction = -1
    return heights, origin, direction


def _run_edge(ok: np.ndarray, start: int, step: int) -> int:
    """Index of the first bin from ``start`` (moving by ``step``) where ``ok`` is False (or the end)."""
    walk = ok[start::step] if step > 0 else ok[start::-1]
    bad = np.flatnonzero(~walk)
    return start + step * (int(bad[0]) if len(bad) else len(walk))


def assign_regions(
    positions: np.ndarray,
    cell: np.ndarray,
    species: np.ndarray,
    anion_poor_li: np.ndarray,
    thiophosphate: np.ndarray,
    origin: np.ndarray,
    params: RegionParameters | None = None,
) -> Regions:
    """Regions of one frame by the rule of the module docstring.

    :param positions: (N, 3) positions (Å).
    :param cell: (3, 3) cell (Å), c along z.
    :param species: (N,) chemical symbols.
    :param anion_poor_li: (N,) bool, Li with at most ``metallic_max_anions`` anion neighbours.
    :param thiophosphate: (N,) bool, S and P atoms of PS4 units
        (``Coordination.bonded_s | Coordination.bonded_p``).
    :param origin: (N,) initial origin of each atom (``anode``, ``electrolyte``, ``source``, ...),
        e.g. from :func:`initial_origin`; only used to find which side is the anode and which the source.
    """
    params = params or RegionParameters()
    cell = np.asarray(cell, dtype=float)
    cell_z = check_slab_cell(cell)
    origin = np.asarray(origin)
    is_anode0, is_source0 = origin == 'anode', origin == 'source'
    heights, zero, direction = slab_heights(positions[:, 2], cell_z, is_anode0)

    n_bins = max(1, int(np.ceil(cell_z / params.bin_width)))
    width = cell_z / n_bins
    index = np.minimum((heights / width).astype(np.int64), n_bins - 1)
    species = np.asarray(species)
    is_li = species == 'Li'
    is_anion = np.isin(species, ANION_SPECIES)
    sigma = params.smoothing / width

    def profile(mask: np.ndarray | None) -> np.ndarray:
        counts = np.bincount(index if mask is None else index[mask], minlength=n_bins).astype(float)
        return gaussian_filter1d(counts, sigma, mode='constant') if sigma > 0 else counts

    area = abs(np.linalg.det(cell[:2, :2]))
    all_atoms, anions = profile(None), profile(is_anion)
    metal, electrolyte = profile(is_li & anion_poor_li), profile(is_anion & thiophosphate)
    filled = all_atoms >= params.density_floor * area * width
    with np.errstate(invalid='ignore', divide='ignore'):
        metal_frac = np.where(filled, metal / all_atoms, np.nan)
        el_frac = np.where(filled & (anions > 0), electrolyte / anions, np.nan)
    metal_ok = metal_frac >= params.metal_fraction  # NaN compares False
    el_ok = el_frac >= params.electrolyte_fraction

    nan = float('nan')
    anode_top = nan
    low = 0  # first bin above the anode
    if np.any(is_anode0):
        start = int(np.median(index[is_anode0]))
        if metal_ok[start]:
            low = _run_edge(metal_ok, start, 1)
            anode_top = low * width
    source_bottom = nan
    high = n_bins  # first bin of the source
    if np.any(is_source0):
        start = int(np.median(index[is_source0]))
        if metal_ok[start] and start >= low:
            high = _run_edge(metal_ok, start, -1) + 1
            source_bottom = high * width

    between = np.flatnonzero(el_ok[low:high]) + low
    if len(between):
        sei_el, el_top = between[0] * width, (between[-1] + 1) * width
    else:
        sei_el = el_top = high * width
    boundaries = {
        'anode_sei': anode_top,
        'sei_electrolyte': float(sei_el),
        'electrolyte_source_sei': float(el_top),
        'source_sei_source': source_bottom,
    }
    edges = np.array(
        [
            low * width if np.isfinite(anode_top) else -np.inf,
            sei_el,
            el_top,
            source_bottom if np.isfinite(source_bottom) else np.inf,
        ]
    )
    codes = np.searchsorted(edges, heights, side='right').astype(np.int8)
    grid = (np.arange(n_bins) + 0.5) * width
    return Regions(heights, codes, boundaries, zero, direction, cell_z, grid, metal_frac, el_frac)
