"""Tests of ``DpTrainCalculation`` (``lisei.dp_train``): the input it writes, and real local ``dp`` runs."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
from aiida import orm
from aiida.common.datastructures import CodeRunMode
from aiida.common.folders import Folder
from aiida.engine import run_get_node
from aiida.engine.utils import instantiate_process
from aiida.manage import get_manager
from aiida.plugins import CalculationFactory
from local_codes import local_code

from aiida_lisei.calculations.dp_train import build_input, check_parameters
from aiida_lisei.data.training_set import TrainingSetData
from aiida_lisei.workchains.dp_train import DpTrainWorkChain

DpTrainCalculation = CalculationFactory('lisei.dp_train')
DP = Path(sys.executable).parent / 'dp'
LISEI_DP = Path(sys.executable).parent / 'lisei-dp'
TRAINING_SET = Path(__file__).parents[1] / 'fixtures' / 'dp_training_set'
STEPS = 60


def demo_parameters(numb_steps: int = STEPS) -> dict:
    """The ``demo`` protocol's DeePMD input with ``numb_steps`` steps (disp 10, checkpoint every 30)."""
    builder = DpTrainWorkChain.get_builder_from_protocol(
        orm.InstalledCode(computer=orm.Computer(label='x'), filepath_executable='/bin/true'),
        TrainingSetData.from_deepmd_npy(sorted(p for p in TRAINING_SET.iterdir() if p.is_dir())),
        overrides={'dp_train': {'parameters': {'training': {'numb_steps': numb_steps, 'save_freq': 30}}}},
    )
    parameters = builder.dp_train.parameters.get_dict()
    parameters['training']['disp_freq'] = 10
    return parameters


@pytest.fixture(scope='module')
def training_set() -> TrainingSetData:
    """8 bcc Li16 + 6 Li2S frames labelled with tblite GFN1-xTB (stored)."""
    return TrainingSetData.from_deepmd_npy(sorted(p for p in TRAINING_SET.iterdir() if p.is_dir())).store()


@pytest.fixture(scope='module')
def dp_code(tmp_path_factory) -> orm.InstalledCode:
    """This environment's ``dp`` on a local core.direct computer, one thread."""
    return local_code(tmp_path_factory, DP)


def train(dp_code, training_set, seed: int, numb_steps: int = STEPS, **inputs):
    """Run one ``DpTrainCalculation`` for real; return its node."""
    builder = DpTrainCalculation.get_builder()
    builder.code = dp_code
    builder.training_set = training_set
    builder.parameters = demo_parameters(numb_steps)
    builder.seed = seed
    for name, value in inputs.items():
        builder[name] = value
    _, node = run_get_node(builder)
    assert node.exit_status == 0, (node.exit_status, node.exit_message)
    return node


def predict(node: orm.CalcJobNode, training_set: TrainingSetData) -> np.ndarray:
    """Energies (eV) and forces (eV/Å) of the first bcc Li frame predicted by the trained model."""
    system = training_set.get_system('bcc_li')
    energy, forces, _ = node.outputs.model.get_deep_pot().eval(
        system.coords[:1].reshape(1, -1), system.cells[:1].reshape(1, 9), system.atom_types
    )
    return np.concatenate([energy.ravel(), forces.ravel()])


@pytest.fixture(scope='module')
def trained(dp_code, training_set) -> orm.CalcJobNode:
    """One real training (60 steps, seed 1, compressed, checkpoint retrieved): ~1 min, mostly start-up."""
    return train(dp_code, training_set, 1, settings={'compress': True, 'retrieve_checkpoint': True})


