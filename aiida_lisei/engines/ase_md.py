"""``lisei-tblite-md``, ``lisei-chgnet-md``: relax a structure or run Nosé-Hoover NVT MD through ASE.

Runs wherever a job runs and never imports AiiDA. The calculator (tblite or CHGNet, see
:data:`~aiida_lisei.engines.calculators.CALCULATORS`) is the program's; its settings are the parameters'
section of its name. Input: a one-frame
``.npz`` as written by :func:`~aiida_lisei.formats.frames_npz.write_structures`, a JSON parameters file
(:func:`default_parameters` fills what is missing) and ``--seed`` (Maxwell-Boltzmann velocities of an MD
run). Output: a JSON Lines file in the record format of ``lisei-tblite`` (so
:func:`~aiida_lisei.formats.frames_jsonl.read_ase_results` reads it), written as the run goes so that a
killed job keeps its trajectory:

* line 1 ``{"type": "header", "program", "calculator", "version", "parameters", "seed", "natoms"}``;
* every ``stride`` steps ``{"type": "frame", "key": "step_<step>", "step", "time" (fs), "positions" (Å),
  "cell" (Å, rows), "energy" (eV), "forces" (eV/Å), "stress" (eV/Å³, 3x3, ASE sign), "temperature" (K)}``
  plus ``"conserved_energy"`` (eV, MD) or ``"fmax"`` (eV/Å, relax); the last step is always written;
* last line ``{"type": "footer", "task", "steps", "converged" (relax), "error" (or ``null``),
  "wall_time" (s)}``. A calculator failure (e.g. SCF not converged) ends the run with ``error`` set.

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

from aiida_lisei.engines.ase_label import calculate
from aiida_lisei.engines.calculators import CALCULATORS, get_calculator
from aiida_lisei.formats.frames_jsonl import write_frame_records
from aiida_lisei.formats.frames_npz import read_structures
from aiida_lisei.science.geometry import validate_frame

if TYPE_CHECKING:  # ASE is imported lazily (heavy)
    from ase import Atoms

__all__ = (
    'DEFAULT_PARAMETERS',
    'OPTIMIZERS',
    'TASKS',
    'check_parameters',
    'default_parameters',
    'main',
    'main_chgnet',
    'main_tblite',
    'run_md',
    'run_relax',
    'run_task',
)

TASKS = ('relax', 'md')
OPTIMIZERS = ('BFGS', 'FIRE')

#: Parameters of a run but the calculator's. ``task``: ``relax`` or ``md``; ``relax``: ``optimizer``, ``fmax``
#: (eV/Å), ``max_steps``, ``cell`` (relax the cell too), ``stride`` (write every n-th step); ``md``:
#: ``temperature`` (K), ``timestep`` (fs), ``n_steps``, ``stride``, ``tdamp`` (thermostat time constant, fs),
#: ``tchain`` (length of the Nosé-Hoover chain).
DEFAULT_PARAMETERS: dict[str, Any] = {
    'task': 'md',
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


def default_parameters(calculator: str = 'tblite') -> dict[str, Any]:
    """Return the default parameters of a run with ``calculator``: :data:`DEFAULT_PARAMETERS` and the
    calculator's defaults in the section of its name."""
    return {**DEFAULT_PARAMETERS, calculator: dict(get_calculator(calculator).defaults)}


def check_parameters(parameters: Mapping[str, Any], calculator: str = 'tblite') -> dict[str, Any]:
    """Return ``parameters`` completed with :func:`default_parameters`; raise ``ValueError`` if invalid.

    The calculator's settings go in the section named ``calculator``; a section of another calculator is
    refused.
    """
    spec = get_calculator(calculator)
    known = {*DEFAULT_PARAMETERS, calculator}
    unknown = sorted(set(parameters) - known)
    if unknown:
        others = sorted(set(unknown) & set(CALCULATORS))
        if others:
            raise ValueError(f'settings of {others} do not apply to a run with {calculator}')
        raise ValueError(f'unknown parameters {unknown}; known: {sorted(known)}')
    if parameters.get('task', DEFAULT_PARAMETERS['task']) not in TASKS:
        raise ValueError(f'task {parameters["task"]!r} is not one of {list(TASKS)}')
    merged = {'task': parameters.get('task', DEFAULT_PARAMETERS['task'])}
    merged[calculator] = spec.check_parameters(parameters.get(calculator, {}))
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
    results = calculate(atoms)
    return {
        'type': 'frame',
        'key': f'step_{step:06d}',
        'step': step,
        'time': time_fs,
        'positions': atoms.positions.tolist(),
        'cell': atoms.cell.array.tolist(),
        **results,
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
    atoms: Atoms,
    parameters: Mapping[str, Any],
    seed: int = 0,
    log: IO[str] | None = None,
    calculator: str = 'tblite',
) -> Iterator[dict[str, Any]]:
    """Yield the records (header, frames, footer) of the JSON Lines format of this module."""
    parameters = check_parameters(parameters, calculator)
    spec = get_calculator(calculator)
    task = parameters['task']
    yield {
        'type': 'header',
        'program': f'lisei-{calculator}-md',
        'calculator': calculator,
        'version': spec.version(),
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
        atoms.calc = spec.make_calculator(parameters[calculator])
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
        except Exception as exception:  # a calculator failure ends the run; the frames written so far stay
            footer['error'] = f'{type(exception).__name__}: {exception}'
    footer['wall_time'] = time.perf_counter() - start
    yield footer


def main(calculator: str, argv: list[str] | None = None) -> int:
    """Run the task on ``--structure`` with ``calculator``, write ``--output`` (JSON Lines)."""
    parser = argparse.ArgumentParser(
        prog=f'lisei-{calculator}-md', description=f'Relax a structure or run NVT MD with {calculator}.'
    )
    parser.add_argument('--structure', type=Path, required=True, help='one-frame file (.npz or extxyz)')
    parser.add_argument('--parameters', type=Path, help='JSON file of parameters (defaults if absent)')
    parser.add_argument('--seed', type=int, default=0, help='seed of the initial MD velocities')
    parser.add_argument('--output', type=Path, required=True, help='results file (JSON Lines)')
    args = parser.parse_args(argv)
    parameters = json.loads(args.parameters.read_text()) if args.parameters else {}
    try:
        check_parameters(parameters, calculator)
    except ValueError as exception:
        parser.error(str(exception))
    frames = read_structures(args.structure)
    if len(frames) != 1:
        parser.error(f'{args.structure} holds {len(frames)} frames; exactly one is needed')
    with args.output.open('w') as handle:
        records = run_task(frames[0][1], parameters, args.seed, log=sys.stdout, calculator=calculator)
        write_frame_records(handle, records)
    return 0


def main_tblite(argv: list[str] | None = None) -> int:
    """Entry point of ``lisei-tblite-md``."""
    return main('tblite', argv)


def main_chgnet(argv: list[str] | None = None) -> int:
    """Entry point of ``lisei-chgnet-md``."""
    return main('chgnet', argv)
