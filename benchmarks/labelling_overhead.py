"""Orchestration overhead per labelled frame: ``lisei.label`` with CP2K through the daemon vs bare CP2K.

For each profile (SQLite + ZeroMQ, PostgreSQL + RabbitMQ), made with ``aiida-lisei setup profile`` and
``aiida-lisei setup localhost`` in a throw-away ``AIIDA_PATH`` (the PostgreSQL database gets a unique name
and is dropped at the end unless ``--keep``), with a daemon of one worker:

1. ``lisei.label`` (engine ``cp2k``, protocol ``gfn1_xtb``) labels ``--frames`` seeded perturbed bcc Li16
   frames, ``--max-concurrent`` Cp2kLabelWorkChains at a time; the wall time from ``submit`` until the
   node is terminated is measured (``time.perf_counter``), and CP2K's own timing of each frame is read
   from ``output_parameters['wall_time_seconds']``;
2. right after, in the same run, the very same CP2K inputs (``aiida.inp`` and ``aiida.coords.xyz`` of each
   frame's CalcJob working directory) run again, one after the other, with the CalcJob's command line
   ``mpirun -np <mpiprocs> cp2k.psmp -i aiida.inp`` and its environment, in a temporary folder: the bare
   CP2K process time per frame;
3. the same frames are submitted a second time: every CalcJob must come from the cache.

With ``--min-poll-intervals 1,0`` each profile also runs a set of new frames (another seed) with the
localhost computer's ``minimum_job_poll_interval`` set to 0 s (the daemon is restarted to take it up).

Usage: ``python benchmarks/labelling_overhead.py [--frames 50] [--max-concurrent 1] [--mpiprocs 1]
[--profiles sqlite-zmq,postgres-rabbitmq] [--min-poll-intervals 1] [--keep]``.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

BIN = Path(sys.executable).parent
PROFILES = {'sqlite-zmq': ('sqlite', 'zmq'), 'postgres-rabbitmq': ('postgres', 'rabbitmq')}
#: Environment of the ``cp2k@localhost`` code (its prepend text, ``aiida-lisei setup localhost``).
CP2K_ENV = {
    'OMP_NUM_THREADS': '1',
    'OMPI_ALLOW_RUN_AS_ROOT': '1',
    'OMPI_ALLOW_RUN_AS_ROOT_CONFIRM': '1',
}
SEED = 20241125
SETTINGS = ('uuid', 'runner_poll_interval', 'safe_interval')


def run(*command: str, **kwargs) -> str:
    """Run a command of the venv, fail loudly with its output; return stdout."""
    result = subprocess.run(command, capture_output=True, text=True, check=False, **kwargs)
    if result.returncode:
        output = f'{result.stdout}\n{result.stderr}'
        raise SystemExit(f'{" ".join(command)} failed ({result.returncode}):\n{output}')
    return result.stdout


def load() -> str:
    """Return the load averages of the machine (1, 5, 15 min)."""
    return ' '.join(f'{value:.2f}' for value in os.getloadavg())


# ----------------------------------------------------------------------------------------------------------
# Worker: one profile, in its own process (one profile loaded per process)
# ----------------------------------------------------------------------------------------------------------


def frames(count: int, seed: int):
    """``count`` bcc Li16 frames (a = 3.42 Å) displaced by seeded normal noise of 0.05 Å."""
    import numpy as np
    from aiida import orm
    from ase.build import bulk

    rng = np.random.default_rng(seed)
    structures = []
    for _ in range(count):
        atoms = bulk('Li', 'bcc', a=3.42, cubic=True).repeat(2)
        atoms.positions += rng.normal(scale=0.05, size=atoms.positions.shape)
        structures.append(orm.StructureData(ase=atoms))
    return structures


def daemon(profile: str, action: str) -> None:
    """Start (one worker) or stop the daemon of ``profile``."""
    args = ['start', '1'] if action == 'start' else ['stop']
    run(str(BIN / 'verdi'), '-p', profile, 'daemon', *args, '--timeout', '120')


def submit_and_wait(code, structures, args) -> tuple[float, object]:
    """Submit ``lisei.label`` for ``structures`` and wait for it; return the wall time (s) and the node."""
    from aiida import orm
    from aiida.engine import submit

    from aiida_lisei.workchains.label import LabelWorkChain

    builder = LabelWorkChain.get_builder_from_protocol(
        code,
        structures,
        system_label='li16',
        engine='cp2k',
        engine_protocol='gfn1_xtb',
        overrides={'max_concurrent': args.max_concurrent},
        options={
            'resources': {'num_machines': 1, 'num_mpiprocs_per_machine': args.mpiprocs},
            'max_wallclock_seconds': 600,
        },
    )
    start = time.perf_counter()
    node = submit(builder)
    while not node.is_terminated:
        time.sleep(0.1)
    wall = time.perf_counter() - start
    node = orm.load_node(node.pk)
    if not node.is_finished_ok:
        raise SystemExit(f'lisei.label <{node.pk}> failed: {node.exit_status} {node.exit_message}')
    return wall, node


def frame_records(node) -> list[dict]:
    """Per frame (sorted by call link label): CP2K time, node lifetimes, calcjob count, cache source."""
    from aiida.common.links import LinkType

    records = []
    called = node.base.links.get_outgoing(link_type=LinkType.CALL_WORK).all()
    for link in sorted(called, key=lambda triple: triple.link_label):
        labeller = link.node
        calcjobs = [child for child in labeller.called if child.process_type.endswith(':cp2k')]
        last = max(calcjobs, key=lambda calcjob: calcjob.ctime)
        records.append(
            {
                'label': link.link_label,
                'cp2k_seconds': labeller.outputs.output_parameters['wall_time_seconds'],
                'labeller_seconds': (labeller.mtime - labeller.ctime).total_seconds(),
                'calcjob_seconds': (last.mtime - last.ctime).total_seconds(),
                'calcjobs': len(calcjobs),
                'cached': all(calcjob.base.caching.is_created_from_cache for calcjob in calcjobs),
                'workdir': last.outputs.remote_folder.get_remote_path(),
                'ctime': labeller.ctime.timestamp(),
                'mtime': labeller.mtime.timestamp(),
            }
        )
    return records


def bare_runs(records: list[dict], mpiprocs: int) -> list[dict]:
    """Run each frame's CP2K input again, directly and one after the other; return process and CP2K times."""
    from aiida_lisei.formats.cp2k import parse_cp2k_output

    cp2k = shutil.which('cp2k.psmp') or '/usr/bin/cp2k.psmp'
    env = {**os.environ, **CP2K_ENV}
    results = []
    with tempfile.TemporaryDirectory(prefix='lisei-bare-cp2k-') as tmp:
        for record in records:
            folder = Path(tmp, record['label'])
            folder.mkdir()
            for name in ('aiida.inp', 'aiida.coords.xyz'):
                shutil.copy(Path(record['workdir'], name), folder / name)
            start = time.perf_counter()
            with open(folder / 'aiida.out', 'w') as stdout:
                subprocess.run(
                    ['mpirun', '-np', str(mpiprocs), cp2k, '-i', 'aiida.inp'],
                    cwd=folder,
                    env=env,
                    stdout=stdout,
                    stderr=subprocess.STDOUT,
                    check=True,
                )
            seconds = time.perf_counter() - start
            parsed = parse_cp2k_output((folder / 'aiida.out').read_text())
            results.append({'process_seconds': seconds, 'cp2k_seconds': parsed['wall_time_seconds']})
    return results


