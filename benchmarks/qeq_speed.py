"""QEq speed: PME-Krylov (:class:`~aiida_lisei.science.qeq.QEqSolver`) against a dense Hessian + direct solve.

Systems: the paper's Li|Li6PS5Cl|Li sandwich (4833 atoms, ``builders.sandwich`` with its defaults) and
copies of it (or of its 1x1 version) in x and y: 1074, 4833, 19332 and 77328 atoms. Each size runs in
its own process (so peak RSS is per size) with the paper's QEq parameters and the solver's defaults:

* ``cold``: charges from zero (median of ``--repeats``; the first, jit-compiling call is not timed);
* ``warm``: the next frame of a trajectory (every atom moved by ~0.02 Å), started from the charges of
  the previous frame, as :class:`QEqSolver` does along an MD run;
* ``dense``: the DMFF-style reference, the full N x N Hessian (plain Ewald sums of Gaussian charges,
  :func:`~aiida_lisei.science.qeq.solve_qeq_dense`) and a direct solve of the (N+1) KKT system, at the
  sizes given by ``--dense`` (default 1074 and 4833: measured, not extrapolated).

Each method runs in its own process with its best thread settings on the 2 cores (``THREADS``).
Times are wall-clock medians (``cpu s``: process CPU time of the cold solve, both threads summed).
Memory: peak RSS of the process above its RSS before the first solve (structure built, modules
imported), and the bytes of the solver's arrays (sparse real-space matrix, mesh spreading matrices and
kernel, preconditioner basis).

Usage: ``python benchmarks/qeq_speed.py [--sizes 1074 4833 19332 77328] [--dense 1074 4833] [--repeats 3]``
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time

#: Thread settings of the two methods, each its best on 2 cores: the Krylov solver's BLAS work is small
#: (threaded OpenBLAS only spins on a shared machine) while scipy.fft uses 2 workers; the dense route
#: is BLAS (matrix products, LU), so it gets 2 BLAS threads.
THREADS = {
    'krylov': {'OMP_NUM_THREADS': '1', 'OPENBLAS_NUM_THREADS': '1', 'MKL_NUM_THREADS': '1'},
    'dense': {'OMP_NUM_THREADS': '2', 'OPENBLAS_NUM_THREADS': '2', 'MKL_NUM_THREADS': '2'},
}

#: atoms -> (electrolyte_repeat_xy of the sandwich, copies along x, copies along y)
SYSTEMS = {1074: (1, 2, 1), 4833: (3, 1, 1), 19332: (3, 2, 2), 77328: (3, 4, 4)}


def build(natoms: int):
    """The sandwich of ``natoms`` atoms (paper's layer counts, 40 Å vacuum)."""
    from aiida_lisei.structures import builders

    repeat_xy, nx, ny = SYSTEMS[natoms]
    electrolyte = builders.argyrodite().atoms
    atoms = builders.sandwich(electrolyte, electrolyte_repeat_xy=repeat_xy).atoms.repeat((nx, ny, 1))
    assert len(atoms) == natoms, len(atoms)
    return atoms


def _charges_file(natoms: int) -> str:
    """Where the Krylov worker leaves its charges for the dense worker's comparison."""
    return os.path.join(tempfile.gettempdir(), f'qeq_speed_{natoms}.npy')


def _rss_mib() -> float:
    """Current resident set size (MiB)."""
    with open('/proc/self/statm') as handle:
        return int(handle.read().split()[1]) * os.sysconf('SC_PAGE_SIZE') / 2**20


def _array_bytes(operator) -> int:
    """Bytes held by the solver's per-geometry arrays."""
    sparse = [operator.real, operator.recip.spread, operator.recip.gather]
    total = sum(m.data.nbytes + m.indices.nbytes + m.indptr.nbytes for m in sparse)
    total += operator.recip.kernel.nbytes
    total += operator.preconditioner.z.nbytes
    return total


def krylov_worker(natoms: int, repeats: int) -> dict:
    """Time :class:`QEqSolver` on one size in this process; return the measurements."""
    import numpy as np

    from aiida_lisei.science.qeq import QEqSolver

    atoms = build(natoms)
    symbols = atoms.get_chemical_symbols()
    positions, cell = atoms.positions, atoms.cell[:]
    rng = np.random.default_rng(0)
    frames = [positions + rng.normal(scale=0.02, size=positions.shape) for _ in range(repeats)]
    solver = QEqSolver(symbols)
    rss0 = _rss_mib()
    solver.solve(positions, cell)  # compiles jax-pme's mesh-weight function for this mesh
    cold = []
    for _ in range(repeats):
        start, cpu = time.perf_counter(), time.process_time()
        result = solver.solve(positions, cell, q0=np.zeros(natoms))
        cold.append((time.perf_counter() - start, time.process_time() - cpu, result))
    warm = []
    for frame in frames:  # a short "trajectory": each frame starts from the previous charges
        start = time.perf_counter()
        result = solver.solve(frame, cell)
        warm.append((time.perf_counter() - start, result))
    cold_time, cold_cpu, cold_result = sorted(cold, key=lambda x: x[0])[len(cold) // 2]
    warm_time, warm_result = sorted(warm, key=lambda x: x[0])[len(warm) // 2]
    np.save(_charges_file(natoms), cold_result.charges)
    return {
        'natoms': natoms,
        'mesh': list(solver.operator.recip.shape),
        'pairs': solver.operator.n_pairs,
        'cold_s': cold_time,
        'cold_cpu_s': cold_cpu,
        'cold_setup_s': cold_result.timings['setup'],
        'cold_iterations': cold_result.iterations,
        'warm_s': warm_time,
        'warm_iterations': warm_result.iterations,
        'residual': cold_result.residual,
        'converged': bool(cold_result.converged and warm_result.converged),
        'array_mib': _array_bytes(solver.operator) / 2**20,
        'peak_rss_mib': resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024 - rss0,
    }


def dense_worker(natoms: int) -> dict:
    """Time the dense Hessian + direct KKT solve once; compare with the Krylov charges of the same size."""
    import numpy as np

    from aiida_lisei.science.qeq import solve_qeq_dense

    atoms = build(natoms)
    rss0 = _rss_mib()
    start, cpu = time.perf_counter(), time.process_time()
    reference = solve_qeq_dense(atoms.positions, atoms.cell[:], atoms.get_chemical_symbols())
    out = {
        'dense_s': time.perf_counter() - start,
        'dense_cpu_s': time.process_time() - cpu,
        'dense_setup_s': reference.timings['setup'],
        'dense_peak_rss_mib': resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024 - rss0,
    }
    krylov = np.load(_charges_file(natoms))
    out['dense_max_charge_difference'] = float(np.abs(reference.charges - krylov).max())
    return out


def _run(mode: str, natoms: int, repeats: int) -> dict:
    command = [sys.executable, __file__, '--worker', mode, '--sizes', str(natoms), '--repeats', str(repeats)]
    env = {**os.environ, **THREADS[mode]}
    output = subprocess.run(command, check=True, capture_output=True, text=True, env=env).stdout
    return json.loads(output.strip().splitlines()[-1])


def main() -> None:
    """Run every size in a subprocess and print the scaling table and the ratio to the dense solve."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--sizes', type=int, nargs='+', default=sorted(SYSTEMS), choices=sorted(SYSTEMS))
    parser.add_argument('--dense', type=int, nargs='*', default=[1074, 4833])
    parser.add_argument('--repeats', type=int, default=3)
    parser.add_argument('--json', help='also write the measurements to this file')
    parser.add_argument('--worker', choices=sorted(THREADS), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        natoms = args.sizes[0]
        result = krylov_worker(natoms, args.repeats) if args.worker == 'krylov' else dense_worker(natoms)
        print(json.dumps(result))
        return

    rows = []
    for natoms in args.sizes:
        rows.append(_run('krylov', natoms, args.repeats if natoms < 50000 else 1))
        if natoms in args.dense:
            rows[-1].update(_run('dense', natoms, 1))
        print(f'done {natoms} atoms', file=sys.stderr, flush=True)

    print(
        'QEq of the Li|Li6PS5Cl|Li sandwich (paper parameters, slab + dipole correction), 2 cores: '
        f'Krylov {THREADS["krylov"]} + scipy.fft workers = {os.cpu_count()}; dense {THREADS["dense"]}'
    )
    header = (
        f'{"atoms":>7} {"mesh":>14} {"pairs":>9} {"cold s":>7} {"cpu s":>6} {"setup s":>7} {"it":>3} '
        f'{"warm s":>7} {"it":>3} {"arrays MiB":>10} {"peak RSS MiB":>12} {"cpu µs/atom":>11} {"dense s":>8}'
    )
    print(header)
    for row in rows:
        dense = f'{row["dense_s"]:8.1f}' if 'dense_s' in row else f'{"-":>8}'
        mesh = 'x'.join(map(str, row['mesh']))
        print(
            f'{row["natoms"]:7d} {mesh:>14} {row["pairs"]:9d} {row["cold_s"]:7.2f} {row["cold_cpu_s"]:6.2f}'
            f' {row["cold_setup_s"]:7.2f}'
            f' {row["cold_iterations"]:3d} {row["warm_s"]:7.2f} '
            f'{row["warm_iterations"]:3d} {row["array_mib"]:10.1f} {row["peak_rss_mib"]:12.0f} '
            f'{1e6 * row["cold_cpu_s"] / row["natoms"]:11.1f} {dense}'
        )
    for row in rows:
        if 'dense_s' in row:
            print(
                f'{row["natoms"]} atoms: dense Hessian + direct solve {row["dense_s"]:.1f} s wall, '
                f'{row["dense_cpu_s"]:.1f} s CPU (Hessian {row["dense_setup_s"]:.1f} s, peak RSS '
                f'{row["dense_peak_rss_mib"]:.0f} MiB); Krylov cold {row["cold_s"]:.2f} s wall '
                f'({row["dense_s"] / row["cold_s"]:.0f}x), {row["cold_cpu_s"]:.2f} s CPU '
                f'({row["dense_cpu_s"] / row["cold_cpu_s"]:.0f}x); warm {row["warm_s"]:.2f} s wall '
                f'({row["dense_s"] / row["warm_s"]:.0f}x); '
                f'max |Δq| = {row["dense_max_charge_difference"]:.1e} e'
            )
    if not all(row['converged'] for row in rows):
        print('WARNING: some solves did not converge')
    if args.json:
        with open(args.json, 'w') as handle:
            json.dump(rows, handle, indent=2)


if __name__ == '__main__':
    main()
