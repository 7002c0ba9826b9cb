"""Read the trajectory files of a CP2K 2023.1 ``MD`` / ``GEO_OPT`` / ``CELL_OPT`` run into numpy.

No AiiDA here. ``MOTION/PRINT/TRAJECTORY`` (xyz, Å; the comment line holds ``i = <step>`` and ``E = <energy
in Hartree>``), ``MOTION/PRINT/FORCES`` (xyz, Hartree/Bohr), ``MOTION/PRINT/CELL`` (one row per frame:
step, time fs, the nine cell components in Å, volume) and ``MD/PRINT/ENERGY`` (``.ener``: step, time fs,
kinetic energy, temperature K, potential energy, conserved quantity, used time). Units of the results: Å,
eV, eV/Å, K, fs (CODATA 2006 factors of :mod:`aiida_lisei.formats.cp2k`).
"""

from __future__ import annotations

import re
from typing import Any

import numpy as np

from .cp2k import BOHR_TO_ANGSTROM, HARTREE_TO_EV, Cp2kOutputError, fortran_float

__all__ = (
    'ENERGY_FILE',
    'parse_cp2k_cells',
    'parse_cp2k_energies',
    'parse_cp2k_restart_geometry',
    'parse_cp2k_trajectory',
    'parse_cp2k_xyz',
)

#: The ``MD/PRINT/ENERGY`` file of aiida-cp2k's project ``aiida``.
ENERGY_FILE = 'aiida-1.ener'

_STEP = re.compile(r'\bi\s*=\s*(\d+)')
_ENERGY = re.compile(r'\bE\s*=\s*(\S+)')
_COORD = re.compile(r'^\s*&COORD\s*\n(.*?)^\s*&END COORD', re.MULTILINE | re.DOTALL)
_CELL_VECTOR = re.compile(r'^\s*([ABC])\s+(\S+)\s+(\S+)\s+(\S+)\s*$', re.MULTILINE)


def parse_cp2k_xyz(text: str) -> tuple[np.ndarray, np.ndarray, list[str], np.ndarray]:
    """Return ``(steps, energies (Hartree), symbols, values (nframes, natoms, 3))`` of a CP2K xyz file.

    A truncated last frame (a killed job) is dropped.
    """
    lines = text.splitlines()
    steps, energies, frames, symbols = [], [], [], []
    index = 0
    while index < len(lines) and lines[index].strip():
        try:
            natoms = int(lines[index])
        except ValueError as exception:
            raise Cp2kOutputError(f'xyz line {index + 1}: expected an atom count') from exception
        block = lines[index + 2 : index + 2 + natoms]
        if len(block) < natoms:
            break
        step, energy = _STEP.search(lines[index + 1]), _ENERGY.search(lines[index + 1])
        if step is None or energy is None:
            raise Cp2kOutputError(f'xyz line {index + 2}: no `i =` / `E =` in the comment')
        rows = [line.split() for line in block]
        if any(len(row) != 4 for row in rows):
            break
        symbols = [row[0] for row in rows]
        frames.append([[fortran_float(value) for value in row[1:]] for row in rows])
        steps.append(int(step.group(1)))
        energies.append(fortran_float(energy.group(1).rstrip(',')))
        index += natoms + 2
    return (
        np.array(steps, dtype=int),
        np.array(energies),
        symbols,
        np.array(frames).reshape(-1, len(symbols), 3),
    )


def _table(text: str, columns: int) -> np.ndarray:
    """Return the complete numeric rows (``columns`` values) of a CP2K table, comment lines skipped."""
    rows = [line.split() for line in text.splitlines() if line.strip() and not line.lstrip().startswith('#')]
    return np.array([[fortran_float(value) for value in row] for row in rows if len(row) == columns]).reshape(
        -1, columns
    )


def parse_cp2k_cells(text: str) -> tuple[np.ndarray, np.ndarray]:
    """Return ``(steps, cells (nframes, 3, 3) in Å, rows = vectors)`` of a CP2K ``.cell`` file."""
    table = _table(text, 12)
    return table[:, 0].astype(int), table[:, 2:11].reshape(-1, 3, 3)


