"""Tests of ``ExplorationParser`` (``lisei.exploration``) on real LAMMPS outputs (fixtures/parsers)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from aiida import orm
from aiida.plugins import CalculationFactory, ParserFactory

from aiida_lisei.formats.lammps import box_to_cell, parse_dump, parse_log, parse_model_devi

ExplorationParser = ParserFactory('lisei.exploration')
ExplorationCalculation = CalculationFactory('lisei.exploration')

FIXTURES = Path(__file__).parents[1] / 'fixtures' / 'parsers' / 'exploration'
MODELS = sorted((Path(__file__).parents[1] / 'fixtures' / 'models').glob('model_*.pb'))
OUTPUTS = ('log.lammps', 'model_devi.out', 'traj.dump', 'aiida.out')


@pytest.fixture(scope='module')
def model_nodes(aiida_profile) -> dict[str, orm.SinglefileData]:
    """The four test models, stored once for the module."""
    return {f'models__m{i}': orm.SinglefileData(path).store() for i, path in enumerate(MODELS, start=1)}


@pytest.fixture
def calc_job_node(generate_calc_job_node, model_nodes):
    """Return a factory: a stored ``lisei.exploration`` node with the inputs and retrieved files of a case."""

    def factory(
        case: str, leave_out: tuple[str, ...] = (), exit_status: int | None = None
    ) -> orm.CalcJobNode:
        record = json.loads((FIXTURES / case / 'case.json').read_text())
        inputs = {
            'parameters': orm.Dict(record['parameters']),
            'seed': orm.Int(record['seed']),
            'models': {label.split('__', 1)[1]: node for label, node in model_nodes.items()},
        }
        options = {
            'resources': {'num_machines': 1, 'num_mpiprocs_per_machine': record.get('ranks', 1)},
            'parser_name': 'lisei.exploration',
        }
        folder = FIXTURES / case
        exclude = tuple(
            path.name for path in folder.iterdir() if path.name not in OUTPUTS or path.name in leave_out
        )
        return generate_calc_job_node(
            'lisei.exploration', inputs, folder, options=options, exit_status=exit_status, exclude=exclude
        )

    return factory


@pytest.mark.parametrize('case', ['nvt_300k', 'nvt_800k'])
def test_complete_run(calc_job_node, case):
    """A complete run: rows and frames at the same steps, symbols from the type map, thermo averages."""
    record = json.loads((FIXTURES / case / 'case.json').read_text())
    results, calcfunction = ExplorationParser.parse_from_node(calc_job_node(case))
    assert calcfunction.is_finished_ok, calcfunction.exit_message

    n_steps, stride = record['parameters']['n_steps'], record['parameters']['stride']
    expected_steps = list(range(0, n_steps + 1, stride))
    devi, trajectory = results['model_devi'], results['trajectory']
    assert devi.get_array('step').tolist() == expected_steps
    assert set(devi.get_arraynames()) == {
        'step', 'max_devi_v', 'min_devi_v', 'avg_devi_v', 'max_devi_f', 'min_devi_f', 'avg_devi_f'
    }  # fmt: skip
    assert trajectory.get_stepids().tolist() == expected_steps
    assert np.allclose(trajectory.get_times(), np.array(expected_steps) * 1e-3)
    assert trajectory.symbols == ['Li'] * 16
    parameters = results['output_parameters'].get_dict()
    assert parameters['n_frames'] == parameters['n_model_devi_rows'] == len(expected_steps)
    assert parameters['n_steps_done'] == n_steps
    assert parameters['lammps_version'] == '22 Jul 2025 - Update 2'
    assert parameters['temperature_mean'] > 0  # the tiny models heat up at 800 K (~1800 K on average)
    assert parameters['walltime'] >= 0 and parameters['errors'] == []


def test_lost_atoms(calc_job_node):
    """A real 'Lost atoms' run (2 MPI ranks, 10^6 K, 20 fs): 410, with what was written attached."""
    results, calcfunction = ExplorationParser.parse_from_node(calc_job_node('lost_atoms'))
    assert calcfunction.exit_status == ExplorationCalculation.exit_codes.ERROR_LOST_ATOMS.status == 410
    assert 'Lost atoms: original 16 current 10' in calcfunction.exit_message
    assert results['trajectory'].get_stepids().tolist() == [0]
    assert results['output_parameters']['errors'] == ['ERROR: Lost atoms: original 16 current 10']


def test_nan_energy(calc_job_node):
    """Two atoms on one site: DeePMD's energy is NaN from step 0 and LAMMPS still ends normally: 411."""
    _, calcfunction = ExplorationParser.parse_from_node(calc_job_node('nan_energy'))
    assert calcfunction.exit_status == ExplorationCalculation.exit_codes.ERROR_NAN_ENERGY.status == 411
    assert 'step 0' in calcfunction.exit_message


