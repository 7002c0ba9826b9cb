"""``aiida-lisei workflow launch <name>``: a work chain of the study from its protocol, from the command line.

In aiida-quantumespresso's manner: one command per work chain, the builder from
``get_builder_from_protocol``, codes given with ``-X`` (repeatable; each code takes the role its default
CalcJob plugin names), data nodes by PK, UUID or label, then ``run`` in this process or ``submit`` to the
daemon (``--daemon``). ``--dry-run`` builds and validates the inputs and launches nothing.
"""

from __future__ import annotations

import json
import typing as t
from collections.abc import Callable, Mapping

import click
from aiida.cmdline.params import types
from aiida.cmdline.utils import decorators, echo

if t.TYPE_CHECKING:
    from aiida import orm
    from aiida.engine import ProcessBuilder

__all__ = ('CODE_ROLES', 'cmd_workflow', 'resolve_codes')

#: Role of a code -> the default CalcJob plugins a code of that role has (``aiida-lisei setup localhost``
#: registers ``dp`` as ``lisei.dp_train``, ``lmp`` as ``lisei.exploration``, ...).
CODE_ROLES: dict[str, tuple[str, ...]] = {
    'dp': ('lisei.dp_train', 'lisei.dp_test'),
    'lmp': ('lisei.exploration',),
    'lmp-plumed': ('lisei.restraint_md',),
    'label': ('lisei.tblite', 'lisei.chgnet', 'cp2k', 'vasp.vasp'),
    'tblite-md': ('lisei.tblite_md',),
    'chgnet-md': ('lisei.chgnet_md',),
    'cp2k': ('cp2k',),
    'qeq': ('lisei.qeq',),
}


def resolve_codes(
    codes: t.Sequence[orm.AbstractCode], roles: t.Sequence[str], optional: t.Sequence[str] = ()
) -> dict[str, orm.AbstractCode | None]:
    """Return ``{role: code}``: each role gets the first code whose default CalcJob plugin it accepts.

    :raises click.BadParameter: a required role has no code (the message names the plugins it needs).
    """
    resolved: dict[str, orm.AbstractCode | None] = {}
    for role in (*roles, *optional):
        match = [code for code in codes if code.default_calc_job_plugin in CODE_ROLES[role]]
        if not match and role in roles:
            given = (
                ', '.join(f'{code.full_label} ({code.default_calc_job_plugin})' for code in codes) or 'none'
            )
            raise click.BadParameter(
                f'no code for the role `{role}`: give -X with a code of plugin '
                f'{" or ".join(CODE_ROLES[role])} (given: {given})',
                param_hint='-X/--code',
            )
        resolved[role] = match[0] if match else None
    return resolved


def _mapping(values: t.Sequence[str], name: str) -> dict[str, orm.Node]:
    """``NAME=IDENTIFIER`` pairs -> ``{NAME: node}``."""
    from aiida import orm

    result = {}
    for value in values:
        key, sep, identifier = value.partition('=')
        if not sep or not key.isidentifier():
            raise click.BadParameter(f'`{value}`: write NAME=PK (NAME a valid link label)', param_hint=name)
        result[key] = orm.load_node(identifier)
    return result


def _overrides(value: str | None) -> dict[str, t.Any] | None:
    """The ``--overrides`` JSON or YAML file or inline JSON, as a dict."""
    if value is None:
        return None
    import pathlib

    import yaml

    path = pathlib.Path(value)
    text = path.read_text() if path.is_file() else value
    data = yaml.safe_load(text)
    if not isinstance(data, Mapping):
        raise click.BadParameter('a mapping is needed (JSON/YAML text or file)', param_hint='--overrides')
    return dict(data)


def launch(builder: ProcessBuilder, daemon: bool, dry_run: bool) -> orm.ProcessNode | None:
    """Validate ``builder``'s inputs, then submit (``daemon``), run, or only report them (``dry_run``)."""
    from aiida.engine import run_get_node, submit

    process_class = builder.process_class
    inputs = builder._inputs(prune=True)
    error = process_class.spec().inputs.validate(inputs)
    if error is not None:
        raise click.ClickException(f'the inputs of {process_class.__name__} are invalid: {error}')
    if dry_run:
        echo.echo_success(f'{process_class.__name__}: inputs valid, nothing launched (--dry-run)')
        echo.echo(json.dumps(_summary(inputs), indent=1, sort_keys=True, default=str))
        return None
    if daemon:
        node = submit(builder)
        echo.echo_success(f'submitted {process_class.__name__}<{node.pk}> to the daemon')
        return node
    echo.echo_info(f'running {process_class.__name__} in this process')
    _, node = run_get_node(builder)
    status = 'finished' if node.is_finished_ok else 'failed'
    (echo.echo_success if node.is_finished_ok else echo.echo_error)(
        f'{process_class.__name__}<{node.pk}> {status} [{node.exit_status}] {node.exit_message or ""}'.strip()
    )
    return node


