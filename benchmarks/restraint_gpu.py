"""The restraint's cost on a GPU node, side by side: the DP step, the JAX CV, the numba CV, the PLUMED kernel.

One prepared script for one device call (target: the restraint adds ≤ 5 % to the DP step at 4833 atoms on a
GPU). In one process, on the paper's sandwich (``--atoms paper``: ``atomic_models.yaml`` protocol ``paper``,
4833 atoms) or the demo's (``--atoms small``, 230 atoms, for a CPU check), with the paper's CV
(``build_paper_cv`` defaults: D_MAX 10 Å, 8 anode layers, normalised):

* ``dp``: one MD step's DeePMD evaluation, DeePMD-kit's PyTorch backend driven from Python: the paper's
  network (``dp_train.yaml``: se_e2_a, rcut 6 Å, embedding 25/50/100, fitting 240³; weights as initialised,
  the cost of a trained one), fp64, uncompressed, energy, forces and virial, its neighbour list built in
  every call, on torch's device (CUDA when there is one);
* ``jax``: :class:`~aiida_lisei.science.jax_cv.JaxCoordinationCV` on JAX's default device (the GPU there);
* ``numba`` and ``numba-prange``: :class:`~aiida_lisei.science.fast_cv.FastCoordinationCV` on the CPU, serial
  and in ``--threads`` blocks (default: every core);
* ``plumed`` and ``plumed-nlist``: the PLUMED kernel (``$PLUMED_KERNEL``; ``PLUMED_NUM_THREADS`` =
  ``--plumed-threads``) on the written ``plumed.dat``, without and with its neighbour list at the
  restraint's defaults (``NL_STRIDE`` 20, ``NL_CUTOFF`` d_max + 2 Å); per step over whole list periods.

The CVs run along one trajectory of the atoms at constant random velocities (0.005 Å per fs and
component, about a Li's thermal speed at 300 K, 1 fs steps): with no turning back, the Verlet lists of the
numba and JAX routes (skin 1 Å) are rebuilt at least as often as in MD. Mean time per call after the first
(compilation, first list), rebuilds included. Printed: ms per call, the
ratio to the DP step, the rebuilds; ``--json`` writes them too. A part that cannot run (no CUDA, no
PLUMED kernel, DeePMD-kit missing) prints why and the others go on.

DeePMD-kit 3.2's PyTorch backend is imported without its compiled op library (``deepmd/lib`` has one
built for another torch: it is pointed to an empty folder) and without the MPI preload of its wheel
(it needs the ``mpich`` package's metadata); the se_e2_a model needs no custom op.

On the ``device`` tool's H200 (PyTorch, JAX and CUDA there, no internet), carry what is missing as
wheels and the PLUMED kernel built here (``benchmarks/README.md`` lists them and gives the command), then,
within one 10-minute call::

    PYTHONPATH=/tmp/site:. PLUMED_KERNEL=$PWD/.whl/libplumedKernel.so python3 benchmarks/restraint_gpu.py \
        --atoms paper --json $OUT/restraint_gpu.json

Here, on the CPU: ``python benchmarks/restraint_gpu.py --atoms small`` (DeePMD's PyTorch backend needs
``e3nn``).
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

os.environ.setdefault('XLA_PYTHON_CLIENT_PREALLOCATE', 'false')  # JAX shares the GPU with torch

import numpy as np
import yaml
from restraint_overhead import DP_PROTOCOL, build_sandwich

#: Speed of the atoms of the CV's frames (Å per component and MD step), drawn once per atom.
SPEED = 0.005
SIZES = {'paper': 'paper', 'small': 'demo'}


def mean_ms(call: Callable[[int], Any], n: int) -> float:
    """Mean wall time (ms) of ``call(k)`` for ``k = 1..n`` after an untimed ``call(0)``."""
    call(0)
    start = time.perf_counter()
    for k in range(1, n + 1):
        call(k)
    return 1e3 * (time.perf_counter() - start) / n


def drift(positions: np.ndarray, n: int, seed: int = 7) -> list[np.ndarray]:
    """``n + 1`` frames: ``positions`` moved at constant Gaussian velocities (:data:`SPEED` Å per component
    and step) for ``0..n`` steps."""
    velocities = np.random.default_rng(seed).normal(0.0, SPEED, positions.shape)
    return [positions + k * velocities for k in range(n + 1)]


def dp_step(atoms: Any, steps: int) -> dict[str, Any]:
    """ms per DeePMD evaluation (PyTorch backend, paper network, fp64) on torch's device."""
    import deepmd.env

    deepmd.env.SHARED_LIB_DIR = Path(tempfile.mkdtemp())  # no op library built for another torch
    deepmd.env.GLOBAL_CONFIG['cibuildwheel'] = '0'  # no MPI preload (needs mpich's metadata)
    import torch
    from deepmd.pt.model.model import get_model

    device = torch.device('cuda' if torch.cuda.is_available() else 'cpu')
    parameters = yaml.safe_load(DP_PROTOCOL.read_text())['default_inputs']['dp_train']['parameters']
    model_parameters = copy.deepcopy(parameters['model'])
    type_map = model_parameters['type_map']
    model = get_model(model_parameters).to(device)
    model.eval()
    types = np.array([type_map.index(s) for s in atoms.get_chemical_symbols()])
    coord = torch.tensor(atoms.positions.reshape(1, -1), dtype=torch.float64, device=device)
    atype = torch.tensor(types[None], device=device)
    box = torch.tensor(np.asarray(atoms.cell[:]).reshape(1, 9), dtype=torch.float64, device=device)

    def call(_: int) -> None:
        out = model(coord, atype, box=box)
        out['force'].sum().item()  # waits for the device

    call(0)  # the first calls warm up the allocator and kernels
    return {'ms': mean_ms(call, steps), 'device': str(device), 'torch': torch.__version__}


