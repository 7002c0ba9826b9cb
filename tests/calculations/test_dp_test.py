"""Tests of ``DpTestCalculation`` (``lisei.dp_test``): the submission, validation, and a real local run."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
from aiida import orm
from aiida.common.folders import Folder
from aiida.engine import run_get_node
from aiida.engine.utils import instantiate_process
from aiida.manage import get_manager
from aiida.plugins import CalculationFactory
from local_codes import ONE_THREAD

from aiida_lisei.data.deep_potential import DeepPotentialData

DpTestCalculation = CalculationFactory('lisei.dp_test')
DP = Path(sys.executable).parent / 'dp'
TESTS = Path(__file__).parents[1]
MODEL_FILE = TESTS / 'fixtures' / 'parsers' / 'dp_train' / 'default' / 'frozen_model.pb'


@pytest.fixture
def dp_code(aiida_code_installed) -> orm.InstalledCode:
    """This environment's ``dp`` on localhost, one thread."""
    if not DP.is_file():
        pytest.skip(f'{DP} not found')
    return aiida_code_installed(label='dp-test', filepath_executable=str(DP), prepend_text=ONE_THREAD)


def test_prepare_for_submission(dp_code, model, test_set, tmp_path):
    """All frames are tested (``-n 0``); the model is copied from the repository; detail files retrieved."""
    process = instantiate_process(
        get_manager().get_runner(), DpTestCalculation, code=dp_code, model=model, test_set=test_set
    )
    calc_info = process.prepare_for_submission(Folder(str(tmp_path)))
    (code_info,) = calc_info.codes_info
    assert code_info.cmdline_params == [
        '--tf', 'test', '-m', 'model.pb', '-s', 'systems', '-n', '0', '-d', 'detail'
    ]  # fmt: skip
    assert calc_info.local_copy_list == [(model.uuid, 'model.pb', 'model.pb')]
    assert sorted(path.name for path in (tmp_path / 'systems').iterdir()) == ['bcc_li', 'li2s']
    assert 'detail.*.out' in calc_info.retrieve_list


def test_pytorch_model_is_tested_with_the_pytorch_backend(dp_code, model, test_set, tmp_path):
    """A PyTorch model runs as ``dp --pt test -m model.pth`` (submission side; the bytes are a stand-in)."""
    attributes = {key: value for key, value in model.base.attributes.all.items() if key != 'compressed'}
    pytorch = DeepPotentialData(b'PK\x03\x04stand-in', **{**attributes, 'deepmd_backend': 'pytorch'}).store()
    process = instantiate_process(
        get_manager().get_runner(), DpTestCalculation, code=dp_code, model=pytorch, test_set=test_set
    )
    calc_info = process.prepare_for_submission(Folder(str(tmp_path)))
    (code_info,) = calc_info.codes_info
    assert code_info.cmdline_params[:4] == ['--pt', 'test', '-m', 'model.pth']
    assert calc_info.local_copy_list == [(pytorch.uuid, 'model.pth', 'model.pth')]


def test_other_level_of_theory_is_refused(dp_code, model, test_set):
    """Frames at another level of theory than the model's training set are refused."""
    attributes = {key: value for key, value in model.base.attributes.all.items() if key != 'compressed'}
    other = DeepPotentialData(MODEL_FILE, **{**attributes, 'level_of_theory_key': 'vasp/PBE/0'})
    builder = DpTestCalculation.get_builder()
    builder.code, builder.test_set = dp_code, test_set
    builder.model = other
    with pytest.raises(ValueError, match='never compare'):
        run_get_node(builder)


def test_real_run(dp_code, model, test_set):
    """``dp test`` really runs on the 14 frames; the RMSEs are those of the parser fixture (same model)."""
    results, node = run_get_node(DpTestCalculation, code=dp_code, model=model, test_set=test_set)
    assert node.exit_status == 0, node.exit_message
    summary = results['output_parameters'].get_dict()
    assert summary['nframes'] == 14
    assert summary['rmse_e_per_atom'] == pytest.approx(0.75790079359994, abs=1e-9)
    assert summary['rmse_f'] == pytest.approx(0.086722604107319, abs=1e-9)
    assert results['parity'].get_array('force_predicted').shape == (8 * 16 + 6 * 12, 3)
