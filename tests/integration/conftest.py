"""Integration fixtures: the production profile (PostgreSQL + RabbitMQ), a daemon, and the localhost Slurm.

Run separately from the unit tests: ``pytest tests/integration``. The session fixture ``aiida_profile``
overrides the root conftest's SQLite + ZeroMQ profile with a ``core.psql_dos`` + ``core.rabbitmq`` one on the
running services (PostgreSQL on 127.0.0.1:5432 as ``postgres`` with trust auth, RabbitMQ on 127.0.0.1:5672
as guest/guest; override with the ``LISEI_PG_*`` / ``LISEI_RMQ_*`` variables below). A database and a role
with a unique name are created for the session and dropped at its end.

If the services do not answer, every test here is skipped with the reason, unless
``LISEI_REQUIRE_SERVICES=1`` (then the session fails instead).
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import socket
import subprocess
from collections.abc import Iterator
from typing import Any

import pytest
from local_codes import VENV_BIN

os.environ['PATH'] = os.pathsep.join([str(VENV_BIN), os.environ.get('PATH', '')])

PG_HOST = os.environ.get('LISEI_PG_HOST', '127.0.0.1')
PG_PORT = int(os.environ.get('LISEI_PG_PORT', '5432'))
PG_SUPERUSER = os.environ.get('LISEI_PG_SUPERUSER', 'postgres')
PG_SUPERUSER_PASSWORD = os.environ.get('LISEI_PG_SUPERUSER_PASSWORD', '')
RMQ_HOST = os.environ.get('LISEI_RMQ_HOST', '127.0.0.1')
RMQ_PORT = int(os.environ.get('LISEI_RMQ_PORT', '5672'))
RMQ_USER = os.environ.get('LISEI_RMQ_USER', 'guest')
RMQ_PASSWORD = os.environ.get('LISEI_RMQ_PASSWORD', 'guest')


def _port_open(host: str, port: int, timeout: float = 2.0) -> bool:
    """Whether a TCP connection to ``host:port`` succeeds within ``timeout`` (s)."""
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def _skip_or_fail(reason: str) -> None:
    if os.environ.get('LISEI_REQUIRE_SERVICES') == '1':
        pytest.fail(reason, pytrace=False)
    pytest.skip(reason)


@pytest.fixture
def skip_or_fail():
    """Skip with ``reason``, or fail when ``LISEI_REQUIRE_SERVICES=1`` (CI: a dead service must not pass)."""
    return _skip_or_fail


def _pg_admin(*statements: str, dbname: str = 'postgres') -> None:
    """Run ``statements`` as the PostgreSQL superuser in autocommit mode (CREATE/DROP DATABASE need it)."""
    import psycopg

    with psycopg.connect(
        host=PG_HOST,
        port=PG_PORT,
        user=PG_SUPERUSER,
        password=PG_SUPERUSER_PASSWORD or None,
        dbname=dbname,
        autocommit=True,
        connect_timeout=10,
    ) as connection:
        for statement in statements:
            connection.execute(statement)


@pytest.fixture(scope='session')
def psql_dos_storage_config(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """Create a uniquely named PostgreSQL role + database (``TEMPLATE template0``); drop both at the end.

    Yields the ``core.psql_dos`` storage configuration (database and a file repository in a temporary folder).
    """
    if not _port_open(PG_HOST, PG_PORT):
        _skip_or_fail(f'PostgreSQL does not answer on {PG_HOST}:{PG_PORT}: the production profile needs it')
    name = f'lisei_test_{secrets.token_hex(6)}'
    password = secrets.token_hex(16)
    try:
        _pg_admin(
            f"CREATE ROLE {name} LOGIN PASSWORD '{password}'",
            f"CREATE DATABASE {name} OWNER {name} ENCODING 'UTF8' TEMPLATE template0",
        )
    except Exception as exception:
        _skip_or_fail(
            f'cannot create a PostgreSQL database as {PG_SUPERUSER}@{PG_HOST}:{PG_PORT}: {exception}'
        )
    repository = tmp_path_factory.mktemp('psql_dos_repository')
    try:
        yield {
            'database_engine': 'postgresql_psycopg',
            'database_hostname': PG_HOST,
            'database_port': PG_PORT,
            'database_username': name,
            'database_password': password,
            'database_name': name,
            'repository_uri': repository.as_uri(),
        }
    finally:
        _pg_admin(f'DROP DATABASE IF EXISTS {name} WITH (FORCE)', f'DROP ROLE IF EXISTS {name}')


@pytest.fixture(scope='session', autouse=True)
def aiida_profile(aiida_config, aiida_profile_factory, psql_dos_storage_config):
    """Override of the root conftest's profile: the production one, core.psql_dos + core.rabbitmq."""
    if not _port_open(RMQ_HOST, RMQ_PORT):
        _skip_or_fail(f'RabbitMQ does not answer on {RMQ_HOST}:{RMQ_PORT}: the production profile needs it')

    import aiida.engine.daemon.client as daemon_client_module

    if daemon_client_module.VERDI_BIN is None:  # looked up on PATH when aiida was imported
        daemon_client_module.VERDI_BIN = shutil.which('verdi') or str(VENV_BIN / 'verdi')

    # The daemon reads the config file: set the option there, before the profile is written.
    aiida_config.set_option('warnings.rabbitmq_version', False)
    # circus answers within aiida-core's default 2 s on an idle machine, not under CI load: the session's
    # `stop_daemon` at teardown then timed out (measured) although every test had passed
    aiida_config.set_option('daemon.timeout', 60)
    aiida_config.store()
    broker_config = {
        'broker_protocol': 'amqp',
        'broker_username': RMQ_USER,
        'broker_password': RMQ_PASSWORD,
        'broker_host': RMQ_HOST,
        'broker_port': RMQ_PORT,
        'broker_virtual_host': '',
    }
    with aiida_profile_factory(
        aiida_config,
        storage_backend='core.psql_dos',
        storage_config=psql_dos_storage_config,
        broker_backend='core.rabbitmq',
        broker_config=broker_config,
    ) as profile:
        yield profile
        _delete_rabbitmq_queues(profile)


