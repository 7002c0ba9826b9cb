"""``aiida-lisei check``: which engines of the study are usable here, and which codes a computer has."""

from __future__ import annotations

import typing as t

import click

from aiida_lisei.engines.probe import probe_environment

from .computers import CODES
from .utils import PROFILE_OPTION, load_profile

#: Engines the demo cannot run without (the others are optional extras).
REQUIRED_ENGINES = ('deepmd-kit', 'lammps', 'lmp', 'plumed', 'plumed-kernel', 'cp2k', 'tblite', 'chgnet')


def _detail(result: dict[str, t.Any]) -> str:
    """Version, path or API version of an engine, as one string."""
    parts = [result.get('version'), result.get('path')]
    if result.get('api_version'):
        parts.append(f'API {result["api_version"]}')
    return ', '.join(str(part) for part in parts if part) or '-'


def _print_codes(computer_label: str) -> None:
    """List the codes of ``computer_label`` in the loaded profile, then the study's codes it lacks."""
    from aiida import orm
    from aiida.common.exceptions import NotExistent

    try:
        computer = orm.load_computer(computer_label)
    except NotExistent as exception:
        raise click.ClickException(
            f'no computer {computer_label} in this profile: register it with `aiida-lisei setup localhost` '
            'or `aiida-lisei setup remote`.'
        ) from exception
    query = orm.QueryBuilder().append(orm.Computer, filters={'id': computer.pk}, tag='computer')
    query.append(orm.InstalledCode, with_computer='computer', project='*')
    codes = sorted(query.all(flat=True), key=lambda code: code.label)
    click.echo(f'\ncodes on {computer.label} ({computer.transport_type} + {computer.scheduler_type}):')
    for code in codes:
        click.echo(
            f'  {code.full_label:<30} {code.filepath_executable}  [{code.default_calc_job_plugin or "-"}]'
        )
    missing = sorted(set(CODES) - {code.label for code in codes})
    if missing:
        click.echo(f'  not registered: {", ".join(missing)}')


@click.command('check')
@click.option('--computer', 'computer_label', metavar='LABEL', help='Also list the codes of this computer.')
@PROFILE_OPTION
def cmd_check(computer_label: str | None, profile_name: str | None) -> None:
    """Report the engines of the study on this machine, with install commands for the missing ones.

    Exits with 1 if an engine the demo needs is missing (* in the table).
    """
    report = probe_environment()
    engines = report['engines']
    click.echo(f'engines on {report["host"]} (Python {report["python"]}):')
    for name, result in engines.items():
        mark = click.style('✓', fg='green') if result['available'] else click.style('✗', fg='red')
        needed = '*' if name in REQUIRED_ENGINES else ' '
        click.echo(f'  {mark} {name:<14}{needed} {_detail(result)}')
    missing = [name for name, result in engines.items() if not result['available']]
    if missing:
        click.echo('\nto install the missing engines:')
        for name in missing:
            click.echo(f'  {name}: {engines[name]["how_to_install"]}')
    if computer_label:
        load_profile(profile_name)
        _print_codes(computer_label)
    needed_missing = [name for name in missing if name in REQUIRED_ENGINES]
    if needed_missing:
        raise click.ClickException(f'the demo needs the missing engines: {", ".join(needed_missing)}')