def test_check_parameters():
    """Seeds and data systems belong to the CalcJob; the four sections are required."""
    parameters = demo_parameters()
    assert check_parameters(parameters) == parameters
    with pytest.raises(ValueError, match='lacks'):
        check_parameters({'model': {}})
    for section, key in (('model.descriptor', 'seed'), ('training', 'seed')):
        bad = json.loads(json.dumps(parameters))
        target = bad
        for name in section.split('.'):
            target = target[name]
        target[key] = 1
        with pytest.raises(ValueError, match='seed'):
            check_parameters(bad)
    bad = json.loads(json.dumps(parameters))
    bad['training']['training_data']['systems'] = ['x']
    with pytest.raises(ValueError, match='written by the CalcJob'):
        check_parameters(bad)


def test_build_input():
    """One seed goes everywhere; the type map defaults to the set's; validation data only when given."""
    data = build_input({'model': {'descriptor': {}, 'fitting_net': {}}, 'training': {}}, 7, ['Li'], ['a'])
    assert (
        data['model']['descriptor']['seed']
        == data['model']['fitting_net']['seed']
        == data['training']['seed']
    )
    assert data['model']['type_map'] == ['Li']
    assert data['training']['training_data']['systems'] == ['a']
    assert 'validation_data' not in data
    assert data['training']['disp_file'] == 'lcurve.out' and data['training']['save_ckpt'] == 'model.ckpt'


def test_prepare_for_submission(dp_code, training_set, tmp_path):
    """Systems and input.json are written; train and freeze run in series; restart copies the checkpoint."""
    restart = orm.FolderData()
    for name in ('checkpoint', 'model.ckpt.index', 'model.ckpt.data-00000-of-00001', 'lcurve.out'):
        restart.base.repository.put_object_from_bytes(b'x', name)
    inputs = {
        'code': dp_code,
        'training_set': training_set,
        'validation_set': training_set,
        'parameters': orm.Dict(demo_parameters()),
        'seed': orm.Int(42),
        'restart_folder': restart.store(),
    }
    process = instantiate_process(get_manager().get_runner(), DpTrainCalculation, **inputs)
    calc_info = process.prepare_for_submission(Folder(str(tmp_path)))

    data = json.loads((tmp_path / 'input.json').read_text())
    assert data['training']['seed'] == data['model']['descriptor']['seed'] == 42
    assert data['training']['training_data']['systems'] == ['systems/train/bcc_li', 'systems/train/li2s']
    assert data['training']['validation_data']['systems'] == ['systems/valid/bcc_li', 'systems/valid/li2s']
    assert (tmp_path / 'systems' / 'train' / 'li2s' / 'set.000' / 'force.npy').is_file()
    assert [info.cmdline_params for info in calc_info.codes_info] == [
        ['--tf', 'train', 'input.json', '--restart', 'model.ckpt'],
        ['--tf', 'freeze', '-o', 'frozen_model.pb'],
    ]
    assert calc_info.codes_run_mode == CodeRunMode.SERIAL
    assert sorted(name for _, name, _ in calc_info.local_copy_list) == [
        'checkpoint', 'lcurve.out', 'model.ckpt.data-00000-of-00001', 'model.ckpt.index'
    ]  # fmt: skip
    assert calc_info.provenance_exclude_list == ['systems']
    assert 'frozen_model.pb' in calc_info.retrieve_list and 'model.ckpt.index' not in calc_info.retrieve_list


def test_validation(dp_code, training_set):
    """A FolderData without a checkpoint and an unknown setting are refused."""
    builder = DpTrainCalculation.get_builder()
    builder.code, builder.training_set, builder.seed = dp_code, training_set, 1
    builder.parameters = demo_parameters()
    builder.restart_folder = orm.FolderData()
    with pytest.raises(ValueError, match='no checkpoint'):
        run_get_node(builder)
    with pytest.raises(ValueError, match='unknown settings'):
        builder.settings = {'compres': True}


