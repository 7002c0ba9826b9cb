"""``lisei-tblite``, ``lisei-chgnet``: label a batch of frames with an ASE calculator of :mod:`.calculators`.

Runs wherever a job runs and never imports AiiDA. Input: a frames file (``.npz`` as written by
:func:`~aiida_lisei.formats.frames_npz.write_structures`, exact float64; or any multi-frame ``extxyz``, keys
from ``info['key']``) and a JSON parameters file of the calculator (its defaults fill what is missing, see
:data:`~aiida_lisei.engines.calculators.CALCULATORS`). Output: a JSON Lines file
(:mod:`aiida_lisei.formats.frames_jsonl`), written as the batch runs so that a job killed half-way keeps
what it computed:

* line 1 ``{"type": "header", "program", "calculator", "version", "parameters", "nframes"}``;
* per frame ``{"type": "frame", "key", "energy" (eV), "forces" (eV/Å, natomsx3), "stress"
  (eV/Å³, 3x3, ASE sign: negative under compression), "wall_time" (s)}``, or
  ``{"type": "failure", "key", "reason"}`` when the calculator raised (e.g. SCF not converged) or the frame
  is unphysical (:func:`~aiida_lisei.science.geometry.validate_frame`: not 3D periodic, atoms closer than
  0.5 Å);
* last line ``{"type": "footer", "labelled", "failed", "wall_time"}``.

Every frame gets a fresh calculator, so a label does not depend on the other frames of the batch.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

import numpy as np

from aiida_lisei.engines.calculators import CALCULATORS, get_calculator
from aiida_lisei.formats.frames_jsonl import write_frame_records
from aiida_lisei.formats.frames_npz import read_structures
from aiida_lisei.science.geometry import validate_frame

if TYPE_CHECKING:  # ASE is imported lazily (heavy)
    from ase import Atoms

__all__ = ('calculate', 'label_frame', 'label_frames', 'main', 'main_chgnet', 'main_tblite')


def calculate(atoms: Atoms) -> dict[str, Any]:
    """Return energy (eV), forces (eV/Å) and stress (eV/Å³, 3x3) of ``atoms`` from its calculator.

    Raises ``ValueError`` for non-finite results.
    """
    energy = float(atoms.get_potential_energy())
    forces = atoms.get_forces()
    stress = atoms.get_stress(voigt=False)
    if not (math.isfinite(energy) and np.isfinite(forces).all() and np.isfinite(stress).all()):
        raise ValueError('the calculator returned non-finite energy, forces or stress')
    return {'energy': energy, 'forces': forces.tolist(), 'stress': stress.tolist()}


def label_frame(atoms: Atoms, calculator: str, parameters: Mapping[str, Any]) -> dict[str, Any]:
    """Return energy (eV), forces (eV/Å) and stress (eV/Å³, 3x3) of ``atoms`` from a fresh ``calculator``.

    Raises whatever the calculator raises (tblite's ``CalculationFailed`` for an unconverged SCF, ...) and
    ``ValueError`` for non-finite results.
    """
    atoms = atoms.copy()
    atoms.calc = get_calculator(calculator).make_calculator(parameters)
    return calculate(atoms)


def label_frames(
    frames: Sequence[tuple[str, Atoms]],
    calculator: str,
    parameters: Mapping[str, Any],
    log: IO[str] | None = None,
) -> Iterator[dict[str, Any]]:
    """Yield the result records (header, one per frame, footer) of the JSON Lines format of this module."""
    spec = get_calculator(calculator)
    parameters = spec.check_parameters(parameters)
    yield {
        'type': 'header',
        'program': f'lisei-{calculator}',
        'calculator': calculator,
        'version': spec.version(),
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
                record.update(type='frame', **label_frame(atoms, calculator, parameters))
            except Exception as exception:  # any calculator error fails this frame only
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


def main(calculator: str, argv: list[str] | None = None) -> int:
    """Label the frames of ``--frames`` with ``calculator``, write ``--output`` (JSON Lines)."""
    parser = argparse.ArgumentParser(
        prog=f'lisei-{calculator}', description=f'Label a batch of frames with {calculator} through ASE.'
    )
    parser.add_argument('--frames', type=Path, required=True, help='frames file (.npz or extxyz)')
    parser.add_argument(
        '--parameters', type=Path, help=f'JSON file of {calculator} parameters (defaults if absent)'
    )
    parser.add_argument('--output', type=Path, required=True, help='results file (JSON Lines)')
    args = parser.parse_args(argv)
    parameters = json.loads(args.parameters.read_text()) if args.parameters else {}
    try:
        CALCULATORS[calculator].check_parameters(parameters)
    except ValueError as exception:
        parser.error(str(exception))
    frames = read_structures(args.frames)
    with args.output.open('w') as handle:
        write_frame_records(handle, label_frames(frames, calculator, parameters, log=sys.stdout))
    return 0


def main_tblite(argv: list[str] | None = None) -> int:
    """Entry point of ``lisei-tblite``."""
    return main('tblite', argv)


def main_chgnet(argv: list[str] | None = None) -> int:
    """Entry point of ``lisei-chgnet``."""
    return main('chgnet', argv)