def _delete_rabbitmq_queues(profile) -> None:
    """Delete the profile's RabbitMQ queues (``aiida-<profile uuid>.*``): test runs leave none behind."""
    rabbitmqctl = shutil.which('rabbitmqctl') or shutil.which(
        'rabbitmqctl', path='/usr/sbin:/usr/lib/rabbitmq/bin'
    )
    if rabbitmqctl is None:
        return
    prefix = f'aiida-{profile.uuid}'
    try:
        listing = subprocess.run(
            [rabbitmqctl, '-q', 'list_queues', 'name'],
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        ).stdout.split()
        for queue in (name for name in listing if name.startswith(prefix)):
            subprocess.run(
                [rabbitmqctl, '-q', 'delete_queue', queue], capture_output=True, timeout=30, check=False
            )
    except (OSError, subprocess.TimeoutExpired):
        pass


@pytest.fixture
def probe_code_local(aiida_code_installed):
    """This environment's ``lisei-probe`` as a code on ``localhost`` (core.local + core.direct)."""
    executable = VENV_BIN / 'lisei-probe'
    if not executable.is_file():
        pytest.skip(f'{executable} not found: install the package (pip install -e .)')
    return aiida_code_installed(
        label='lisei-probe-local', filepath_executable=str(executable), default_calc_job_plugin='lisei.probe'
    )


@pytest.fixture(scope='session')
def daemon_client(aiida_profile):
    """aiida-core's session fixture with a teardown that survives a loaded machine: stop the daemon waiting
    up to 120 s (circus's graceful stop of workers mid-retry took longer than the client's 60 s here), then,
    if it still runs, SIGKILL circus and its workers, so that no daemon outlives the session."""
    from aiida.engine.daemon import get_daemon_client
    from aiida.engine.daemon.client import DaemonException
    from daemon_helpers import daemon_processes, kill_processes

    client = get_daemon_client(aiida_profile.name)
    try:
        yield client
    finally:
        # taken before the stop: a circus that removed its pid file but still runs (seen) is killed too
        processes = daemon_processes(client)
        with contextlib.suppress(DaemonException):
            client.stop_daemon(wait=True, timeout=120)
        kill_processes(processes)
