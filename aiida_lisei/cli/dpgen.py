"""``aiida-lisei dpgen import``: a DP-GEN param.json (and machine.json) as ``lisei.concurrent_learning``."""

from __future__ import annotations

import json
import typing as t
import warnings
from pathlib import Path

import click

from .utils import PROFILE_OPTION, load_profile, warn

if t.TYPE_CHECKING:
    from aiida import orm
    from aiida.engine import ProcessBuilder

    from aiida_lisei.formats.dpgen import RemoteComputer

#: ``fp_style`` -> the code ``setup localhost``/``setup remote`` registers for it (VASP is never registered).
FP_CODES = {'cp2k': 'cp2k', 'tblite': 'lisei-tblite'}


@click.group('dpgen')
def cmd_dpgen() -> None:
    """Move a DP-GEN project over: its param.json and machine.json."""


def _computer_labels(computers: list[RemoteComputer], base: str | None) -> list[str]:
    """Return a label per computer: ``base`` (default the host, ``dpgen-local`` for a local context)."""
    labels = []
    for computer in computers:
        options = computer.options
        labels.append(base or (options['hostname'] if options['transport'] == 'core.ssh' else 'dpgen-local'))
    if len(set(labels)) < len(labels):
        labels = [f'{label}-{"-".join(c.roles)}' for label, c in zip(labels, computers, strict=True)]
    return labels


def _setup_computers(ctx: click.Context, machine: Path, options: dict[str, t.Any]) -> dict[str, str]:
    """Register the computers and codes of ``machine.json`` with ``setup remote``; return role -> computer."""
    from aiida_lisei.formats.dpgen import machine_computers

    from .setup import cmd_remote

    computers = machine_computers(json.loads(machine.read_text()))
    missing = [item for computer in computers for item in computer.missing]
    for computer in computers:
        if computer.options and not (options['engine_dir'] or computer.options['engine_dir']):
            missing.append(
                f'the engine folder of {"/".join(computer.roles)}: its command is not an absolute path; '
                'pass --engine-dir (the remote folder with dp and lmp)'
            )
    if missing:
        raise click.ClickException(
            f'{machine} does not say everything `aiida-lisei setup remote` needs:\n'
            + '\n'.join(f'  - {item}' for item in missing)
        )
    roles = {}
    for computer, label in zip(
        computers, _computer_labels(computers, options['computer_label']), strict=True
    ):
        settings = dict(computer.options)
        settings['engine_dir'] = options['engine_dir'] or settings['engine_dir']
        click.echo(
            f'computer {label} ({", ".join(computer.roles)}): {settings["hostname"]}, {settings["scheduler"]}'
        )
        ctx.invoke(cmd_remote, profile_name=options['profile_name'], label=label, **settings)
        roles.update(dict.fromkeys(computer.roles, label))
    return roles


def _load_code(label: str, hint: str) -> orm.AbstractCode:
    """Return the code ``label``; fail with ``hint`` when it does not exist."""
    from aiida import orm
    from aiida.common.exceptions import MultipleObjectsError, NotExistent

    try:
        return orm.load_code(label)
    except (NotExistent, MultipleObjectsError) as exception:
        raise click.ClickException(f'no code {label}: {hint}') from exception


def _codes(fp_style: str, roles: dict[str, str], options: dict[str, t.Any]) -> dict[str, orm.AbstractCode]:
    """Return the ``dp``, ``lmp`` and ``fp`` codes: the options' labels, else those of the computers."""
    hint = 'register it (`aiida-lisei setup localhost`, `setup remote`, or MACHINE.json) or pass its label'
    labels = {
        'dp': options['dp_code'] or f'dp@{roles.get("train", "localhost")}',
        'lmp': options['lmp_code'] or f'lmp@{roles.get("model_devi", "localhost")}',
    }
    if options['fp_code']:
        labels['fp'] = options['fp_code']
    elif fp_style in FP_CODES:
        labels['fp'] = f'{FP_CODES[fp_style]}@{roles.get("fp", "localhost")}'
    else:
        raise click.ClickException(
            f'{fp_style} is licensed and not registered by aiida-lisei: create its code '
            '(`verdi code create core.code.installed --default-calc-job-plugin vasp.vasp ...`) and pass '
            '--fp-code LABEL'
        )
    return {name: _load_code(label, f'{hint} with --{name}-code') for name, label in labels.items()}


