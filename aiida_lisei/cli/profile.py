"""Create or reuse an AiiDA profile: SQLite or PostgreSQL storage, ZeroMQ or RabbitMQ broker."""

from __future__ import annotations

import re
import secrets
import typing as t
from dataclasses import dataclass
from pathlib import Path

import click

from .utils import created, exists

if t.TYPE_CHECKING:
    from aiida.manage.configuration import Config

#: ``--backend`` and ``--broker`` choices → AiiDA entry points.
STORAGE_BACKENDS = {'sqlite': 'core.sqlite_dos', 'postgres': 'core.psql_dos'}
BROKERS = {'zmq': 'core.zeromq', 'rabbitmq': 'core.rabbitmq'}


@dataclass(frozen=True)
class PostgresSettings:
    """Where the PostgreSQL server is, and the database and role the profile owns."""

    host: str
    port: int
    superuser: str
    db_name: str
    db_user: str
    db_password: str | None


@dataclass(frozen=True)
class RabbitMQSettings:
    """Where the RabbitMQ server is."""

    host: str
    port: int
    username: str
    password: str


def default_db_name(profile_name: str) -> str:
    """Database and role name for a profile: ``aiida_<name>`` with anything but ``[A-Za-z0-9_]`` as ``_``."""
    return 'aiida_' + re.sub(r'\W', '_', profile_name)


def _connect(host: str, port: int, user: str, password: str | None = None, dbname: str = 'postgres'):
    import psycopg

    return psycopg.connect(
        host=host, port=port, user=user, password=password, dbname=dbname, autocommit=True, connect_timeout=10
    )


def ensure_postgres_database(settings: PostgresSettings) -> str:
    """Create the role and the database (``TEMPLATE template0``) if missing; return the role's password.

    The superuser connects with ``PGPASSWORD``/``~/.pgpass`` if the server asks for a password.
    """
    import psycopg
    from psycopg import sql

    where = f'{settings.host}:{settings.port}'
    try:
        connection = _connect(settings.host, settings.port, settings.superuser)
    except psycopg.OperationalError as exception:
        raise click.ClickException(
            f'cannot connect to PostgreSQL at {where} as {settings.superuser}: {exception}\n'
            'Start the server, or fix --db-host/--db-port/--db-superuser (password: PGPASSWORD or ~/.pgpass).'
        ) from exception
    password = settings.db_password
    with connection:
        role_exists = connection.execute(
            'SELECT 1 FROM pg_roles WHERE rolname = %s', (settings.db_user,)
        ).fetchone()
        if role_exists:
            if password is None:
                raise click.ClickException(
                    f'the PostgreSQL role {settings.db_user} exists: pass its --db-password, '
                    'or choose a new --db-user.'
                )
            exists('PostgreSQL role', settings.db_user)
        else:
            password = password or secrets.token_hex(16)
            connection.execute(
                sql.SQL('CREATE ROLE {} LOGIN PASSWORD {}').format(
                    sql.Identifier(settings.db_user), sql.Literal(password)
                )
            )
            created('PostgreSQL role', settings.db_user)
        owner = connection.execute(
            'SELECT pg_get_userbyid(datdba) FROM pg_database WHERE datname = %s', (settings.db_name,)
        ).fetchone()
        if owner is None:
            connection.execute(
                sql.SQL("CREATE DATABASE {} OWNER {} ENCODING 'UTF8' TEMPLATE template0").format(
                    sql.Identifier(settings.db_name), sql.Identifier(settings.db_user)
                )
            )
            created('PostgreSQL database', settings.db_name, f'owner {settings.db_user}')
        elif owner[0] != settings.db_user:
            raise click.ClickException(
                f'the PostgreSQL database {settings.db_name} exists but belongs to {owner[0]}, '
                f'not {settings.db_user}: choose another --db-name or --db-user.'
            )
        else:
            exists('PostgreSQL database', settings.db_name)
    try:
        _connect(settings.host, settings.port, settings.db_user, password, settings.db_name).close()
    except psycopg.OperationalError as exception:
        raise click.ClickException(
            f'cannot log in to {settings.db_name} as {settings.db_user}: {exception}\nCheck --db-password.'
        ) from exception
    return password


