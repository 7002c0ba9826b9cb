"""``aiida-lisei setup``: profiles, the localhost and remote computers with their codes, the PLUMED kernel."""

from __future__ import annotations

import asyncio
import getpass
import os
import shlex
import subprocess
import sys
import typing as t
from pathlib import Path

import click

from aiida_lisei.engines.probe import find_kernel_in, find_plumed_kernel, plumed_kernel_api_version, which

from .computers import CODES, configure_computer, get_or_create_computer, register_codes
from .profile import (
    BROKERS,
    STORAGE_BACKENDS,
    PostgresSettings,
    RabbitMQSettings,
    default_db_name,
    setup_profile,
)
from .utils import PROFILE_OPTION, created, exists, load_profile

if t.TYPE_CHECKING:
    from aiida.orm import Computer
    from aiida.transports import Transport

#: The PyPI wheel that ships ``libplumedKernel.so`` (a PLUMED 2.11 development build with all modules).
PLUMED_KERNEL_REQUIREMENT = 'hillclimber==0.1.8'

_THREADS_OPTION = click.option(
    '--threads',
    type=click.IntRange(min=1),
    default=1,
    show_default=True,
    help='OpenMP/DeePMD-kit threads per MPI rank, exported in the prepend text of every code.',
)
_MPIPROCS_HELP = 'Default number of MPI ranks per machine.'


@click.group('setup')
def cmd_setup() -> None:
    """Create or reuse a profile, computers with codes, the PLUMED kernel (all idempotent)."""


@cmd_setup.command('profile')
@click.option('--name', required=True, help='Name of the profile.')
@click.option(
    '--backend',
    type=click.Choice(sorted(STORAGE_BACKENDS)),
    default='sqlite',
    show_default=True,
    help='Storage: sqlite (embedded file, no service) or postgres (PostgreSQL server, production).',
)
@click.option(
    '--broker',
    type=click.Choice(sorted(BROKERS)),
    default='zmq',
    show_default=True,
    help='Broker: zmq (built-in ZeroMQ, started with the daemon) or rabbitmq (RabbitMQ server).',
)
@click.option('--email', default='aiida@localhost', show_default=True, help='Email of the default user.')
@click.option(
    '--set-default/--no-set-default', default=True, show_default=True, help='Make it the default profile.'
)
@click.option(
    '--caching/--no-caching',
    default=True,
    show_default=True,
    help='Enable caching for all processes of the profile (the study relies on it).',
)
@click.option('--db-host', default='127.0.0.1', show_default=True, help='[postgres] server host.')
@click.option('--db-port', type=int, default=5432, show_default=True, help='[postgres] server port.')
@click.option(
    '--db-superuser',
    default='postgres',
    show_default=True,
    help='[postgres] role that may create roles and databases (password: PGPASSWORD or ~/.pgpass).',
)
@click.option('--db-name', help='[postgres] database of the profile  [default: aiida_<name>]')
@click.option('--db-user', help='[postgres] role owning the database  [default: aiida_<name>]')
@click.option(
    '--db-password',
    envvar='LISEI_DB_PASSWORD',
    help='[postgres] password of --db-user (or $LISEI_DB_PASSWORD)  [default: random, for a new role]',
)
@click.option('--broker-host', default='127.0.0.1', show_default=True, help='[rabbitmq] server host.')
@click.option('--broker-port', type=int, default=5672, show_default=True, help='[rabbitmq] server port.')
@click.option('--broker-username', default='guest', show_default=True, help='[rabbitmq] user.')
@click.option(
    '--broker-password',
    envvar='LISEI_BROKER_PASSWORD',
    default='guest',
    show_default=True,
    help='[rabbitmq] password (or $LISEI_BROKER_PASSWORD: keeps it off the command line).',
)
def cmd_profile(**kwargs: t.Any) -> None:
    """Create or reuse an AiiDA profile.

    \b
    sqlite + zmq: embedded, no services (like `verdi presto --use-zeromq`).
    postgres: creates the role and the database (TEMPLATE template0) if missing.
    rabbitmq: checks the server answers; silences the RabbitMQ version warning.
    The profile lives in $AIIDA_PATH/.aiida (default ~/.aiida). Next: `aiida-lisei setup localhost`.
    """
    name = kwargs['name']
    db_name = kwargs['db_name'] or default_db_name(name)
    setup_profile(
        name=name,
        backend=kwargs['backend'],
        broker=kwargs['broker'],
        email=kwargs['email'],
        set_default=kwargs['set_default'],
        caching=kwargs['caching'],
        postgres=PostgresSettings(
            host=kwargs['db_host'],
            port=kwargs['db_port'],
            superuser=kwargs['db_superuser'],
            db_name=db_name,
            db_user=kwargs['db_user'] or db_name,
            db_password=kwargs['db_password'],
        ),
        rabbitmq=RabbitMQSettings(
            host=kwargs['broker_host'],
            port=kwargs['broker_port'],
            username=kwargs['broker_username'],
            password=kwargs['broker_password'],
        ),
    )


