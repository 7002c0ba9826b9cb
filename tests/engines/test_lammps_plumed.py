"""Tests of ``lisei-lmp-plumed``: real DeePMD + restraint runs of a small Li|Li6PS5Cl|Li sandwich.

The system: the demo sandwich's shape at its smallest (1x1x1 electrolyte cell, 2 anode and 2 source Li
layers: 88 atoms, 10.25 x 10.25 x 35.26 Å³), the paper's CV (``build_paper_cv``, D_MAX 10 Å, all anode
layers in group B) and the tiny test model ``tests/fixtures/models/model_1.pb`` (bcc-Li only: stable
enough for thousands of steps, not physical). LAMMPS runs in this process (``run_script``) except for
the console-script tests. The routes: ``fast`` (numba CV), ``jax`` (JAX CV, here on the CPU) and
``plumed`` (the PLUMED kernel).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from ase.io import write

from aiida_lisei.engines.lammps_plumed import (
    RestraintRunError,
    find_plumed_fix,
    rewrite_script,
    run_plumed,
    run_script,
)
from aiida_lisei.engines.probe import find_plumed_kernel
from aiida_lisei.formats.lammps import RESTRAINT_FIX_ID, THERMO_COLUMNS, generate_restraint_md_script
from aiida_lisei.formats.plumed import read_colvar, write_plumed_input
from aiida_lisei.science.restraint_cv import (
    PLUMED_NL_STRIDE,
    CoordinationCV,
    MovingRestraint,
    build_paper_cv,
    evaluate_cv,
    restraint_bias,
)
from aiida_lisei.structures.builders import AtomicModel, argyrodite, sandwich

MODEL = Path(__file__).parents[1] / 'fixtures' / 'models' / 'model_1.pb'
TYPE_MAP = ['Li', 'P', 'S', 'Cl']
#: LAMMPS ``units metal``: pressure (bar) = virial (eV) x NKTV2P / volume (Å³).
NKTV2P = 1.6021765e6
KAPPA = 500.0  # eV per CV unit², the paper's

needs_kernel = pytest.mark.skipif(find_plumed_kernel() is None, reason='no PLUMED kernel: make plumed-kernel')


@pytest.fixture(scope='module')
def system() -> AtomicModel:
    """The 88-atom sandwich (Li42 P4 S20 Cl4 with 18 anode and 18 source Li), rattled by 0.03 Å.

    Rattled because D_MAX (10 Å) exceeds half the lateral cell (5.1 Å) here: in the perfect crystal many
    pairs sit exactly at half a cell, where the minimum image (and the gradient's direction) flips.
    """
    electrolyte = argyrodite(seed=20241125)
    model = sandwich(
        electrolyte.atoms,
        electrolyte_repeat_xy=1,
        electrolyte_repeat_z=1,
        anode_layers=2,
        source_layers=2,
        vacuum=12.0,
    )
    model.atoms.positions += np.random.default_rng(7).normal(0.0, 0.03, model.atoms.positions.shape)
    return model


@pytest.fixture(autouse=True)
def _one_thread(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ('OMP_NUM_THREADS', 'DP_INTRA_OP_PARALLELISM_THREADS', 'PLUMED_NUM_THREADS'):
        monkeypatch.setenv(name, '1')
    monkeypatch.setenv('DP_INTER_OP_PARALLELISM_THREADS', '1')
    monkeypatch.setenv('TF_CPP_MIN_LOG_LEVEL', '2')


def paper_cv(system: AtomicModel, normalisation: str = 'group_a') -> CoordinationCV:
    return build_paper_cv(
        system.groups, system.layers, d_max=10.0, normalisation=normalisation, anode_layers=2
    )


@dataclass
class Case:
    """A run folder: data file, model, plumed.dat and the LAMMPS script."""

    folder: Path
    cv: CoordinationCV
    restraint: MovingRestraint
    script: str


def make_case(
    folder: Path,
    system: AtomicModel,
    *,
    parameters: dict,
    offset: float = 0.0,
    pull: float = 0.0,
    kappa: float = KAPPA,
    stride: int = 1,
    normalisation: str = 'group_a',
    seed: int = 4242,
    restart_file: str | None = None,
    extra: tuple[str, ...] = (),
) -> Case:
    """Write a case into ``folder``: s0 starts at s(start) + ``offset`` and moves by ``pull`` over 10⁵ steps.

    ``extra`` commands go just before the ``run`` line.
    """
    folder.mkdir(parents=True, exist_ok=True)
    cv = paper_cv(system, normalisation)
    start = evaluate_cv(cv, system.atoms.positions, system.atoms.cell[:]).value
    restraint = MovingRestraint(kappa, start + offset, start + offset + pull, 0, 100_000)
    (folder / 'plumed.dat').write_text(write_plumed_input(cv, restraint, stride=stride))
    if not (folder / 'structure.data').exists():
        write(
            folder / 'structure.data',
            system.atoms,
            format='lammps-data',
            specorder=TYPE_MAP,
            masses=True,
            units='metal',
            atom_style='atomic',
        )
        shutil.copy(MODEL, folder / 'model.pb')
    parameters = {'thermo_stride': 1, 'dump_stride': 1000, 'restart_stride': 0, **parameters}
    script = generate_restraint_md_script(parameters, 'model.pb', TYPE_MAP, seed, restart_file=restart_file)
    if extra:
        lines = script.splitlines()
        at = next(i for i, line in enumerate(lines) if line.startswith('run '))
        script = '\n'.join([*lines[:at], *extra, *lines[at:]]) + '\n'
    return Case(folder, cv, restraint, script)


def run_case(
    case: Case, route: str, monkeypatch: pytest.MonkeyPatch, log: str | None = None, **kwargs
) -> object:
    """Run ``case`` in its folder with ``route`` (LAMMPS log ``log``, default ``log.<route>``)."""
    monkeypatch.chdir(case.folder)
    return run_script(case.script, route=route, log_file=log or f'log.{route}', screen='none', **kwargs)


def thermo(log: Path) -> dict[str, np.ndarray]:
    """Thermo columns (:data:`THERMO_COLUMNS`) of the runs in a LAMMPS log."""
    rows, inside = [], False
    for line in log.read_text().splitlines():
        words = line.split()
        if words[:1] == ['Step']:
            inside = True
        elif inside and words[:2] == ['Loop', 'time']:
            inside = False
        elif inside and words:
            rows.append([float(w) for w in words])
    table = np.array(rows)
    return {name: table[:, k] for k, name in enumerate(THERMO_COLUMNS)}


def read_dump(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """``(ids, values)`` of the last frame of a LAMMPS custom dump ``id c1 c2 ...``."""
    lines = path.read_text().splitlines()
    start = max(i for i, line in enumerate(lines) if line.startswith('ITEM: ATOMS'))
    table = np.array([[float(w) for w in line.split()] for line in lines[start + 1 :]])
    return table[:, 0].astype(int), table[:, 1:]


def strain_derivative(
    cv: CoordinationCV, positions: np.ndarray, cell: np.ndarray, h: float = 1e-6
) -> np.ndarray:
    """``∂s/∂ε_ab`` under the homogeneous strain ``x → x(1 + ε)`` of atoms and cell (NumPy, central FD)."""
    frac = positions @ np.linalg.inv(cell)
    out = np.zeros((3, 3))
    for a in range(3):
        for b in range(3):
            values = []
            for sign in (1.0, -1.0):
                strain = np.eye(3)
                strain[a, b] += sign * h
                strained = cell @ strain
                values.append(evaluate_cv(cv, frac @ strained, strained).value)
            out[a, b] = (values[0] - values[1]) / (2 * h)
    return out


# --------------------------------------------------------------------------------------------------
# The script rewrite (no MD)
# --------------------------------------------------------------------------------------------------


def test_rewrite_script_places_fix_external_before_the_barostat() -> None:
    """fix plumed becomes fix external + fix_modify, moved before an npt fix defined earlier."""
    script = (
        'units metal\nfix md all npt temp 300 300 0.1 x 1 1 1 y 1 1 1 couple none\n'
        'fix bias all plumed plumedfile p.dat outfile p.log # comment\nfix_modify bias energy yes\nrun 10\n'
    )
    lines, fix = rewrite_script(script)
    assert (fix.fix_id, fix.plumed_file, fix.log_file) == ('bias', 'p.dat', 'p.log')
    assert lines == [
        'units metal',
        'fix bias all external pf/callback 1 1',
        'fix_modify bias energy yes virial yes',
        'fix md all npt temp 300 300 0.1 x 1 1 1 y 1 1 1 couple none',
        'fix_modify bias energy yes',
        'run 10',
    ]
    nvt = rewrite_script('fix md all nvt temp 1 1 0.1\nfix r all plumed plumedfile a outfile b\n')[0]
    assert nvt[1:] == ['fix r all external pf/callback 1 1', 'fix_modify r energy yes virial yes']


@pytest.mark.parametrize(
    ('script', 'message'),
    [
        ('run 1\n', 'exactly one'),
        ('fix a all plumed plumedfile x\nfix b all plumed plumedfile y\n', 'exactly one'),
        ('fix a all plumed input x\n', 'bad fix plumed'),
        ('fix a all plumed plumedfile\n', 'bad fix plumed'),
    ],
)
def test_find_plumed_fix_refuses(script: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        find_plumed_fix(script)


# --------------------------------------------------------------------------------------------------
# Real runs
# --------------------------------------------------------------------------------------------------


def test_bias_forces_match_numpy_reference(system: AtomicModel, tmp_path: Path, monkeypatch) -> None:
    """(e) run 0: the bias forces (biased minus κ=0 dump) are -κ(s-s0)∇s of the NumPy reference, by id."""
    dump = (
        'dump forces all custom 1 forces.dump id fx fy fz',
        'dump_modify forces sort id format float %.17g',
    )
    parameters = {'ensemble': 'nvt', 'n_steps': 1}
    seen: list[bool] = []

    def record_order(callback) -> None:  # the atoms reach the callback in LAMMPS' (sorted) order
        apply = callback.apply
        callback.apply = lambda step, nlocal, tag, x, f: (
            seen.append(bool(np.any(np.diff(tag) < 0))),
            apply(step, nlocal, tag, x, f),
        )

    forces = {}
    for kappa in (KAPPA, 0.0):
        case = make_case(
            tmp_path / f'k{kappa:g}',
            system,
            parameters=parameters,
            offset=0.02,
            kappa=kappa,
            extra=(*dump, 'run 0', 'undump forces'),
        )
        run_case(case, 'fast', monkeypatch, on_callback=record_order)
        ids, values = read_dump(case.folder / 'forces.dump')
        np.testing.assert_array_equal(ids, np.arange(1, len(system.atoms) + 1))
        forces[kappa] = values
    reference = evaluate_cv(case.cv, system.atoms.positions, system.atoms.cell[:])
    s0 = reference.value + 0.02
    expected = -KAPPA * (reference.value - s0) * reference.gradient
    np.testing.assert_allclose(forces[KAPPA] - forces[0.0], expected, atol=1e-9 * np.abs(expected).max())
    assert np.abs(expected).max() > 0.1  # eV/Å: a real test
    assert any(seen), 'LAMMPS did not re-sort the atoms: the tag mapping was not exercised'


@needs_kernel
def test_routes_give_the_same_cv_and_bias(system: AtomicModel, tmp_path: Path, monkeypatch) -> None:
    """(a) 30 NPT steps, COLVAR every step: the fast, JAX and PLUMED routes agree on every column."""
    parameters = {'ensemble': 'npt', 'n_steps': 30}
    colvars = {}
    for route in ('fast', 'jax', 'plumed'):
        case = make_case(tmp_path / route, system, parameters=parameters, offset=0.01, pull=300.0)
        run_case(case, route, monkeypatch)
        colvars[route] = read_colvar(case.folder / 'COLVAR')
    plumed = colvars['plumed']
    for fast in (colvars['fast'], colvars['jax']):
        assert list(fast) == list(plumed)
        assert len(fast['cv']) == 31
        np.testing.assert_allclose(fast['time'], plumed['time'], atol=1e-12)
        for name in fast:
            if name.startswith('cn_') or name in ('cv', 'restraint.cv_cntr'):
                np.testing.assert_allclose(fast[name], plumed[name], rtol=1e-6, err_msg=name)
        np.testing.assert_allclose(fast['restraint.bias'], plumed['restraint.bias'], rtol=1e-5, atol=1e-8)
        np.testing.assert_allclose(fast['restraint.work'], plumed['restraint.work'], rtol=1e-5, atol=1e-8)
    assert np.ptp(fast['restraint.cv_cntr']) > 0.05 and np.abs(fast['restraint.work']).max() > 1e-3
    for route, colvar in colvars.items():  # the bias energy LAMMPS received (f_restraint, in pe) is PLUMED's
        energy = thermo(tmp_path / route / f'log.{route}')[f'f_{RESTRAINT_FIX_ID}']
        np.testing.assert_allclose(energy, colvar['restraint.bias'], rtol=1e-6, atol=1e-8, err_msg=route)


@pytest.mark.parametrize('route', ['fast', 'jax', pytest.param('plumed', marks=needs_kernel)])
def test_bias_virial_reaches_the_pressure(
    system: AtomicModel, tmp_path: Path, monkeypatch, route: str
) -> None:
    """(c) NPT run 0: thermo Pxx, Pyy, Pzz with the bias minus with κ=0 is W·nktv2p/V, W = -dbias/ds ∂s/∂ε."""
    pressures = {}
    parameters = {'ensemble': 'npt', 'n_steps': 1}
    for kappa in (KAPPA, 0.0):
        case = make_case(
            tmp_path / f'k{kappa:g}',
            system,
            parameters=parameters,
            offset=0.02,
            kappa=kappa,
            extra=('thermo_modify format float %.17g', 'run 0'),
        )
        run_case(case, route, monkeypatch)
        rows = thermo(case.folder / f'log.{route}')
        pressures[kappa] = np.array([rows[name][0] for name in ('pxx', 'pyy', 'pzz')])
        volume = rows['vol'][0]
    positions, cell = system.atoms.positions, system.atoms.cell[:]
    s = evaluate_cv(case.cv, positions, cell).value
    virial = -KAPPA * (s - (s + 0.02)) * strain_derivative(case.cv, positions, cell)  # W = -dbias/ds ds/dε
    expected = np.diag(virial) * NKTV2P / volume
    np.testing.assert_allclose(pressures[KAPPA] - pressures[0.0], expected, rtol=1e-5)
    assert np.abs(expected).max() > 100.0  # bar


def read_frames(path: Path) -> list[tuple[np.ndarray, np.ndarray]]:
    """``(positions sorted by id, orthorhombic cell)`` of every frame of a dump ``id x y z``."""
    frames, lines = [], path.read_text().splitlines()
    for start, line in enumerate(lines):
        if line.startswith('ITEM: NUMBER OF ATOMS'):
            n = int(lines[start + 1])
            bounds = np.array([[float(w) for w in lines[start + 3 + k].split()[:2]] for k in range(3)])
            table = np.array([[float(w) for w in row.split()] for row in lines[start + 7 : start + 7 + n]])
            positions = table[np.argsort(table[:, 0]), 1:]
            frames.append((positions, np.diag(bounds[:, 1] - bounds[:, 0])))
    return frames


@pytest.mark.parametrize('route', ['fast', pytest.param('plumed', marks=needs_kernel)])
def test_bias_virial_reaches_the_barostat_every_step(
    system: AtomicModel, tmp_path: Path, monkeypatch, route: str
) -> None:
    """(c) During an NPT run the pressure with fix contributions minus without them is the bias virial
    at every step (W = -dbias/ds ds/deps from the dumped frame, NumPy), and the box responds to it."""
    extra = (
        'compute pwith all pressure thermo_temp ke pair fix',
        'compute pnofix all pressure thermo_temp ke pair',
        'fix pressures all ave/time 1 1 1 c_pwith[1] c_pwith[2] c_pwith[3] c_pnofix[1] c_pnofix[2] '
        'c_pnofix[3] file pressures.txt format " %.15g"',
        'dump frames all custom 1 frames.dump id x y z',
        'dump_modify frames format float %.17g',
    )
    case = make_case(tmp_path, system, parameters={'ensemble': 'npt', 'n_steps': 6}, offset=0.02, extra=extra)
    run_case(case, route, monkeypatch)
    table = np.loadtxt(tmp_path / 'pressures.txt')
    colvar = read_colvar(tmp_path / 'COLVAR')
    frames = read_frames(tmp_path / 'frames.dump')
    assert len(frames) == len(table) == len(colvar['cv']) == 7
    for (positions, cell), row, s, s0 in zip(
        frames, table, colvar['cv'], colvar['restraint.cv_cntr'], strict=True
    ):
        virial = -KAPPA * (s - s0) * strain_derivative(case.cv, positions, cell)
        expected = np.diag(virial) * NKTV2P / np.linalg.det(cell)
        np.testing.assert_allclose(row[1:4] - row[4:7], expected, rtol=1e-5, err_msg=f'step {row[0]:g}')
    assert np.abs(expected).max() > 100.0  # bar
    assert frames[-1][1][0, 0] != frames[0][1][0, 0]  # the barostat moves the box


@needs_kernel
def test_plumed_neighbour_list_is_exact_along_a_trajectory(
    system: AtomicModel, tmp_path: Path, monkeypatch
) -> None:
    """PLUMED's neighbour list at the defaults (d_max + 2 Å, updated every 20 steps) on every frame of 80 NPT
    steps of real MD (frames 19, 39, ... just before an update included): the CV, each CN and the bias
    forces are the NumPy reference's to 1e-10 (COLVAR's 12 digits; seen: 2e-12). A list with a 0.01 Å skin
    updated once is not (seen: 8e-5), so the frames do probe the list's staleness."""
    dump = ('dump frames all custom 1 frames.dump id x y z', 'dump_modify frames format float %.17g')
    n_steps = 4 * PLUMED_NL_STRIDE
    case = make_case(
        tmp_path, system, parameters={'ensemble': 'npt', 'n_steps': n_steps}, offset=0.02, extra=dump
    )
    run_case(case, 'fast', monkeypatch)
    frames = read_frames(tmp_path / 'frames.dump')
    assert len(frames) == n_steps + 1
    positions, cells = zip(*frames, strict=True)
    refs = [evaluate_cv(case.cv, x, h) for x, h in frames]
    errors = {}
    for name, (nl_stride, nl_cutoff) in {
        'default': (PLUMED_NL_STRIDE, None),
        'thin': (n_steps, 10.01),
    }.items():
        text = write_plumed_input(case.cv, case.restraint, stride=1, nl_stride=nl_stride, nl_cutoff=nl_cutoff)
        assert 'NLIST' in text
        _, forces, _ = run_plumed(
            text, positions, cells, workdir=tmp_path / name, kernel=find_plumed_kernel()
        )
        colvar = read_colvar(tmp_path / name / 'COLVAR')
        errors[name] = max(
            abs(colvar[column][step] / reference - 1.0)
            for step, ref in enumerate(refs)
            for column, reference in [('cv', ref.value)]
            + [(f'cn_{k.replace("-", "_")}', v) for k, v in ref.components.items()]
        )
        if name == 'default':
            for step, ref in enumerate(refs):
                dbias = restraint_bias(case.restraint, ref.value, step)[1]
                expected = -dbias * ref.gradient
                np.testing.assert_allclose(forces[step], expected, rtol=0, atol=1e-9 * np.abs(expected).max())
    assert errors['default'] < 1e-10, errors
    assert errors['thin'] > 1e-7, errors


