"""``lisei-tblite-md``: relax a structure or run Nosé-Hoover NVT MD with tblite (GFN1-xTB) through ASE.

Runs wherever a job runs and never imports AiiDA. Input: a one-frame ``.npz`` as written by
:func:`~aiida_lisei.formats.frames_npz.write_structures`, a JSON parameters file (:data:`DEFAULT_PARAMETERS`
fills what is missing) and ``--seed`` (Maxwell-Boltzmann velocities of an MD run). Output: a JSON Lines
file in the record format of ``lisei-tblite`` (so
:func:`~aiida_lisei.formats.frames_jsonl.read_tblite_results` reads it), written as the run goes so that a
killed job keeps its trajectory:

* line 1 ``{"type": "header", "program", "tblite_version", "parameters", "seed", "natoms"}``;
* every ``stride`` steps ``{"type": "frame", "key": "step_<step>", "step", "time" (fs), "positions" (Å),
  "cell" (Å, rows), "energy" (eV), "forces" (eV/Å), "stress" (eV/Å³, 3x3, ASE sign), "temperature" (K)}``
  plus ``"conserved_energy"`` (eV, MD) or ``"fmax"`` (eV/Å, relax); the last step is always written;
* last line ``{"type": "footer", "task", "steps", "converged" (relax), "error" (or ``null``),
  "wall_time" (s)}``. A tblite failure (e.g. SCF not converged) ends the run with ``error`` set.

Relaxation: ASE ``BFGS`` or ``FIRE`` to ``fmax`` (eV/Å) within ``max_steps``, with the cell too
(``FrechetCellFilter``) when ``cell`` is true. MD: velocities from a Maxwell-Boltzmann distribution at
``temperature`` drawn with ``--seed``, zero total momentum, rescaled to exactly ``temperature``; then
``NoseHooverChainNVT`` (``tdamp`` fs, ``tchain`` thermostats) for ``n_steps`` steps of ``timestep`` fs.
One calculator serves the whole run (tblite restarts each SCF from the previous step's solution).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

import numpy as np

from aiida_lisei.engines.tblite_label import (
    DEFAULT_PARAMETERS as TBLITE_PARAMETERS,
)
from aiida_lisei.engines.tblite_label import (
    check_parameters as check_tblite_parameters,
)
from aiida_lisei.engines.tblite_label import (
    make_calculator,
    tblite_version,
)
from aiida_lisei.formats.frames_jsonl import write_frame_records
from aiida_lisei.formats.frames_npz import read_structures
from aiida_lisei.science.geometry import validate_frame

if TYPE_CHECKING:  # ASE and tblite are imported lazily (heavy)
    from ase import Atoms

__all__ = (
    'DEFAULT_PARAMETERS',
    'OPTIMIZERS',
    'TASKS',
    'check_parameters',
    'main',
    'run_md',
    'run_relax',
    'run_task',
)

TASKS = ('relax', 'md')
OPTIMIZERS = ('BFGS', 'FIRE')

#: Parameters of a run. ``task``: ``relax`` or ``md``; ``tblite``: the calculator (as in ``lisei-tblite``);
#: ``relax``: ``optimizer``, ``fmax`` (eV/Å), ``max_steps``, ``cell`` (relax the cell too), ``stride``
#: (write every n-th step); ``md``: ``temperature`` (K), ``timestep`` (fs), ``n_steps``, ``stride``,
#: ``tdamp`` (thermostat time constant, fs), ``tchain`` (length of the Nosé-Hoover chain).
DEFAULT_PARAMETERS: dict[str, Any] = {
    'task': 'md',
    'tblite': dict(TBLITE_PARAMETERS),
    'relax': {'optimizer': 'BFGS', 'fmax': 0.05, 'max_steps': 200, 'cell': False, 'stride': 1},
    'md': {'temperature': 300.0, 'timestep': 1.0, 'n_steps': 1000, 'stride': 10, 'tdamp': 100.0, 'tchain': 3},
}

#: Type of every setting of the ``relax`` and ``md`` sections: positive floats, integers >= minimum, or bool.
_SETTINGS: dict[str, dict[str, tuple[str, int]]] = {
    'relax': {'fmax': ('float', 0), 'max_steps': ('int', 0), 'cell': ('bool', 0), 'stride': ('int', 1)},
    'md': {
        'temperature': ('float', 0),
        'timestep': ('float', 0),
        'n_steps': ('int', 0),
        'stride': ('int', 1),
        'tdamp': ('float', 0),
        'tchain': ('int', 1),
    },
}


def _check_setting(section: str, name: str, value: Any) -> Any:
    """Return ``value`` converted to its type; raise ``ValueError`` if it is not valid."""
    kind, minimum = _SETTINGS[section][name]
    if kind == 'bool':
        if not isinstance(value, bool):
            raise ValueError(f'{section}.{name} must be true or false, got {value!r}')
        return value
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError(f'{section}.{name} must be a number, got {value!r}')
    if kind == 'int':
        if value != int(value) or value < minimum:
            raise ValueError(f'{section}.{name} must be an integer >= {minimum}, got {value!r}')
        return int(value)
    if not (math.isfinite(value) and value > 0):
        raise ValueError(f'{section}.{name} must be a positive number, got {value!r}')
    return float(value)


def check_parameters(parameters: Mapping[str, Any]) -> dict[str, Any]:
    """Return ``parameters`` completed with :data:`DEFAULT_PARAMETERS`; raise ``ValueError`` if invalid."""
    unknown = sorted(set(parameters) - set(DEFAULT_PARAMETERS))
    if unknown:
        raise ValueError(f'unknown parameters {unknown}; known: {sorted(DEFAULT_PARAMETERS)}')
    if parameters.get('task', DEFAULT_PARAMETERS['task']) not in TASKS:
        raise ValueError(f'task {parameters["task"]!r} is not one of {list(TASKS)}')
    merged = {'task': parameters.get('task', DEFAULT_PARAMETERS['task'])}
    merged['tblite'] = check_tblite_parameters(parameters.get('tblite', {}))
    for section in ('relax', 'md'):
        given = parameters.get(section, {})
        unknown = sorted(set(given) - set(DEFAULT_PARAMETERS[section]))
        if unknown:
            raise ValueError(
                f'unknown {section} settings {unknown}; known: {sorted(DEFAULT_PARAMETERS[section])}'
            )
        merged[section] = {**DEFAULT_PARAMETERS[section], **given}
        for name in _SETTINGS[section]:
            merged[section][name] = _check_setting(section, name, merged[section][name])
    if merged['relax']['optimizer'] not in OPTIMIZERS:
        raise ValueError(f'relax.optimizer {merged["relax"]["optimizer"]!r} is not one of {list(OPTIMIZERS)}')
    return merged


def _frame_record(atoms: Atoms, step: int, time_fs: float, **extra: float) -> dict[str, Any]:
    """Return the ``frame`` record of ``atoms`` (calculator attached) at ``step``."""
    energy = float(atoms.get_potential_energy())
    forces = atoms.get_forces()
    stress = atoms.get_stress(voigt=False)
    if not (math.isfinite(energy) and np.isfinite(forces).all() and np.isfinite(stress).all()):
        raise ValueError('tblite returned non-finite energy, forces or stress')
    return {
        'type': 'frame',
        'key': f'step_{step:06d}',
        'step': step,
        'time': time_fs,
        'positions': atoms.positions.tolist(),
        'cell': atoms.cell.array.tolist(),
        'energy': energy,
        'forces': forces.tolist(),
        'stress': stress.tolist(),
        'temperature': float(atoms.get_temperature()) if atoms.get_momenta().any() else 0.0,
        **extra,
    }


def run_relax(atoms: Atoms, settings: Mapping[str, Any]) -> Iterator[dict[str, Any]]:
    """Relax ``atoms`` (calculator attached); yield frame records, then ``{'converged': bool, 'steps'}``."""
    from ase.filters import FrechetCellFilter
    from ase.optimize import BFGS, FIRE

    target = FrechetCellFilter(atoms) if settings['cell'] else atoms
    optimizer = {'BFGS': BFGS, 'FIRE': FIRE}[settings['optimizer']](target, logfile=None)

    def record() -> dict[str, Any]:
        fmax = float(np.sqrt((target.get_forces() ** 2).sum(axis=1).max()))
        return _frame_record(atoms, optimizer.nsteps, 0.0, fmax=fmax)

    queue: list[dict[str, Any]] = []
    optimizer.attach(lambda: queue.append(record()), interval=settings['stride'])
    converged, last_step = False, -1
    for converged in optimizer.irun(fmax=settings['fmax'], steps=settings['max_steps']):  # noqa: B007
        last_step = queue[-1]['step'] if queue else last_step
        yield from queue
        queue.clear()
    if last_step != optimizer.nsteps:
        yield record()
    yield {'converged': bool(converged), 'steps': optimizer.nsteps}


def run_md(atoms: Atoms, settings: Mapping[str, Any], seed: int) -> Iterator[dict[str, Any]]:
    """Run Nosé-Hoover chain NVT MD from seeded velocities; yield frame records, then ``{'steps'}``."""
    from ase import units
    from ase.md.nose_hoover_chain import NoseHooverChainNVT
    from ase.md.velocitydistribution import MaxwellBoltzmannDistribution, Stationary, force_temperature

    temperature = settings['temperature']
    MaxwellBoltzmannDistribution(atoms, temperature_K=temperature, rng=np.random.default_rng(seed))
    Stationary(atoms, preserve_temperature=False)
    force_temperature(atoms, temperature, unit='K')
    dynamics = NoseHooverChainNVT(
        atoms,
        timestep=settings['timestep'] * units.fs,
        temperature_K=temperature,
        tdamp=settings['tdamp'] * units.fs,
        tchain=settings['tchain'],
        logfile=None,
    )

    def record() -> dict[str, Any]:
        # ``dynamics.get_conserved_energy`` asks for ``free_energy``, which tblite does not declare.
        conserved = (
            atoms.get_potential_energy()
            + atoms.get_kinetic_energy()
            + dynamics._thermostat.get_thermostat_energy()
        )
        step = dynamics.nsteps
        return _frame_record(atoms, step, step * settings['timestep'], conserved_energy=float(conserved))

    queue: list[dict[str, Any]] = []
    dynamics.attach(lambda: queue.append(record()), interval=settings['stride'])
    last_step = -1
    for _ in dynamics.irun(steps=settings['n_steps']):
        last_step = queue[-1]['step'] if queue else last_step
        yield from queue
        queue.clear()
    if last_step != dynamics.nsteps:
        yield record()
    yield {'steps': dynamics.nsteps}


def run_task(
    atoms: Atoms, parameters: Mapping[str, Any], seed: int = 0, log: IO[str] | None = None
) -> Iterator[dict[str, Any]]:
    """Yield the records (header, frames, footer) of the JSON Lines format of this module."""
    parameters = check_parameters(parameters)
    task = parameters['task']
    yield {
        'type': 'header',
        'program': 'lisei-tblite-md',
        'tblite_version': tblite_version(),
        'parameters': parameters,
        'seed': seed,
        'natoms': len(atoms),
    }
    start = time.perf_counter()
    footer: dict[str, Any] = {'type': 'footer', 'task': task, 'steps': 0, 'error': None}
    if task == 'relax':
        footer['converged'] = False
    reason = validate_frame(atoms)
    if reason is not None:
        footer['error'] = reason
    else:
        atoms = atoms.copy()
        atoms.calc = make_calculator(parameters['tblite'])
        records = (
            run_relax(atoms, parameters['relax'])
            if task == 'relax'
            else run_md(atoms, parameters['md'], seed)
        )
        try:
            for record in records:
                if record.get('type') != 'frame':
                    footer.update(record)
                    continue
                if log is not None:
                    extra = (
                        f'T = {record["temperature"]:.1f} K'
                        if task == 'md'
                        else f'fmax = {record["fmax"]:.3f}'
                    )
                    print(
                        f'{task} step {record["step"]}: E = {record["energy"]:.6f} eV, {extra} '
                        f'[{time.perf_counter() - start:.1f} s]',
                        file=log,
                        flush=True,
                    )
                yield record
        except Exception as exception:  # a tblite failure ends the run; the frames written so far stay
            footer['error'] = f'{type(exception).__name__}: {exception}'
    footer['wall_time'] = time.perf_counter() - start
    yield footer


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``lisei-tblite-md``: run the task on ``--structure``, write ``--output``."""
    parser = argparse.ArgumentParser(prog='lisei-tblite-md', description=__doc__.splitlines()[0])
    parser.add_argument('--structure', type=Path, required=True, help='one-frame file (.npz or extxyz)')
    parser.add_argument('--parameters', type=Path, help='JSON file of parameters (defaults if absent)')
    parser.add_argument('--seed', type=int, default=0, help='seed of the initial MD velocities')
    parser.add_argument('--output', type=Path, required=True, help='results file (JSON Lines)')
    args = parser.parse_args(argv)
    parameters = json.loads(args.parameters.read_text()) if args.parameters else {}
    try:
        check_parameters(parameters)
    except ValueError as exception:
        parser.error(str(exception))
    frames = read_structures(args.structure)
    if len(frames) != 1:
        parser.error(f'{args.structure} holds {len(frames)} frames; exactly one is needed')
    with args.output.open('w') as handle:
        write_frame_records(handle, run_task(frames[0][1], parameters, args.seed, log=sys.stdout))
    return 0


if __name__ == '__main__':  # pragma: no cover
    raise SystemExit(main())