@cmd_setup.command('localhost')
@PROFILE_OPTION
@click.option('--label', default='localhost', show_default=True, help='Label of the computer.')
@click.option(
    '--work-dir',
    type=click.Path(file_okay=False, resolve_path=True),
    help='Scratch directory of the jobs  [default: <AiiDA config dir>/scratch/<profile>]',
)
@click.option('--mpiprocs', type=click.IntRange(min=1), default=1, show_default=True, help=_MPIPROCS_HELP)
@click.option(
    '--mpirun-command', default='mpirun -np {tot_num_mpiprocs}', show_default=True, help='MPI launcher.'
)
@_THREADS_OPTION
def cmd_localhost(
    profile_name: str | None,
    label: str,
    work_dir: str | None,
    mpiprocs: int,
    mpirun_command: str,
    threads: int,
) -> None:
    """Register this machine (core.local + core.direct) and the codes of the study found on it.

    Codes (labels <name>@<label>): lisei-probe, lmp, dp, cp2k; a missing engine is skipped with the
    command that installs it. Each code exports PLUMED_KERNEL (when found) and the thread variables.
    """
    from aiida.manage.configuration import get_config

    profile = load_profile(profile_name)
    computer = get_or_create_computer(
        label,
        hostname='localhost',
        transport='core.local',
        scheduler='core.direct',
        workdir=work_dir or str(Path(get_config().dirpath, 'scratch', profile.name)),
        mpirun_command=mpirun_command,
        mpiprocs=mpiprocs,
        poll_interval=1.0,
        description='this machine, registered by `aiida-lisei setup localhost`',
    )
    # no login shell: every command (the scheduler's `ps` polls included) would run the user's shell start-up,
    # e.g. `pyenv rehash` under a lock (seen here: warnings, and 60 s waits when the lock is stale); the codes
    # carry what they need in their prepend text and absolute paths
    configure_computer(computer, safe_interval=0, use_login_shell=False)
    kernel = find_plumed_kernel()
    register_codes(
        computer,
        lambda names: next(filter(None, map(which, names)), None),
        plumed_kernel=str(kernel) if kernel else None,
        threads=threads,
    )


def _auth_params(
    transport: str,
    *,
    hostname: str,
    port: int | None,
    username: str | None,
    key_filename: str | None,
    key_policy: str,
    safe_interval: float | None,
) -> dict[str, t.Any]:
    """Authentication parameters of ``transport``, checked against the options given."""
    if transport == 'core.ssh':
        return {
            'username': username or getpass.getuser(),
            'port': port or 22,
            'key_filename': os.path.expanduser(key_filename) if key_filename else None,
            'key_policy': key_policy,
            'load_system_host_keys': True,
            'safe_interval': safe_interval,
        }
    given = [
        name
        for name, value in (('--port', port), ('--username', username), ('--key-filename', key_filename))
        if value is not None
    ]
    if given:
        raise click.UsageError(
            f'{", ".join(given)} apply to --transport core.ssh only; for {transport} put them in the '
            '`Host` entry of ~/.ssh/config (--hostname may be that alias).'
        )
    if transport == 'core.ssh_async':
        return {'host': hostname, 'safe_interval': safe_interval}
    return {'safe_interval': safe_interval}


async def _find_executable(transport: Transport, engine_dir: str, prepend_text: str, names: tuple[str, ...]):
    """The first of ``names`` in ``engine_dir``, else on the remote ``PATH`` after ``prepend_text``."""
    for name in names:
        path = f'{engine_dir.rstrip("/")}/{name}'
        if await transport.path_exists_async(path):
            return path
    for name in names:
        retval, stdout, _ = await transport.exec_command_wait_async(
            f'{prepend_text}\ncommand -v {shlex.quote(name)}'
        )
        found = stdout.strip().splitlines()[-1:] if retval == 0 else []
        if found and found[0].startswith('/'):
            return found[0]
    return None