@pytest.mark.parametrize('route', ['fast', pytest.param('plumed', marks=needs_kernel)])
def test_restart_continues_the_cv_series(
    system: AtomicModel, tmp_path: Path, monkeypatch, route: str
) -> None:
    """(d) 40 NVT steps in one go = 20 steps, write_restart, read_restart, 20 more (same CV and s0)."""
    pull = {'offset': 0.01, 'pull': 200.0}
    whole = make_case(tmp_path / 'whole', system, parameters={'ensemble': 'nvt', 'n_steps': 40}, **pull)
    run_case(whole, route, monkeypatch)
    one_go = read_colvar(whole.folder / 'COLVAR')

    first = make_case(tmp_path / 'parts', system, parameters={'ensemble': 'nvt', 'n_steps': 20}, **pull)
    run_case(first, route, monkeypatch)
    second = make_case(
        tmp_path / 'parts',
        system,
        parameters={'ensemble': 'nvt', 'n_steps': 40},
        restart_file='restart.*',
        **pull,
    )
    summary = run_case(second, route, monkeypatch, log='log.second')
    assert summary.steps == 20
    before, after = read_colvar(second.folder / 'bck.0.COLVAR'), read_colvar(second.folder / 'COLVAR')
    assert before['time'][-1] == pytest.approx(0.020) and after['time'][0] == pytest.approx(0.020)
    for name in ('cv', 'restraint.cv_cntr', 'restraint.bias'):
        joined = np.concatenate([before[name], after[name][1:]])
        np.testing.assert_allclose(joined, one_go[name], rtol=1e-6, atol=1e-9, err_msg=name)
    # the thermostat state came from the restart: temperatures continue too
    first_temp, second_temp = (thermo(first.folder / name)['temp'] for name in (f'log.{route}', 'log.second'))
    temperature = np.concatenate([first_temp[:-1], second_temp])
    np.testing.assert_allclose(temperature, thermo(whole.folder / f'log.{route}')['temp'], rtol=1e-6)