def worker(args) -> None:
    """Measure one profile with one poll interval (its daemon started and stopped here); write JSON.

    One process per daemon start: a client keeps its broker connection, and the ZeroMQ broker is part of the
    daemon, so a process that submitted to one daemon cannot submit to a restarted one.
    """
    from aiida import load_profile, orm
    from aiida.manage import get_config

    profile = load_profile(args.worker)
    code = orm.load_code('cp2k@localhost')
    computer = code.computer
    interval, index = args.min_poll_intervals[0], args.variant
    computer.set_minimum_job_poll_interval(interval)
    variant = {
        'uuid': profile.uuid,
        'runner_poll_interval': get_config().get_option('runner.poll.interval', scope=args.worker),
        'safe_interval': computer.get_configuration()['safe_interval'],
        'min_poll_interval': interval,
    }
    daemon(args.worker, 'start')
    try:
        structures = frames(args.frames, SEED + index)
        variant['load_before'] = load()
        wall, node = submit_and_wait(code, structures, args)
        variant.update(wall=wall, pk=node.pk, node_seconds=(node.mtime - node.ctime).total_seconds())
        variant['frames'] = frame_records(node)
        variant['load_after_aiida'] = load()
        print(f'[{args.worker}] poll {interval:g}: lisei.label <{node.pk}> {wall:.1f} s', flush=True)
        variant['bare'] = bare_runs(variant['frames'], args.mpiprocs)
        variant['load_after_bare'] = load()
        print(f'[{args.worker}] poll {interval:g}: bare runs done', flush=True)
        if index == 0:  # the same frames again: every CalcJob from the cache
            wall, node = submit_and_wait(code, structures, args)
            records = frame_records(node)
            variant['cached'] = {'wall': wall, 'pk': node.pk, 'ncached': sum(r['cached'] for r in records)}
            print(f'[{args.worker}] cached resubmission {wall:.1f} s', flush=True)
    finally:
        daemon(args.worker, 'stop')
    Path(args.output).write_text(json.dumps(variant, indent=1))


