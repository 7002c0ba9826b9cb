"""The CalcJob monitors read real engine outputs through a real transport, and stop a real diverging MD."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from aiida import orm
from aiida.engine import run_get_node
from aiida.transports.plugins.local import LocalTransport

from aiida_lisei.calculations.monitors import md_divergence, training_divergence

PARSERS = Path(__file__).parents[1] / 'fixtures' / 'parsers'


def _job_in(folder: Path, aiida_localhost) -> orm.CalcJobNode:
    """A CalcJob node whose remote working directory is ``folder``."""
    node = orm.CalcJobNode(computer=aiida_localhost)
    node.set_remote_workdir(str(folder))
    return node.store()


@pytest.mark.parametrize(
    ('run', 'message'),
    [
        ('nvt_300k', None),
        ('nan_energy', 'is not finite'),
        ('lost_atoms', 'lost atoms'),
        ('nvt_800k', 'exceeds 500 K'),
    ],
)
def test_md_divergence_on_real_logs(run, message, tmp_path, aiida_localhost):
    """Real LAMMPS logs: a sound run goes on (progress noted), NaN, lost atoms and overheating stop it."""
    shutil.copy(PARSERS / 'exploration' / run / 'log.lammps', tmp_path / 'log.lammps')
    node = _job_in(tmp_path, aiida_localhost)
    with LocalTransport() as transport:
        result = md_divergence(node, transport, max_temperature=500.0)
    if message is None:
        assert result is None and node.base.extras.get('progress').startswith('step ')
    else:
        assert message in result


def test_training_divergence_on_real_learning_curves(tmp_path, aiida_localhost):
    """A real ``lcurve.out`` goes on; one with NaN losses stops the training; no file yet: nothing to say."""
    node = _job_in(tmp_path, aiida_localhost)
    with LocalTransport() as transport:
        assert training_divergence(node, transport) is None
        shutil.copy(PARSERS / 'dp_train' / 'default' / 'lcurve.out', tmp_path / 'lcurve.out')
        assert training_divergence(node, transport) is None and node.base.extras.get('progress')
        lines = (PARSERS / 'dp_train' / 'default' / 'lcurve.out').read_text().splitlines()
        step, *values = lines[-1].split()
        diverged = ' '.join([str(int(step) + 100), 'nan', *values[1:]])  # the real file, a loss gone NaN
        (tmp_path / 'lcurve.out').write_text('\n'.join([*lines, diverged, '']))
        assert f'not finite at step {int(step) + 100}' in training_divergence(node, transport)


@pytest.mark.slow
def test_a_monitor_stops_a_diverging_md_early(venv_code, small_sandwich, tiny_deep_potential):
    """The Li-only test model heats the sandwich up: the monitor stops the 20000-step run long before its end,
    with exit status 150 and the reason."""
    code = venv_code('lmp', 'lisei.exploration')
    code.computer.set_minimum_job_poll_interval(0.5)
    builder = code.get_builder()
    builder.structure = small_sandwich
    builder.models = {f'model_{index}': tiny_deep_potential(index) for index in (1, 2)}
    builder.parameters = orm.Dict({'temperature': 300.0, 'n_steps': 20000, 'stride': 10})
    builder.seed = orm.Int(11)
    builder.monitors = {
        'md': orm.Dict({'entry_point': 'lisei.md_divergence', 'kwargs': {'max_temperature': 600.0}})
    }
    _, node = run_get_node(builder)
    assert node.exit_status == 150, (node.exit_status, node.exit_message)
    assert 'the run diverges' in node.exit_message or 'blown up' in node.exit_message
    log = node.outputs.retrieved.base.repository.get_object_content('log.lammps')
    assert 'Loop time' not in log.split('Step')[-1]  # stopped mid-run, not at its end
