"""``aiida-lisei import``: import an AiiDA archive so that what it brings is reused from the cache."""

from __future__ import annotations

from pathlib import Path

import click

from .utils import PROFILE_OPTION, load_profile


def import_and_rehash(path: Path) -> tuple[int, int]:
    """Import the archive at ``path`` into the loaded profile and compute the cache hash of every node it
    brought (AiiDA's import drops the hashes, so nothing imported would be reused). Return the import
    group's PK and the number of nodes rehashed."""
    from aiida import orm
    from aiida.tools.archive.imports import import_archive

    group_pk = import_archive(path, create_group=True)
    if group_pk is None:
        return 0, 0
    group = orm.load_group(group_pk)
    rehashed = 0
    for node in group.nodes:  # AiiDA decides at lookup which of them are valid cache sources
        node.base.caching.rehash()
        rehashed += 1
    return group_pk, rehashed


@click.command('import')
@click.argument('archive', type=click.Path(exists=True, dir_okay=False, path_type=Path))
@PROFILE_OPTION
def cmd_import(archive: Path, profile_name: str | None) -> None:
    """Import ARCHIVE (from `verdi archive create`) and rehash what it brought, so that its finished
    calculations serve as cache sources here (`verdi archive import` leaves them without hashes)."""
    profile = load_profile(profile_name)
    group_pk, rehashed = import_and_rehash(archive)
    if not group_pk:
        raise click.ClickException(f'{archive}: nothing was imported')
    click.secho(
        f'imported {archive} into profile {profile.name} (group <PK={group_pk}>); {rehashed} nodes rehashed: '
        'finished calculations among them are cache sources now',
        fg='green',
    )
