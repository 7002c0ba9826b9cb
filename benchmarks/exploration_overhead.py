"""Overhead of ``lisei.exploration`` over bare LAMMPS, side by side (target: bare/ours >= 0.95).

The same exploration (bcc Li 4x4x4 = 128 atoms, the 4 test models, NVT 300 K, ``--steps`` steps) runs,
alternating ``--repeats`` times, as ``lmp -in input.lammps`` in a folder holding the very files the
CalcJob wrote, and through ``run_get_node`` of ``ExplorationCalculation`` on a local ``core.direct``
computer (upload, submission, polling, retrieval, parsing and storing included). One thread each.

Usage: ``python benchmarks/exploration_overhead.py [--steps 2000] [--repeats 3] [--poll 0.5]``. Without
``AIIDA_PATH`` a throw-away ``verdi presto --use-zeromq`` profile is made in a temporary folder.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
MODELS = sorted((ROOT / 'tests' / 'fixtures' / 'models').glob('model_*.pb'))
BIN = Path(sys.executable).parent
THREADS = {
    'OMP_NUM_THREADS': '1',
    'DP_INTRA_OP_PARALLELISM_THREADS': '1',
    'DP_INTER_OP_PARALLELISM_THREADS': '1',
    'TF_CPP_MIN_LOG_LEVEL': '2',
}


def setup_profile() -> None:
    """Load a throw-away SQLite + ZeroMQ profile unless ``AIIDA_PATH`` names one."""
    if 'AIIDA_PATH' not in os.environ:
        os.environ['AIIDA_PATH'] = tempfile.mkdtemp(prefix='lisei-bench-')
        subprocess.run([str(BIN / 'verdi'), 'presto', '--use-zeromq'], check=True, capture_output=True)
    from aiida import load_profile

    load_profile()


def main() -> None:
    """Run both ways alternately and print wall times and the ratio bare/ours."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--steps', type=int, default=2000)
    parser.add_argument('--repeats', type=int, default=3)
    parser.add_argument('--stride', type=int, default=10)
    parser.add_argument('--poll', type=float, default=0.5, help='minimum job poll interval of localhost (s)')
    args = parser.parse_args()
    os.environ.update(THREADS)
    setup_profile()

    from aiida import orm
    from aiida.engine import run_get_node
    from ase.build import bulk

    computer = orm.load_computer('localhost')
    computer.set_minimum_job_poll_interval(args.poll)
    computer.configure(safe_interval=0.0)
    code = orm.InstalledCode(
        computer=computer,
        filepath_executable=str(BIN / 'lmp'),
        label=f'lmp-bench-{time.time_ns()}',
        default_calc_job_plugin='lisei.exploration',
        prepend_text='export ' + ' '.join(f'{key}={value}' for key, value in THREADS.items()),
    ).store()
    builder = code.get_builder()
    builder.structure = orm.StructureData(ase=bulk('Li', 'bcc', a=3.42, cubic=True).repeat(4))
    builder.models = {f'm{index}': orm.SinglefileData(path) for index, path in enumerate(MODELS, start=1)}
    builder.parameters = orm.Dict({'temperature': 300, 'n_steps': args.steps, 'stride': args.stride})
    builder.seed = orm.Int(12345)
    builder.metadata.options.resources = {'num_machines': 1, 'num_mpiprocs_per_machine': 1}

    bare_times, ours_times = [], []
    workdir = Path(tempfile.mkdtemp(prefix='lisei-bare-'))
    for repeat in range(args.repeats):
        start = time.perf_counter()
        _, node = run_get_node(builder)
        ours_times.append(time.perf_counter() - start)
        if not node.is_finished_ok:
            raise SystemExit(f'exploration failed: {node.exit_status} {node.exit_message}')
        if repeat == 0:  # the same files for the bare runs, from the CalcJob's working directory
            remote = Path(node.outputs.remote_folder.get_remote_path())
            for name in ('input.lammps', 'structure.data', *[f'model_{i}.pb' for i in range(len(MODELS))]):
                shutil.copy(remote / name, workdir / name)
        start = time.perf_counter()
        subprocess.run(
            [str(BIN / 'lmp'), '-in', 'input.lammps', '-log', 'log.lammps', '-nocite'],
            cwd=workdir,
            check=True,
            stdout=subprocess.DEVNULL,
            env={**os.environ, **THREADS},
        )
        bare_times.append(time.perf_counter() - start)
        print(f'repeat {repeat}: bare {bare_times[-1]:7.2f} s   ours {ours_times[-1]:7.2f} s', flush=True)

    bare, ours = min(bare_times), min(ours_times)
    print(f'128 atoms, 4 models, {args.steps} steps, stride {args.stride}, {args.repeats} repeats (best of):')
    print(f'  bare lmp {bare:.2f} s, lisei.exploration {ours:.2f} s, ratio bare/ours {bare / ours:.3f}')
    mean_bare, mean_ours = sum(bare_times) / len(bare_times), sum(ours_times) / len(ours_times)
    print(f'  means: bare {mean_bare:.2f} s, ours {mean_ours:.2f} s, ratio {mean_bare / mean_ours:.3f}')


if __name__ == '__main__':
    main()