def describe_builder(builder: ProcessBuilder) -> list[str]:
    """Return what a ``lisei.concurrent_learning`` builder will run, one line each (K, eV/Å, steps)."""
    lines = ['systems:']
    for label, structure in builder.structures.items():
        lines.append(f'  {label}: {structure.get_formula()} ({len(structure.sites)} atoms)')
    schedule = builder.schedule.get_list()
    lines.append(
        f'iterations: at most {builder.max_iterations.value}, stop when every system is '
        f'{100 * builder.converged_accuracy.value:g} % accurate; seed {builder.seed.value}'
    )
    for index, item in enumerate(schedule, start=1):
        for entry in item:
            temperatures = ', '.join(f'{value:g}' for value in entry['temperatures'])
            pressure = f' at {entry["pressure"]:g} bar' if entry.get('pressure') is not None else ''
            lines.append(
                f'  {index}: {entry["system"]} at {temperatures} K, {entry["n_steps"]} steps '
                f'(frame every {entry["stride"]}), {entry["ensemble"]}{pressure}'
            )
    lines.append('trust levels (eV/Å):')
    for system, levels in builder.trust_levels.get_dict().items():
        shown = ', '.join(f'{key} {value:g}' for key, value in levels.items())
        lines.append(f'  {system}: {shown}')
    training = builder.train.dp_train.parameters['training']
    lines.append(
        f'training: {builder.num_models.value} models x {training["numb_steps"]} steps with '
        f'{builder.train.dp_train.code.full_label}'
    )
    lines.append(f'exploration: {builder.explore.code.full_label}')
    engine = builder.label.engine.value
    inputs = builder.label[engine]
    code = inputs.code if engine == 'tblite' else inputs[engine].code  # cp2k, vasp: the engine's work chain
    lines.append(
        f'labelling: {engine}, at most {builder.fp_task_max.value} frames per system and iteration, with '
        f'{code.full_label}'
    )
    if engine == 'vasp':
        potcars = ', '.join(
            f'{element} {name}' for element, name in inputs.potential_mapping.get_dict().items()
        )
        lines.append(f'  POTCARs of family {inputs.potential_family.value}: {potcars}')
    return lines


@cmd_dpgen.command('import')
@PROFILE_OPTION
@click.argument('param', type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.argument('machine', required=False, type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option('--submit', is_flag=True, help='Submit the work chain to the daemon (default: only show it).')
@click.option('--protocol', help='Protocol of lisei.concurrent_learning for what param.json does not set.')
@click.option('--seed', type=int, default=1, show_default=True, help='Root seed of every random draw.')
@click.option(
    '--converged-accuracy',
    type=click.FloatRange(0, 1),
    default=0.99,
    show_default=True,
    help='Stop early when every system is this accurate (DP-GEN runs all model_devi_jobs).',
)
@click.option('--potential-family', help='VASP: name of the uploaded POTCAR family (fp_pp_path).')
@click.option(
    '--potcar',
    'potcars',
    multiple=True,
    metavar='ELEMENT=NAME',
    help='VASP: the POTCAR of an element in the family, e.g. Li=Li_sv  [default: the element symbol]',
)
@click.option(
    '--engine-protocol', help='Protocol of the labelling engine (cp2k: gfn1_xtb, pbe; vasp: paper).'
)
@click.option('--dp-code', help='Label of the DeePMD-kit code  [default: dp@<train computer or localhost>]')
@click.option(
    '--lmp-code', help='Label of the LAMMPS code  [default: lmp@<model_devi computer or localhost>]'
)
@click.option('--fp-code', help='Label of the labelling code  [default: cp2k@<fp computer or localhost>]')
@click.option('--computer-label', help='MACHINE.json: label of the computer  [default: its host]')
@click.option('--engine-dir', help='MACHINE.json: remote folder of the engines when its commands do not say.')
@click.pass_context
def cmd_import(ctx: click.Context, param: Path, machine: Path | None, **options: t.Any) -> None:
    """Build lisei.concurrent_learning from a DP-GEN PARAM.json; show it, or submit it with --submit.

    \b
    Keys starting with `_` are comments. Every unsupported key is refused in one message, with the
    reason and the closest supported alternative (docs: "Coming from DP-GEN").
    MACHINE.json (DP-GEN's, dpdispatcher format): its SSH/Slurm contexts become computers and codes
    through `aiida-lisei setup remote`; the codes default to those computers' dp, lmp and cp2k.
    """
    from aiida_lisei.workchains.dpgen_import import (
        DpgenImportError,
        builder_from_dpgen_param,
        check_dpgen_param,
    )

    raw = json.loads(param.read_text())
    try:
        checked, _ = check_dpgen_param(raw, options['potential_family'])
    except DpgenImportError as exception:
        raise click.ClickException(f'{param} cannot be imported: {exception}') from exception
    load_profile(options['profile_name'])
    roles = _setup_computers(ctx, machine, options) if machine else {}
    codes = _codes(checked['fp_style'], roles, options)
    label_kwargs = {
        key: options[key] for key in ('potential_family', 'engine_protocol') if options[key] is not None
    }
    mapping = dict(item.split('=', 1) for item in options['potcars'] if '=' in item)
    if len(mapping) != len(options['potcars']):
        raise click.BadParameter('give ELEMENT=NAME, e.g. Li=Li_sv', param_hint='--potcar')
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter('always')
        try:
            builder = builder_from_dpgen_param(
                param,
                codes,
                protocol=options['protocol'],
                seed=options['seed'],
                converged_accuracy=options['converged_accuracy'],
                potential_mapping=mapping,
                **label_kwargs,
            )
        except ValueError as exception:
            raise click.ClickException(f'{param} cannot be imported: {exception}') from exception
    for message in caught:
        if 'DP-GEN' in str(message.message):
            warn(str(message.message))
    click.echo(f'{param}: lisei.concurrent_learning will run')
    click.echo('\n'.join(describe_builder(builder)))
    if not options['submit']:
        click.echo('Not submitted: rerun with --submit.')
        return
    from aiida.common.exceptions import InvalidOperation
    from aiida.engine import submit

    try:
        node = submit(builder)
    except InvalidOperation as exception:  # no daemon (and, with ZeroMQ, no broker) to hand it to
        raise click.ClickException(f'not submitted: {exception}') from exception
    click.secho(f'submitted lisei.concurrent_learning <{node.pk}>', fg='green')
    click.echo(f'follow it: verdi process status {node.pk}')
