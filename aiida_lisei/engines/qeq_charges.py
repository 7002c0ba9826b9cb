"""``lisei-qeq``: QEq charges (the paper's Eqs. 3-4, SI Eqs. S2-S9) of the frames of a trajectory.

Runs wherever a job runs and never imports AiiDA. The physics is
:class:`~aiida_lisei.science.qeq.QEqSolver` (Gaussian charges, PME electrostatics, slab dipole
correction, Krylov solver warm-started from the previous frame). Input: a frames file (``.npz`` of
:func:`~aiida_lisei.formats.frames_npz.write_trajectory`: ``positions`` (F, N, 3) Å, ``cells`` (F, 3, 3) Å,
``symbols`` (N,), and ``frame_indices``, ``stepids``, ``times`` (ps) per frame) and a JSON settings file
(:data:`DEFAULT_SETTINGS` fills what is missing, :func:`check_settings` explains every key). Output:
a JSON Lines file written as the frames are solved, so that a job killed half-way keeps what it did:

* line 1 ``{"type": "header", "program", "versions", "settings", "nframes", "natoms", "symbols"}``;
* per frame ``{"type": "frame", "index", "frame_index", "stepid", "time" (ps), "charges" (e, N),
  "chemical_potential" (eV/e), "energy" (eV), "iterations", "residual" (eV/e), "converged",
  "total_charge" (e), "wall_time" (s)}``, or ``{"type": "failure", "index", "frame_index", "reason"}``
  when the solver raised (e.g. a Hessian that is not positive definite);
* last line ``{"type": "footer", "solved", "failed", "not_converged", "wall_time"}``.

A frame that did not reach the tolerance in ``max_iterations`` is still written (``converged``
false, its charges the last iterate); the next frame then starts from the last converged charges.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import json
import math
import sys
import time
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import IO, Any

import numpy as np

from aiida_lisei.formats.frames_jsonl import write_frame_records
from aiida_lisei.formats.frames_npz import TrajectoryFrames, read_trajectory

__all__ = (
    'DEFAULT_SETTINGS',
    'PARAMETER_SETS',
    'build_solver',
    'check_frame',
    'check_settings',
    'main',
    'solve_frames',
    'species_parameters',
)

#: Named QEq parameter sets: the paper's Table S2, Rappe & Goddard (1991).
PARAMETER_SETS = ('paper', 'rappe_goddard')

#: Settings of a run. ``parameter_set``: a name of :data:`PARAMETER_SETS` or ``None`` (then ``species``
#: must give every species); ``species``: ``{symbol: {electronegativity (eV/e), hardness (eV/e²),
#: sigma (Å, optional: covalent radius)}}`` added to or overriding the set; ``slab``: vacuum along the
#: third cell vector with the slab dipole correction (SI Eq. S8), else 3D-periodic; ``total_charge`` (e);
#: ``gaussian_self_energy``: ``None`` = True (the SI's Eq. S7; without it the Gaussian-shielded
#: problem is indefinite for Li6PS5Cl even with Rappe-Goddard's hardness); ``tolerance`` (eV/e) and
#: ``max_iterations`` of the solver; ``smearing``, ``cutoff``, ``mesh_spacing`` (Å, ``None``: the
#: solver's defaults), ``method`` (``p3m`` or ``pme``), ``n_coarse``: see
#: :class:`~aiida_lisei.science.qeq.QEqSettings`.
DEFAULT_SETTINGS: dict[str, Any] = {
    'parameter_set': 'paper',
    'species': {},
    'slab': True,
    'total_charge': 0.0,
    'gaussian_self_energy': None,
    'tolerance': 1e-4,
    'max_iterations': 500,
    'smearing': 2.5,
    'cutoff': None,
    'mesh_spacing': None,
    'method': 'p3m',
    'n_coarse': 200,
}

_SPECIES_KEYS = ('electronegativity', 'hardness', 'sigma')

#: Thinnest cell accepted (Å, perpendicular width along each cell vector): thinner cells are not a
#: simulation box (and make the real-space neighbour list explode).
MIN_CELL_WIDTH = 2.0


def _number(name: str, value: Any, positive: bool = False, optional: bool = False) -> float | None:
    """Return ``value`` as a finite float (positive if asked; ``None`` allowed if optional)."""
    if value is None and optional:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise ValueError(f'{name} must be a finite number, got {value!r}')
    if positive and value <= 0:
        raise ValueError(f'{name} must be positive, got {value!r}')
    return float(value)


def check_settings(settings: Mapping[str, Any]) -> dict[str, Any]:
    """Return ``settings`` completed with :data:`DEFAULT_SETTINGS`; raise ``ValueError`` if invalid.

    ``gaussian_self_energy`` is resolved to a bool, numbers to floats; the species entries are checked
    (hardness and sigma positive) but a species missing from the set is only found by
    :func:`species_parameters` (it needs the symbols of the frames).
    """
    unknown = sorted(set(settings) - set(DEFAULT_SETTINGS))
    if unknown:
        raise ValueError(f'unknown QEq settings {unknown}; known: {sorted(DEFAULT_SETTINGS)}')
    merged = {**DEFAULT_SETTINGS, **settings}
    name = merged['parameter_set']
    if name is not None and name not in PARAMETER_SETS:
        raise ValueError(f'parameter_set {name!r} is not one of {list(PARAMETER_SETS)} (or null)')
    species = merged['species']
    if not isinstance(species, Mapping):
        raise ValueError('species must be {symbol: {electronegativity, hardness[, sigma]}}')
    checked_species = {}
    for symbol, values in species.items():
        if not isinstance(values, Mapping):
            raise ValueError(f'species.{symbol} must be a dict with keys {list(_SPECIES_KEYS)}')
        extra = sorted(set(values) - set(_SPECIES_KEYS))
        if extra:
            raise ValueError(f'species.{symbol}: unknown keys {extra}; known: {list(_SPECIES_KEYS)}')
        if name is None and not {'electronegativity', 'hardness'} <= set(values):
            raise ValueError(f'species.{symbol} needs electronegativity and hardness (no parameter_set)')
        entry = {}
        for key, value in values.items():
            entry[key] = _number(f'species.{symbol}.{key}', value, positive=key != 'electronegativity')
        checked_species[str(symbol)] = entry
    merged['species'] = checked_species
    if not isinstance(merged['slab'], bool):
        raise ValueError(f'slab must be true or false, got {merged["slab"]!r}')
    if merged['gaussian_self_energy'] is None:
        merged['gaussian_self_energy'] = True
    elif not isinstance(merged['gaussian_self_energy'], bool):
        raise ValueError('gaussian_self_energy must be true, false or null')
    merged['total_charge'] = _number('total_charge', merged['total_charge'])
    for key in ('tolerance', 'smearing'):
        merged[key] = _number(key, merged[key], positive=True)
    for key in ('cutoff', 'mesh_spacing'):
        merged[key] = _number(key, merged[key], positive=True, optional=True)
    for key, low in (('max_iterations', 1), ('n_coarse', 0)):
        value = merged[key]
        if isinstance(value, bool) or not isinstance(value, int) or value < low:
            raise ValueError(f'{key} must be an integer >= {low}, got {value!r}')
    if merged['method'] not in ('p3m', 'pme'):
        raise ValueError(f"method must be 'p3m' or 'pme', got {merged['method']!r}")
    return merged


def species_parameters(settings: Mapping[str, Any], symbols: Sequence[str]) -> dict[str, Any]:
    """Return ``{symbol: QEqSpecies}`` for the species of ``symbols`` from complete ``settings``.

    Raises ``ValueError`` naming the species that have no parameters.
    """
    from aiida_lisei.science.qeq import (
        PAPER_QEQ_PARAMETERS,
        RAPPE_GODDARD_QEQ_PARAMETERS,
        QEqSpecies,
        covalent_radius,
    )

    base = {'paper': PAPER_QEQ_PARAMETERS, 'rappe_goddard': RAPPE_GODDARD_QEQ_PARAMETERS, None: {}}
    parameters = dict(base[settings['parameter_set']])
    for symbol, values in settings['species'].items():
        known = parameters.get(symbol)
        default = (
            {'electronegativity': known.electronegativity, 'hardness': known.hardness, 'sigma': known.sigma}
            if known is not None
            else {'sigma': covalent_radius(symbol)}
        )
        merged = {**default, **values}
        missing = [key for key in _SPECIES_KEYS if key not in merged]
        if missing:
            raise ValueError(f'species {symbol} lacks {missing}')
        parameters[symbol] = QEqSpecies(merged['electronegativity'], merged['hardness'], merged['sigma'])
    missing = sorted(set(symbols) - set(parameters))
    if missing:
        name = settings['parameter_set']
        raise ValueError(
            f'no QEq parameters for species {missing} (parameter_set {name!r}): give them under `species`'
        )
    return {symbol: parameters[symbol] for symbol in sorted(set(symbols))}


def build_solver(settings: Mapping[str, Any], symbols: Sequence[str]):
    """Return a :class:`~aiida_lisei.science.qeq.QEqSolver` for ``symbols`` from ``settings``."""
    from aiida_lisei.science.qeq import QEqSettings, QEqSolver

    settings = check_settings(settings)
    numerics = QEqSettings(
        smearing=settings['smearing'],
        cutoff=settings['cutoff'],
        mesh_spacing=settings['mesh_spacing'],
        method=settings['method'],
        tolerance=settings['tolerance'],
        max_iterations=settings['max_iterations'],
        n_coarse=settings['n_coarse'],
    )
    return QEqSolver(
        list(symbols),
        parameters=species_parameters(settings, symbols),
        total_charge=settings['total_charge'],
        slab=settings['slab'],
        gaussian_self_energy=settings['gaussian_self_energy'],
        settings=numerics,
    )


def check_frame(positions: np.ndarray, cell: np.ndarray) -> str | None:
    """Return why a frame cannot be solved (non-finite numbers, a cell thinner than :data:`MIN_CELL_WIDTH`).

    :param positions: (N, 3) positions (Å); :param cell: (3, 3) cell vectors as rows (Å).
    """
    if not np.isfinite(positions).all():
        return 'non-finite positions'
    if not np.isfinite(cell).all():
        return 'non-finite cell'
    volume = abs(float(np.linalg.det(cell)))
    areas = np.linalg.norm(np.cross(np.roll(cell, -1, axis=0), np.roll(cell, -2, axis=0)), axis=1)
    widths = np.divide(volume, areas, out=np.zeros(3), where=areas > 0)
    if widths.min() < MIN_CELL_WIDTH:
        return f'cell too thin: widths {np.round(widths, 3).tolist()} Å (minimum {MIN_CELL_WIDTH} Å)'
    return None


def _versions() -> dict[str, str]:
    """Versions of the packages that decide the charges."""
    versions = {}
    for package in ('aiida-lisei', 'jax', 'jax-pme', 'numpy', 'scipy', 'vesin'):
        try:
            versions[package] = importlib.metadata.version(package)
        except importlib.metadata.PackageNotFoundError:
            versions[package] = 'unknown'
    return versions


def _float(value: float) -> float | None:
    """JSON-safe float: NaN and inf become ``None``."""
    return float(value) if math.isfinite(value) else None


def solve_frames(
    frames: TrajectoryFrames, settings: Mapping[str, Any], log: IO[str] | None = None
) -> Iterator[dict[str, Any]]:
    """Yield the result records (header, one per frame, footer) of the JSON Lines format of this module."""
    settings = check_settings(settings)
    solver = build_solver(settings, frames.symbols)
    yield {
        'type': 'header',
        'program': 'lisei-qeq',
        'versions': _versions(),
        'settings': settings,
        'nframes': len(frames),
        'natoms': len(frames.symbols),
        'symbols': frames.symbols,
    }
    start = time.perf_counter()
    counts = {'solved': 0, 'failed': 0, 'not_converged': 0}
    for index in range(len(frames)):
        frame_start = time.perf_counter()
        record: dict[str, Any] = {'index': index, 'frame_index': int(frames.frame_indices[index])}
        reason = check_frame(frames.positions[index], frames.cells[index])
        if reason is None:
            try:
                result = solver.solve(frames.positions[index], frames.cells[index])
            except Exception as exception:  # a failed frame is reported, the others are still solved
                reason = f'{type(exception).__name__}: {exception}'
        if reason is not None:
            record.update(type='failure', reason=reason)
            counts['failed'] += 1
        else:
            charges = np.asarray(result.charges, dtype=float)
            record.update(
                type='frame',
                stepid=int(frames.stepids[index]),
                time=_float(frames.times[index]),
                charges=charges.tolist(),
                chemical_potential=float(result.chemical_potential),
                energy=float(result.energy),
                iterations=int(result.iterations),
                residual=float(result.residual),
                converged=bool(result.converged),
                total_charge=float(charges.sum()),
            )
            counts['solved'] += 1
            counts['not_converged'] += not result.converged
        record['wall_time'] = time.perf_counter() - frame_start
        if log is not None:
            if record['type'] == 'frame':
                outcome = f'{record["iterations"]} iterations, residual {record["residual"]:.2e} eV/e' + (
                    '' if record['converged'] else ' NOT CONVERGED'
                )
            else:
                outcome = f'FAILED: {record["reason"]}'
            label = f'frame {index} (trajectory frame {record["frame_index"]})'
            print(f'{label}: {outcome} [{record["wall_time"]:.2f} s]', file=log, flush=True)
        yield record
    yield {'type': 'footer', **counts, 'wall_time': time.perf_counter() - start}


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``lisei-qeq``: QEq charges of the frames of ``--frames``, into ``--output``."""
    parser = argparse.ArgumentParser(prog='lisei-qeq', description=__doc__.splitlines()[0])
    parser.add_argument('--frames', type=Path, required=True, help='frames file (.npz of write_trajectory)')
    parser.add_argument('--settings', type=Path, help='JSON file of QEq settings (defaults if absent)')
    parser.add_argument('--output', type=Path, required=True, help='results file (JSON Lines)')
    args = parser.parse_args(argv)
    settings = json.loads(args.settings.read_text()) if args.settings else {}
    try:
        settings = check_settings(settings)
        frames = read_trajectory(args.frames)
        species_parameters(settings, frames.symbols)
    except (ValueError, KeyError, OSError) as exception:
        parser.error(str(exception))
    with args.output.open('w') as handle:
        write_frame_records(handle, solve_frames(frames, settings, log=sys.stdout))
    return 0


if __name__ == '__main__':  # pragma: no cover
    raise SystemExit(main())