def test_real_training(trained, training_set):
    """The model loads with DeepPot (TF) and evaluates a frame; the compressed model agrees; seed recorded."""
    model = trained.outputs.model
    assert model.seed == 1 and model.compressed and model.training_steps == STEPS
    assert model.level_of_theory_key == training_set.level_of_theory_key
    assert trained.outputs.learning_curve.get_array('step').tolist() == list(range(0, STEPS + 1, 10))
    prediction = predict(trained, training_set)
    assert np.all(np.isfinite(prediction))
    system = training_set.get_system('bcc_li')
    energy, _, _ = model.get_deep_pot(compressed=True).eval(
        system.coords[:1].reshape(1, -1), system.cells[:1].reshape(1, 9), system.atom_types
    )
    assert energy.ravel()[0] == pytest.approx(prediction[0], abs=1e-3)  # tabulation error only
    assert 'model.ckpt.index' in trained.outputs.retrieved.base.repository.list_object_names()


@pytest.mark.slow
def test_ensemble_seeds_and_reproducibility(trained, dp_code, training_set):
    """Seeds 2-4 give three more, different models; seed 1 again reproduces the first model's predictions."""
    predictions = {1: predict(trained, training_set)}
    for seed in (2, 3, 4):
        node = train(dp_code, training_set, seed)
        assert node.outputs.model.seed == seed
        predictions[seed] = predict(node, training_set)
    for seed in (2, 3, 4):
        assert np.abs(predictions[seed] - predictions[1]).max() > 1e-3
    again = predict(train(dp_code, training_set, 1), training_set)
    np.testing.assert_array_equal(again, predictions[1])  # TF on CPU, one thread: bit-identical


@pytest.mark.slow
@pytest.mark.parametrize('source', ['remote_folder', 'retrieved'])
def test_restart_continues_the_learning_curve(trained, dp_code, training_set, source):
    """``--restart`` from the checkpoint (remote or retrieved) continues at step 60, appends to lcurve.out."""
    node = train(dp_code, training_set, 1, numb_steps=2 * STEPS, restart_folder=trained.outputs[source])
    steps = node.outputs.learning_curve.get_array('step').tolist()
    assert steps == list(range(0, 2 * STEPS + 1, 10))
    assert 'restart from model ' in node.outputs.retrieved.base.repository.get_object_content('train.log')
    assert node.outputs.model.training_steps == 2 * STEPS


@pytest.mark.parametrize(
    ('section', 'key', 'value', 'message'),
    [
        ('model.descriptor', 'rcutt', 5.0, 'undefined key `rcutt`.*Did you mean: rcut'),
        ('training', 'numb_step', 10, 'undefined key `numb_step`.*Did you mean: numb_steps'),
        ('learning_rate', 'type', 'expp', 'invalid choice `expp`.*Did you mean: exp'),
        ('model.descriptor', 'rcut', 'five', 'key `rcut` gets wrong value type'),
    ],
)
def test_parameters_checked_by_deepmd(dp_code, training_set, section, key, value, message):
    """DeePMD-kit's argument checker refuses typos, wrong choices and types before anything is submitted:
    in ``check_parameters``, at the CalcJob's ``parameters`` port and at the work chain's."""
    bad = demo_parameters()
    target = bad
    for name in section.split('.'):
        target = target[name]
    target[key] = value
    with pytest.raises(ValueError, match=f'DeePMD-kit refuses the input: .*{message}'):
        check_parameters(bad)
    builder = DpTrainCalculation.get_builder()
    with pytest.raises(ValueError, match=message):
        builder.parameters = orm.Dict(bad)
    workchain = DpTrainWorkChain.get_builder()
    with pytest.raises(ValueError, match=message):
        workchain.dp_train.parameters = orm.Dict(bad)
    assert check_parameters(demo_parameters()) == demo_parameters()  # the protocol's input passes