def postgres_storage_config(
    config: Config, profile_name: str, settings: PostgresSettings
) -> dict[str, t.Any]:
    """Ensure the database exists and return the ``core.psql_dos`` storage configuration."""
    password = ensure_postgres_database(settings)
    return {
        'database_engine': 'postgresql_psycopg',
        'database_hostname': settings.host,
        'database_port': settings.port,
        'database_name': settings.db_name,
        'database_username': settings.db_user,
        'database_password': password,
        'repository_uri': Path(config.dirpath, 'repository', profile_name).as_uri(),
    }


def rabbitmq_broker_config(settings: RabbitMQSettings) -> dict[str, t.Any]:
    """Check that RabbitMQ answers and return the ``core.rabbitmq`` broker configuration."""
    from aiida.brokers.rabbitmq.defaults import detect_rabbitmq_config

    try:
        return detect_rabbitmq_config(
            host=settings.host, port=settings.port, username=settings.username, password=settings.password
        )
    except ConnectionError as exception:
        message = str(exception).replace(settings.password, '***') if settings.password else str(exception)
        raise click.ClickException(
            f'cannot connect to RabbitMQ at {settings.host}:{settings.port}: {message}\n'
            'Start it (e.g. `rabbitmq-server -detached`), fix --broker-host/--broker-port/--broker-username/'
            '--broker-password, or use --broker zmq (no service needed).'
        ) from None  # the exception itself carries the password


def set_option(config: Config, profile_name: str, option: str, value: t.Any) -> bool:
    """Set a config option for the profile unless it already has that value; return whether it changed."""
    if config.get_option(option, scope=profile_name) == value:
        return False
    config.set_option(option, value, scope=profile_name)
    click.echo(f'profile {profile_name}: {option} = {value}')
    return True


def setup_profile(
    *,
    name: str,
    backend: str,
    broker: str,
    email: str,
    set_default: bool,
    caching: bool,
    postgres: PostgresSettings,
    rabbitmq: RabbitMQSettings,
) -> None:
    """Create profile ``name`` unless it exists (then check it matches), and apply the study's options."""
    from aiida.common import exceptions
    from aiida.manage.configuration import create_profile, get_config
    from aiida.plugins import BrokerFactory

    config = get_config(create=True)
    storage_backend, broker_backend = STORAGE_BACKENDS[backend], BROKERS[broker]
    if name in config.profile_names:
        profile = config.get_profile(name)
        found = (profile.storage_backend, profile.process_control_backend)
        if found != (storage_backend, broker_backend):
            raise click.ClickException(
                f'the profile {name} exists with storage {found[0]} and broker {found[1]}, not '
                f'{storage_backend} and {broker_backend}: choose another --name, or remove it first with '
                f'`verdi profile delete {name}`.'
            )
        exists('profile', name)
    else:
        storage_config = {} if backend == 'sqlite' else postgres_storage_config(config, name, postgres)
        if broker == 'rabbitmq':
            broker_config = rabbitmq_broker_config(rabbitmq)
        else:
            broker_config = BrokerFactory(broker_backend).get_default_config()
        try:
            create_profile(
                config,
                name=name,
                email=email,
                storage_backend=storage_backend,
                storage_config=storage_config,
                broker_backend=broker_backend,
                broker_config=broker_config,
            )
        except (
            ValueError,
            TypeError,
            exceptions.EntryPointError,
            exceptions.StorageMigrationError,
        ) as exception:
            raise click.ClickException(f'cannot create the profile {name}: {exception}') from exception
        created('profile', name, f'{storage_backend} + {broker_backend}, in {config.dirpath}')
        if broker == 'rabbitmq':
            click.echo(
                "Note: raise RabbitMQ's consumer_timeout (30 min by default) on the server, or long "
                'workflows are killed (docs/profiles.md).'
            )

    changed = [
        set_option(config, name, 'caching.default_enabled', caching),
        set_option(config, name, 'runner.poll.interval', 1),
    ]
    if broker == 'rabbitmq':
        changed.append(set_option(config, name, 'warnings.rabbitmq_version', False))
    if set_default and config.default_profile_name != name:
        config.set_default_profile(name, overwrite=True)
        click.echo(f'profile {name}: set as the default profile')
        changed.append(True)
    if any(changed):
        config.store()