def test_default_normalisation_is_stable_raw_sum_is_not(
    system: AtomicModel, tmp_path: Path, monkeypatch
) -> None:
    """(b) κ = 500 eV: 2500 NPT steps with the CV per electrolyte Li are stable while s0 is pulled by
    +0.5; the raw pair sum with the same κ loses atoms within 200 steps (T ~10⁶ K by step 3).

    "Stable" against this tiny model's own behaviour: without any bias (κ = 0) it heats in bursts up to
    ~3100 K (thermo every 50 steps, second-half mean ~370 K) and swells the box from 10.25 to ~15 Å
    (measured once); the bounds below leave room for that and fail at the raw sum's 10⁵-10⁶ K.
    """
    parameters = {'ensemble': 'npt', 'n_steps': 2500, 'thermo_stride': 50}
    case = make_case(tmp_path / 'normalised', system, parameters=parameters, pull=20.0, stride=50)
    summary = run_case(case, 'fast', monkeypatch)
    assert summary.steps == 2500
    rows, colvar = thermo(case.folder / 'log.fast'), read_colvar(case.folder / 'COLVAR')
    assert all(np.isfinite(column).all() for column in rows.values())
    assert rows['temp'].max() < 10_000.0 and rows['temp'][len(rows['temp']) // 2 :].mean() < 1500.0
    assert colvar['restraint.cv_cntr'][-1] - colvar['restraint.cv_cntr'][0] == pytest.approx(0.5)
    assert np.abs(colvar['cv'] - colvar['restraint.cv_cntr']).max() < 0.25  # the CV follows s0 (κ holds it)
    assert colvar['cv'][-1] - colvar['cv'][0] > 0.3

    raw = make_case(
        tmp_path / 'raw', system, parameters={**parameters, 'n_steps': 200}, normalisation='none', stride=50
    )
    assert raw.cv.normalisation == 1.0
    with pytest.raises(RestraintRunError, match=r'Lost atoms|not finite'):  # from LAMMPS or from the callback
        run_case(raw, 'fast', monkeypatch)


def test_callback_error_stops_the_run(system: AtomicModel, tmp_path: Path, monkeypatch) -> None:
    """An exception in the callback stops LAMMPS at the next step and skips the rest of the script."""

    def break_cv(callback) -> None:
        def fail(*_args):
            raise FloatingPointError('broken CV')

        callback.fast = fail

    case = make_case(tmp_path, system, parameters={'ensemble': 'nvt', 'n_steps': 50})
    with pytest.raises(
        RestraintRunError, match=r'fast route\) failed at step [01]: FloatingPointError: broken CV'
    ):
        run_case(case, 'fast', monkeypatch, on_callback=break_cv)
    assert not list(tmp_path.glob('restart.*'))


def test_console_script(system: AtomicModel, tmp_path: Path) -> None:
    """``lisei-lmp-plumed`` runs the script (numba kernel on 2 threads); a missing PLUMED kernel or a bad
    thread count give a clear error and status 1."""
    case = make_case(tmp_path, system, parameters={'ensemble': 'npt', 'n_steps': 10}, stride=5)
    (tmp_path / 'input.lammps').write_text(case.script)
    executable = Path(sys.executable).parent / 'lisei-lmp-plumed'
    command = (
        [str(executable)]
        if executable.exists()
        else [sys.executable, '-m', 'aiida_lisei.engines.lammps_plumed']
    )
    env = {**os.environ, 'OMP_NUM_THREADS': '1'}
    done = subprocess.run(
        [
            *command,
            '-in',
            'input.lammps',
            '-log',
            'log.lammps',
            '-nocite',
            '-screen',
            'none',
            '--cv-threads',
            '2',
        ],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert 'route fast, 11 restraint calls' in done.stdout
    assert len(read_colvar(tmp_path / 'COLVAR')['cv']) == 3
    assert (tmp_path / 'restart.10').exists()

    env['PLUMED_KERNEL'] = str(tmp_path / 'missing' / 'libplumedKernel.so')
    failed = subprocess.run(
        [*command, '-in', 'input.lammps', '--route', 'plumed'],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert failed.returncode == 1
    assert 'make plumed-kernel' in failed.stderr and 'PLUMED_KERNEL' in failed.stderr

    failed = subprocess.run(
        [*command, '-in', 'input.lammps', '-screen', 'none', '--cv-threads', '0'],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert failed.returncode == 1
    assert 'threads must be a positive integer' in failed.stderr