def cv_calls(evaluator: Any, frames: list[np.ndarray], cell: np.ndarray) -> dict[str, Any]:
    """ms per CV call along ``frames`` and the list rebuilds after the first."""

    def call(k: int) -> None:
        evaluator(frames[k], cell)

    ms = mean_ms(call, len(frames) - 1)
    return {'ms': ms, 'rebuilds': evaluator.n_builds - 1}


def plumed_step(text: str, frames: list[np.ndarray], cell: np.ndarray, period: int) -> dict[str, Any]:
    """ms per step of the PLUMED kernel on ``plumed.dat`` ``text``: the time of ``1 + period`` frames minus
    that of 1 frame (set-up excluded), over whole neighbour-list periods."""
    from aiida_lisei.engines.lammps_plumed import run_plumed

    seconds = []
    for n in (1, 1 + period):
        with tempfile.TemporaryDirectory() as folder:
            start = time.perf_counter()
            run_plumed(text, frames[:n], [cell] * n, workdir=folder)
            seconds.append(time.perf_counter() - start)
    return {'ms': 1e3 * (seconds[1] - seconds[0]) / period}


def attempt(name: str, results: dict[str, Any], run: Callable[[], dict[str, Any]]) -> None:
    """Run one part into ``results[name]``; on failure record and print why, and go on."""
    try:
        results[name] = run()
    except Exception as exception:  # a missing package or device must not stop the other parts
        results[name] = {'unavailable': f'{type(exception).__name__}: {exception}'}
    print(f'{name}: {results[name]}', flush=True)