def _summary(inputs: Mapping[str, t.Any]) -> dict[str, t.Any]:
    """The builder's inputs for the dry-run report: nodes by type and PK (or value), namespaces nested."""
    from aiida import orm

    summary: dict[str, t.Any] = {}
    for key, value in inputs.items():
        if isinstance(value, Mapping):
            summary[key] = _summary(value)
        elif isinstance(value, orm.AbstractCode):
            summary[key] = f'Code {value.full_label}'
        elif isinstance(value, orm.BaseType):
            summary[key] = value.value
        elif isinstance(value, orm.Node):
            summary[key] = f'{type(value).__name__}<{value.pk}>' if value.is_stored else type(value).__name__
        else:
            summary[key] = value
    return summary


def common_options(function: Callable) -> Callable:
    """``--protocol``, ``--overrides``, ``--daemon`` and ``--dry-run``."""
    for option in reversed(
        (
            click.option(
                '--protocol', default=None, help="Protocol name (demo, paper, ...) [default: the file's]"
            ),
            click.option(
                '--overrides',
                metavar='JSON|FILE',
                help='Nested dict merged over the protocol: inline JSON or a JSON/YAML file.',
            ),
            click.option('-d', '--daemon', is_flag=True, help='Submit to the daemon, do not run here.'),
            click.option('--dry-run', is_flag=True, help='Build and validate the inputs; launch nothing.'),
        )
    ):
        function = option(function)
    return function


CODES_OPTION = click.option(
    '-X',
    '--code',
    'codes',
    multiple=True,
    type=types.CodeParamType(),
    help='Code (label@computer, PK or UUID), repeatable: its default CalcJob plugin gives its role.',
)
SEED_OPTION = click.option('--seed', type=int, help="Root seed [default: the protocol's].")


def _node_option(*names: str, help: str, required: bool = True, multiple: bool = False) -> Callable:
    return click.option(*names, type=types.NodeParamType(), required=required, multiple=multiple, help=help)


def _structures_option(help_text: str) -> Callable:
    return click.option(
        '-S', '--structure', 'structures', multiple=True, required=True, metavar='NAME=PK', help=help_text
    )


def _build(factory: Callable[[], ProcessBuilder]) -> ProcessBuilder:
    """Call ``factory``; a ``ValueError`` of the protocol becomes a command-line error."""
    try:
        return factory()
    except ValueError as exception:
        raise click.ClickException(str(exception)) from exception


@click.group('workflow')
def cmd_workflow() -> None:
    """Launch the study's work chains from their protocols."""


@cmd_workflow.group('launch')
def cmd_launch() -> None:
    """Launch one work chain: codes with -X, data by PK, --daemon to submit."""


@cmd_launch.command('atomic-models')
@common_options
@decorators.with_dbenv()
def launch_atomic_models(protocol, overrides, daemon, dry_run) -> None:
    """lisei.atomic_models: bcc Li, Li6PS5Cl, the interface and the sandwich (no code needed)."""
    from aiida_lisei.workchains.atomic_models import AtomicModelsWorkChain

    builder = _build(lambda: AtomicModelsWorkChain.get_builder_from_protocol(protocol, _overrides(overrides)))
    launch(builder, daemon, dry_run)


def _launch_initial_data(entry_point: str, roles: tuple[str, str], codes, structures, protocol, overrides):
    from aiida.plugins import WorkflowFactory

    process_class = WorkflowFactory(entry_point)
    resolved = resolve_codes(codes, roles)
    return _build(
        lambda: process_class.get_builder_from_protocol(
            resolved[roles[0]],
            resolved[roles[1]],
            _mapping(structures, '--structure'),
            protocol=protocol,
            overrides=_overrides(overrides),
        )
    )


@cmd_launch.command('initial-data')
@CODES_OPTION
@_structures_option('System to sample, NAME=PK (repeatable), e.g. -S bcc_li=12 -S li2s=13.')
@common_options
@decorators.with_dbenv()
def launch_initial_data(codes, structures, protocol, overrides, daemon, dry_run) -> None:
    """lisei.initial_data: relax, perturb, sample (tblite MD), label (lisei-tblite-md, lisei-tblite)."""
    builder = _launch_initial_data(
        'lisei.initial_data', ('tblite-md', 'label'), codes, structures, protocol, overrides
    )
    launch(builder, daemon, dry_run)


