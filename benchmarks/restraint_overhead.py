"""Overhead of the moving restraint over plain DeePMD MD, side by side (target: ≤ 10 % added at 4833 atoms).

The same LAMMPS script (:func:`~aiida_lisei.formats.lammps.generate_restraint_md_script`, 1 fs)
runs, alternating ``--repeats`` times, in one process through the LAMMPS Python module:

* ``dp``: the script without the restraint fix (DeePMD only);
* ``noop``: the fast route's ``fix external`` and Python callback with the CV left out (zero force,
  energy and virial): the cost of the LAMMPS-Python plumbing alone;
* ``fast``: ``lisei-lmp-plumed``'s fast route (numba CV + cell-list Verlet list, fix external);
* ``plumed``: the PLUMED-kernel route (demo size with the tiny model only: the kernel of the hillclimber
  wheel is built without optimisation; design.md measured 140-270 ms/step for the CV alone at 4800 atoms).

Systems: the demo sandwich (``atomic_models.yaml`` protocol ``demo``, 230 atoms) and the paper's
sandwich (protocol ``paper``, 4833 atoms), with the paper's CV (``build_paper_cv`` defaults: D_MAX 10 Å,
normalised by the number of electrolyte Li, 8 anode layers) under κ = 500 eV.

Models:

* ``tiny``: the plain (uncompressed) tiny test model ``tests/fixtures/models/model_1.pb`` (se_e2_a,
  rcut 4 Å): far cheaper than a real model, so its ratio is an upper bound of the relative overhead.
  NPT 300 K, 1 bar in x and y (the production script).
* ``paper``: a model of the paper's network size (se_e2_a rcut 6 Å, embedding 25/50/100, fitting
  240/240/240, type map Li P S Cl; ``dp_train.yaml`` protocol ``paper``) trained for 10 steps on
  ``tests/fixtures/dp_training_set`` (``dp train --skip-neighbor-stat``, ``dp freeze``, then
  ``dp compress`` as in production when it works), cached in ``benchmarks/.cache/``. Its forces are
  barely trained, yet NPT 300 K at 1 fs stays stable over the steps measured (checked at 230 atoms:
  the barostat expands x and y by ~7 % from an initial ~19 kbar, so the cell-strain criterion adds list
  rebuilds). ``--big-steps`` steps at 4833 atoms (~1 s per DP step on one core).

Times are those of the ``run`` commands, process CPU time first (robust on a shared machine) and wall
time; one thread. Columns: µs/step/atom (CPU, wall), CPU ms/step, the restraint callback's median CPU ms
per call (steady state) and its total CPU per MD step (setup call and list rebuilds included; the rest
of the added time is LAMMPS's ``fix external`` machinery and cache effects on DeePMD), the number of
Verlet list rebuilds after the first list and their mean CPU ms, and the added fraction over ``dp``
(``ratio`` = fast / dp CPU time per step).

Usage: ``python benchmarks/restraint_overhead.py [--steps 300] [--paper-steps 300] [--repeats 2]
[--big-steps 60] [--models tiny,paper]`` (``--skin`` Å, ``--no-demo``, ``--no-paper``).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import yaml

ROOT = Path(__file__).resolve().parents[1]
MODEL = ROOT / 'tests' / 'fixtures' / 'models' / 'model_1.pb'
PROTOCOL = ROOT / 'aiida_lisei' / 'protocols' / 'atomic_models.yaml'
DP_PROTOCOL = ROOT / 'aiida_lisei' / 'protocols' / 'dp_train.yaml'
TRAINING_SET = ROOT / 'tests' / 'fixtures' / 'dp_training_set'
CACHE = ROOT / 'benchmarks' / '.cache'
#: MD of each model: (ensemble, temperature K, timestep fs); for a model that explodes: ('nvt', 10.0, 0.2).
MD = {'tiny': ('npt', 300.0, 1.0), 'paper': ('npt', 300.0, 1.0)}
TYPE_MAP = ['Li', 'P', 'S', 'Cl']
THREADS = {
    'OMP_NUM_THREADS': '1',
    'DP_INTRA_OP_PARALLELISM_THREADS': '1',
    'DP_INTER_OP_PARALLELISM_THREADS': '1',
    'PLUMED_NUM_THREADS': '1',
    'TF_CPP_MIN_LOG_LEVEL': '2',
}


def paper_size_model(steps: int = 10) -> tuple[Path, str]:
    """A model of the paper's network size, trained ``steps`` steps (cached); return (path, description).

    The ``paper`` protocol's ``dp train`` input (``dp_train.yaml``: se_e2_a, rcut 6 Å, embedding
    25/50/100, fitting 240/240/240) on the test training set, frozen and, when ``dp compress`` works,
    compressed (as production MD uses it).
    """
    folder = CACHE / f'paper_model_{steps}'
    for name, label in (('compressed.pb', 'compressed'), ('frozen.pb', 'plain, dp compress failed')):
        if (folder / name).exists():
            return folder / name, label
    folder.mkdir(parents=True, exist_ok=True)
    parameters = yaml.safe_load(DP_PROTOCOL.read_text())['default_inputs']['dp_train']['parameters']
    parameters['learning_rate']['decay_steps'] = max(1, steps // 2)
    parameters['training'].pop('validation_data', None)
    systems = sorted(str(p) for p in TRAINING_SET.iterdir() if (p / 'type.raw').exists())
    parameters['training'].update(
        numb_steps=steps, disp_freq=steps, save_freq=steps, seed=1,
        training_data={'systems': systems, 'batch_size': 'auto'},
    )  # fmt: skip
    parameters['model']['descriptor']['seed'] = 1
    parameters['model']['fitting_net']['seed'] = 1
    (folder / 'input.json').write_text(json.dumps(parameters, indent=1))
    dp = str(Path(sys.executable).with_name('dp'))
    env = {**os.environ, **THREADS}

    def call(*args: str) -> bool:
        with (folder / 'dp.log').open('a') as log:
            log.write(f'$ dp {" ".join(args)}\n')
            log.flush()
            return subprocess.run([dp, *args], cwd=folder, env=env, stdout=log, stderr=log).returncode == 0

    if not (call('train', 'input.json', '--skip-neighbor-stat') and call('freeze', '-o', 'frozen.pb')):
        raise RuntimeError(f'dp train/freeze of the paper-size model failed: see {folder / "dp.log"}')
    if call('compress', '-i', 'frozen.pb', '-o', 'compressed.pb', '-t', 'input.json'):
        return folder / 'compressed.pb', 'compressed'
    return folder / 'frozen.pb', 'plain, dp compress failed'


def build_sandwich(protocol: str) -> Any:
    """The sandwich of an ``atomic_models.yaml`` protocol (``demo`` or ``paper``)."""
    from aiida_lisei.structures.builders import argyrodite, sandwich

    data = yaml.safe_load(PROTOCOL.read_text())
    inputs = data['default_inputs']
    params = dict(inputs['sandwich']['parameters'])
    params.update(data['protocols'][protocol].get('sandwich', {}).get('parameters', {}))
    electrolyte = argyrodite(seed=inputs['argyrodite']['seed'], **inputs['argyrodite']['parameters'])
    return sandwich(electrolyte.atoms, **params)


def prepare(folder: Path, model: Any, steps: int, kappa: float, dp_model: Path, md: tuple) -> str:
    """Write structure.data, model.pb and plumed.dat into ``folder``; return the LAMMPS script.

    ``md``: (ensemble, temperature K, timestep fs).
    """
    from ase.io import write

    from aiida_lisei.formats.lammps import generate_restraint_md_script
    from aiida_lisei.formats.plumed import write_plumed_input
    from aiida_lisei.science.restraint_cv import MovingRestraint, build_paper_cv, evaluate_cv

    folder.mkdir(parents=True, exist_ok=True)
    write(
        folder / 'structure.data',
        model.atoms,
        format='lammps-data',
        specorder=TYPE_MAP,
        masses=True,
        units='metal',
        atom_style='atomic',
    )
    shutil.copy(dp_model, folder / 'model.pb')
    cv = build_paper_cv(model.groups, model.layers)
    s_start = evaluate_cv(cv, model.atoms.positions, model.atoms.cell[:]).value
    restraint = MovingRestraint(kappa, s_start, s_start + 1.0, 0, 150_000)
    (folder / 'plumed.dat').write_text(write_plumed_input(cv, restraint, stride=100))
    ensemble, temperature, timestep = md
    parameters = {
        'n_steps': steps, 'thermo_stride': 100, 'dump_stride': 100_000, 'restart_stride': 0,
        'ensemble': ensemble, 'temperature': temperature, 'timestep': timestep,
    }  # fmt: skip
    return generate_restraint_md_script(parameters, 'model.pb', TYPE_MAP, 20241125)


def dp_only(script: str) -> str:
    """The script without the restraint fix and its thermo column."""
    lines = [
        line.replace(' f_restraint', '')
        for line in script.splitlines()
        if not line.startswith(('fix restraint', 'fix_modify restraint'))
    ]
    return '\n'.join(lines) + '\n'


def run_case(folder: Path, script: str, route: str, skin: float = 1.0) -> dict[str, float]:
    """Run one case in ``folder``; return CPU and wall µs/step/atom and the restraint's ms per call.

    Times are those of the ``run`` command (its setup included: numba's cached compilation and the
    first Verlet list, a one-time cost); CPU time is the process's (robust on a shared machine).
    """
    from aiida_lisei.engines.lammps_plumed import load_lammps, run_script

    cwd = Path.cwd()
    os.chdir(folder)
    try:
        if route == 'dp':
            lmp = load_lammps().lammps(cmdargs=['-log', 'log.dp', '-screen', 'none', '-nocite'])
            try:
                cpu = wall = 0.0
                for line in dp_only(script).splitlines():
                    if line.startswith('run '):
                        start_cpu, start_wall = time.process_time(), time.perf_counter()
                        lmp.command(line)
                        cpu += time.process_time() - start_cpu
                        wall += time.perf_counter() - start_wall
                    else:
                        lmp.command(line)
                steps, atoms = lmp.extract_global('ntimestep'), lmp.get_natoms()
            finally:
                lmp.close()
            per_call = 0.0
            median, mean, builds, ms_build = 0.0, 0.0, 0, 0.0
        else:
            noop = route == 'noop'

            def no_restraint(step: int, nlocal: int, tag: Any, x: Any, f: Any) -> None:
                """``noop``: the fix external callback without the CV (zero force, energy, virial)."""
                callbacks[0].set_energy_virial(0.0, (0.0,) * 6)

            calls: list[float] = []
            lists: list[float] = []
            callbacks: list[Any] = []

            def timed(callback: Any) -> None:
                """Record the CPU time of each call and of each Verlet list build (the first call and
                list, setup + numba cache load, are left out below)."""
                apply = no_restraint if noop else callback.apply
                callbacks.append(callback)

                def wrapper(*args: Any) -> None:
                    start = time.process_time()
                    apply(*args)
                    calls.append(time.process_time() - start)

                callback.apply = wrapper
                fast = getattr(callback, 'fast', None)
                if fast is not None:
                    build = fast._build

                    def timed_build(*args: Any) -> None:
                        start = time.process_time()
                        build(*args)
                        lists.append(time.process_time() - start)

                    fast._build = timed_build

            summary = run_script(
                script,
                route='fast' if noop else route,
                log_file=f'log.{route}',
                screen='none',
                on_callback=timed,
            )
            per_call = 1e3 * summary.restraint_seconds / max(summary.calls, 1)
            median = 1e3 * float(np.median(calls[1:])) if len(calls) > 1 else 0.0
            mean = 1e3 * float(np.sum(calls)) / max(summary.steps, 1)  # per MD step, all calls
            builds = len(lists) - 1 if lists else 0  # rebuilds after the first list
            ms_build = 1e3 * float(np.mean(lists[1:])) if len(lists) > 1 else 0.0
            cpu, wall, steps = summary.run_cpu_seconds, summary.run_wall_seconds, summary.steps
            atoms = int(summary.natoms)
    finally:
        os.chdir(cwd)
    return {
        'cpu': 1e6 * cpu / (steps * atoms),
        'wall': 1e6 * wall / (steps * atoms),
        'ms_step': 1e3 * cpu / steps,
        'ms_call': per_call,
        'ms_median': median,
        'ms_mean': mean,
        'builds': builds,
        'ms_build': ms_build,
    }


def main() -> None:
    """Run the cases alternately and print µs/step/atom, ms/step, list rebuilds and the added fraction."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--steps', type=int, default=300, help='MD steps at the demo size')
    parser.add_argument('--paper-steps', type=int, default=300, help='MD steps at 4833 atoms')
    parser.add_argument('--big-steps', type=int, default=60, help='MD steps, paper-size model, 4833 atoms')
    parser.add_argument('--repeats', type=int, default=2)
    parser.add_argument('--kappa', type=float, default=500.0, help='eV per CV unit²')
    parser.add_argument('--skin', type=float, default=1.0, help='Verlet skin of the fast CV (Å)')
    parser.add_argument('--models', default='tiny,paper', help='comma-separated: tiny, paper')
    parser.add_argument('--no-demo', action='store_true', help='skip the demo sandwich')
    parser.add_argument('--no-paper', action='store_true', help='skip the 4833-atom sandwich')
    args = parser.parse_args()
    os.environ.update(THREADS)
    models = {}
    for name in args.models.split(','):
        if name == 'tiny':
            models[name] = (MODEL, 'tests/fixtures/models/model_1.pb, plain')
        elif name == 'paper':
            path, label = paper_size_model()
            models[name] = (path, f'{path.relative_to(ROOT)}, {label}')
        else:
            parser.error(f'unknown model {name!r}')
    work = Path(tempfile.mkdtemp(prefix='lisei-restraint-bench-'))
    systems = [] if args.no_demo else [('demo', args.steps)]
    if not args.no_paper:
        systems.append(('paper', args.paper_steps))
    print(f'# {sys.executable} {" ".join(sys.argv)}; one thread; skin {args.skin} Å; folder {work}')
    header = (
        f'{"route":7s} {"CPU µs/step/atom":>16s} {"wall µs/step/atom":>17s} {"CPU ms/step":>11s} '
        f'{"restraint median ms":>19s} {"restraint ms/step":>17s} {"rebuilds":>8s} {"ms/rebuild":>10s} '
        f'{"ratio":>6s} {"added CPU":>9s} {"added wall":>10s}'
    )
    for protocol, system_steps in systems:
        sandwich_model = build_sandwich(protocol)
        for name, (path, label) in models.items():
            steps = system_steps
            routes = (
                ('dp', 'noop', 'fast', 'plumed')
                if protocol == 'demo' and name == 'tiny'
                else ('dp', 'noop', 'fast')
            )
            ensemble, temperature, timestep = MD[name]
            folder = work / f'{protocol}-{name}'
            if protocol == 'paper' and name == 'paper':
                steps = args.big_steps
            script = prepare(folder, sandwich_model, steps, args.kappa, path, MD[name])
            best: dict[str, dict[str, float]] = {}
            for _ in range(args.repeats):
                for route in routes:
                    result = run_case(folder, script, route, args.skin)
                    if route not in best or result['cpu'] < best[route]['cpu']:
                        best[route] = result
            base = best['dp']
            print(
                f'\n{protocol} sandwich, {len(sandwich_model.atoms)} atoms, model {name} ({label}); '
                f'{ensemble.upper()} {temperature:g} K, {timestep:g} fs, {steps} steps; '
                f'best of {args.repeats} by CPU'
            )
            print(header)
            for route in routes:
                r = best[route]
                print(
                    f'{route:7s} {r["cpu"]:16.2f} {r["wall"]:17.2f} {r["ms_step"]:11.2f} '
                    f'{r["ms_median"]:19.3f} {r["ms_mean"]:17.3f} {r["builds"]:8d} {r["ms_build"]:10.2f} '
                    f'{r["cpu"] / base["cpu"]:6.3f} {r["cpu"] / base["cpu"] - 1:+9.1%} '
                    f'{r["wall"] / base["wall"] - 1:+10.1%}',
                    flush=True,
                )
    shutil.rmtree(work, ignore_errors=True)


if __name__ == '__main__':
    main()
