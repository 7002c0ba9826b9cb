"""Tests of the ``lisei-qeq`` engine: settings, frames files, the JSON Lines records and the statistics."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from ase import Atoms

from aiida_lisei.engines.qeq_charges import (
    DEFAULT_SETTINGS,
    check_frame,
    check_settings,
    main,
    species_parameters,
)
from aiida_lisei.formats.frames_npz import TrajectoryFrames, read_trajectory, write_trajectory
from aiida_lisei.science.nucleation import group_statistics
from aiida_lisei.science.qeq import PAPER_QEQ_PARAMETERS, RAPPE_GODDARD_QEQ_PARAMETERS, QEqSolver
from aiida_lisei.structures.builders import argyrodite

#: Bulk Li6PS5Cl is 3D-periodic: no slab correction.
BULK = {'slab': False}


@pytest.fixture(scope='module')
def electrolyte() -> Atoms:
    """Ordered Li6PS5Cl, 52 atoms."""
    return argyrodite().atoms


def noisy_frames(atoms: Atoms, n_frames: int, amplitude: float = 0.05, seed: int = 0) -> TrajectoryFrames:
    """``n_frames`` copies of ``atoms`` with seeded Gaussian displacements (Å), 10 ps apart."""
    rng = np.random.default_rng(seed)
    positions = atoms.positions + rng.normal(0.0, amplitude, (n_frames, len(atoms), 3))
    cells = np.repeat(atoms.cell[:][None], n_frames, axis=0)
    return TrajectoryFrames(
        positions,
        cells,
        atoms.get_chemical_symbols(),
        frame_indices=np.arange(n_frames) * 3,
        stepids=np.arange(n_frames) * 3000,
        times=np.arange(n_frames) * 10.0,
    )


def test_default_settings() -> None:
    """Empty settings are the paper's QEq; the Gaussian self-energy is on unless switched off."""
    settings = check_settings({})
    assert settings == {**DEFAULT_SETTINGS, 'gaussian_self_energy': True}
    assert check_settings({'parameter_set': 'rappe_goddard'})['gaussian_self_energy'] is True
    assert (
        check_settings({'parameter_set': 'rappe_goddard', 'gaussian_self_energy': False})[
            'gaussian_self_energy'
        ]
        is False
    )
    assert check_settings({'total_charge': 1})['total_charge'] == 1.0


@pytest.mark.parametrize(
    ('settings', 'message'),
    [
        ({'charges': 1}, 'unknown QEq settings'),
        ({'parameter_set': 'eem'}, 'is not one of'),
        ({'tolerance': 0.0}, 'tolerance must be positive'),
        ({'max_iterations': 0}, 'max_iterations must be an integer >= 1'),
        ({'slab': 'yes'}, 'slab must be true or false'),
        ({'method': 'ewald'}, "method must be 'p3m' or 'pme'"),
        ({'species': {'Li': {'hardness': -1.0}}}, 'species.Li.hardness must be positive'),
        ({'species': {'Li': {'radius': 1.0}}}, 'unknown keys'),
        (
            {'parameter_set': None, 'species': {'Li': {'hardness': 5.0}}},
            'needs electronegativity and hardness',
        ),
        ({'total_charge': float('nan')}, 'total_charge must be a finite number'),
    ],
)
def test_invalid_settings(settings: dict, message: str) -> None:
    """Invalid settings raise a ``ValueError`` naming the setting."""
    with pytest.raises(ValueError, match=message):
        check_settings(settings)


def test_species_parameters() -> None:
    """Named sets, per-species overrides, explicit sets, and a clear error for a missing species."""
    paper = species_parameters(check_settings({}), ['Li', 'S', 'Li'])
    assert paper == {'Li': PAPER_QEQ_PARAMETERS['Li'], 'S': PAPER_QEQ_PARAMETERS['S']}
    rg = species_parameters(check_settings({'parameter_set': 'rappe_goddard'}), ['Cl'])
    assert rg['Cl'] == RAPPE_GODDARD_QEQ_PARAMETERS['Cl']
    override = species_parameters(check_settings({'species': {'Li': {'hardness': 12.0}}}), ['Li'])['Li']
    assert override.hardness == 12.0
    assert override.electronegativity == PAPER_QEQ_PARAMETERS['Li'].electronegativity
    explicit = check_settings(
        {'parameter_set': None, 'species': {'Na': {'electronegativity': 2.8, 'hardness': 5.9}}}
    )
    assert species_parameters(explicit, ['Na'])['Na'].sigma == pytest.approx(1.66)  # covalent radius of Na
    with pytest.raises(ValueError, match=r"no QEq parameters for species \['Na'\]"):
        species_parameters(check_settings({}), ['Li', 'Na'])


def test_frames_round_trip(electrolyte, tmp_path: Path) -> None:
    """The .npz keeps positions, cells and times exactly, and the frame bookkeeping."""
    frames = noisy_frames(electrolyte, 3)
    write_trajectory(tmp_path / 'frames.npz', frames)
    read = read_trajectory(tmp_path / 'frames.npz')
    assert np.array_equal(read.positions, frames.positions)
    assert np.array_equal(read.cells, frames.cells)
    assert read.symbols == frames.symbols
    assert read.frame_indices.tolist() == [0, 3, 6] and read.stepids.tolist() == [0, 3000, 6000]
    assert read.times.tolist() == [0.0, 10.0, 20.0]
    with pytest.raises(ValueError, match='cells must be'):
        TrajectoryFrames(frames.positions, frames.cells[:2], frames.symbols)


