"""Pure parsers of LAMMPS outputs: the log, text dumps (``id type x y z``) and DeePMD's ``model_devi.out``.

Units are those of ``units metal``: Å, eV, ps, K, bar. No AiiDA imports.
"""

from __future__ import annotations

import io
import math
import re
from dataclasses import dataclass, field

import numpy as np

__all__ = (
    'DumpFrames',
    'LammpsLog',
    'box_to_cell',
    'lammps_failure',
    'parse_dump',
    'parse_log',
    'parse_model_devi',
)

#: Columns of DeePMD-kit's ``model_devi.out`` (force deviations in eV/Å, virial deviations in eV per atom).
MODEL_DEVI_COLUMNS = (
    'step',
    'max_devi_v',
    'min_devi_v',
    'avg_devi_v',
    'max_devi_f',
    'min_devi_f',
    'avg_devi_f',
)

_VERSION = re.compile(r'^LAMMPS \((?P<version>[^)]+)\)')
_LOOP = re.compile(r'^Loop time of (?P<seconds>\S+) on (?P<procs>\d+) procs for (?P<steps>\d+) steps')
_WALLTIME = re.compile(r'^Total wall time: (?P<h>\d+):(?P<m>\d+):(?P<s>\d+)')
_ERROR = re.compile(r'^(ERROR(?: on proc \d+)?:.*)$', re.MULTILINE)
_WARNING = re.compile(r'^WARNING:\s*(.*)$', re.MULTILINE)


@dataclass
class LammpsLog:
    """Content of a LAMMPS log: thermo table (column name -> values), version, errors, timings (s)."""

    version: str | None = None
    thermo: dict[str, np.ndarray] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    loop_time: float | None = None
    loop_steps: int | None = None
    walltime: float | None = None
    completed: bool = False
    timeout: bool = False


def _float(token: str) -> float:
    """Return ``token`` as a float; LAMMPS writes NaN as ``nan``, ``-nan`` or ``NaN``."""
    try:
        return float(token)
    except ValueError:
        return math.nan


def parse_log(text: str) -> LammpsLog:
    """Parse a LAMMPS log (or screen output) of one or more runs; thermo rows of all runs are concatenated.

    ``completed`` is True when LAMMPS printed ``Total wall time`` (normal end, also after a timeout);
    ``timeout`` when ``timer timeout`` stopped a run early (``WARNING: Wall time limit reached``).
    """
    log = LammpsLog()
    header: list[str] | None = None
    rows: list[list[float]] = []
    for line in text.splitlines():
        stripped = line.strip()
        if header is not None:
            tokens = stripped.split()
            if len(tokens) == len(header) and re.match(r'^[-+]?\d', tokens[0]):
                rows.append([_float(token) for token in tokens])
                continue
            header = None
        if stripped.startswith('Step ') or stripped == 'Step':
            header = stripped.split()
            if log.thermo and list(log.thermo) != header:
                rows = []  # a later run with other columns: keep only its table
            log.thermo = dict.fromkeys(header)
        elif log.version is None and (match := _VERSION.match(stripped)):
            log.version = match['version']
        elif match := _LOOP.match(stripped):
            log.loop_time = _float(match['seconds'])
            log.loop_steps = int(match['steps'])
        elif match := _WALLTIME.match(stripped):
            log.walltime = int(match['h']) * 3600.0 + int(match['m']) * 60.0 + int(match['s'])
            log.completed = True
        elif stripped.startswith('WARNING: Wall time limit reached'):
            log.timeout = True
    if log.thermo:
        table = np.array(rows, dtype=float).reshape(-1, len(log.thermo))
        log.thermo = {name: table[:, index] for index, name in enumerate(log.thermo)}
    log.errors = [message.strip() for message in _ERROR.findall(text)]
    log.warnings = [message.strip() for message in _WARNING.findall(text)]
    return log


def lammps_failure(log: LammpsLog) -> tuple[str, dict[str, int | str]] | None:
    """Return the exit-code label and message arguments of lost atoms (``ERROR_LOST_ATOMS``, ``error``) or a
    NaN energy or pressure (``ERROR_NAN_ENERGY``, ``step``) in ``log``; ``None`` if there is neither."""
    for error in log.errors:
        if 'Lost atoms' in error:
            return 'ERROR_LOST_ATOMS', {'error': error}
    for column in ('PotEng', 'TotEng', 'Press'):
        values = log.thermo.get(column)
        if values is not None and not np.isfinite(values).all():
            return 'ERROR_NAN_ENERGY', {'step': int(log.thermo['Step'][~np.isfinite(values)][0])}
    return None