def test_pytorch_backend_prepare_for_submission(dp_code, training_set, tmp_path, parser_model):
    """``settings.backend = pytorch``: ``dp --pt`` train, freeze and compress, ``.pth`` files, the PyTorch
    checkpoint for a restart; the backend is refused when unknown or when ``init_model`` has the other one.
    Submission side only: DeePMD-kit's PyTorch backend does not run in the tested set (its wheel's ops are
    built for torch 2.11, CHGNet's is 2.13; docs/installation.md)."""
    restart = orm.FolderData()
    for name in ('checkpoint', 'model.ckpt.pt', 'model.ckpt-60.pt', 'lcurve.out'):
        restart.base.repository.put_object_from_bytes(b'x', name)
    inputs = {
        'code': dp_code,
        'training_set': training_set,
        'parameters': orm.Dict(demo_parameters()),
        'seed': orm.Int(42),
        'restart_folder': restart.store(),
        'settings': orm.Dict({'backend': 'pytorch', 'compress': True, 'retrieve_checkpoint': True}),
    }
    process = instantiate_process(get_manager().get_runner(), DpTrainCalculation, **inputs)
    calc_info = process.prepare_for_submission(Folder(str(tmp_path)))
    assert [info.cmdline_params for info in calc_info.codes_info] == [
        ['--pt', 'train', 'input.json', '--restart', 'model.ckpt.pt'],
        ['--pt', 'freeze', '-o', 'frozen_model.pth'],
        ['--pt', 'compress', '-i', 'frozen_model.pth', '-o', 'frozen_model_compressed.pth', '-s', '0.01'],
    ]
    retrieved = set(calc_info.retrieve_list)
    assert {'frozen_model.pth', 'frozen_model_compressed.pth', 'model.ckpt.pt'} <= retrieved

    builder = DpTrainCalculation.get_builder()
    builder.code, builder.training_set, builder.seed = dp_code, training_set, 1
    builder.parameters = demo_parameters()
    with pytest.raises(ValueError, match="unknown `backend` 'jax'"):
        builder.settings = {'backend': 'jax'}
    builder.settings = {'backend': 'pytorch'}
    builder.restart_folder = orm.FolderData()
    with pytest.raises(ValueError, match=r'no checkpoint `model\.ckpt\.pt`'):
        run_get_node(builder)
    del builder.restart_folder
    builder.init_model = parser_model()
    with pytest.raises(ValueError, match=r'`init_model` is a tensorflow model, `settings\.backend`'):
        run_get_node(builder)


@pytest.mark.slow
def test_pytorch_backend_real_run(tmp_path_factory, training_set):
    """``settings.backend = pytorch`` for real, through ``lisei-dp`` (DeePMD-kit's pure-PyTorch path: its
    wheel's operators are built for torch 2.11, the runtime is 2.13): ``dp --pt`` trains and freezes a
    ``.pth`` model, recorded as a PyTorch ``DeepPotentialData``, and ``dp --pt test`` evaluates it."""
    from aiida_lisei.calculations.dp_test import DpTestCalculation
    from aiida_lisei.data.training_set import TrainingSetData

    code = local_code(tmp_path_factory, LISEI_DP)
    node = train(code, training_set, 3, numb_steps=20, settings={'backend': 'pytorch'})
    model = node.outputs.model
    assert model.deepmd_backend == 'pytorch' and not model.compressed and model.training_steps == 20
    assert model.filename() == 'model.pth'
    assert model.base.repository.get_object_content('model.pth', 'rb')[:4] == b'PK\x03\x04'  # TorchScript
    assert node.outputs.learning_curve.get_array('step')[-1] == 20
    assert 'model.ckpt.pt' not in node.outputs.retrieved.base.repository.list_object_names()
    test_set = TrainingSetData.from_deepmd_npy(TRAINING_SET / 'bcc_li').store()
    results, tested = run_get_node(DpTestCalculation, code=code, model=model, test_set=test_set)
    assert tested.is_finished_ok, (tested.exit_status, tested.exit_message)
    assert 0 < results['output_parameters']['rmse_f'] < 5.0  # eV/Å: a finite, trained model