async def _find_plumed_kernel(transport: Transport, engine_dir: str, plumed_kernel: str | None) -> str | None:
    """Remote PLUMED kernel: ``--plumed-kernel`` if given, else one in ``<engine-dir>/../plumed-kernel``."""
    if plumed_kernel:
        if not await transport.path_exists_async(plumed_kernel):
            raise click.ClickException(
                f'--plumed-kernel {plumed_kernel} does not exist on the remote computer.'
            )
        return plumed_kernel
    root = shlex.quote(str(Path(engine_dir).parent / 'plumed-kernel'))
    retval, stdout, _ = await transport.exec_command_wait_async(
        f'find {root} -name libplumedKernel.so -print -quit'
    )
    return stdout.strip().splitlines()[-1] if retval == 0 and stdout.strip() else None


async def _inspect_remote(
    computer: Computer, engine_dir: str, plumed_kernel: str | None
) -> tuple[dict[tuple[str, ...], str | None], str | None]:
    """Open the transport of ``computer``; return the executables of :data:`CODES` and the PLUMED kernel.

    Uses the transport's ``*_async`` methods on a private event loop, so that it needs neither the daemon nor
    a broker (the blocking API of ``core.ssh_async`` runs on the runner's loop, which needs the broker).
    """
    transport = computer.get_transport()
    try:
        await transport.open_async()
    except Exception as exception:
        raise click.ClickException(
            f'cannot connect to {computer.hostname} with {computer.transport_type}: {exception}\n'
            f'Computer {computer.label} is registered: fix the connection (host key in ~/.ssh/known_hosts, '
            f'key, user, port) and rerun this command, or test it: `verdi computer test {computer.label}`.'
        ) from exception
    try:
        if not await transport.path_exists_async(engine_dir):
            raise click.ClickException(f'--engine-dir {engine_dir} does not exist on {computer.hostname}.')
        prepend_text = computer.get_prepend_text()
        found = {
            spec.executables: await _find_executable(transport, engine_dir, prepend_text, spec.executables)
            for spec in CODES.values()
        }
        return found, await _find_plumed_kernel(transport, engine_dir, plumed_kernel)
    finally:
        await transport.close_async()


@cmd_setup.command('remote')
@PROFILE_OPTION
@click.option('--label', required=True, help='Label of the computer.')
@click.option(
    '--hostname',
    required=True,
    help='Host to connect to; with core.ssh_async it may be a Host alias of ~/.ssh/config.',
)
@click.option('--port', type=int, help='[core.ssh] SSH port  [default: 22]')
@click.option('--username', help='[core.ssh] remote user  [default: the local user]')
@click.option('--key-filename', type=click.Path(), help='[core.ssh] private key file.')
@click.option(
    '--key-policy',
    type=click.Choice(['RejectPolicy', 'WarningPolicy', 'AutoAddPolicy']),
    default='RejectPolicy',
    show_default=True,
    help='[core.ssh] unknown host keys: RejectPolicy needs the key in ~/.ssh/known_hosts (connect once '
    'with ssh); AutoAddPolicy trusts any key, use it only for hosts you control.',
)
@click.option(
    '--transport',
    type=click.Choice(['core.ssh', 'core.ssh_async', 'core.local']),
    default='core.ssh',
    show_default=True,
    help='Transport; core.local is this machine (tests without sshd).',
)
@click.option('--scheduler', default='core.slurm', show_default=True, help='Scheduler entry point.')
@click.option(
    '--work-dir', required=True, help='Scratch directory on the remote, e.g. /scratch/{username}/aiida.'
)
@click.option(
    '--engine-dir',
    required=True,
    help='Remote directory with the engines (a venv bin/ with lisei-probe, lmp, dp); missing ones are '
    'also looked up on the remote PATH after --prepend-text.',
)
@click.option(
    '--mpirun-command', default='srun -n {tot_num_mpiprocs}', show_default=True, help='MPI launcher.'
)
@click.option('--mpiprocs-per-machine', type=click.IntRange(min=1), help=_MPIPROCS_HELP)
@click.option('--prepend-text', default='', help='Computer prepend text, e.g. `module load cp2k`.')
@click.option(
    '--plumed-kernel', help='Remote libplumedKernel.so  [default: searched in <engine-dir>/../plumed-kernel]'
)
@click.option('--account', help='Scheduler account, stored on the computer for the CalcJobs of the study.')
@click.option('--partition', help='Scheduler partition (queue), stored like --account.')
@click.option('--qos', help='Scheduler QOS, stored like --account.')
@click.option(
    '--safe-interval',
    type=click.FloatRange(min=0),
    help='Seconds between connections  [default: the transport default]',
)
@click.option(
    '--poll-interval',
    type=click.FloatRange(min=0),
    help='Seconds between scheduler polls  [default: the transport default]',
)
@_THREADS_OPTION
def cmd_remote(**kwargs: t.Any) -> None:
    """Register a remote computer with a scheduler, then the codes of the study found on it.

    Opens the transport to look for the engines in --engine-dir (then on the remote PATH), registers
    the ones found (labels <name>@<label>) and lists the missing ones. --account/--partition/--qos are
    stored on the computer (`aiida_lisei.cli.computers.scheduler_options`) for the CalcJobs' options.
    """
    from aiida.common.exceptions import EntryPointError
    from aiida.plugins import SchedulerFactory

    try:
        SchedulerFactory(kwargs['scheduler'])
    except EntryPointError as exception:
        raise click.BadParameter(str(exception), param_hint='--scheduler') from exception
    auth = _auth_params(
        kwargs['transport'],
        hostname=kwargs['hostname'],
        port=kwargs['port'],
        username=kwargs['username'],
        key_filename=kwargs['key_filename'],
        key_policy=kwargs['key_policy'],
        safe_interval=kwargs['safe_interval'],
    )
    load_profile(kwargs['profile_name'])
    computer = get_or_create_computer(
        kwargs['label'],
        hostname=kwargs['hostname'],
        transport=kwargs['transport'],
        scheduler=kwargs['scheduler'],
        workdir=kwargs['work_dir'],
        mpirun_command=kwargs['mpirun_command'],
        mpiprocs=kwargs['mpiprocs_per_machine'],
        poll_interval=kwargs['poll_interval'],
        description=f'{kwargs["hostname"]}, registered by `aiida-lisei setup remote`',
        prepend_text=kwargs['prepend_text'],
        site_options={'account': kwargs['account'], 'queue_name': kwargs['partition'], 'qos': kwargs['qos']},
    )
    configure_computer(computer, **auth)
    # A private loop: asyncio.run() would unset the current loop of the caller (e.g. AiiDA's runner in tests).
    loop = asyncio.new_event_loop()
    try:
        found, kernel = loop.run_until_complete(
            _inspect_remote(computer, kwargs['engine_dir'], kwargs['plumed_kernel'])
        )
    finally:
        loop.close()
    missing = register_codes(computer, found.get, plumed_kernel=kernel, threads=kwargs['threads'])
    if missing:
        click.echo(f'missing on {computer.label}: {", ".join(missing)}')