# ----------------------------------------------------------------------------------------------------------
# Driver: profiles, one worker process per profile, the table, clean-up
# ----------------------------------------------------------------------------------------------------------


def drop_postgres(db_name: str) -> None:
    """Drop the benchmark's database and role."""
    import psycopg
    from psycopg import sql

    settings = {'host': '127.0.0.1', 'port': 5432, 'user': 'postgres', 'dbname': 'postgres'}
    with psycopg.connect(**settings, autocommit=True) as db:
        db.execute(sql.SQL('DROP DATABASE IF EXISTS {} WITH (FORCE)').format(sql.Identifier(db_name)))
        db.execute(sql.SQL('DROP ROLE IF EXISTS {}').format(sql.Identifier(db_name)))


def mean(values) -> float:
    values = list(values)
    return sum(values) / len(values)


def table(results: list[dict], args) -> str:
    """The table of numbers: one line per profile and minimum job poll interval."""
    header = (
        f'{"profile":18} {"poll":>4} {"frames":>6} {"total":>7} {"bare/fr":>7} {"AiiDA/fr":>8} '
        f'{"ovh/fr":>6} {"ovh %":>5} {"CP2K/fr":>7} {"bareCP2K":>8} {"calcjob":>7} {"labeller":>8} '
        f'{"cached/fr":>9}'
    )
    lines = [header, '-' * len(header)]
    for result in results:
        for variant in result['variants']:
            nframes = len(variant['frames'])
            bare = mean(run['process_seconds'] for run in variant['bare'])
            aiida = variant['wall'] / nframes
            overhead = aiida - bare
            cached = variant.get('cached')
            cached_text = f'{cached["wall"] / nframes:9.2f}' if cached else f'{"":9}'
            lines.append(
                f'{result["profile_kind"]:18} {variant["min_poll_interval"]:4g} {nframes:6d} '
                f'{variant["wall"]:7.1f} {bare:7.2f} {aiida:8.2f} {overhead:6.2f} '
                f'{100 * overhead / aiida:5.0f} '
                f'{mean(record["cp2k_seconds"] for record in variant["frames"]):7.2f} '
                f'{mean(run["cp2k_seconds"] for run in variant["bare"]):8.2f} '
                f'{mean(record["calcjob_seconds"] for record in variant["frames"]):7.2f} '
                f'{mean(record["labeller_seconds"] for record in variant["frames"]):8.2f} {cached_text}'
            )
    return '\n'.join(lines)