def test_check_frame(electrolyte) -> None:
    """Non-finite numbers and flat cells are refused before the solver sees them."""
    positions, cell = electrolyte.positions, electrolyte.cell[:]
    assert check_frame(positions, cell) is None
    bad = positions.copy()
    bad[3, 0] = np.nan
    assert check_frame(bad, cell) == 'non-finite positions'
    assert 'cell too thin' in check_frame(positions, np.diag([10.0, 10.0, 0.5]))


def run_main(tmp_path: Path, frames: TrajectoryFrames, settings: dict) -> list[dict]:
    """Run ``lisei-qeq`` in this process and return its records."""
    write_trajectory(tmp_path / 'frames.npz', frames)
    (tmp_path / 'settings.json').write_text(json.dumps(settings))
    output = tmp_path / 'charges.jsonl'
    argv = ['--frames', str(tmp_path / 'frames.npz'), '--settings', str(tmp_path / 'settings.json')]
    assert main([*argv, '--output', str(output)]) == 0
    return [json.loads(line) for line in output.read_text().splitlines()]


def test_main_charges(electrolyte, tmp_path: Path, capsys) -> None:
    """Charges of 3 frames: neutral, as a direct solve, warm-started; a bad frame fails alone."""
    frames = noisy_frames(electrolyte, 4)
    frames.positions[2, 0, 0] = np.nan
    records = run_main(tmp_path, frames, BULK)

    header, *body, footer = records
    assert header['type'] == 'header' and header['program'] == 'lisei-qeq'
    assert header['natoms'] == 52 and header['nframes'] == 4
    assert header['settings'] == check_settings(BULK)
    assert [record['type'] for record in body] == ['frame', 'frame', 'failure', 'frame']
    assert body[2] == {**body[2], 'index': 2, 'frame_index': 6, 'reason': 'non-finite positions'}
    assert footer == {**footer, 'type': 'footer', 'solved': 3, 'failed': 1, 'not_converged': 0}

    solver = QEqSolver(electrolyte.get_chemical_symbols(), slab=False)
    for record in (body[0], body[1], body[3]):
        index = record['index']
        charges = np.array(record['charges'])
        assert record['converged'] and record['residual'] <= 1e-4
        assert record['time'] == 10.0 * index and record['stepid'] == 3000 * index
        assert charges.sum() == pytest.approx(0.0, abs=1e-10)
        direct = solver.solve(frames.positions[index], frames.cells[index], q0=np.zeros(52)).charges
        np.testing.assert_allclose(charges, direct, atol=1e-4)  # tolerance 1e-4 eV/e -> < 2e-5 e
    symbols = np.array(electrolyte.get_chemical_symbols())
    first = np.array(body[0]['charges'])
    assert first[symbols == 'Li'].mean() > 0.3 and first[symbols == 'S'].mean() < -0.3
    assert body[1]['iterations'] < body[0]['iterations']  # warm start from the previous frame
    assert 'FAILED: non-finite positions' in capsys.readouterr().out


def test_main_charged_cell_and_no_convergence(electrolyte, tmp_path: Path) -> None:
    """A total charge of +1 e is honoured; one iteration at a tiny tolerance is reported unconverged."""
    frames = noisy_frames(electrolyte, 1)
    records = run_main(
        tmp_path, frames, {**BULK, 'total_charge': 1.0, 'tolerance': 1e-12, 'max_iterations': 1}
    )
    frame = records[1]
    assert frame['converged'] is False and frame['iterations'] == 1
    assert sum(frame['charges']) == pytest.approx(1.0, abs=1e-10)
    assert records[-1]['not_converged'] == 1


def test_main_refuses_missing_species(electrolyte, tmp_path: Path) -> None:
    """A species outside the parameter set stops the run before any frame (argparse error, exit 2)."""
    frames = noisy_frames(electrolyte, 1)
    with pytest.raises(SystemExit) as error:
        run_main(
            tmp_path,
            frames,
            {'parameter_set': None, 'species': {'Li': {'electronegativity': 1, 'hardness': 5}}},
        )
    assert error.value.code == 2


def test_group_statistics() -> None:
    """Mean and standard deviation per group and frame; NaN frames give None."""
    charges = np.array([[0.0, 0.2, 1.0, -1.0], [np.nan] * 4])
    stats = group_statistics(charges, ['anode_Li', 'anode_Li', 'electrolyte_Li', 'electrolyte_S'])
    assert list(stats) == ['anode_Li', 'electrolyte_Li', 'electrolyte_S']
    assert stats['anode_Li']['count'] == 2
    assert stats['anode_Li']['mean'] == [pytest.approx(0.1), None]
    assert stats['anode_Li']['std'] == [pytest.approx(0.1), None]
    assert stats['electrolyte_S']['mean'][0] == -1.0
    with pytest.raises(ValueError, match='charges must be'):
        group_statistics(charges, ['Li'])
