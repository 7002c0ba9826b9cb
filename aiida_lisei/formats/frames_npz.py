"""The ``.npz`` frame files that the calculations write for the package's engines (exact float64, no AiiDA).

* a **batch of structures** (``lisei-tblite``, ``lisei-chgnet``; one frame for their ``-md`` runners):
  ``keys`` and, per frame ``i``, ``numbers_i``, ``positions_i`` (Å), ``cell_i`` (Å, rows = lattice vectors),
  ``pbc_i``; frames may differ in size (:func:`write_structures`, :func:`read_structures`, which also reads a
  multi-frame ``extxyz`` whose keys come from ``info['key']``);
* the **frames of one trajectory** (``lisei-qeq``): ``positions`` (F, N, 3) Å, ``cells`` (F, 3, 3) Å,
  ``symbols`` (N,), and per frame ``frame_indices`` into the source trajectory, ``stepids`` and ``times``
  (ps) (:class:`TrajectoryFrames`, :func:`write_trajectory`, :func:`read_trajectory`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import IO, TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:  # ASE is imported lazily (heavy)
    from ase import Atoms

__all__ = ('TrajectoryFrames', 'read_structures', 'read_trajectory', 'write_structures', 'write_trajectory')


def write_structures(path: str | Path | IO[bytes], frames: Mapping[str, Atoms]) -> None:
    """Write ``{key: atoms}`` as an ``.npz`` (keys, and per frame numbers, positions Å, cell Å, pbc)."""
    arrays: dict[str, np.ndarray] = {'keys': np.array(list(frames), dtype=str)}
    for index, atoms in enumerate(frames.values()):
        arrays[f'numbers_{index}'] = atoms.numbers.astype(np.int64)
        arrays[f'positions_{index}'] = atoms.positions.astype(np.float64)
        arrays[f'cell_{index}'] = atoms.cell.array.astype(np.float64)
        arrays[f'pbc_{index}'] = atoms.pbc.astype(bool)
    np.savez(path, **arrays)


def read_structures(path: str | Path) -> list[tuple[str, Atoms]]:
    """Return ``(key, atoms)`` pairs from an ``.npz`` of :func:`write_structures` or an ``extxyz`` file."""
    from ase import Atoms
    from ase.io import read

    path = Path(path)
    if path.suffix == '.npz':
        with np.load(path, allow_pickle=False) as data:
            return [
                (
                    str(key),
                    Atoms(
                        numbers=data[f'numbers_{i}'],
                        positions=data[f'positions_{i}'],
                        cell=data[f'cell_{i}'],
                        pbc=data[f'pbc_{i}'],
                    ),
                )
                for i, key in enumerate(data['keys'])
            ]
    images = read(path, index=':', format='extxyz')
    return [(str(atoms.info.get('key', f'frame_{i:04d}')), atoms) for i, atoms in enumerate(images)]


class TrajectoryFrames:
    """Frames of one system: ``positions`` (F, N, 3) Å, ``cells`` (F, 3, 3) Å, ``symbols`` (N,),
    ``frame_indices`` (F,) into the source trajectory, ``stepids`` (F,) and ``times`` (F,) ps (NaN: unknown).
    """

    def __init__(
        self,
        positions: np.ndarray,
        cells: np.ndarray,
        symbols: Sequence[str],
        frame_indices: np.ndarray | None = None,
        stepids: np.ndarray | None = None,
        times: np.ndarray | None = None,
    ) -> None:
        self.positions = np.asarray(positions, dtype=np.float64)
        if self.positions.ndim != 3 or self.positions.shape[2] != 3:
            raise ValueError(f'positions must be (F, N, 3), got {self.positions.shape}')
        nframes, natoms = self.positions.shape[:2]
        self.cells = np.asarray(cells, dtype=np.float64)
        if self.cells.shape != (nframes, 3, 3):
            raise ValueError(f'cells must be (F, 3, 3) = ({nframes}, 3, 3), got {self.cells.shape}')
        self.symbols = [str(symbol) for symbol in symbols]
        if len(self.symbols) != natoms:
            raise ValueError(f'{len(self.symbols)} symbols for {natoms} atoms')
        self.frame_indices = np.arange(nframes) if frame_indices is None else np.asarray(frame_indices)
        self.stepids = np.arange(nframes) if stepids is None else np.asarray(stepids)
        self.times = np.full(nframes, np.nan) if times is None else np.asarray(times, dtype=np.float64)
        for name in ('frame_indices', 'stepids', 'times'):
            if getattr(self, name).shape != (nframes,):
                raise ValueError(f'{name} must have one entry per frame ({nframes})')

    def __len__(self) -> int:
        return len(self.positions)


def write_trajectory(path: str | Path | IO[bytes], frames: TrajectoryFrames) -> None:
    """Write ``frames`` as an ``.npz`` (float64 positions and cells, exact)."""
    np.savez(
        path,
        positions=frames.positions,
        cells=frames.cells,
        symbols=np.array(frames.symbols, dtype=str),
        frame_indices=frames.frame_indices.astype(np.int64),
        stepids=frames.stepids.astype(np.int64),
        times=frames.times,
    )


def read_trajectory(path: str | Path | IO[bytes]) -> TrajectoryFrames:
    """Read the ``.npz`` of :func:`write_trajectory` (``positions``, ``cells``, ``symbols`` required)."""
    with np.load(path, allow_pickle=False) as data:
        optional = {key: data[key] for key in ('frame_indices', 'stepids', 'times') if key in data}
        return TrajectoryFrames(data['positions'], data['cells'], data['symbols'].tolist(), **optional)
