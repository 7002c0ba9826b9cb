"""Cross-check of the selection against DP-GEN 0.14's own code, run on the same ``model_devi.out`` files.

``_select_by_model_devi_standard``, ``_read_model_devi_file`` and ``_make_fp_vasp_inner`` are taken from
``dpgen/generator/run.py`` with ``ast`` (the file is only read: importing ``dpgen.generator.run`` pulls heavy
dependencies) and executed in a namespace holding the few names they use.
"""

from __future__ import annotations

import ast
import glob
import importlib.util
import json
import logging
import os
import random
import re
import warnings
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from aiida_lisei.formats.lammps import parse_model_devi
from aiida_lisei.science.selection import FrameClass, TrustLevels, classify_frames, draw_candidates

FIXTURES = Path(__file__).parents[1] / 'fixtures' / 'parsers' / 'exploration'
FUNCTIONS = (
    '_read_model_devi_file',
    '_select_by_model_devi_standard',
    '_make_fp_vasp_inner',
    'make_fp_task_name',
)
CONSTANTS = ('data_system_fmt', 'fp_task_fmt', 'model_devi_name', 'calypso_run_opt_name')
HEADER = '       step' + ''.join(
    f'{name:>19}'
    for name in ('max_devi_v', 'min_devi_v', 'avg_devi_v', 'max_devi_f', 'min_devi_f', 'avg_devi_f')
)
DUMP = """ITEM: TIMESTEP
{step}
ITEM: NUMBER OF ATOMS
2
ITEM: BOX BOUNDS pp pp pp
0 3.42
0 3.42
0 3.42
ITEM: ATOMS id type x y z
1 1 0 0 0
2 1 1.71 1.71 1.71
"""


@pytest.fixture(scope='module')
def dpgen() -> dict:
    """Namespace with DP-GEN's selection functions, extracted from the installed ``run.py``."""
    spec = importlib.util.find_spec('dpgen')
    if spec is None or spec.origin is None:
        pytest.skip('dpgen is not installed')
    source = (Path(spec.origin).parent / 'generator' / 'run.py').read_text()
    tree = ast.parse(source)
    keep = [
        node
        for node in tree.body
        if (isinstance(node, ast.FunctionDef) and node.name in FUNCTIONS)
        or (isinstance(node, ast.Assign) and any(getattr(t, 'id', None) in CONSTANTS for t in node.targets))
    ]
    assert {node.name for node in keep if isinstance(node, ast.FunctionDef)} == set(FUNCTIONS)
    import dpdata

    namespace = {
        'os': os,
        'glob': glob,
        're': re,
        'np': np,
        'warnings': warnings,
        'Counter': Counter,
        'random': random.Random(0),
        'dpdata': dpdata,
        'dlog': logging.getLogger('dpgen-crosscheck'),
        'create_path': lambda path: os.makedirs(path),
    }
    exec(compile(ast.Module(body=keep, type_ignores=[]), str(spec.origin), 'exec'), namespace)
    return namespace


def write_model_devi(path: Path, steps, devi_f, devi_v=None) -> None:
    """Write a ``model_devi.out`` in DeePMD's format (6 significant digits, as LAMMPS writes it)."""
    steps = np.asarray(steps)
    devi_v = np.zeros(steps.size) if devi_v is None else np.asarray(devi_v)
    devi_f = np.asarray(devi_f)
    table = np.column_stack([steps, devi_v, 0.5 * devi_v, 0.7 * devi_v, devi_f, 0.5 * devi_f, 0.7 * devi_f])
    np.savetxt(path, table, fmt=['%12d'] + ['%18.6e'] * 6, header=HEADER, comments='#')


def synthetic_case(seed: int, size: int = 120):
    """Seeded deviations with rows exactly on the levels, duplicated steps and steps below the skip."""
    rng = np.random.default_rng(seed)
    steps = np.arange(size) * 10
    devi_f = rng.uniform(0.0, 0.4, size)
    devi_v = rng.uniform(0.0, 0.05, size)
    devi_f[rng.choice(size, 12, replace=False)] = rng.choice([0.10, 0.25, 0.15, 0.30], 12)
    devi_v[rng.choice(size, 4, replace=False)] = 0.02
    duplicates = rng.choice(size, 8, replace=False)  # re-evaluations of a step: the last row must win
    steps = np.concatenate([steps, steps[duplicates]])
    devi_f = np.concatenate([devi_f, rng.uniform(0.0, 0.4, 8)])
    devi_v = np.concatenate([devi_v, rng.uniform(0.0, 0.05, 8)])
    order = rng.permutation(steps.size)  # duplicated rows anywhere in the file
    return steps[order], devi_f[order], devi_v[order]


def make_tasks(root: Path, cases) -> list[str]:
    """Write DP-GEN model-deviation task folders ``task.000.00000i`` (model_devi.out, traj/, job.json)."""
    tasks = []
    for index, (steps, devi_f, devi_v) in enumerate(cases):
        task = root / f'task.000.{index:06d}'
        (task / 'traj').mkdir(parents=True)
        write_model_devi(task / 'model_devi.out', steps, devi_f, devi_v)
        (task / 'job.json').write_text(json.dumps({'index': index}))
        for step in np.unique(steps):
            (task / 'traj' / f'{int(step)}.lammpstrj').write_text(DUMP.format(step=int(step)))
        tasks.append(str(task))
    return tasks


def fixture_case(name: str):
    """Rows of a real ``model_devi.out`` fixture (LAMMPS + 4 DeePMD models)."""
    columns = parse_model_devi((FIXTURES / name / 'model_devi.out').read_text())
    return columns['step'], columns['max_devi_f'], columns['max_devi_v']