@cmd_launch.command('initial-data-chgnet')
@CODES_OPTION
@_structures_option('System to sample, NAME=PK (repeatable).')
@common_options
@decorators.with_dbenv()
def launch_initial_data_chgnet(codes, structures, protocol, overrides, daemon, dry_run) -> None:
    """lisei.initial_data.chgnet: the same with CHGNet (codes lisei-chgnet-md, lisei-chgnet)."""
    builder = _launch_initial_data(
        'lisei.initial_data.chgnet', ('chgnet-md', 'label'), codes, structures, protocol, overrides
    )
    launch(builder, daemon, dry_run)


@cmd_launch.command('initial-data-cp2k')
@CODES_OPTION
@_structures_option('System to sample, NAME=PK (repeatable).')
@common_options
@decorators.with_dbenv()
def launch_initial_data_cp2k(codes, structures, protocol, overrides, daemon, dry_run) -> None:
    """lisei.initial_data.cp2k: the same with CP2K for the MD and the labels (code cp2k)."""
    builder = _launch_initial_data(
        'lisei.initial_data.cp2k', ('cp2k', 'cp2k'), codes, structures, protocol, overrides
    )
    launch(builder, daemon, dry_run)


@cmd_launch.command('dp-train')
@CODES_OPTION
@_node_option('-T', '--training-set', help='TrainingSetData to train on (PK, UUID or label).')
@SEED_OPTION
@common_options
@decorators.with_dbenv()
def launch_dp_train(codes, training_set, seed, protocol, overrides, daemon, dry_run) -> None:
    """lisei.dp_train: train (freeze, compress) one DeePMD model (code dp)."""
    from aiida_lisei.workchains.dp_train import DpTrainWorkChain

    code = resolve_codes(codes, ('dp',))['dp']
    builder = _build(
        lambda: DpTrainWorkChain.get_builder_from_protocol(
            code, training_set, protocol=protocol, seed=seed, overrides=_overrides(overrides)
        )
    )
    launch(builder, daemon, dry_run)


@cmd_launch.command('concurrent-learning')
@CODES_OPTION
@_node_option('-T', '--training-set', help='Initial TrainingSetData (PK, UUID or label).')
@_structures_option('Start configuration per explored system, NAME=PK (repeatable).')
@SEED_OPTION
@common_options
@decorators.with_dbenv()
def launch_concurrent_learning(
    codes, training_set, structures, seed, protocol, overrides, daemon, dry_run
) -> None:
    """lisei.concurrent_learning: the DP-GEN loop (codes dp, lmp and the labelling engine's)."""
    from aiida_lisei.workchains.concurrent_learning import ConcurrentLearningWorkChain

    resolved = resolve_codes(codes, ('dp', 'lmp', 'label'))
    builder = _build(
        lambda: ConcurrentLearningWorkChain.get_builder_from_protocol(
            resolved['dp'],
            resolved['lmp'],
            resolved['label'],
            training_set,
            _mapping(structures, '--structure'),
            protocol=protocol,
            overrides=_overrides(overrides),
            seed=seed,
        )
    )
    launch(builder, daemon, dry_run)


@cmd_launch.command('model-validation')
@CODES_OPTION
@_node_option('-M', '--model', help='DeepPotentialData to validate (PK, UUID or label).')
@_node_option('-s', '--structure', help='Start of the MD (PK, UUID or label).')
@_node_option('-E', '--ensemble', required=False, multiple=True, help='Further models of the ensemble.')
@SEED_OPTION
@common_options
@decorators.with_dbenv()
def launch_model_validation(
    codes, model, structure, ensemble, seed, protocol, overrides, daemon, dry_run
) -> None:
    """lisei.model_validation: MD with the model, dp test on labelled frames (codes lmp, dp, label)."""
    from aiida_lisei.workchains.model_validation import ModelValidationWorkChain

    resolved = resolve_codes(codes, ('lmp', 'dp', 'label'))
    builder = _build(
        lambda: ModelValidationWorkChain.get_builder_from_protocol(
            resolved['lmp'],
            resolved['dp'],
            resolved['label'],
            model,
            structure,
            protocol=protocol,
            overrides=_overrides(overrides),
            ensemble={f'model_{i}': node for i, node in enumerate(ensemble, 1)} or None,
            seed=seed,
        )
    )
    launch(builder, daemon, dry_run)


