"""Cut the SEI out of one frame of a Li|Li6PS5Cl slab and make it periodic along z, with no vacuum.

Pure NumPy (no AiiDA imports). Lengths in Å, charges in e.

The paper (§3, Fig. 4c) extracts "the ~1 nm amorphous SEI", "periodic along all three directions, no
vacuum", relaxes it with the DP and finds no band gap. It does not say how a slab cut from an interface
is made periodic along its normal: that is a paper gap (``docs/paper_gaps.md``), and the choice made here
is explicit and recorded:

1. **Window.** The atoms whose cell z lies in ``[z_low, z_high)`` (going upwards, wrapping through the
   periodic boundary when ``z_high < z_low``) are kept, whole atoms only (no atom is cut in two: an atom
   belongs to the window by its centre). By default the window is the SEI of the frame, between the
   anode/SEI and the SEI/electrolyte boundaries of :func:`~aiida_lisei.science.regions.assign_regions`
   (:func:`sei_window`).
2. **Cell.** Lateral lattice vectors are those of the frame (the SEI stays commensurate with the anode it
   grew on); the new c is along z with length ``thickness + gap``: ``gap`` (default
   :data:`DEFAULT_GAP`, 1.0 Å) is the space added between the top face and the periodic image of the
   bottom face, so that atoms that sat at the two faces are not pushed onto each other. Atoms keep their
   x, y; their z becomes ``(z - z_low) mod Lz + gap / 2``.
3. **Overlaps across the new boundary.** Pairs that the new periodicity along z brings closer than
   ``min_distance`` (default :data:`DEFAULT_MIN_DISTANCE`, 1.5 Å, below the shortest bond of the system,
   P-S 2.05 Å) are resolved by removing atoms: repeatedly the atom with the most such contacts, on a tie
   the one nearer to a face (the top one first). The removed atoms' ids are reported.
4. **Overlaps inside the window** (pairs closer than ``min_distance`` that were already that close in the
   frame) are not resolved: the frame is refused (an unphysical frame, or a ``min_distance`` too large).
5. **Charge report.** Formal charges Li +1, P +5, S -2, Cl -1 (:data:`FORMAL_CHARGES`); their sum is the
   net formal charge of the slab. A positive sum counts the Li in excess of a stoichiometric salt
   (metallic, or reduced); the slab is computed neutral (all its electrons), as in the paper.

The atoms keep their ids (1-based, as in the trajectory), so every atom of the slab traces back to the
frame and, through the built model's groups, to its origin (anode, electrolyte).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from aiida_lisei.science.nucleation import NucleationParameters, analyse_frame
from aiida_lisei.science.regions import Regions, check_slab_cell, initial_origin

__all__ = (
    'DEFAULT_GAP',
    'DEFAULT_MIN_DISTANCE',
    'FORMAL_CHARGES',
    'REGION_DEFAULTS',
    'SlabExtraction',
    'charge_report',
    'check_region',
    'extract_region',
    'extract_slab',
    'sei_window',
    'select_frame',
)

#: Space (Å) added along z between the top face of the window and the periodic image of its bottom face.
DEFAULT_GAP = 1.0
#: Closest allowed pair distance (Å) in the periodic slab (the shortest bond, P-S, is 2.05 Å).
DEFAULT_MIN_DISTANCE = 1.5
#: Formal charges (e) of the charge-balance report.
FORMAL_CHARGES: dict[str, int] = {'Li': 1, 'P': 5, 'S': -2, 'Cl': -1}


@dataclass(frozen=True)
class SlabExtraction:
    """A periodic slab cut from a frame: cell (3, 3) Å, positions (M, 3) Å, symbols (M,), atom ids (M,)
    (1-based ids of the frame), the ids removed at the new boundary, the window (cell z, Å), its thickness
    and the gap (Å), and the composition/charge report (:func:`charge_report`)."""

    cell: np.ndarray
    positions: np.ndarray
    symbols: list[str]
    atom_ids: np.ndarray
    removed_ids: np.ndarray
    z_low: float
    z_high: float
    thickness: float
    gap: float
    min_distance: float
    report: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        """JSON-serialisable record of the choices and the report (no positions)."""
        return {
            'z_low': self.z_low,
            'z_high': self.z_high,
            'thickness': self.thickness,
            'gap': self.gap,
            'cell_z': float(self.cell[2, 2]),
            'min_distance': self.min_distance,
            'n_atoms': len(self.symbols),
            'removed_ids': [int(value) for value in self.removed_ids],
            **self.report,
            'units': {'length': 'Å', 'charge': 'e'},
        }


def charge_report(symbols: Sequence[str]) -> dict[str, Any]:
    """Composition and formal-charge balance (:data:`FORMAL_CHARGES`) of ``symbols``.

    ``net_formal_charge`` (e) > 0 is the number of Li in excess of a stoichiometric salt;
    ``charge_balanced`` when it is 0. Raises ``ValueError`` for an element without a formal charge.
    """
    counts = Counter(str(symbol) for symbol in symbols)
    unknown = sorted(set(counts) - set(FORMAL_CHARGES))
    if unknown:
        raise ValueError(f'no formal charge for {unknown}; known: {sorted(FORMAL_CHARGES)}')
    net = sum(FORMAL_CHARGES[element] * count for element, count in counts.items())
    return {
        'composition': {element: counts[element] for element in FORMAL_CHARGES if element in counts},
        'formal_charges': dict(FORMAL_CHARGES),
        'net_formal_charge': int(net),
        'charge_balanced': net == 0,
    }


def sei_window(regions: Regions) -> tuple[float, float]:
    """Cell z (Å) of the window ``[z_low, z_high)`` of the anode-side SEI of a frame (going upwards).

    Raises ``ValueError`` when the frame has no anode or no SEI (zero thickness).
    """
    low, high = regions.boundaries['anode_sei'], regions.boundaries['sei_electrolyte']
    if not (np.isfinite(low) and np.isfinite(high)):
        raise ValueError('the frame has no anode/SEI boundary: no anode was found, give explicit z bounds')
    if high - low <= 0:
        raise ValueError('the frame has no SEI (zero thickness between the anode and the electrolyte)')
    first, second = regions.to_cell_z(low), regions.to_cell_z(high)
    return (first, second) if regions.direction > 0 else (second, first)


def _resolve_boundary_overlaps(
    positions: np.ndarray, cell: np.ndarray, min_distance: float
) -> tuple[np.ndarray, np.ndarray]:
    """Indices of the atoms to remove so that no pair across the z boundary is closer than ``min_distance``.

    Returns ``(removed, inside_pairs)``: the removed indices and the (K, 2) pairs closer than
    ``min_distance`` without crossing the z boundary (overlaps the cut did not make).
    """
    from vesin import NeighborList

    if len(positions) < 2:
        return np.zeros(0, dtype=int), np.zeros((0, 2), dtype=int)
    i, j, shifts = NeighborList(cutoff=min_distance, full_list=False).compute(positions, cell, True, 'ijS')
    i, j = np.asarray(i, dtype=int), np.asarray(j, dtype=int)
    across = np.asarray(shifts)[:, 2] != 0 if len(i) else np.zeros(0, dtype=bool)
    inside = np.column_stack([i[~across], j[~across]]) if len(i) else np.zeros((0, 2), dtype=int)
    pairs = {(int(a), int(b)) for a, b in zip(i[across], j[across], strict=True)}
    removed: list[int] = []
    cell_z = cell[2, 2]
    face_distance = np.minimum(positions[:, 2], cell_z - positions[:, 2])
    while pairs:
        contacts = Counter(atom for pair in pairs for atom in pair)
        most = max(contacts.values())
        candidates = [atom for atom, count in contacts.items() if count == most]
        atom = min(candidates, key=lambda a: (face_distance[a], -positions[a, 2]))
        removed.append(atom)
        pairs = {pair for pair in pairs if atom not in pair}
    return np.array(sorted(removed), dtype=int), inside


def extract_slab(
    positions: np.ndarray,
    cell: np.ndarray,
    symbols: Sequence[str],
    atom_ids: Sequence[int] | np.ndarray,
    z_low: float,
    z_high: float,
    gap: float = DEFAULT_GAP,
    min_distance: float = DEFAULT_MIN_DISTANCE,
) -> SlabExtraction:
    """Cut the atoms with cell z in ``[z_low, z_high)`` out of a frame and make them periodic along z.

    :param positions: (N, 3) positions (Å) of the frame.
    :param cell: (3, 3) cell (Å), c along z, a and b in the xy-plane.
    :param symbols: (N,) chemical symbols; ``atom_ids``: (N,) ids (1-based) kept with the atoms.
    :param z_low: cell z (Å) of the bottom of the window; ``z_high`` its top (going upwards, through the
        boundary when ``z_high < z_low``).
    :param gap: space (Å, >= 0) added along z (new c = thickness + gap).
    :param min_distance: closest pair distance (Å, > 0) allowed in the periodic slab.
    :return: the slab (see the module docstring for the rules).
    :raises ValueError: bad arguments, an empty window, or atoms inside the window closer than
        ``min_distance`` in the frame.
    """
    positions = np.asarray(positions, dtype=float)
    cell = np.asarray(cell, dtype=float)
    symbols = [str(symbol) for symbol in symbols]
    atom_ids = np.asarray(atom_ids, dtype=int)
    if positions.ndim != 2 or positions.shape[1] != 3:
        raise ValueError(f'positions must be (N, 3), got {positions.shape}')
    if len(symbols) != len(positions) or atom_ids.shape != (len(positions),):
        raise ValueError('symbols and atom_ids need one entry per atom')
    if not (gap >= 0 and min_distance > 0):
        raise ValueError(f'gap must be >= 0 and min_distance > 0, got {gap!r} and {min_distance!r}')
    cell_z = check_slab_cell(cell)
    z_low, z_high = float(np.mod(z_low, cell_z)), float(np.mod(z_high, cell_z))
    thickness = float(np.mod(z_high - z_low, cell_z))
    if thickness <= 0:
        raise ValueError(f'the window [{z_low:.3f}, {z_high:.3f}) Å has zero thickness')
    relative = np.mod(positions[:, 2] - z_low, cell_z)
    keep = np.flatnonzero(relative < thickness)
    if not len(keep):
        raise ValueError(
            f'the region [{z_low:.3f}, {z_high:.3f}) Å (thickness {thickness:.3f} Å) holds no atom: choose '
            'another frame or other bounds'
        )
    new_cell = cell.copy()
    new_cell[2] = [0.0, 0.0, thickness + gap]
    lateral = np.linalg.inv(cell[:2, :2])
    fractional = np.mod(positions[keep, :2] @ lateral, 1.0)
    new_positions = np.column_stack([fractional @ cell[:2, :2], relative[keep] + 0.5 * gap])
    removed, inside = _resolve_boundary_overlaps(new_positions, new_cell, min_distance)
    if len(inside):
        a, b = inside[0]
        distance = float(np.linalg.norm(new_positions[a] - new_positions[b]))
        raise ValueError(
            f'{len(inside)} pair(s) of atoms inside the region are closer than min_distance {min_distance} Å '
            f'(e.g. ids {atom_ids[keep][a]} and {atom_ids[keep][b]} at {distance:.3f} Å): overlapping atoms '
            'in the frame; choose another frame or a smaller min_distance'
        )
    kept = np.setdiff1d(np.arange(len(keep)), removed)
    if not len(kept):
        raise ValueError('every atom of the region was removed as an overlap across the new boundary')
    slab_symbols = [symbols[index] for index in keep[kept]]
    return SlabExtraction(
        cell=new_cell,
        positions=new_positions[kept],
        symbols=slab_symbols,
        atom_ids=atom_ids[keep][kept],
        removed_ids=atom_ids[keep][removed],
        z_low=z_low,
        z_high=z_high,
        thickness=thickness,
        gap=float(gap),
        min_distance=float(min_distance),
        report=charge_report(slab_symbols),
    )


#: The region choice and its defaults: ``mode`` ``'sei'`` (the anode-side SEI of the frame, found by the
#: nucleation analysis's rule with its parameters) or ``'z'`` (explicit cell z bounds ``z_low``, ``z_high``,
#: Å); ``gap`` and ``min_distance`` (Å) as in :func:`extract_slab`.
REGION_DEFAULTS: dict[str, Any] = {
    'mode': 'sei',
    'z_low': None,
    'z_high': None,
    'gap': DEFAULT_GAP,
    'min_distance': DEFAULT_MIN_DISTANCE,
}


def check_region(region: Mapping[str, Any] | None) -> dict[str, Any]:
    """Return the complete region choice (:data:`REGION_DEFAULTS`); raise ``ValueError`` if invalid."""
    region = dict(region or {})
    unknown = sorted(set(region) - set(REGION_DEFAULTS))
    if unknown:
        raise ValueError(f'unknown region keys {unknown}; known: {sorted(REGION_DEFAULTS)}')
    merged = {**REGION_DEFAULTS, **region}
    if merged['mode'] not in ('sei', 'z'):
        raise ValueError(f"region mode must be 'sei' or 'z', got {merged['mode']!r}")
    bounds = [merged['z_low'], merged['z_high']]
    if merged['mode'] == 'z':
        if any(isinstance(value, bool) or not isinstance(value, int | float) for value in bounds):
            raise ValueError(f"region mode 'z' needs numbers z_low and z_high (cell z, Å), got {bounds}")
    elif any(value is not None for value in bounds):
        raise ValueError("z_low and z_high are only used with region mode 'z'")
    for name, low in (('gap', 0.0), ('min_distance', 0.0)):
        value = merged[name]
        if isinstance(value, bool) or not isinstance(value, int | float) or value < low:
            raise ValueError(f'{name} must be a number >= {low} Å, got {value!r}')
        merged[name] = float(value)
    if merged['min_distance'] <= 0:
        raise ValueError('min_distance must be positive')
    return merged


def select_frame(
    n_frames: int, frame: int | None = None, analysis: Mapping[str, Any] | None = None
) -> tuple[int, str]:
    """Index of the frame to cut (0-based, into the trajectory) and how it was chosen.

    ``frame`` given: that frame (negative counts from the end). Else the cluster-onset frame of the
    nucleation ``analysis`` (its ``summary.cluster_onset_frame`` indexes its ``frame_indices``), else the
    last frame, recorded as ``'last frame: no cluster formed'`` or ``'last frame: no analysis given'``.
    Raises ``ValueError`` for a frame index out of range.
    """
    if n_frames < 1:
        raise ValueError('the trajectory has no frame')
    if frame is not None:
        if not -n_frames <= frame < n_frames:
            raise ValueError(f'frame index {frame} is out of range: the trajectory has {n_frames} frames')
        return int(frame) % n_frames, 'frame given'
    if analysis is None:
        return n_frames - 1, 'last frame: no analysis given'
    onset = analysis.get('summary', {}).get('cluster_onset_frame')
    if onset is None:
        return n_frames - 1, 'last frame: no cluster formed'
    index = int(analysis['frame_indices'][onset])
    if not 0 <= index < n_frames:
        raise ValueError(f'the analysis onset frame {index} is not a frame of this trajectory ({n_frames})')
    return index, 'cluster onset frame of the nucleation analysis'


def extract_region(
    positions: np.ndarray,
    cell: np.ndarray,
    symbols: Sequence[str],
    labels: Sequence[str] | None,
    region: Mapping[str, Any] | None = None,
    nucleation: Mapping[str, Any] | None = None,
) -> SlabExtraction:
    """Cut the chosen region (:func:`check_region`) out of one frame in site order (ids = index + 1).

    :param labels: the built model's region groups per site (``anode_Li``, ``electrolyte_S``, ...): the
        SEI mode needs them to tell the anode from the source side.
    :param nucleation: :class:`~aiida_lisei.science.nucleation.NucleationParameters` as a dict (the
        analysis's ``parameters.nucleation``): the SEI is found with the same rule as the analysis.
    """
    choice = check_region(region)
    ids = np.arange(1, len(positions) + 1)
    if choice['mode'] == 'z':
        z_low, z_high = choice['z_low'], choice['z_high']
    else:
        if labels is None:
            raise ValueError("region mode 'sei' needs the structure's region groups (a GroupedStructureData)")
        frame = analyse_frame(
            positions, cell, symbols, initial_origin(labels), NucleationParameters.from_dict(nucleation)
        )
        z_low, z_high = sei_window(frame.regions)
    return extract_slab(
        positions, cell, symbols, ids, z_low, z_high, gap=choice['gap'], min_distance=choice['min_distance']
    )
