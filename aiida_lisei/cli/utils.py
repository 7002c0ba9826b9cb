"""Small helpers shared by the commands: messages and profile loading."""

from __future__ import annotations

import typing as t

import click

if t.TYPE_CHECKING:
    from aiida.manage.configuration import Profile

PROFILE_OPTION = click.option(
    '-p',
    '--profile',
    'profile_name',
    metavar='NAME',
    help='AiiDA profile to use (default: the loaded one, else the default profile).',
)


def exists(kind: str, label: str) -> None:
    """Say that ``kind label`` is already there and is reused."""
    click.echo(f'{kind} {label}: exists, reusing')


def created(kind: str, label: str, detail: str = '') -> None:
    """Say that ``kind label`` was created."""
    click.secho(f'{kind} {label}: created' + (f' ({detail})' if detail else ''), fg='green')


def warn(message: str) -> None:
    """Print a warning to stderr."""
    click.secho(f'Warning: {message}', fg='yellow', err=True)


def load_profile(name: str | None) -> Profile:
    """Load profile ``name`` (``None``: keep the loaded one, else the default); fail with a hint on error."""
    from aiida import load_profile as _load_profile
    from aiida.common.exceptions import MissingConfigurationError, ProfileConfigurationError

    try:
        return _load_profile(name, allow_switch=True)
    except (MissingConfigurationError, ProfileConfigurationError) as exception:
        raise click.ClickException(
            f'cannot load the AiiDA profile {name or "(default)"}: {exception}\n'
            'Create one with `aiida-lisei setup profile --name NAME`, or pass --profile NAME.'
        ) from exception