def main() -> None:
    """Measure every part, then print ms per call and the ratio to the DP step."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--atoms', choices=sorted(SIZES), default='paper', help='paper: 4833, small: 230')
    parser.add_argument('--cv-steps', type=int, default=400, help='CV calls along the walk (numba, jax)')
    parser.add_argument('--dp-steps', type=int, default=20, help='DeePMD evaluations')
    parser.add_argument('--plumed-periods', type=int, default=1, help='neighbour-list periods of PLUMED')
    parser.add_argument('--threads', type=int, default=os.cpu_count(), help='numba-prange blocks')
    parser.add_argument('--plumed-threads', type=int, default=1, help='PLUMED_NUM_THREADS')
    parser.add_argument('--skip', default='', help='comma-separated parts to skip (dp, jax, numba, plumed)')
    parser.add_argument('--json', type=Path, default=None, help='write the results to this file')
    args = parser.parse_args()
    os.environ['PLUMED_NUM_THREADS'] = str(args.plumed_threads)
    skip = set(filter(None, args.skip.split(',')))

    from aiida_lisei.formats.plumed import write_plumed_input
    from aiida_lisei.science.restraint_cv import PLUMED_NL_STRIDE, MovingRestraint, build_paper_cv

    model = build_sandwich(SIZES[args.atoms])
    atoms, cell = model.atoms, model.atoms.cell[:]
    cv = build_paper_cv(model.groups, model.layers)
    frames = drift(atoms.positions, max(args.cv_steps, args.plumed_periods * PLUMED_NL_STRIDE))
    results: dict[str, Any] = {
        'command': ' '.join([Path(sys.executable).name, *sys.argv]),
        'date': time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime()),
        'atoms': len(atoms),
        'pairs': sum(t.n_pairs for t in cv.terms),
        'cpus': os.cpu_count(),
    }
    print(f'# {results["command"]}: {len(atoms)} atoms, {results["pairs"]} A x B pairs', flush=True)
    if 'dp' not in skip:
        attempt('dp', results, lambda: dp_step(atoms, args.dp_steps))
    if 'jax' not in skip:

        def jax_cv() -> dict[str, Any]:
            from aiida_lisei.science.jax_cv import JaxCoordinationCV, describe_device

            evaluator = JaxCoordinationCV(cv, len(atoms))
            return {**cv_calls(evaluator, frames[: args.cv_steps + 1], cell), 'device': describe_device()}

        attempt('jax', results, jax_cv)
    if 'numba' not in skip:
        from aiida_lisei.science.fast_cv import FastCoordinationCV

        for name, threads in (('numba', 1), ('numba-prange', args.threads)):
            attempt(
                name,
                results,
                lambda threads=threads: {
                    **cv_calls(
                        FastCoordinationCV(cv, len(atoms), threads=threads), frames[: args.cv_steps + 1], cell
                    ),
                    'threads': threads,
                },
            )
    if 'plumed' not in skip:
        restraint = MovingRestraint(500.0, 0.0, 0.0, 0, 0)
        period = args.plumed_periods * PLUMED_NL_STRIDE
        for name, nl_stride in (('plumed', None), ('plumed-nlist', PLUMED_NL_STRIDE)):
            text = write_plumed_input(cv, restraint, stride=period, nl_stride=nl_stride)
            attempt(name, results, lambda text=text: plumed_step(text, frames, cell, period))

    dp_ms = results.get('dp', {}).get('ms')
    print(f'\n{"part":14s} {"ms/call":>9s} {"/ DP step":>9s}  notes')
    for name in ('dp', 'jax', 'numba', 'numba-prange', 'plumed', 'plumed-nlist'):
        part = results.get(name)
        if part is None or 'ms' not in part:
            continue
        ratio = f'{part["ms"] / dp_ms:9.1%}' if dp_ms else f'{"-":>9s}'
        notes = ', '.join(f'{k} {v}' for k, v in part.items() if k != 'ms')
        print(f'{name:14s} {part["ms"]:9.3f} {ratio}  {notes}')
    if 'plumed' in results and 'plumed-nlist' in results and 'ms' in results['plumed-nlist']:
        print(
            f'PLUMED neighbour list speed-up: {results["plumed"]["ms"] / results["plumed-nlist"]["ms"]:.1f}x'
        )
    if args.json is not None:
        args.json.write_text(json.dumps(results, indent=1))


if __name__ == '__main__':
    main()
