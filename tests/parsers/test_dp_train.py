"""Tests of ``DpTrainParser`` (``lisei.dp_train``) on real DeePMD-kit 3.2 outputs (fixtures/parsers)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from aiida import orm
from aiida.plugins import CalculationFactory, ParserFactory

from aiida_lisei.data.training_set import TrainingSetData
from aiida_lisei.parsers.dp_train import first_nonfinite_step, parse_lcurve, parse_train_log
from aiida_lisei.workchains.dp_train import DpTrainWorkChain

DpTrainCalculation = CalculationFactory('lisei.dp_train')
DpTrainParser = ParserFactory('lisei.dp_train')
FIXTURES = Path(__file__).parents[1] / 'fixtures' / 'parsers' / 'dp_train'
TRAINING_SET = Path(__file__).parents[1] / 'fixtures' / 'dp_training_set'


@pytest.fixture
def training_set() -> TrainingSetData:
    """The tiny tblite training set the fixtures were trained on (stored)."""
    return TrainingSetData.from_deepmd_npy(sorted(p for p in TRAINING_SET.iterdir() if p.is_dir())).store()


@pytest.fixture
def generate_node(generate_calc_job_node, training_set):
    """Return a stored ``lisei.dp_train`` node whose ``retrieved`` holds the files of a fixture case."""

    def factory(case: str, exit_status: int | None = None, exclude: tuple[str, ...] = ()) -> orm.CalcJobNode:
        parameters = DpTrainWorkChain.get_protocol_inputs('demo')['dp_train']['parameters']
        parameters['training'].update(numb_steps=60, disp_freq=10, save_freq=30)
        inputs = {'training_set': training_set, 'parameters': orm.Dict(parameters), 'seed': orm.Int(1)}
        return generate_calc_job_node(
            'lisei.dp_train',
            inputs,
            FIXTURES / case if case else {},
            exit_status=exit_status,
            exclude=exclude,
            computer=False,
        )

    return factory


def test_parse_lcurve_columns():
    """Header names become arrays; ``step`` is an int array."""
    lcurve = parse_lcurve((FIXTURES / 'default' / 'lcurve.out').read_text())
    assert list(lcurve) == ['step', 'rmse_trn', 'rmse_e_trn', 'rmse_f_trn', 'lr']
    assert lcurve['step'].tolist() == list(range(0, 61, 10))
    assert lcurve['lr'][0] == pytest.approx(1e-3)
    assert first_nonfinite_step(lcurve) is None


def test_parse_lcurve_restart_keeps_last_row_of_a_repeated_step():
    """A restarted run appends a second header and prints its first step again: the last row wins."""
    lcurve = parse_lcurve((FIXTURES / 'restart' / 'lcurve.out').read_text())
    assert lcurve['step'].tolist() == list(range(0, 121, 10))
    assert lcurve['rmse_trn'][6] == pytest.approx(2.48)  # step 60 of the restarted run, not 3.11


@pytest.mark.parametrize('text', ['', '# step rmse lr\n', '1 2 3\n', '# step rmse lr\n0 1.0\n'])
def test_parse_lcurve_errors(text):
    """No header, no rows, or ragged rows are errors."""
    with pytest.raises(ValueError):
        parse_lcurve(text)


def test_parse_train_log():
    """Version, timings and completion are read; the NaN stop of DeePMD 3 is recognised."""
    log = parse_train_log((FIXTURES / 'default' / 'train.log').read_text())
    assert log['finished'] and log['deepmd_version'] == '3.2.0' and log['nan_step'] is None
    assert log['wall_time'] > 0 and log['time_per_batch'] > 0
    assert parse_train_log((FIXTURES / 'nan_loss' / 'train.log').read_text())['nan_step'] == 0
    assert not parse_train_log((FIXTURES / 'killed' / 'train.log').read_text())['finished']


def test_default(generate_node, training_set):
    """A finished run gives the model with its metadata, the learning curve and the summary."""
    results, calcfunction = DpTrainParser.parse_from_node(generate_node('default'), store_provenance=False)
    assert calcfunction.exit_status == 0, calcfunction.exit_message
    model = results['model']
    assert model.get_model_bytes() == (FIXTURES / 'default' / 'frozen_model.pb').read_bytes()
    assert model.base.attributes.all == {
        'type_map': ['Li', 'P', 'S', 'Cl'],
        'descriptor_type': 'se_e2_a',
        'rcut': 5.0,
        'rcut_smth': 0.5,
        'sel': [36, 12, 16, 22],
        'neurons': {'embedding': [4, 8], 'fitting': [16, 16]},
        'seed': 1,
        'training_steps': 60,
        'deepmd_version': '3.2.0',
        'deepmd_backend': 'tensorflow',
        'compressed': False,
        'level_of_theory_key': training_set.level_of_theory_key,
    }
    curve = results['learning_curve']
    assert curve.get_array('step')[-1] == 60
    summary = results['output_parameters'].get_dict()
    assert summary['steps_done'] == 60
    assert summary['final_rmse_f_trn'] == curve.get_array('rmse_f_trn')[-1]
    assert summary['deepmd_version'] == '3.2.0'


def test_killed_run_is_incomplete(generate_node):
    """A run killed mid-training (no scheduler diagnosis) keeps its learning curve and fails with 311."""
    results, calcfunction = DpTrainParser.parse_from_node(generate_node('killed'), store_provenance=False)
    assert calcfunction.exit_status == DpTrainCalculation.exit_codes.ERROR_TRAINING_INCOMPLETE.status
    assert results['learning_curve'].get_array('step')[-1] == 100
    assert 'model' not in results


def test_walltime(generate_node):
    """The same run after the scheduler reported out-of-walltime (120) fails with 400 (restartable)."""
    node = generate_node(
        'killed', exit_status=DpTrainCalculation.exit_codes.ERROR_SCHEDULER_OUT_OF_WALLTIME.status
    )
    results, calcfunction = DpTrainParser.parse_from_node(node, store_provenance=False)
    assert calcfunction.exit_status == DpTrainCalculation.exit_codes.ERROR_OUT_OF_WALLTIME.status
    assert 'step 100' in calcfunction.exit_message
    assert 'learning_curve' in results


def test_nan_loss(generate_node):
    """DeePMD's "NaN detected" stop gives 410."""
    _, calcfunction = DpTrainParser.parse_from_node(generate_node('nan_loss'), store_provenance=False)
    assert calcfunction.exit_status == DpTrainCalculation.exit_codes.ERROR_NAN_LOSS.status


def test_nan_in_lcurve():
    """A non-finite total loss in lcurve.out is found too (older DeePMD versions do not stop)."""
    lcurve = {'step': np.array([0, 10, 20]), 'rmse_trn': np.array([1.0, np.nan, 2.0]), 'lr': np.ones(3)}
    assert first_nonfinite_step(lcurve) == 10


@pytest.mark.parametrize(
    ('case', 'exclude', 'exit_code'),
    [
        ('', (), 'ERROR_LCURVE_MISSING'),
        ('default', ('frozen_model.pb',), 'ERROR_MODEL_MISSING'),
    ],
)
def test_missing_outputs(generate_node, case, exclude, exit_code):
    """Missing lcurve.out or frozen model give 301 / 302."""
    _, calcfunction = DpTrainParser.parse_from_node(
        generate_node(case, exclude=exclude), store_provenance=False
    )
    assert calcfunction.exit_status == DpTrainCalculation.exit_codes[exit_code].status