def test_timeout(calc_job_node):
    """``timer timeout`` stopped the run: 400 with the frames so far."""
    results, calcfunction = ExplorationParser.parse_from_node(calc_job_node('timeout'))
    assert calcfunction.exit_status == ExplorationCalculation.exit_codes.ERROR_OUT_OF_WALLTIME.status == 400
    assert results['model_devi'].get_array('step').tolist() == results['trajectory'].get_stepids().tolist()


def test_scheduler_walltime_without_log(calc_job_node):
    """Killed by the scheduler before LAMMPS wrote a log: the scheduler's 120 is kept."""
    node = calc_job_node('nvt_300k', leave_out=OUTPUTS, exit_status=120)
    _, calcfunction = ExplorationParser.parse_from_node(node)
    assert calcfunction.exit_status == 120


@pytest.mark.parametrize('missing', ['log.lammps', 'model_devi.out', 'traj.dump'])
def test_missing_files(calc_job_node, missing):
    """A missing output file: 302 naming it."""
    _, calcfunction = ExplorationParser.parse_from_node(calc_job_node('nvt_300k', leave_out=(missing,)))
    assert calcfunction.exit_status == ExplorationCalculation.exit_codes.ERROR_OUTPUT_MISSING.status == 302
    assert missing in calcfunction.exit_message


def test_cache_invalidation():
    """Codes below 400 invalidate the cache; physics failures (410+) do not."""
    for code in ExplorationCalculation.exit_codes.values():
        if code.status >= 300:
            assert code.invalidates_cache == (code.status <= 400), code.message


def test_raw_parsers_on_partial_files():
    """A truncated dump keeps whole frames; a header-only model_devi is empty; the log of a killed run."""
    dump = (FIXTURES / 'nvt_300k' / 'traj.dump').read_text()
    frames = parse_dump(dump[: len(dump) - 40])
    assert frames.steps.tolist() == [0, 10, 20, 30, 40]
    header = (FIXTURES / 'nvt_300k' / 'model_devi.out').read_text().splitlines()[0]
    assert parse_model_devi(header + '\n')['step'].size == 0
    log_text = (FIXTURES / 'nvt_300k' / 'log.lammps').read_text()
    log = parse_log(log_text[: log_text.index('Loop time')])
    assert not log.completed and log.thermo['Step'].tolist() == [0, 10, 20, 30, 40, 50]


def test_triclinic_box():
    """Dump bounds of a tilted box give back the cell (LAMMPS docs, 'Triclinic simulation boxes')."""
    cell = np.array([[5.0, 0.0, 0.0], [1.0, 4.0, 0.0], [-0.5, 0.7, 6.0]])
    xy, xz, yz = cell[1, 0], cell[2, 0], cell[2, 1]
    bounds = np.array(
        [
            [min(0.0, xy, xz, xy + xz), 5.0 + max(0.0, xy, xz, xy + xz), xy],
            [min(0.0, yz), 4.0 + max(0.0, yz), xz],
            [0.0, 6.0, yz],
        ]
    )
    result, origin = box_to_cell(bounds)
    assert np.allclose(result, cell) and np.allclose(origin, 0.0)
