"""Speed of the nucleation analysis on the paper's 4833-atom sandwich (target: 150 frames in < 60 s).

The sandwich is built by ``aiida_lisei.structures.builders.sandwich`` with the ``paper`` protocol of
``protocols/atomic_models.yaml``; ``--frames`` frames are made from it with Gaussian thermal noise
(``--noise`` Å per coordinate, a fresh draw per frame) and, with ``--cluster``, a 27-atom bcc Li cluster
(nn 2.75 Å) planted from ``--onset`` on, 10 Å above the anode, so the cluster, origin and RDF paths run
too. QEq-like charges are attached to every ``--charge-every``-th frame. The whole
:func:`~aiida_lisei.science.nucleation.summarise_trajectory` is timed (frame analysis, RDFs, charge
statistics, JSON conversion), and :func:`~aiida_lisei.science.nucleation.analyse_frame` alone per frame.

Usage: ``OMP_NUM_THREADS=1 python benchmarks/analysis_speed.py [--frames 150] [--noise 0.1] [--cluster]``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

import numpy as np
import yaml

from aiida_lisei.science.nucleation import NucleationParameters, analyse_frame, summarise_trajectory
from aiida_lisei.science.regions import initial_origin
from aiida_lisei.structures.builders import argyrodite, sandwich

ROOT = Path(__file__).resolve().parents[1]
PROTOCOL = ROOT / 'aiida_lisei' / 'protocols' / 'atomic_models.yaml'


def paper_sandwich():
    """The 4833-atom sandwich of the paper protocol."""
    protocol = yaml.safe_load(PROTOCOL.read_text())['default_inputs']
    electrolyte = argyrodite(
        seed=protocol['argyrodite']['seed'], **protocol['argyrodite']['parameters']
    ).atoms
    return sandwich(electrolyte, **protocol['sandwich']['parameters'])


def make_frames(model, n_frames: int, noise: float, cluster: bool, onset: int, seed: int = 0):
    """(F, N, 3) noisy frames; with ``cluster`` 27 electrolyte Li form a bcc cluster from ``onset`` on."""
    rng = np.random.default_rng(seed)
    atoms, groups = model.atoms, np.array(model.groups)
    frames = atoms.positions[None] + rng.normal(0.0, noise, (n_frames, *atoms.positions.shape))
    if cluster:
        a = 2.75 * 2 / np.sqrt(3)
        grid = np.array([[x, y, z] for x in (-1, 0, 1) for y in (-1, 0, 1) for z in (-1, 0, 1)], dtype=float)
        body = np.array([[x, y, z] for x in (-0.5, 0.5) for y in (-0.5, 0.5) for z in (-0.5, 0.5)])
        shells = np.vstack([grid[np.abs(grid).sum(axis=1) <= 2], body])  # 19 + 8 = 27 sites
        lateral = atoms.cell[0, 0]
        # 10 Å above the anode: inside the top electrolyte cell; clear its atoms out of the way first.
        centre = np.array([0.5 * lateral, 0.5 * lateral, model.info['electrolyte_bottom_z'] + 8.0])
        donors = rng.choice(np.flatnonzero(groups == 'electrolyte_Li'), len(shells), replace=False)
        for f in range(onset, n_frames):
            near = np.linalg.norm(frames[f] - centre, axis=1) < 6.5
            frames[f, near, 2] += 45.0  # into the source-side SEI region, far from the cluster
            frames[f, donors] = centre + a * shells + rng.normal(0.0, noise, (len(shells), 3))
    return frames


def main() -> None:
    """Build, analyse and print the time per frame and the total."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--frames', type=int, default=150)
    parser.add_argument('--noise', type=float, default=0.1, help='Gaussian noise per coordinate (Å)')
    parser.add_argument('--cluster', action='store_true', help='plant a 27-atom Li cluster from --onset on')
    parser.add_argument('--onset', type=int, default=125)
    parser.add_argument('--charge-every', type=int, default=25)
    parser.add_argument('--json', type=Path, help='write the summary dictionary here')
    args = parser.parse_args()

    start = time.perf_counter()
    model = paper_sandwich()
    frames = make_frames(model, args.frames, args.noise, args.cluster, args.onset)
    species = np.array(model.atoms.get_chemical_symbols())
    cells = np.repeat(model.atoms.cell[:][None], args.frames, axis=0)
    times = np.arange(args.frames, dtype=float)  # 1 ps per frame
    charges = np.full((args.frames, len(species)), np.nan)
    charges[:: args.charge_every] = np.where(species == 'Li', 0.8, -0.9)
    setup = time.perf_counter() - start
    lengths = np.round(model.atoms.cell.lengths(), 2).tolist()
    print(f'model: {len(species)} atoms, cell {lengths} Å; setup {setup:.1f} s')
    print(f'python {platform.python_version()}, OMP_NUM_THREADS={os.environ.get("OMP_NUM_THREADS")}')

    origin = initial_origin(model.groups)
    params = NucleationParameters()
    analyse_frame(frames[0], cells[0], species, origin, params)  # warm-up (imports, caches)
    per_frame = []
    for f in range(min(args.frames, 20)):
        t0 = time.perf_counter()
        analyse_frame(frames[f], cells[f], species, origin, params)
        per_frame.append(time.perf_counter() - t0)
    print(f'analyse_frame: {1e3 * np.median(per_frame):.1f} ms per frame (median of {len(per_frame)})')

    t0 = time.perf_counter()
    result = summarise_trajectory(frames, cells, species, model.groups, times, charges=charges, params=params)
    total = time.perf_counter() - t0
    print(
        f'summarise_trajectory: {total:.2f} s for {args.frames} frames = '
        f'{1e3 * total / args.frames:.1f} ms per frame; extrapolated to 150 frames: '
        f'{150 * total / args.frames:.1f} s (target < 60 s)'
    )
    summary = result['summary']
    print(
        'summary:',
        json.dumps(
            {
                k: summary[k]
                for k in (
                    'cluster_onset_time_ps',
                    'cluster_size_at_onset',
                    'cluster_boundary_distance_at_onset',
                    'cluster_nn_distance',
                    'anode_nn_distance',
                    'sei_thickness_initial',
                    'max_cluster_size',
                )
            }
        ),
    )
    if args.json:
        args.json.write_text(json.dumps(result))


if __name__ == '__main__':
    main()