def parse_cp2k_energies(text: str) -> dict[str, np.ndarray]:
    """Return ``steps``, ``times`` (fs), ``temperatures`` (K), ``conserved_energies`` (eV) of ``.ener``."""
    table = _table(text, 7)
    return {
        'steps': table[:, 0].astype(int),
        'times': table[:, 1],
        'temperatures': table[:, 3],
        'conserved_energies': table[:, 5] * HARTREE_TO_EV,
    }


def parse_cp2k_restart_geometry(text: str) -> tuple[np.ndarray, np.ndarray]:
    """Return ``(cell, positions)`` (Å) of ``FORCE_EVAL/SUBSYS`` in a CP2K restart file.

    The ``&COORD`` block of the SUBSYS is read (MD restart files have an earlier one in the
    Nosé-Hoover thermostat section, which aiida-cp2k's own reader picks up); cell vectors ``A``/``B``/``C``
    are the first of the SUBSYS (the cell, not its ``CELL_REF``).
    """
    subsys = text[text.rfind('&SUBSYS') :]
    if '&END SUBSYS' not in subsys or '&END FORCE_EVAL' not in subsys:
        raise Cp2kOutputError('the SUBSYS or FORCE_EVAL section of the restart file is not closed: truncated')
    blocks = _COORD.findall(subsys)
    if not blocks:
        raise Cp2kOutputError('no &COORD block in the SUBSYS of the restart file')
    rows = [line.split() for line in blocks[0].splitlines()]
    positions = np.array([[fortran_float(value) for value in row[1:4]] for row in rows if len(row) >= 4])
    vectors: dict[str, list[float]] = {}
    for name, *values in _CELL_VECTOR.findall(subsys):  # the first A/B/C: CELL, not CELL_REF
        vectors.setdefault(name, [fortran_float(value) for value in values])
    if sorted(vectors) != ['A', 'B', 'C']:
        raise Cp2kOutputError('no cell vectors A, B, C in the restart file')
    return np.array([vectors['A'], vectors['B'], vectors['C']]), positions


def parse_cp2k_trajectory(positions: str, forces: str | None, cells: str | None) -> dict[str, Any]:
    """Return the frames present in every given file: ``steps``, ``symbols``, ``positions`` (Å),
    ``cells`` (Å, ``None`` without a cell file), ``energies`` (eV), ``forces`` (eV/Å, ``None`` without a
    forces file), and ``counts``: the frames read from each file (``None`` for a file not given). Frames are
    matched by step; a frame missing from one file is dropped (the caller compares the counts)."""
    steps, energies, symbols, values = parse_cp2k_xyz(positions)
    keep = {int(step): index for index, step in enumerate(steps)}
    force_frames = cell_frames = None
    if forces is not None:
        force_steps, _, _, force_values = parse_cp2k_xyz(forces)
        force_frames = dict(zip(force_steps.tolist(), force_values, strict=True))
        keep = {step: index for step, index in keep.items() if step in force_frames}
    if cells is not None:
        cell_steps, cell_values = parse_cp2k_cells(cells)
        cell_frames = dict(zip(cell_steps.tolist(), cell_values, strict=True))
        keep = {step: index for step, index in keep.items() if step in cell_frames}
    order = sorted(keep)
    return {
        'counts': {
            'positions': len(steps),
            'forces': None if force_frames is None else len(force_frames),
            'cells': None if cell_frames is None else len(cell_frames),
        },
        'steps': np.array(order, dtype=int),
        'symbols': symbols,
        'positions': values[[keep[step] for step in order]].reshape(-1, len(symbols), 3),
        'energies': energies[[keep[step] for step in order]] * HARTREE_TO_EV,
        'cells': None if cell_frames is None else np.array([cell_frames[step] for step in order]),
        'forces': None
        if force_frames is None
        else np.array([force_frames[step] for step in order]).reshape(-1, len(symbols), 3)
        * (HARTREE_TO_EV / BOHR_TO_ANGSTROM),
    }