@cmd_launch.command('restraint-md')
@CODES_OPTION
@_node_option('-s', '--structure', help='The sandwich (GroupedStructureData; PK, UUID or label).')
@_node_option('-M', '--model', help='The frozen DeePMD model (PK, UUID or label).')
@_node_option('-E', '--deviation-model', 'deviation_models', required=False, multiple=True, help='Ensemble.')
@SEED_OPTION
@common_options
@decorators.with_dbenv()
def launch_restraint_md(
    codes, structure, model, deviation_models, seed, protocol, overrides, daemon, dry_run
) -> None:
    """lisei.restraint_md: the moving restraint on the sandwich (code lisei-lmp-plumed; lmp equilibrates)."""
    from aiida_lisei.workchains.restraint_md import RestraintMdWorkChain

    resolved = resolve_codes(codes, ('lmp-plumed',), optional=('lmp',))
    builder = _build(
        lambda: RestraintMdWorkChain.get_builder_from_protocol(
            resolved['lmp-plumed'],
            structure,
            model,
            protocol=protocol,
            overrides=_overrides(overrides),
            seed=seed,
            deviation_models={f'model_{i}': node for i, node in enumerate(deviation_models, 1)} or None,
            equilibration_code=resolved['lmp'],
        )
    )
    launch(builder, daemon, dry_run)


@cmd_launch.command('nucleation-analysis')
@CODES_OPTION
@_node_option('-t', '--trajectory', help='TrajectoryData of the restraint run (PK, UUID or label).')
@_node_option('-s', '--structure', help='The sandwich the run started from (PK, UUID or label).')
@_node_option('--colvar', required=False, help="The restraint's COLVAR ArrayData.")
@click.option('--allow-failed-guards', is_flag=True, help='Analyse a run that failed its guards.')
@common_options
@decorators.with_dbenv()
def launch_nucleation_analysis(
    codes, trajectory, structure, colvar, allow_failed_guards, protocol, overrides, daemon, dry_run
) -> None:
    """lisei.nucleation_analysis: environments, clusters, regions and QEq charges (code lisei-qeq)."""
    from aiida_lisei.workchains.nucleation_analysis import NucleationAnalysisWorkChain

    code = resolve_codes(codes, ('qeq',))['qeq']
    builder = _build(
        lambda: NucleationAnalysisWorkChain.get_builder_from_protocol(
            code,
            trajectory,
            structure,
            protocol=protocol,
            overrides=_overrides(overrides),
            colvar=colvar,
            allow_failed_guards=allow_failed_guards,
        )
    )
    launch(builder, daemon, dry_run)


#: The study's code roles -> the command line's roles that can fill them, first match wins.
STUDY_CODE_ROLES: dict[str, tuple[str, ...]] = {
    'md_engine': ('chgnet-md', 'tblite-md'),
    'label': ('label',),
    'dp': ('dp',),
    'lmp': ('lmp',),
    'lmp_plumed': ('lmp-plumed',),
    'qeq': ('qeq',),
    'electronic_structure': ('cp2k',),
}


@cmd_launch.command('study')
@CODES_OPTION
@_node_option('-T', '--training-set', required=False, help='Initial training set (skips `initial_data`).')
@SEED_OPTION
@common_options
@decorators.with_dbenv()
def launch_study(codes, training_set, seed, protocol, overrides, daemon, dry_run) -> None:
    """lisei.study: the whole study in one work chain (docs/study.md); each code takes its role from its
    plugin (a CP2K code serves the electronic structure, a labelling engine other than CP2K the labels)."""
    from aiida_lisei.workchains.study import StudyWorkChain

    labels = [code for code in codes if code.default_calc_job_plugin != 'cp2k']
    resolved = resolve_codes(codes, (), optional=tuple(dict.fromkeys(sum(STUDY_CODE_ROLES.values(), ()))))
    # CP2K labels only when no other labelling engine is given
    resolved['label'] = resolve_codes(labels, (), optional=('label',))['label'] or resolved['label']
    study_codes = {
        role: next((resolved[name] for name in names if resolved.get(name) is not None), None)
        for role, names in STUDY_CODE_ROLES.items()
    }
    given = {'training_set': training_set} if training_set is not None else {}
    builder = _build(
        lambda: StudyWorkChain.get_builder_from_protocol(
            {role: code for role, code in study_codes.items() if code is not None},
            protocol=protocol,
            overrides=_overrides(overrides),
            seed=seed,
            **given,
        )
    )
    launch(builder, daemon, dry_run)
