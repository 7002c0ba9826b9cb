"""Tests of ``DpTrainWorkChain`` (``lisei.dp_train``): protocols, and each handler on a failed child."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from aiida import orm
from aiida.engine import ProcessHandlerReport
from aiida.engine.utils import instantiate_process
from aiida.manage import get_manager

from aiida_lisei.calculations.dp_train import DpTrainCalculation
from aiida_lisei.data.training_set import TrainingSetData
from aiida_lisei.workchains.dp_train import DpTrainWorkChain, decay_steps

TRAINING_SET = Path(__file__).parents[1] / 'fixtures' / 'dp_training_set'


@pytest.fixture
def training_set() -> TrainingSetData:
    """8 bcc Li16 + 6 Li2S frames labelled with tblite (stored)."""
    return TrainingSetData.from_deepmd_npy(sorted(p for p in TRAINING_SET.iterdir() if p.is_dir())).store()


@pytest.fixture
def dp_code(aiida_code_installed) -> orm.InstalledCode:
    """A stand-in code (handlers never run it)."""
    return aiida_code_installed(label='dp', filepath_executable='/bin/true')


@pytest.fixture
def generate_workchain(dp_code, training_set):
    """Return a ``DpTrainWorkChain`` instance from the demo protocol, after its ``setup`` step."""

    def factory(**overrides) -> DpTrainWorkChain:
        builder = DpTrainWorkChain.get_builder_from_protocol(dp_code, training_set, overrides=overrides)
        process = instantiate_process(
            get_manager().get_runner(), DpTrainWorkChain, **builder._inputs(prune=True)
        )
        process.setup()
        return process

    return factory


@pytest.fixture
def failed_child(generate_calc_job_node, aiida_localhost):
    """Return a factory of finished `lisei.dp_train` nodes: exit code, remote folder, learning curve."""

    def factory(exit_code, last_step: int | None = None, walltime: int = 1800) -> orm.CalcJobNode:
        outputs = {'remote_folder': orm.RemoteData(computer=aiida_localhost, remote_path='/tmp/run')}
        if last_step is not None:
            curve = outputs['learning_curve'] = orm.ArrayData()
            curve.set_array('step', np.arange(0, last_step + 1, 10))
        return generate_calc_job_node(
            'lisei.dp_train',
            options={'max_wallclock_seconds': walltime},
            exit_status=exit_code.status,
            outputs=outputs,
            finished=True,
        )

    return factory


def test_protocols(dp_code, training_set):
    """``demo`` is tiny; ``paper`` has the study's network and learning rate, and our documented choices."""
    assert set(DpTrainWorkChain.get_available_protocols()) == {'demo', 'demo_chgnet', 'paper'}
    demo = DpTrainWorkChain.get_builder_from_protocol(dp_code, training_set, seed=3)
    parameters = demo.dp_train.parameters.get_dict()
    assert parameters['model']['descriptor']['neuron'] == [4, 8]
    assert parameters['model']['fitting_net']['neuron'] == [16, 16]
    assert parameters['model']['descriptor']['rcut'] == 5.0
    assert parameters['training']['numb_steps'] == 400 and parameters['learning_rate']['decay_steps'] == 20
    assert demo.dp_train.seed.value == 3

    paper = DpTrainWorkChain.get_builder_from_protocol(
        dp_code, training_set, protocol='paper', options={'max_wallclock_seconds': 7200}
    )
    parameters = paper.dp_train.parameters.get_dict()
    descriptor = parameters['model']['descriptor']
    assert descriptor['type'] == 'se_e2_a' and descriptor['neuron'] == [25, 50, 100]
    assert (
        descriptor['rcut'] == 6.0 and descriptor['rcut_smth'] == 0.5 and descriptor['sel'] == [60, 20, 26, 36]
    )
    assert parameters['model']['fitting_net']['neuron'] == [240, 240, 240]
    assert parameters['model']['type_map'] == ['Li', 'P', 'S', 'Cl']
    assert parameters['learning_rate'] == {
        'type': 'exp',
        'start_lr': 1e-3,
        'stop_lr': 5e-8,
        'decay_steps': 2000,
    }
    assert parameters['training']['numb_steps'] == 400000
    assert paper.dp_train.settings['compress'] is True
    assert paper.dp_train.metadata.options.max_wallclock_seconds == 7200


def test_decay_steps_follow_numb_steps(dp_code, training_set):
    """Overriding numb_steps rescales decay_steps unless decay_steps is given."""
    assert decay_steps(1000, 20) == 50 and decay_steps(5, 20) == 1
    builder = DpTrainWorkChain.get_builder_from_protocol(
        dp_code, training_set, overrides={'dp_train': {'parameters': {'training': {'numb_steps': 100}}}}
    )
    assert builder.dp_train.parameters['learning_rate']['decay_steps'] == 5


def test_handle_out_of_walltime_restarts_from_checkpoint(generate_workchain, failed_child):
    """A child out of walltime after its first checkpoint: the next run restarts from its remote folder."""
    process = generate_workchain()
    child = failed_child(DpTrainCalculation.exit_codes.ERROR_OUT_OF_WALLTIME, last_step=250)
    process.ctx.children = [child]
    process.ctx.iteration = 1
    result = process.inspect_process()
    assert result.status == 0  # handled: run again
    assert process.ctx.inputs.restart_folder.uuid == child.outputs.remote_folder.uuid
    assert process.ctx.inputs.metadata['options']['max_wallclock_seconds'] == 1800


def test_handle_out_of_walltime_before_first_checkpoint(generate_workchain, failed_child):
    """Stopped before the first checkpoint (save_freq 100 in demo): from scratch with twice the walltime."""
    process = generate_workchain()
    report = process.handle_out_of_walltime(
        failed_child(DpTrainCalculation.exit_codes.ERROR_OUT_OF_WALLTIME, last_step=40)
    )
    assert isinstance(report, ProcessHandlerReport) and report.do_break
    assert 'restart_folder' not in process.ctx.inputs
    assert process.ctx.inputs.metadata['options']['max_wallclock_seconds'] == 3600


def test_handle_nan_loss(generate_workchain, failed_child):
    """NaN: start_lr divided by 10 from scratch; after max_nan_restarts the work chain fails with 410."""
    process = generate_workchain()
    child = failed_child(DpTrainCalculation.exit_codes.ERROR_NAN_LOSS)
    for expected in (1e-4, 1e-5):
        report = process.handle_nan_loss(child)
        assert report.exit_code.status == 0
        assert process.ctx.inputs.parameters['learning_rate']['start_lr'] == pytest.approx(expected)
    report = process.handle_nan_loss(child)
    assert report.exit_code.status == DpTrainWorkChain.exit_codes.ERROR_NAN_LOSS.status