CASES = {
    'synthetic': [synthetic_case(seed) for seed in (1, 2, 3)],
    'real_lammps': [fixture_case('nvt_800k'), fixture_case('nvt_300k')],
}
LEVEL_SETS = [
    TrustLevels(0.10, 0.25),
    TrustLevels(0.15, 0.30),
    TrustLevels(0.10, 0.25, v_lo=0.02, v_hi=0.04),
    TrustLevels(0.05, 1.0),
]


def ours(tasks: list[str], levels: TrustLevels, skip: int):
    """Our classification of the same task files: lists of (task, step) per class, file order."""
    classes = {member: [] for member in FrameClass}
    classifications = []
    for task in tasks:
        columns = parse_model_devi(Path(task, 'model_devi.out').read_text())
        result = classify_frames(columns['step'], columns['max_devi_f'], levels, columns['max_devi_v'], skip)
        classifications.append(result)
        for step, frame_class in zip(result.steps, result.classes, strict=True):
            classes[FrameClass(frame_class)].append([task, int(step)])
    return classes, classifications


@pytest.mark.engines  # DP-GEN: the [tests] extra
@pytest.mark.parametrize('case', CASES)
@pytest.mark.parametrize('levels', LEVEL_SETS, ids=lambda lv: f'f{lv.f_lo}-{lv.f_hi}-v{lv.v_lo:g}')
@pytest.mark.parametrize('skip', [0, 55, 100])
def test_same_classes_as_dpgen(dpgen, tmp_path, case, levels, skip):
    """Accurate, candidate and failed frames (and their order) are those of DP-GEN."""
    tasks = make_tasks(tmp_path, CASES[case])
    accurate, candidate, failed, counter = dpgen['_select_by_model_devi_standard'](
        tasks, levels.f_lo, levels.f_hi, levels.v_lo, levels.v_hi, None, 'lammps', skip
    )
    classes, _ = ours(tasks, levels, skip)
    assert classes[FrameClass.ACCURATE] == accurate
    assert classes[FrameClass.CANDIDATE] == candidate
    assert classes[FrameClass.FAILED] == failed
    assert sum(counter.values()) == sum(len(rows) for rows in classes.values())
    if case == 'synthetic' and levels.f_hi < 0.4:  # all three classes are really exercised
        assert candidate and failed and accurate


def test_synthetic_files_hold_the_edge_cases(tmp_path):
    """Rows exactly on a level survive the file round trip; duplicated steps and skipped steps exist."""
    (task,) = make_tasks(tmp_path, [synthetic_case(1)])
    columns = parse_model_devi(Path(task, 'model_devi.out').read_text())
    assert {0.10, 0.25} <= set(columns['max_devi_f'].tolist())
    assert np.unique(columns['step']).size < columns['step'].size
    assert (columns['step'] < 55).any()


@pytest.mark.engines  # DP-GEN: the [tests] extra
@pytest.mark.parametrize(
    ('fp_task_max', 'fp_task_min', 'threshold', 'soft'),
    [
        (5, 0, 1.0, None),
        (1000, 0, 1.0, None),
        (40, 0, 'above', 'below'),
        (40, 0, 'below', None),
        (5, 6, 1.0, None),
    ],
)
def test_same_number_of_tasks_as_dpgen(
    dpgen, tmp_path, monkeypatch, fp_task_max, fp_task_min, threshold, soft
):
    """``_make_fp_vasp_inner`` labels as many frames as we choose (fp_task_max/min, accurate thresholds)."""
    monkeypatch.chdir(tmp_path)
    modd_path, work_path = tmp_path / 'modd', tmp_path / 'fp'
    modd_path.mkdir()
    work_path.mkdir()
    tasks = make_tasks(modd_path, [*CASES['synthetic'], *CASES['real_lammps']])
    levels = TrustLevels(0.10, 0.25)
    _, classifications = ours(tasks, levels, 0)
    total = sum(sum(c.counts.values()) for c in classifications)
    ratio = sum(c.counts['accurate'] for c in classifications) / total
    named = {'above': ratio + 0.1, 'below': ratio - 0.1, None: None}
    threshold, soft = named.get(threshold, threshold), named.get(soft, soft)
    jdata = {'model_devi_engine': 'lammps', 'fp_accurate_threshold': threshold}
    if soft is not None:
        jdata['fp_accurate_soft_threshold'] = soft

    fp_tasks = dpgen['_make_fp_vasp_inner'](
        0, str(modd_path), str(work_path), 0, levels.v_lo, levels.v_hi, levels.f_lo, levels.f_hi,
        fp_task_min, fp_task_max, [], ['Li', 'P', 'S', 'Cl'], jdata,
    )  # fmt: skip
    selection = draw_candidates(
        classifications, fp_task_max, seed=7, fp_task_min=fp_task_min, fp_accurate_threshold=threshold,
        fp_accurate_soft_threshold=soft,
    )  # fmt: skip
    assert len(fp_tasks) == len(selection.chosen)
    chosen_by_dpgen = {os.path.realpath(Path(task, 'conf.dump')) for task in fp_tasks}
    candidates = {
        os.path.realpath(Path(tasks[i], 'traj', f'{int(classifications[i].steps[k])}.lammpstrj'))
        for i, c in enumerate(classifications)
        for k in np.flatnonzero(c.classes == FrameClass.CANDIDATE)
    }
    assert chosen_by_dpgen <= candidates
    ours_chosen = {
        os.path.realpath(
            Path(
                tasks[i],
                'traj',
                f'{int(classifications[i].steps[list(classifications[i].rows).index(row)])}.lammpstrj',
            )
        )
        for i, row in selection.chosen
    }
    assert ours_chosen <= candidates
    if threshold not in (1.0,) and soft is not None:  # the scaled branch was exercised
        assert 0 < selection.task_max < fp_task_max
