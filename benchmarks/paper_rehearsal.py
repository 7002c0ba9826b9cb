"""Paper-size rehearsal: the study's ``rehearsal`` protocol at the paper's sizes, timed, with memory and disk.

Runs ``lisei.study`` (protocol ``rehearsal``: the 4833-atom sandwich, 0.5 ps of NPT equilibration, 2 ps of
moving-restraint DPMD in two segments, QEq and the nucleation analysis on every frame) with four small
models (``--models``: e.g. the demo's ensemble; default: the four test models of ``tests/fixtures/models``,
which blow the sandwich up: a rehearsal, not a result), then the SEI extraction of its last frame.
Prints per step: wall time, the peak memory of its jobs (RSS, sampled every 0.2 s) and of this process
(parsing and storing happen here), the disk of its jobs' working folders and of its output nodes in the
repository; then extrapolates the restraint run to the paper's 150 ps, with this model and with the
paper-size network (``--dp-ms-per-step``: 142 ms/step at 4800 atoms on one core, compressed, design.md).

Usage (the codes of ``aiida-lisei setup localhost`` on the profile, e.g. ``make profile`` first)::

    .venv/bin/verdi -p lisei-demo run benchmarks/paper_rehearsal.py -- [--models PK,PK,...] [--json F]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import threading
import time
from pathlib import Path

import psutil
from aiida import orm
from aiida.engine import run_get_node
from aiida.manage.caching import disable_caching

import aiida_lisei
from aiida_lisei.data.deep_potential import DeepPotentialData, model_metadata
from aiida_lisei.workchains.sei_extraction import extract_sei
from aiida_lisei.workchains.study import StudyWorkChain

ROOT = Path(aiida_lisei.__file__).resolve().parents[1]  # `verdi run` gives no usable __file__
MODELS = ROOT / 'tests' / 'fixtures' / 'models'
CODES = {'lmp': 'lmp', 'lmp_plumed': 'lisei-lmp-plumed', 'qeq': 'lisei-qeq'}
PAPER_STEPS = 150_000  # 150 ps at 1 fs


class MemorySampler(threading.Thread):
    """Sample every ``interval`` s the RSS (bytes) of this process and, summed, of every process whose
    working directory lies below ``workdir`` (the jobs); keep the samples with their times."""

    def __init__(self, workdir: str, interval: float = 0.2) -> None:
        super().__init__(daemon=True)
        self.workdir, self.interval = os.path.realpath(workdir), interval
        self.samples: list[tuple[float, int, int]] = []  # (time, own RSS, jobs' RSS)
        self._halt = threading.Event()
        self._own = psutil.Process()

    def run(self) -> None:
        while not self._halt.is_set():
            jobs = 0
            for process in psutil.process_iter(['cwd', 'memory_info']):
                cwd = process.info.get('cwd')
                if cwd and cwd.startswith(self.workdir) and process.info.get('memory_info'):
                    jobs += process.info['memory_info'].rss
            self.samples.append((time.time(), self._own.memory_info().rss, jobs))
            time.sleep(self.interval)

    def stop(self) -> None:
        self._halt.set()
        self.join()

    def peaks(self, start: float, end: float) -> tuple[int, int]:
        """Return the peak own and jobs' RSS (bytes) between ``start`` and ``end`` (epoch s)."""
        window = [(own, jobs) for when, own, jobs in self.samples if start <= when <= end] or [(0, 0)]
        return max(own for own, _ in window), max(jobs for _, jobs in window)


def folder_bytes(path: str | Path) -> int:
    """Return the bytes of the files below ``path`` (0 when it is gone)."""
    return sum(file.stat().st_size for file in Path(path).rglob('*') if file.is_file())


def repository_bytes(node: orm.Node) -> int:
    """Return the bytes of the repository files of ``node``."""
    repository = node.base.repository
    return sum(len(repository.get_object_content(name, mode='rb')) for name in repository.list_object_names())


def step_figures(step: orm.ProcessNode, sampler: MemorySampler) -> dict[str, float]:
    """Wall time (s), peak RSS of this process and of the jobs (MiB), disk of the jobs' folders and of the
    outputs made below ``step`` (MiB), the number of CalcJobs."""
    start, end = step.ctime.timestamp(), step.mtime.timestamp()
    own, jobs = sampler.peaks(start, end)
    calcjobs = [node for node in step.called_descendants if isinstance(node, orm.CalcJobNode)]
    scratch = sum(
        folder_bytes(job.outputs.remote_folder.get_remote_path())
        for job in calcjobs
        if 'remote_folder' in job.outputs
    )
    made = {
        link.node.pk: link.node
        for process in (step, *step.called_descendants)
        for link in process.base.links.get_outgoing().all()
        if isinstance(link.node, orm.Data)
    }
    return {
        'wall_s': end - start,
        'peak_rss_self_mib': own / 2**20,
        'peak_rss_jobs_mib': jobs / 2**20,
        'scratch_mib': scratch / 2**20,
        'repository_mib': sum(repository_bytes(node) for node in made.values()) / 2**20,
        'calcjobs': len(calcjobs),
    }


