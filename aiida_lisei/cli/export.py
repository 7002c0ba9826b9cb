"""``aiida-lisei export``: training sets, models and iterations in the formats DeePMD-kit and DP-GEN read."""

from __future__ import annotations

import typing as t
from pathlib import Path

import click

from .utils import PROFILE_OPTION, created, load_profile

if t.TYPE_CHECKING:
    from aiida import orm


@click.group('export')
def cmd_export() -> None:
    """Take data out: deepmd/npy training sets, frozen models, DP-GEN iteration folders."""


def _node(pk: str) -> orm.Node:
    """Load the node of a PK or UUID; fail with a message."""
    from aiida import orm
    from aiida.common.exceptions import MultipleObjectsError, NotExistent

    try:
        return orm.load_node(pk)
    except (NotExistent, MultipleObjectsError) as exception:
        raise click.ClickException(f'no node {pk}: {exception}') from exception


def _run(function: t.Callable[..., t.Any], *args: t.Any, **kwargs: t.Any) -> t.Any:
    """Call an exporter; turn its ``ValueError`` into a command-line error."""
    try:
        return function(*args, **kwargs)
    except ValueError as exception:
        raise click.ClickException(str(exception)) from exception


@cmd_export.command('training-set')
@PROFILE_OPTION
@click.argument('pk')
@click.argument('directory', type=click.Path(file_okay=False, path_type=Path))
def cmd_training_set(profile_name: str | None, pk: str, directory: Path) -> None:
    """Write training set PK (or a process's training_set) as deepmd/npy, one folder per system.

    DIRECTORY/provenance.json notes the UUIDs of the set, of its creator and of every labelling process.
    """
    from aiida_lisei.workchains.dpgen_export import export_training_set

    load_profile(profile_name)
    for path in _run(export_training_set, _node(pk), directory):
        created('deepmd/npy system', str(path))


@cmd_export.command('model')
@PROFILE_OPTION
@click.argument('pk')
@click.argument('file', type=click.Path(dir_okay=False, path_type=Path))
@click.option('--compressed', is_flag=True, help='Write the compressed model (dp compress) instead.')
def cmd_model(profile_name: str | None, pk: str, file: Path, compressed: bool) -> None:
    """Write the frozen DeePMD model PK (or a process's model) to FILE (for LAMMPS and `dp test`).

    FILE.provenance.json notes the model's UUID and metadata.
    """
    from aiida_lisei.workchains.dpgen_export import export_model

    load_profile(profile_name)
    created('frozen model', str(_run(export_model, _node(pk), file, compressed=compressed)))


@cmd_export.command('iteration')
@PROFILE_OPTION
@click.argument('pk')
@click.argument('directory', type=click.Path(file_okay=False, path_type=Path))
@click.option('--iteration', type=click.IntRange(min=1), help='1-based  [default: the last one explored]')
def cmd_iteration(profile_name: str | None, pk: str, directory: Path, iteration: int | None) -> None:
    """Write the explorations of one iteration of lisei.concurrent_learning PK in DP-GEN's layout.

    \b
    DIRECTORY/iter.<i>/01.model_devi/task.<system>.<task>/: input.lammps, conf.lmp, job.json,
    model_devi.out and traj/<step>.lammpstrj, as `dpgen run` writes them.
    """
    from aiida_lisei.workchains.dpgen_export import export_iteration

    load_profile(profile_name)
    for path in _run(export_iteration, _node(pk), directory, iteration):
        created('DP-GEN task', str(path))
