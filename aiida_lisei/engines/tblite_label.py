"""``lisei-tblite``: label a batch of frames with tblite (GFN1-xTB by default) through its ASE calculator.

Runs wherever a job runs and never imports AiiDA. Input: a frames file (``.npz`` as written by
:func:`~aiida_lisei.formats.frames_npz.write_structures`, exact float64; or any multi-frame ``extxyz``, keys
from ``info['key']``) and a
JSON parameters file (:data:`DEFAULT_PARAMETERS` fills what is missing). Output: a JSON Lines file
(:mod:`aiida_lisei.formats.frames_jsonl`), written as the batch runs so that a job killed half-way keeps
what it computed:

* line 1 ``{"type": "header", "program", "tblite_version", "parameters", "nframes"}``;
* per frame ``{"type": "frame", "key", "energy" (eV), "forces" (eV/Å, natomsx3), "stress"
  (eV/Å³, 3x3, ASE sign: negative under compression), "wall_time" (s)}``, or
  ``{"type": "failure", "key", "reason"}`` when tblite raised (e.g. SCF not converged) or the frame
  is unphysical (:func:`~aiida_lisei.science.geometry.validate_frame`: not 3D periodic, atoms closer than
  0.5 Å);
* last line ``{"type": "footer", "labelled", "failed", "wall_time"}``.

Every frame gets a fresh calculator, so a label does not depend on the other frames of the batch.
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
from typing import IO, TYPE_CHECKING, Any

import numpy as np

from aiida_lisei.formats.frames_jsonl import write_frame_records
from aiida_lisei.formats.frames_npz import read_structures
from aiida_lisei.science.geometry import validate_frame

if TYPE_CHECKING:  # ASE and tblite are imported lazily (heavy)
    from ase import Atoms
    from ase.calculators.calculator import Calculator

__all__ = (
    'DEFAULT_PARAMETERS',
    'MAX_ATOMIC_NUMBER',
    'METHODS',
    'check_parameters',
    'label_frame',
    'label_frames',
    'main',
    'make_calculator',
    'tblite_version',
)

#: Hamiltonians of tblite's ASE calculator.
METHODS = ('GFN1-xTB', 'GFN2-xTB', 'IPEA1-xTB')

#: Parameters of a run: electronic temperature in K; ``accuracy`` scales tblite's SCF and integral
#: thresholds (smaller is tighter); ``max_iterations`` caps the SCF cycles.
DEFAULT_PARAMETERS: dict[str, Any] = {
    'method': 'GFN1-xTB',
    'electronic_temperature': 300.0,
    'accuracy': 1.0,
    'max_iterations': 250,
}

#: Heaviest element the GFN parametrisations cover (H-Rn).
MAX_ATOMIC_NUMBER = 86


def tblite_version() -> str:
    """Return the installed tblite version."""
    return importlib.metadata.version('tblite')


def check_parameters(parameters: Mapping[str, Any]) -> dict[str, Any]:
    """Return ``parameters`` completed with :data:`DEFAULT_PARAMETERS`; raise ``ValueError`` if invalid."""
    unknown = sorted(set(parameters) - set(DEFAULT_PARAMETERS))
    if unknown:
        raise ValueError(f'unknown tblite parameters {unknown}; known: {sorted(DEFAULT_PARAMETERS)}')
    merged = {**DEFAULT_PARAMETERS, **parameters}
    if merged['method'] not in METHODS:
        raise ValueError(f'method {merged["method"]!r} is not one of {list(METHODS)}')
    for name in ('electronic_temperature', 'accuracy'):
        value = merged[name]
        if (
            isinstance(value, bool)
            or not isinstance(value, int | float)
            or not (math.isfinite(value) and value > 0)
        ):
            raise ValueError(f'{name} must be a positive number, got {value!r}')
        merged[name] = float(value)
    iterations = merged['max_iterations']
    if isinstance(iterations, bool) or not isinstance(iterations, int) or iterations < 1:
        raise ValueError(f'max_iterations must be a positive integer, got {iterations!r}')
    return merged


def make_calculator(parameters: Mapping[str, Any]) -> Calculator:
    """Return a silent tblite ASE calculator (method, electronic_temperature K, accuracy, max_iterations)."""
    from tblite.ase import TBLite

    return TBLite(
        method=parameters['method'],
        electronic_temperature=parameters['electronic_temperature'],
        accuracy=parameters['accuracy'],
        max_iterations=parameters['max_iterations'],
        verbosity=0,
    )


def label_frame(atoms: Atoms, parameters: Mapping[str, Any]) -> dict[str, Any]:
    """Return energy (eV), forces (eV/Å) and stress (eV/Å³, 3x3) of ``atoms`` from a fresh tblite calculator.

    Raises whatever tblite raises (``CalculationFailed`` for an unconverged SCF, ``InputError``, ...) and
    ``ValueError`` for non-finite results.
    """
    atoms = atoms.copy()
    atoms.calc = make_calculator(parameters)
    energy = float(atoms.get_potential_energy())
    forces = atoms.get_forces()
    stress = atoms.get_stress(voigt=False)
    if not (math.isfinite(energy) and np.isfinite(forces).all() and np.isfinite(stress).all()):
        raise ValueError('tblite returned non-finite energy, forces or stress')
    return {'energy': energy, 'forces': forces.tolist(), 'stress': stress.tolist()}


def label_frames(
    frames: Sequence[tuple[str, Atoms]], parameters: Mapping[str, Any], log: IO[str] | None = None
) -> Iterator[dict[str, Any]]:
    """Yield the result records (header, one per frame, footer) of the JSON Lines format of this module."""
    parameters = check_parameters(parameters)
    yield {
        'type': 'header',
        'program': 'lisei-tblite',
        'tblite_version': tblite_version(),
        'parameters': parameters,
        'nframes': len(frames),
    }
    start, counts = time.perf_counter(), {'frame': 0, 'failure': 0}
    for key, atoms in frames:
        frame_start = time.perf_counter()
        reason = validate_frame(atoms)
        record: dict[str, Any] = {'key': key}
        if reason is None:
            try:
                record.update(type='frame', **label_frame(atoms, parameters))
            except Exception as exception:  # any tblite error fails this frame only
                reason = f'{type(exception).__name__}: {exception}'
        if reason is not None:
            record.update(type='failure', reason=reason)
        record['wall_time'] = time.perf_counter() - frame_start
        counts[record['type']] += 1
        if log is not None:
            outcome = f'E = {record["energy"]:.6f} eV' if reason is None else f'FAILED: {reason}'
            print(
                f'{key} ({len(atoms)} atoms): {outcome} [{record["wall_time"]:.2f} s]', file=log, flush=True
            )
        yield record
    yield {
        'type': 'footer',
        'labelled': counts['frame'],
        'failed': counts['failure'],
        'wall_time': time.perf_counter() - start,
    }


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``lisei-tblite``: label the frames of ``--frames``, write ``--output`` (JSON Lines)."""
    parser = argparse.ArgumentParser(prog='lisei-tblite', description=__doc__.splitlines()[0])
    parser.add_argument('--frames', type=Path, required=True, help='frames file (.npz or extxyz)')
    parser.add_argument('--parameters', type=Path, help='JSON file of tblite parameters (defaults if absent)')
    parser.add_argument('--output', type=Path, required=True, help='results file (JSON Lines)')
    args = parser.parse_args(argv)
    parameters = json.loads(args.parameters.read_text()) if args.parameters else {}
    try:
        check_parameters(parameters)
    except ValueError as exception:
        parser.error(str(exception))
    frames = read_structures(args.frames)
    with args.output.open('w') as handle:
        write_frame_records(handle, label_frames(frames, parameters, log=sys.stdout))
    return 0


if __name__ == '__main__':  # pragma: no cover
    raise SystemExit(main())