def parse_model_devi(text: str) -> dict[str, np.ndarray]:
    """Parse DeePMD's ``model_devi.out``: a dict column name -> values (``step`` as int).

    Column names come from the ``#`` header line when present, else :data:`MODEL_DEVI_COLUMNS`.
    Raises ``ValueError`` if the table has fewer than the 7 standard columns.
    """
    names = list(MODEL_DEVI_COLUMNS)
    for line in text.splitlines():
        if line.startswith('#'):
            names = line.lstrip('#').split()
            break
    table = np.loadtxt(io.StringIO(text), comments='#', ndmin=2, dtype=float)
    if table.size == 0:
        table = np.zeros((0, len(names)))
    if table.shape[1] < len(MODEL_DEVI_COLUMNS) or table.shape[1] != len(names):
        raise ValueError(f'model_devi table has {table.shape[1]} columns, header names {names}')
    columns = {name: table[:, index] for index, name in enumerate(names)}
    columns['step'] = columns['step'].astype(np.int64)
    return columns


def box_to_cell(bounds: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Convert LAMMPS dump box bounds to (cell rows in Å, origin in Å).

    ``bounds`` is (3, 2) for an orthogonal box or (3, 3) with the tilts ``xy, xz, yz`` in the third column
    (``xlo_bound xhi_bound xy`` ...), as in the LAMMPS ``dump`` documentation.
    """
    bounds = np.asarray(bounds, dtype=float)
    xy, xz, yz = bounds[:, 2] if bounds.shape[1] == 3 else (0.0, 0.0, 0.0)
    xlo = bounds[0, 0] - min(0.0, xy, xz, xy + xz)
    xhi = bounds[0, 1] - max(0.0, xy, xz, xy + xz)
    ylo = bounds[1, 0] - min(0.0, yz)
    yhi = bounds[1, 1] - max(0.0, yz)
    zlo, zhi = bounds[2, 0], bounds[2, 1]
    cell = np.array([[xhi - xlo, 0.0, 0.0], [xy, yhi - ylo, 0.0], [xz, yz, zhi - zlo]])
    return cell, np.array([xlo, ylo, zlo])


@dataclass
class DumpFrames:
    """Frames of a text dump: steps (F,), cells (F, 3, 3) Å, positions (F, N, 3) Å from the cell origin,
    atom ids (N,) and LAMMPS types (N,), taken from the first frame, and image flags (F, N, 3) when the
    dump has ``ix iy iz`` (unwrapped position = position + images @ cell)."""

    steps: np.ndarray
    cells: np.ndarray
    positions: np.ndarray
    ids: np.ndarray
    types: np.ndarray
    images: np.ndarray | None = None


def parse_dump(text: str) -> DumpFrames:
    """Parse a LAMMPS ``dump custom`` text file with columns ``id type x y z`` (any order, ``sort id``).

    Positions are shifted by the box origin, so that they are Cartesian coordinates in the returned cell.
    A truncated last frame (a killed run) is dropped. Raises ``ValueError`` if the atoms change between
    frames or a column is missing.
    """
    lines = text.splitlines()
    steps, cells, positions, images = [], [], [], []
    ids = types = None
    index = 0
    while index < len(lines):
        if not lines[index].startswith('ITEM: TIMESTEP'):
            index += 1
            continue
        try:
            step = int(lines[index + 1])
            natoms = int(lines[index + 3])
            ntilt = 3 if 'xy' in lines[index + 4] else 2
            bounds = np.array([lines[index + 5 + k].split()[:ntilt] for k in range(3)], dtype=float)
            columns = lines[index + 8].split()[2:]
            block = lines[index + 9 : index + 9 + natoms]
        except (IndexError, ValueError):
            break
        try:
            table = np.loadtxt(block, dtype=float, ndmin=2)
        except ValueError:  # a truncated line
            break
        if table.shape != (natoms, len(columns)):  # a truncated frame
            break
        try:
            order = [columns.index(name) for name in ('id', 'type', 'x', 'y', 'z')]
        except ValueError as exception:
            raise ValueError(f'dump columns {columns} lack id, type, x, y or z') from exception
        frame_ids, frame_types = table[:, order[0]].astype(int), table[:, order[1]].astype(int)
        if ids is None:
            ids, types = frame_ids, frame_types
        elif not (np.array_equal(ids, frame_ids) and np.array_equal(types, frame_types)):
            raise ValueError(f'the atoms of the frame at step {step} differ from those of the first frame')
        cell, origin = box_to_cell(bounds)
        if step in steps[-1:]:  # a continued run repeats the frame of its first step: keep the last copy
            steps.pop(), cells.pop(), positions.pop()
            images = images[:-1]
        steps.append(step)
        cells.append(cell)
        positions.append(table[:, order[2:]] - origin)
        if all(name in columns for name in ('ix', 'iy', 'iz')):
            images.append(table[:, [columns.index(name) for name in ('ix', 'iy', 'iz')]].astype(int))
        index += 9 + natoms
    if ids is None:
        return DumpFrames(
            np.zeros(0, int), np.zeros((0, 3, 3)), np.zeros((0, 0, 3)), np.zeros(0, int), np.zeros(0, int)
        )
    frame_images = np.array(images) if len(images) == len(steps) else None
    return DumpFrames(np.array(steps), np.array(cells), np.array(positions), ids, types, frame_images)
