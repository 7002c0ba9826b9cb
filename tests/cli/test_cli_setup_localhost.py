"""``aiida-lisei setup localhost`` and the table of codes."""

from __future__ import annotations

from aiida import orm

from aiida_lisei.cli.computers import CODES, code_prepend_text
from aiida_lisei.engines.probe import which


def test_code_prepend_text():
    text = code_prepend_text(CODES['cp2k'], plumed_kernel='/k/libplumedKernel.so', threads=4)
    lines = text.splitlines()
    assert lines[0] == 'export PLUMED_KERNEL=/k/libplumedKernel.so'
    assert 'export DP_INTRA_OP_PARALLELISM_THREADS=4' in lines
    assert 'export DP_INTER_OP_PARALLELISM_THREADS=1' in lines
    # CP2K's own line comes last, so that its single OpenMP thread wins.
    assert lines[-1].startswith('export OMPI_ALLOW_RUN_AS_ROOT=1') and lines[-1].endswith('OMP_NUM_THREADS=1')
    assert 'PLUMED_KERNEL' not in code_prepend_text(CODES['lmp'], plumed_kernel=None, threads=1)


def test_setup_localhost(run_cli, unique_label, tmp_path):
    """Computer and codes are registered, and a second call reuses them."""
    result = run_cli('setup', 'localhost', '--label', unique_label, '--work-dir', tmp_path, '--mpiprocs', 2)
    assert result.exit_code == 0, result.output
    computer = orm.load_computer(unique_label)
    assert (computer.transport_type, computer.scheduler_type) == ('core.local', 'core.direct')
    assert computer.get_default_mpiprocs_per_machine() == 2
    assert computer.get_minimum_job_poll_interval() == 1.0
    assert computer.get_configuration()['safe_interval'] == 0
    assert computer.get_configuration()['use_login_shell'] is False  # no shell start-up on every poll
    expected = [name for name, spec in CODES.items() if any(map(which, spec.executables))]
    assert {'lisei-probe', 'lisei-chgnet', 'lisei-chgnet-md'} <= set(expected)
    for name in expected:
        code = orm.load_code(f'{name}@{unique_label}')
        assert 'export OMP_NUM_THREADS=1' in code.prepend_text
        assert f'code {name}@{unique_label}: created' in result.output
    assert orm.load_code(f'cp2k@{unique_label}').default_calc_job_plugin == 'cp2k'
    for name, plugin in (('lisei-chgnet', 'lisei.chgnet'), ('lisei-chgnet-md', 'lisei.chgnet_md')):
        assert orm.load_code(f'{name}@{unique_label}').default_calc_job_plugin == plugin

    again = run_cli('setup', 'localhost', '--label', unique_label, '--work-dir', tmp_path, '--mpiprocs', 2)
    assert again.exit_code == 0, again.output
    assert 'created' not in again.output
    assert f'computer {unique_label}: exists, reusing' in again.output
    for name in expected:
        assert f'code {name}@{unique_label}: exists, reusing' in again.output

    listing = run_cli('check', '--computer', unique_label)
    for name in expected:
        assert f'{name}@{unique_label}' in listing.output


def test_setup_localhost_conflict(run_cli, unique_label, tmp_path):
    """An existing computer with another work dir is not changed: the error says what to do."""
    assert run_cli('setup', 'localhost', '--label', unique_label, '--work-dir', tmp_path / 'a').exit_code == 0
    result = run_cli('setup', 'localhost', '--label', unique_label, '--work-dir', tmp_path / 'b')
    assert result.exit_code == 1
    assert 'exists with other settings: work dir' in result.output
    assert f'verdi computer delete {unique_label}' in result.output
    assert orm.load_computer(unique_label).get_workdir() == str(tmp_path / 'a')


def test_setup_localhost_missing_engine(run_cli, unique_label, tmp_path, monkeypatch):
    """A code whose engine is missing is skipped with its install command."""
    monkeypatch.setenv('PATH', '/nonexistent')
    monkeypatch.setattr('aiida_lisei.cli.setup.which', lambda name: None)
    result = run_cli('setup', 'localhost', '--label', unique_label, '--work-dir', tmp_path)
    assert result.exit_code == 0, result.output
    assert f'code cp2k@{unique_label}: skipped' in result.output
    assert CODES['cp2k'].install in result.output
