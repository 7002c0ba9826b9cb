"""Overhead of the moving restraint over plain DeePMD MD, side by side (target: ≤ 10 % added at 4833 atoms).

The same LAMMPS script (:func:`~aiida_lisei.engines.restraint_input.generate_restraint_md_script`: NPT
300 K, 1 bar in x and y, 1 fs) runs, alternating ``--repeats`` times, in one process through the LAMMPS
Python module:

* ``dp``: the script without the restraint fix (DeePMD only);
* ``fast``: ``lisei-lmp-plumed``'s fast route (numba CV + Verlet list, fix external);
* ``plumed``: the PLUMED-kernel route (demo size only: the kernel of the hillclimber wheel is built
  without optimisation; design.md measured 140-270 ms/step for the CV alone at 4800 atoms).

Systems: the demo sandwich (``atomic_models.yaml`` protocol ``demo``, 230 atoms) and the paper's
sandwich (protocol ``paper``, 4833 atoms), with the paper's CV (``build_paper_cv`` defaults: D_MAX 10 Å,
normalised by the number of electrolyte Li, 8 anode layers) under κ = 500 eV. The model is the plain
(uncompressed) tiny test model ``tests/fixtures/models/model_1.pb`` (no compressed model is kept): a
real model costs more per atom, so the ratio here is an upper bound of the relative overhead. Times are
those of the ``run`` commands, process CPU time first (robust on a shared machine) and wall time; one
thread.

Columns: µs/step/atom (CPU, wall) and CPU ms/step of the ``run``; the restraint's mean wall ms per call
(setup call included), its median CPU ms per call (steady state, setup left out), the number of Verlet
lists the fast CV built, and the added fraction over ``dp``.

Usage: ``python benchmarks/restraint_overhead.py [--steps 300] [--paper-steps 300] [--repeats 2]``
(``--skin`` Å, ``--no-demo``, ``--no-paper``).
"""

from __future__ import annotations

import argparse
import os
import shutil
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
TYPE_MAP = ['Li', 'P', 'S', 'Cl']
THREADS = {
    'OMP_NUM_THREADS': '1',
    'DP_INTRA_OP_PARALLELISM_THREADS': '1',
    'DP_INTER_OP_PARALLELISM_THREADS': '1',
    'PLUMED_NUM_THREADS': '1',
    'TF_CPP_MIN_LOG_LEVEL': '2',
}


def build_sandwich(protocol: str) -> Any:
    """The sandwich of an ``atomic_models.yaml`` protocol (``demo`` or ``paper``)."""
    from aiida_lisei.structures.builders import argyrodite, sandwich

    data = yaml.safe_load(PROTOCOL.read_text())
    inputs = data['default_inputs']
    params = dict(inputs['sandwich']['parameters'])
    params.update(data['protocols'][protocol].get('sandwich', {}).get('parameters', {}))
    electrolyte = argyrodite(seed=inputs['argyrodite']['seed'], **inputs['argyrodite']['parameters'])
    return sandwich(electrolyte.atoms, **params)


def prepare(folder: Path, model: Any, steps: int, kappa: float) -> str:
    """Write structure.data, model.pb and plumed.dat into ``folder``; return the LAMMPS script."""
    from ase.io import write

    from aiida_lisei.engines.plumed_input import write_plumed_input
    from aiida_lisei.engines.restraint_input import generate_restraint_md_script
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
    shutil.copy(MODEL, folder / 'model.pb')
    cv = build_paper_cv(model.groups, model.layers)
    s_start = evaluate_cv(cv, model.atoms.positions, model.atoms.cell[:]).value
    restraint = MovingRestraint(kappa, s_start, s_start + 1.0, 0, 150_000)
    (folder / 'plumed.dat').write_text(write_plumed_input(cv, restraint, stride=100))
    parameters = {'n_steps': steps, 'thermo_stride': 100, 'dump_stride': 100_000, 'restart_stride': 0}
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
            median, builds = 0.0, 0
        else:
            calls: list[float] = []
            callbacks: list[Any] = []

            def timed(callback: Any) -> None:
                """Record each call's CPU time (the first, setup + numba cache load, is left out below)."""
                apply = callback.apply
                callbacks.append(callback)

                def wrapper(*args: Any) -> None:
                    start = time.process_time()
                    apply(*args)
                    calls.append(time.process_time() - start)

                callback.apply = wrapper

            summary = run_script(
                script, route=route, log_file=f'log.{route}', screen='none', on_callback=timed
            )
            per_call = 1e3 * summary.restraint_seconds / max(summary.calls, 1)
            median = 1e3 * float(np.median(calls[1:])) if len(calls) > 1 else 0.0
            builds = getattr(getattr(callbacks[0], 'fast', None), 'n_builds', 0) if callbacks else 0
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
        'builds': builds,
    }


def main() -> None:
    """Run the cases alternately and print µs/step/atom, ms/step and the added fraction."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--steps', type=int, default=300, help='MD steps at the demo size')
    parser.add_argument('--paper-steps', type=int, default=300, help='MD steps at 4833 atoms')
    parser.add_argument('--repeats', type=int, default=2)
    parser.add_argument('--kappa', type=float, default=500.0, help='eV per CV unit²')
    parser.add_argument('--skin', type=float, default=1.0, help='Verlet skin of the fast CV (Å)')
    parser.add_argument('--no-demo', action='store_true', help='skip the demo sandwich')
    parser.add_argument('--no-paper', action='store_true', help='skip the 4833-atom sandwich')
    args = parser.parse_args()
    os.environ.update(THREADS)
    work = Path(tempfile.mkdtemp(prefix='lisei-restraint-bench-'))
    systems = [] if args.no_demo else [('demo', args.steps, ('dp', 'fast', 'plumed'))]
    if not args.no_paper:
        systems.append(('paper', args.paper_steps, ('dp', 'fast')))
    print(f'# {sys.executable} {" ".join(sys.argv)}; model {MODEL.name} (plain); one thread; folder {work}')
    for protocol, steps, routes in systems:
        model = build_sandwich(protocol)
        script = prepare(work / protocol, model, steps, args.kappa)
        best: dict[str, dict[str, float]] = {}
        for _ in range(args.repeats):
            for route in routes:
                result = run_case(work / protocol, script, route, args.skin)
                if route not in best or result['cpu'] < best[route]['cpu']:
                    best[route] = result
        base = best['dp']
        print(
            f'\n{protocol} sandwich: {len(model.atoms)} atoms, {steps} steps, best of {args.repeats} (by CPU)'
        )
        print(
            f'{"route":8s} {"CPU µs/step/atom":>17s} {"wall µs/step/atom":>18s} {"CPU ms/step":>12s} '
            f'{"restraint ms/call":>18s} {"median CPU ms":>14s} {"CV lists":>9s} {"added CPU":>10s} '
            f'{"added wall":>11s}'
        )
        for route in routes:
            r = best[route]
            print(
                f'{route:8s} {r["cpu"]:17.2f} {r["wall"]:18.2f} {r["ms_step"]:12.2f} {r["ms_call"]:18.3f} '
                f'{r["ms_median"]:14.3f} {r["builds"]:9d} {r["cpu"] / base["cpu"] - 1:+10.1%} '
                f'{r["wall"] / base["wall"] - 1:+11.1%}'
            )
    shutil.rmtree(work, ignore_errors=True)


if __name__ == '__main__':
    main()