def driver(args) -> None:
    """Make the profiles, measure each in a worker process, print the table, clean up."""
    aiida_path = Path(tempfile.mkdtemp(prefix='lisei-bench-label-'))
    # verdi (the daemon) and the venv's console scripts must be on the PATH
    env = {**os.environ, 'AIIDA_PATH': str(aiida_path), 'PATH': f'{BIN}{os.pathsep}{os.environ["PATH"]}'}
    stamp = f'{os.getpid()}_{int(time.time())}'
    databases, results = [], []
    print(f'AIIDA_PATH={aiida_path}; load {load()}', flush=True)
    try:
        for kind in args.profiles:
            backend, broker = PROFILES[kind]
            name = f'bench-{kind}'
            options = ['--name', name, '--backend', backend, '--broker', broker, '--no-set-default']
            if backend == 'postgres':
                db_name = f'lisei_bench_{stamp}'
                options += ['--db-name', db_name, '--db-user', db_name]
                databases.append(db_name)
            run(str(BIN / 'aiida-lisei'), 'setup', 'profile', *options, env=env)
            run(str(BIN / 'aiida-lisei'), 'setup', 'localhost', '--profile', name, '--mpiprocs', '1', env=env)
            result = {'profile_kind': kind, 'variants': []}
            results.append(result)
            for index, interval in enumerate(args.min_poll_intervals):
                output = aiida_path / f'{name}-{index}.json'
                command = [sys.executable, __file__, '--worker', name, '--output', str(output)]
                command += ['--variant', str(index), '--min-poll-intervals', f'{interval:g}']
                command += ['--frames', str(args.frames), '--max-concurrent', str(args.max_concurrent)]
                command += ['--mpiprocs', str(args.mpiprocs)]
                subprocess.run(command, env=env, check=True)
                result['variants'].append(json.loads(output.read_text()))
                result.update({key: result['variants'][0][key] for key in SETTINGS})
    finally:
        if not args.keep:
            for db_name in databases:
                drop_postgres(db_name)
            shutil.rmtree(aiida_path, ignore_errors=True)
            for result in results:  # the durable task queue of a RabbitMQ profile (best effort)
                if (
                    'uuid' in result
                    and result['profile_kind'].endswith('rabbitmq')
                    and shutil.which('rabbitmqctl')
                ):
                    queue = f'aiida-{result["uuid"]}.process.queue'
                    subprocess.run(['rabbitmqctl', 'delete_queue', queue], capture_output=True, check=False)
        else:
            print(f'kept AIIDA_PATH={aiida_path} and databases {databases}')

    print(f'\nlisei.label, engine cp2k (gfn1_xtb), bcc Li16, max_concurrent {args.max_concurrent}, ', end='')
    print(f'{args.mpiprocs} MPI rank(s); times in s, per frame = mean over the frames')
    print(table(results, args))
    for result in results:
        print(
            f'{result["profile_kind"]}: runner.poll.interval {result["runner_poll_interval"]} s, '
            f'safe_interval {result["safe_interval"]} s'
        )
        for variant in result['variants']:
            restarts = sum(record['calcjobs'] - 1 for record in variant['frames'])
            cached = variant.get('cached')
            cached_text = (
                f'; cached resubmission <{cached["pk"]}>: {cached["ncached"]}/{len(variant["frames"])} '
                f'CalcJobs from the cache'
                if cached
                else ''
            )
            records = variant['frames']
            lifetimes = sorted(record['labeller_seconds'] for record in records)
            gaps = [after['ctime'] - before['mtime'] for before, after in itertools.pairwise(records)]
            print(
                f'  poll {variant["min_poll_interval"]:g}: Cp2kLabelWorkChain lifetime first frame '
                f'{records[0]["labeller_seconds"]:.2f} s, median {lifetimes[len(lifetimes) // 2]:.2f} s; '
                f'gap between frames (lisei.label steps) mean {mean(gaps) if gaps else 0:.2f} s'
            )
            print(
                f'  poll {variant["min_poll_interval"]:g}: lisei.label <{variant["pk"]}> node lifetime '
                f'{variant["node_seconds"]:.1f} s, {restarts} CalcJob restarts{cached_text}; load '
                f'{variant["load_before"]} -> {variant["load_after_aiida"]} -> {variant["load_after_bare"]}'
            )
    print(
        'columns: total = submit to terminated; bare/fr = mpirun + cp2k.psmp process (perf_counter); '
        'AiiDA/fr = total / frames; ovh = AiiDA/fr - bare/fr, ovh % of AiiDA/fr; CP2K/fr = CP2K timing '
        'report in the CalcJobs, bareCP2K in the bare runs; calcjob, labeller = node lifetimes (ctime to '
        'mtime) of the CalcJob and the Cp2kLabelWorkChain; cached/fr = second submission / frames'
    )


def parse_args() -> argparse.Namespace:
    """Command line."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--frames', type=int, default=50)
    parser.add_argument('--max-concurrent', type=int, default=1)
    parser.add_argument('--mpiprocs', type=int, default=1)
    parser.add_argument(
        '--profiles',
        type=lambda text: text.split(','),
        default=list(PROFILES),
        help=f'comma-separated, of {", ".join(PROFILES)}',
    )
    parser.add_argument(
        '--min-poll-intervals',
        type=lambda text: [float(value) for value in text.split(',')],
        default=[1.0],
        help='minimum_job_poll_interval of localhost (s), one labelling run each (default: the CLI 1 s)',
    )
    parser.add_argument('--keep', action='store_true', help='keep the AIIDA_PATH and the PostgreSQL database')
    parser.add_argument('--worker', help=argparse.SUPPRESS)
    parser.add_argument('--output', help=argparse.SUPPRESS)
    parser.add_argument('--variant', type=int, default=0, help=argparse.SUPPRESS)
    args = parser.parse_args()
    unknown = set(args.profiles) - set(PROFILES)
    if unknown:
        parser.error(f'unknown profiles {sorted(unknown)}; choose from {list(PROFILES)}')
    return args


if __name__ == '__main__':
    arguments = parse_args()
    worker(arguments) if arguments.worker else driver(arguments)