def test_model(index: int) -> DeepPotentialData:
    """Test model ``index`` (1 to 4) of ``tests/fixtures/models`` with the metadata of its input file."""
    metadata = model_metadata(json.loads((MODELS / f'input_{index}.json').read_text()))
    return DeepPotentialData(MODELS / f'model_{index}.pb', deepmd_version='3.2.0', **metadata)


def main() -> None:
    """Run the rehearsal, print the per-step table and the extrapolation; optionally write JSON."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--computer', default='localhost')
    parser.add_argument('--dp-ms-per-step', type=float, default=142.0, help='paper network, 4800 atoms (ms)')
    parser.add_argument('--json', type=Path, default=None)
    parser.add_argument(
        '--models',
        default=None,
        help='comma-separated PKs of DeepPotentialData (e.g. the demo ensemble); default: the test models',
    )
    args = parser.parse_args()

    codes = {role: orm.load_code(f'{label}@{args.computer}') for role, label in CODES.items()}
    if args.models:
        pks = [int(pk) for pk in args.models.split(',')]
        models = {f'model_{index}': orm.load_node(pk) for index, pk in enumerate(pks, start=1)}
    else:
        models = {f'model_{index}': test_model(index).store() for index in range(1, 5)}
    builder = StudyWorkChain.get_builder_from_protocol(codes, protocol='rehearsal', models=models)

    sampler = MemorySampler(orm.load_computer(args.computer).get_workdir().split('{')[0])
    sampler.start()
    try:
        with disable_caching():  # every step runs: a rehearsal measures, it does not reuse
            _, study = run_get_node(builder)
        steps = {link.link_label: link.node for link in study.base.links.get_outgoing().all()}
        restraint, analysis = steps.get('restraint_md'), steps.get('nucleation_analysis')
        extraction_start = time.time()
        extracted = None
        if restraint is not None and 'trajectory' in restraint.outputs:
            extracted = extract_sei(
                restraint.outputs.trajectory,
                restraint.inputs.md.structure,
                orm.Dict({}),
                analysis=analysis.outputs.analysis
                if analysis is not None and analysis.is_finished_ok
                else None,
            )
        extraction_end = time.time()
    finally:
        sampler.stop()

    message = study.exit_message or ''
    print(f'\nlisei.study <PK={study.pk}> (rehearsal): exit status {study.exit_status} {message}')
    rows = {}
    for label, node in steps.items():
        if isinstance(node, orm.WorkflowNode):
            rows[label] = step_figures(node, sampler)
            rows[label]['exit_status'] = node.exit_status
    if extracted is not None:
        own, _ = sampler.peaks(extraction_start, extraction_end)
        slab = extracted['structure']
        rows['sei_extraction'] = {
            'wall_s': extraction_end - extraction_start,
            'peak_rss_self_mib': own / 2**20,
            'repository_mib': sum(repository_bytes(node) for node in extracted.values()) / 2**20,
            'atoms': len(slab.sites),
        }
    columns = ('wall s', 'RSS self MiB', 'RSS jobs MiB', 'scratch MiB', 'repo MiB')
    print(f'{"step":22s} ' + ' '.join(f'{name:>13s}' for name in columns))
    for label, row in rows.items():
        values = (
            row['wall_s'],
            row['peak_rss_self_mib'],
            row.get('peak_rss_jobs_mib', 0.0),
            row.get('scratch_mib', 0.0),
            row['repository_mib'],
        )
        print(f'{label:22s} ' + ' '.join(f'{value:13.1f}' for value in values))

    if restraint is not None:
        segments = [
            job for job in restraint.called if job.process_type == 'aiida.calculations:lisei.restraint_md'
        ]
        n_steps = restraint.inputs.md.parameters['n_steps']
        natoms = len(restraint.inputs.md.structure.sites)
        md_seconds = sum((job.mtime - job.ctime).total_seconds() for job in segments)
        per_step = md_seconds / n_steps
        paper_hours = PAPER_STEPS * per_step / 3600
        network_hours = PAPER_STEPS * (per_step + args.dp_ms_per_step / 1000) / 3600
        rows['extrapolation'] = {
            'atoms': natoms,
            'segments': len(segments),
            'md_seconds': md_seconds,
            'ms_per_step': 1000 * per_step,
            'paper_150ps_hours_this_model': paper_hours,
            'paper_150ps_hours_paper_network': network_hours,
        }
        print(
            f'\nrestraint MD: {natoms} atoms, {n_steps} steps in {len(segments)} segments, '
            f'{md_seconds:.0f} s of jobs (upload to retrieval and parsing): {1000 * per_step:.1f} ms/step'
            ' with the small model.'
        )
        print(
            f'150 ps (150 000 steps) on this CPU: {paper_hours:.1f} h with this model; with the paper-size '
            f'network (+{args.dp_ms_per_step:.0f} ms/step, one core, compressed) about '
            f"{network_hours:.1f} h, an upper bound (the small model's own DP time is counted twice)."
        )
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1))
    sys.exit(0 if study.is_finished_ok else 1)


if __name__ == '__main__':
    main()
