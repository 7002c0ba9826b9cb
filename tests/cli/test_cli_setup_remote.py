"""``aiida-lisei setup remote``: through core.local, and through the localhost sshd + Slurm when it runs."""

from __future__ import annotations

import os
import socket
import sys
from pathlib import Path

import pytest
from aiida import orm

from aiida_lisei.cli.computers import CODES, scheduler_options

ENGINE_DIR = str(Path(sys.executable).parent)
SSH_KEY = Path('~/.ssh/id_ed25519_aiida_ci').expanduser()


def _remote(run_cli, label: str, *args):
    return run_cli(
        'setup', 'remote', '--label', label, '--engine-dir', ENGINE_DIR, '--poll-interval', 1, *args
    )


def test_setup_remote_local_transport(run_cli, unique_label, tmp_path):
    """The whole path (open the transport, find the engines, register) with core.local + core.direct."""
    args = ('--hostname', 'localhost', '--transport', 'core.local', '--scheduler', 'core.direct')
    args += (
        '--work-dir',
        tmp_path,
        '--mpirun-command',
        'mpirun -np {tot_num_mpiprocs}',
        '--safe-interval',
        0,
    )
    args += ('--account', 'project42', '--partition', 'debug', '--prepend-text', 'export LISEI_SITE=1')
    result = _remote(run_cli, unique_label, *args)
    assert result.exit_code == 0, result.output
    computer = orm.load_computer(unique_label)
    assert scheduler_options(computer) == {'account': 'project42', 'queue_name': 'debug'}
    assert computer.get_prepend_text() == 'export LISEI_SITE=1'
    probe = orm.load_code(f'lisei-probe@{unique_label}')
    assert probe.filepath_executable == Path(ENGINE_DIR, 'lisei-probe')
    assert probe.default_calc_job_plugin == 'lisei.probe'

    again = _remote(run_cli, unique_label, *args)
    assert again.exit_code == 0, again.output
    assert 'created' not in again.output

    changed = _remote(run_cli, unique_label, *args[:-6], '--account', 'other')
    assert changed.exit_code == 1
    assert 'scheduler options' in changed.output


def test_setup_remote_missing_engine_dir(run_cli, unique_label, tmp_path):
    args = ('--hostname', 'localhost', '--transport', 'core.local', '--scheduler', 'core.direct')
    result = run_cli(
        'setup',
        'remote',
        '--label',
        unique_label,
        '--work-dir',
        tmp_path,
        '--engine-dir',
        tmp_path / 'missing',
        *args,
    )
    assert result.exit_code == 1
    assert 'does not exist' in result.output


@pytest.mark.parametrize(
    ('args', 'message'),
    [
        (('--transport', 'core.ssh_async', '--port', '2222'), '--port apply to --transport core.ssh only'),
        (('--scheduler', 'core.nope'), "Invalid value for --scheduler: Entry point 'core.nope' not found"),
        (('--transport', 'core.telnet'), "Invalid value for '--transport'"),
    ],
)
def test_setup_remote_bad_options(run_cli, unique_label, args, message):
    result = _remote(run_cli, unique_label, '--hostname', 'localhost', '--work-dir', '/tmp/x', *args)
    assert result.exit_code == 2
    assert message in result.output
    with pytest.raises(Exception, match='No result was found'):
        orm.load_computer(unique_label)


def _sshd_up() -> bool:
    try:
        socket.create_connection(('127.0.0.1', 2222), timeout=1).close()
    except OSError:
        return False
    return SSH_KEY.is_file()


def _require_sshd() -> None:
    """Skip without the localhost sshd + Slurm, or fail when ``LISEI_REQUIRE_SERVICES=1`` (``make test``)."""
    if _sshd_up():
        return
    reason = 'needs the sshd + Slurm of scripts/hpc/setup-localhost-hpc.sh (`make hpc`)'
    if os.environ.get('LISEI_REQUIRE_SERVICES') == '1':
        pytest.fail(reason, pytrace=False)
    pytest.skip(reason)


@pytest.mark.slurm
@pytest.mark.parametrize(
    'transport_args',
    [
        ('--transport', 'core.ssh', '--hostname', 'localhost', '--port', 2222, '--key-filename', SSH_KEY),
        ('--transport', 'core.ssh_async', '--hostname', 'slurm-localhost'),
    ],
)
def test_setup_remote_slurm(run_cli, unique_label, transport_args):
    """Real SSH to the localhost sshd on port 2222, with the Slurm scheduler."""
    _require_sshd()
    args = (
        *transport_args,
        '--work-dir',
        f'/tmp/{unique_label}',
        '--safe-interval',
        0.1,
        '--partition',
        'debug',
    )
    result = _remote(run_cli, unique_label, *args)
    assert result.exit_code == 0, result.output
    assert orm.load_computer(unique_label).scheduler_type == 'core.slurm'
    for name in CODES:
        assert orm.load_code(f'{name}@{unique_label}')
    assert 'created' not in _remote(run_cli, unique_label, *args).output