@cmd_setup.command('plumed-kernel')
@click.option(
    '--target',
    type=click.Path(file_okay=False, path_type=Path),
    default=lambda: Path(sys.prefix) / 'plumed-kernel',
    show_default='<sys.prefix>/plumed-kernel',
    help='Install folder; the default is where aiida-lisei looks for the kernel.',
)
def cmd_plumed_kernel(target: Path) -> None:
    """Install the PLUMED kernel (libplumedKernel.so from the hillclimber wheel) and check that it loads.

    The wheel goes into its own folder (pip --no-deps --target) so that it does not shadow the plumed
    Python wrapper. Prints the `export PLUMED_KERNEL=...` line for shells and job scripts.
    """
    target = target.resolve()
    kernel = find_kernel_in(target)
    if kernel:
        exists('PLUMED kernel', str(kernel))
    else:
        command = [
            sys.executable,
            '-m',
            'pip',
            'install',
            '--no-deps',
            '--target',
            str(target),
            PLUMED_KERNEL_REQUIREMENT,
        ]
        click.echo('running: ' + shlex.join(command))
        if subprocess.run(command, check=False).returncode != 0:
            raise click.ClickException(
                f'pip could not install {PLUMED_KERNEL_REQUIREMENT} (needs PyPI); see its output above.'
            )
        kernel = find_kernel_in(target)
        if kernel is None:
            raise click.ClickException(
                f'{PLUMED_KERNEL_REQUIREMENT} installed no libplumedKernel.so in {target}.'
            )
        created('PLUMED kernel', str(kernel))
    api = plumed_kernel_api_version(kernel)
    if api is None:
        raise click.ClickException(
            f"the plumed wrapper cannot load {kernel}: check `pip install plumed==2.10.0` and the library's "
            f'dependencies (`ldd {kernel}`).'
        )
    click.echo(f'PLUMED kernel loads (API version {api}).')
    if target != (Path(sys.prefix) / 'plumed-kernel').resolve():
        click.echo('Not in the default folder: export PLUMED_KERNEL (below) wherever aiida-lisei runs.')
    click.echo(f'export PLUMED_KERNEL={shlex.quote(str(kernel))}')
