"""Whether frames can be labelled or run at all: periodicity, elements, overlapping atoms (no AiiDA imports).

One home for the checks every labelling engine and the CP2K and VASP work chains apply before they spend a
job on a frame. Like every ``validate_*`` function of the package, these return the reason a frame is
refused, or ``None``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING

import numpy as np

from aiida_lisei.common.validation import check_finite_geometry

if TYPE_CHECKING:  # ASE is imported lazily (heavy)
    from ase import Atoms

__all__ = (
    'MIN_INTERATOMIC_DISTANCE',
    'close_contact',
    'mean_cell_frame',
    'validate_frame',
    'validate_frames',
)

#: Shortest interatomic distance (Å) accepted in a frame to label or run: closer atoms give meaningless
#: energies and forces (and SCF failures).
MIN_INTERATOMIC_DISTANCE = 0.5


def close_contact(
    atoms: Atoms, min_distance: float = MIN_INTERATOMIC_DISTANCE
) -> tuple[int, int, float, int] | None:
    """The closest pair of atoms nearer than ``min_distance`` Å (periodic images included) as
    ``(i, j, distance Å, number of such pairs)``, or ``None``."""
    from ase.neighborlist import neighbor_list

    first, second, distances = neighbor_list('ijd', atoms, min_distance)
    if not len(distances):
        return None
    index = int(np.argmin(distances))
    return int(first[index]), int(second[index]), float(distances[index]), len(distances) // 2


def validate_frame(
    atoms: Atoms, max_atomic_number: int | None = None, min_distance: float = MIN_INTERATOMIC_DISTANCE
) -> str | None:
    """Return why ``atoms`` cannot be labelled (not 3D periodic, unknown element, atoms overlap) or ``None``.

    :param max_atomic_number: heaviest element allowed (``None``: no check; tblite itself rejects Z > 86).
    :param min_distance: shortest allowed distance between two atoms, periodic images included (Å).
    """
    if len(atoms) == 0:
        return 'no atoms'
    try:
        check_finite_geometry(atoms.cell[:], atoms.positions, 'the frame', periodic=bool(atoms.pbc.any()))
    except ValueError as exception:
        return str(exception)
    if not atoms.pbc.all() or atoms.cell.rank < 3:
        return 'not periodic in 3D (a cell and pbc=True in all directions are required)'
    if max_atomic_number is not None and atoms.numbers.max() > max_atomic_number:
        heavy = sorted(
            {s for s, z in zip(atoms.symbols, atoms.numbers, strict=True) if z > max_atomic_number}
        )
        return f'elements {heavy} are not parametrised (Z > {max_atomic_number})'
    contact = close_contact(atoms, min_distance)
    if contact is not None:
        first, second, distance, _ = contact
        return f'atoms {first} and {second} are {distance:.3f} Å apart (minimum {min_distance} Å)'
    return None


def validate_frames(frames: Mapping[str, Atoms], max_atomic_number: int | None = None) -> str | None:
    """Return why ``frames`` (``{key: atoms}``) is no batch of labellable frames of one system, or ``None``.

    Every frame must pass :func:`validate_frame`; all frames must share one atom list (same elements in the
    same order).
    """
    if not frames:
        return 'no structures given: the batch is empty'
    reference_key, symbols = None, None
    for key, atoms in frames.items():
        reason = validate_frame(atoms, max_atomic_number)
        if reason is not None:
            return f'structure `{key}`: {reason}'
        if symbols is None:
            reference_key, symbols = key, atoms.get_chemical_symbols()
        elif atoms.get_chemical_symbols() != symbols:
            return (
                f'structures `{reference_key}` and `{key}` have different atom lists: all frames of one '
                '`system_label` need the same elements in the same order'
            )
    return None


def mean_cell_frame(
    cells: np.ndarray, positions: np.ndarray, fraction: float = 0.5
) -> tuple[np.ndarray, np.ndarray]:
    """Return the last frame of an NPT run in the mean cell of its last ``fraction`` of frames: the cell
    (3x3, Å) averaged over those frames and the last positions (Å) scaled into it (fractional coordinates
    kept). The usual start of a production run after an NPT equilibration: the last frame's own cell is one
    sample of the box's fluctuations, the mean is where the box fluctuates around.

    :param cells: (n_frames, 3, 3) cells (Å); :param positions: (n_frames, n_atoms, 3) positions (Å).
    """
    cells = np.asarray(cells, dtype=float)
    positions = np.asarray(positions, dtype=float)
    if cells.ndim != 3 or cells.shape[1:] != (3, 3) or positions.ndim != 3 or len(cells) != len(positions):
        raise ValueError(
            f'expected (n, 3, 3) cells and (n, atoms, 3) positions, got {cells.shape}, {positions.shape}'
        )
    if not 0.0 < fraction <= 1.0:
        raise ValueError(f'`fraction` must be in (0, 1], got {fraction}')
    first = len(cells) - max(1, round(fraction * len(cells)))
    mean = cells[first:].mean(axis=0)
    scaled = np.linalg.solve(cells[-1].T, positions[-1].T).T  # fractional coordinates of the last frame
    return mean, scaled @ mean
