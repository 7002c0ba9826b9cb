"""``aiida-lisei setup profile``, run in a child process with its own ``AIIDA_PATH``."""

from __future__ import annotations

import json
import socket

import pytest

from aiida_lisei.cli.profile import default_db_name


def _config(run_cli_subprocess) -> dict:
    return json.loads((run_cli_subprocess.aiida_path / '.aiida' / 'config.json').read_text())


def _listening(port: int) -> bool:
    try:
        socket.create_connection(('127.0.0.1', port), timeout=1).close()
    except OSError:
        return False
    return True


def test_profile_sqlite_zmq(run_cli_subprocess):
    """Embedded profile: created, caching on, default; a second call reuses it; a different backend fails."""
    args = ('setup', 'profile', '--name', 'embedded', '--backend', 'sqlite', '--broker', 'zmq')
    result = run_cli_subprocess(*args)
    assert result.returncode == 0, result.stderr
    assert 'profile embedded: created (core.sqlite_dos + core.zeromq' in result.stdout
    config = _config(run_cli_subprocess)
    assert config['default_profile'] == 'embedded'
    profile = config['profiles']['embedded']
    assert profile['options']['caching.default_enabled'] is True
    assert profile['process_control']['backend'] == 'core.zeromq'

    again = run_cli_subprocess(*args)
    assert again.returncode == 0, again.stderr
    assert again.stdout.strip() == 'profile embedded: exists, reusing'

    other = run_cli_subprocess('setup', 'profile', '--name', 'embedded', '--backend', 'postgres')
    assert other.returncode == 1
    assert 'exists with storage core.sqlite_dos' in other.stderr

    no_cache = run_cli_subprocess(*args, '--no-caching', '--no-set-default')
    assert no_cache.returncode == 0
    assert _config(run_cli_subprocess)['profiles']['embedded']['options']['caching.default_enabled'] is False


def test_profile_bad_backend(run_cli):
    result = run_cli('setup', 'profile', '--name', 'x', '--backend', 'mysql')
    assert result.exit_code == 2
    assert "Invalid value for '--backend': 'mysql' is not one of 'postgres', 'sqlite'" in result.output


def test_profile_missing_name(run_cli):
    result = run_cli('setup', 'profile')
    assert result.exit_code == 2
    assert "Missing option '--name'" in result.output


def test_profile_rabbitmq_unreachable(run_cli_subprocess):
    """The failure names the server and what to fix, never the password."""
    result = run_cli_subprocess(
        'setup',
        'profile',
        '--name',
        'p',
        '--broker',
        'rabbitmq',
        '--broker-port',
        1,
        '--broker-password',
        'sekrit-4711',
    )
    assert result.returncode == 1
    assert 'cannot connect to RabbitMQ at 127.0.0.1:1' in result.stderr
    assert 'sekrit-4711' not in result.stdout + result.stderr and '***' in result.stderr


@pytest.fixture
def postgres_database(unique_label):
    """A database and role name for one test; both are dropped afterwards."""
    psycopg = pytest.importorskip('psycopg')
    from psycopg import sql

    if not _listening(5432):
        pytest.skip('needs PostgreSQL on 127.0.0.1:5432')
    name = default_db_name(unique_label)
    yield name
    with psycopg.connect(
        host='127.0.0.1', port=5432, user='postgres', dbname='postgres', autocommit=True
    ) as conn:
        conn.execute(sql.SQL('DROP DATABASE IF EXISTS {} WITH (FORCE)').format(sql.Identifier(name)))
        conn.execute(sql.SQL('DROP ROLE IF EXISTS {}').format(sql.Identifier(name)))


@pytest.mark.skipif(not _listening(5672), reason='needs RabbitMQ on 127.0.0.1:5672')
def test_profile_postgres_rabbitmq(run_cli_subprocess, unique_label, postgres_database):
    """Production profile against the running services: role + database created, then reused."""
    args = ('setup', 'profile', '--name', unique_label, '--backend', 'postgres', '--broker', 'rabbitmq')
    result = run_cli_subprocess(*args)
    assert result.returncode == 0, result.stderr
    assert f'PostgreSQL database {postgres_database}: created' in result.stdout
    profile = _config(run_cli_subprocess)['profiles'][unique_label]
    assert profile['storage']['backend'] == 'core.psql_dos'
    assert profile['storage']['config']['database_name'] == postgres_database
    assert profile['process_control']['backend'] == 'core.rabbitmq'
    assert profile['options']['warnings.rabbitmq_version'] is False
    assert profile['options']['caching.default_enabled'] is True

    again = run_cli_subprocess(*args)
    assert again.returncode == 0, again.stderr
    assert 'created' not in again.stdout
    password = profile['storage']['config']['database_password']
    assert len(password) >= 16 and not any(
        password in out for out in (result.stdout, result.stderr, again.stdout)
    )
