"""``lisei.concurrent_learning``: DP-GEN's concurrent learning (train, explore, select, label).

Every iteration trains ``num_models`` DeePMD models (``lisei.dp_train``, one seed each) on the training set,
explores every system of the iteration's schedule entry at each of its temperatures (``lisei.exploration``),
classifies the frames by model deviation and draws candidates (``select_candidates``, DP-GEN 0.14's rules),
labels the candidates of every system (``lisei.label``, any engine, per system if wanted) and merges them
into the training set. The loop stops when every explored system is at least ``converged_accuracy``
accurate, or after ``max_iterations``; the final models are those of the last iteration (trained on the
set before its labels, as in DP-GEN), the ``training_set`` output holds every label.

Schedule (DP-GEN's ``model_devi_jobs``): a list with one item per iteration, each a list of entries
``{system, temperatures (K), n_steps, stride, ensemble, ...}`` (further keys are exploration parameters, e.g.
``pressure`` in bar, ``timestep`` in fs); when there are more iterations than items the last repeats.

Seeds: all seeds derive from the root ``seed`` with :func:`~aiida_lisei.common.seeds.derive_seed` (SHA-256
of the root and a path such as ``('train', 2, 3)``), and are inputs of the children, so that two runs with the
same inputs draw the same frames and a rerun with caching enabled reuses every finished process.

As in DP-GEN, ``fp_task_max`` (and the accuracy thresholds that scale it) apply to the pool of all
explorations of a system in an iteration; unlike DP-GEN, the draw is seeded.

Training reuse (DP-GEN's ``training_reuse_*``): with ``training_reuse`` given, from its ``from_iteration`` on
every model starts from the same model of the previous iteration (``dp train --init-frz-model``) and trains
``numb_steps`` steps from ``start_lr`` with the loss prefactors ``start_pref_e`` and ``start_pref_f``
(:func:`reused_training_parameters`). Unlike DP-GEN, old and new frames are drawn by system size (no
``training_reuse_old_ratio``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from aiida import orm
from aiida.common import AttributeDict
from aiida.engine import ToContext, WorkChain, calcfunction, if_, while_

from aiida_lisei.calculations.base import check_code, check_structure
from aiida_lisei.calculations.exploration import ExplorationCalculation
from aiida_lisei.common.seeds import check_seed, derive_seed
from aiida_lisei.common.validation import (
    dict_port_validator,
    finite_number,
    fraction,
    positive_integer,
    positive_number,
    safe_label,
)
from aiida_lisei.data.deep_potential import DeepPotentialData
from aiida_lisei.data.training_set import TrainingSetData, merge
from aiida_lisei.formats.lammps import check_exploration_parameters
from aiida_lisei.protocols import ProtocolMixin
from aiida_lisei.science.selection import (
    PAPER_TRUST_TABLE,
    TrustTable,
)
from aiida_lisei.workchains.dp_train import DpTrainWorkChain
from aiida_lisei.workchains.label import LabelWorkChain
from aiida_lisei.workchains.selection import DEFAULT_SELECTION_PARAMETERS, select_candidates

__all__ = (
    'ConcurrentLearningWorkChain',
    'check_schedule',
    'extend_training_set',
    'extract_candidates',
    'reused_training_parameters',
    'schedule_entry',
    'summarize_iteration',
    'temperature_key',
    'temperature_of_key',
)

#: Keys of a schedule entry besides the exploration parameters.
SCHEDULE_KEYS = ('system', 'temperatures')
#: Selection settings the ``selection`` input may hold (trust levels and fp_task_max have their own inputs).
SELECTION_KEYS = ('fp_task_min', 'model_devi_skip', 'fp_accurate_threshold', 'fp_accurate_soft_threshold')
#: Keys of ``training_reuse``: where each goes in DeePMD's input (``from_iteration`` is the workchain's).
TRAINING_REUSE_KEYS = {
    'from_iteration': None,
    'numb_steps': ('training', 'numb_steps'),
    'start_lr': ('learning_rate', 'start_lr'),
    'start_pref_e': ('loss', 'start_pref_e'),
    'start_pref_f': ('loss', 'start_pref_f'),
}


def temperature_key(temperature: float) -> str:
    """Return a link-label-safe key of a temperature in K, e.g. ``T300`` or ``T297p5``."""
    return f'T{temperature:g}'.replace('.', 'p')


def temperature_of_key(key: str) -> float:
    """Return the temperature (K) of a :func:`temperature_key`."""
    return float(key[1:].replace('p', '.'))


def check_schedule(schedule: Sequence[Sequence[Mapping[str, Any]]]) -> list[list[dict[str, Any]]]:
    """Return the schedule with complete exploration parameters; raise ``ValueError`` if invalid.

    Every entry needs ``system`` and a non-empty list ``temperatures`` (K); the other keys are exploration
    parameters (``n_steps`` required, see :data:`~aiida_lisei.formats.lammps.DEFAULT_EXPLORATION_PARAMETERS`).
    """
    if not schedule:
        raise ValueError('the schedule is empty')
    checked = []
    for index, item in enumerate(schedule, start=1):
        if not item:
            raise ValueError(f'schedule item {index} has no entry')
        entries = []
        for entry in item:
            missing = [key for key in SCHEDULE_KEYS if key not in entry]
            if missing:
                raise ValueError(f'schedule item {index}: an entry lacks {missing}')
            temperatures = entry['temperatures']
            if not isinstance(temperatures, list | tuple) or not temperatures:
                raise ValueError(f'schedule item {index}: `temperatures` must be a non-empty list (K)')
            parameters = {key: value for key, value in entry.items() if key not in SCHEDULE_KEYS}
            for temperature in temperatures:
                try:
                    check_exploration_parameters({**parameters, 'temperature': temperature})
                except ValueError as exception:
                    raise ValueError(f'schedule item {index} ({entry["system"]}): {exception}') from None
            entries.append({'system': entry['system'], 'temperatures': list(temperatures), **parameters})
        checked.append(entries)
    return checked


def schedule_entry(schedule: Sequence[Any], iteration: int) -> Any:
    """Return the schedule item of ``iteration`` (1-based); the last item repeats, as in DP-GEN."""
    return schedule[min(iteration, len(schedule)) - 1]


@calcfunction
def extract_candidates(iteration: orm.Int, **candidates: orm.TrajectoryData) -> dict[str, Any]:
    """Return the candidate frames of one system as ``structures`` (keys ``T<K>_<step>``) and their ``tags``.

    :param candidates: ``candidates`` outputs of the selections, keyed by :func:`temperature_key`.
    :return: ``structures`` (namespace of ``StructureData``, Å) and ``tags`` (``Dict``: ``iteration``,
        ``source`` = 'exploration', and per frame ``temperature`` (K) and ``step``).
    """
    structures, tags = {}, {'iteration': iteration.value, 'source': 'exploration'}
    for key in sorted(candidates):
        trajectory = candidates[key]
        temperature = temperature_of_key(key)
        for index, step in enumerate(trajectory.get_stepids()):
            frame = f'{key}_{int(step):09d}'
            structures[frame] = trajectory.get_step_structure(index)
            tags[frame] = {'temperature': temperature, 'step': int(step)}
    return {'structures': structures, 'tags': orm.Dict(tags)}


@calcfunction
def extend_training_set(training_set: TrainingSetData, **labels: TrainingSetData) -> TrainingSetData:
    """Return ``training_set`` followed by the new ``labels`` (in the sorted order of their keys)."""
    return merge(training_set, *(labels[key] for key in sorted(labels)))


@calcfunction
def summarize_iteration(iteration: orm.Int, **kwargs: Any) -> orm.Dict:
    """Return the statistics of one iteration.

    :param kwargs: ``statistics`` (``{system: Dict}``, the pooled selections' statistics), optional
        ``labels`` (``{system: TrainingSetData}``) and ``failed_frames`` (``{system: Dict}``).
    :return: ``{iteration, systems: {system: {accurate, candidate, failed (fractions pooled over the
        temperatures), counts, n_selected, n_labelled, n_failed_labels, temperatures: {K: statistics}}}}``.
    """
    labels, failed = kwargs.get('labels', {}), kwargs.get('failed_frames', {})
    systems = {}
    for system, node in sorted(kwargs['statistics'].items()):
        pooled = node.get_dict()
        temperatures = {
            f'{temperature_of_key(key):g}': stats for key, stats in pooled['explorations'].items()
        }
        systems[system] = {
            **pooled['fractions'],
            'counts': pooled['counts'],
            'n_selected': pooled['n_selected'],
            'task_max': pooled['task_max'],
            'n_labelled': labels[system].nframes if system in labels else 0,
            'n_failed_labels': len(failed[system].get_dict()) if system in failed else 0,
            'temperatures': temperatures,
        }
    return orm.Dict({'iteration': iteration.value, 'systems': systems})


def check_training_reuse(reuse: Mapping[str, Any]) -> dict[str, Any]:
    """Return ``reuse`` if it is valid; raise ``ValueError`` for unknown keys, a ``from_iteration`` below 2
    (the first iteration has no models to start from) or a value out of range."""
    unknown = set(reuse) - set(TRAINING_REUSE_KEYS)
    if unknown:
        raise ValueError(f'unknown training_reuse keys {sorted(unknown)}; known: {list(TRAINING_REUSE_KEYS)}')
    positive_integer(reuse.get('from_iteration'), 'training_reuse.from_iteration', minimum=2)
    if 'numb_steps' in reuse:
        positive_integer(reuse['numb_steps'], 'training_reuse.numb_steps')
    if 'start_lr' in reuse:
        positive_number(reuse['start_lr'], 'training_reuse.start_lr')
    for key in ('start_pref_e', 'start_pref_f'):
        if key in reuse and finite_number(reuse[key], f'training_reuse.{key}') < 0:
            raise ValueError(f'training_reuse.{key} must be >= 0, got {reuse[key]!r}')
    return dict(reuse)


def reused_training_parameters(parameters: Mapping[str, Any], reuse: Mapping[str, Any]) -> dict[str, Any]:
    """Return DeePMD's training input for a model that continues an earlier one (DP-GEN's training reuse).

    ``numb_steps``, ``start_lr`` and the energy and force prefactors of ``reuse`` replace those of
    ``parameters``; ``learning_rate.decay_steps`` is scaled with ``numb_steps`` so the rate still drops as
    often over the shorter run. Keys ``reuse`` does not give are kept.
    """
    result = {key: dict(value) if isinstance(value, Mapping) else value for key, value in parameters.items()}
    for key, path in TRAINING_REUSE_KEYS.items():
        if path is None or reuse.get(key) is None:
            continue
        section, name = path
        result.setdefault(section, {})[name] = reuse[key]
    old_steps = parameters.get('training', {}).get('numb_steps')
    old_decay = parameters.get('learning_rate', {}).get('decay_steps')
    if reuse.get('numb_steps') and old_steps and old_decay:
        result['learning_rate']['decay_steps'] = max(1, round(old_decay * reuse['numb_steps'] / old_steps))
    return result


def validate_schedule(schedule: orm.List, _ctx: Any = None) -> str | None:
    """Return an error message if the schedule is invalid."""
    try:
        check_schedule(schedule.get_list())
    except (ValueError, TypeError) as exception:
        return str(exception)
    return None


def validate_selection(selection: orm.Dict, _ctx: Any = None) -> str | None:
    """Return an error message if ``selection`` has other keys than :data:`SELECTION_KEYS`."""
    unknown = set(selection.get_dict()) - set(SELECTION_KEYS)
    return f'unknown selection settings {sorted(unknown)}; known: {list(SELECTION_KEYS)}' if unknown else None


def check_run_settings(inputs: dict[str, Any]) -> None:
    """Raise ``ValueError`` naming the input: codes missing or of the wrong plugin, ``max_iterations`` < 1,
    ``fp_task_max`` < 0, a seed out of range, ``converged_accuracy`` outside (0, 1], ``num_models`` < 2,
    structures with elements outside the type map of the models to train."""
    train = inputs.get('train', {}).get('dp_train', {})
    check_code(train.get('code'), '`train.dp_train.code`', ('lisei.dp_train',))
    check_code(inputs.get('explore', {}).get('code'), '`explore.code`', ('lisei.exploration',))
    for name, minimum in (('max_iterations', 1), ('fp_task_max', 0), ('num_models', 2)):
        if name in inputs:
            positive_integer(inputs[name].value, f'`{name}`', minimum)
    if 'seed' in inputs:
        check_seed(inputs['seed'].value)
    if 'converged_accuracy' in inputs:
        fraction(inputs['converged_accuracy'].value, '`converged_accuracy`', zero=False)
    for structure_name, structure in inputs.get('structures', {}).items():
        check_structure(structure, f'`structures.{structure_name}`')
    for system in inputs.get('structures', {}):
        safe_label(system, f'system label `structures.{system}`')
    type_map = trained_type_map(inputs)
    for structure_name, structure in inputs.get('structures', {}).items():
        missing = sorted(structure.get_symbols_set() - set(type_map or structure.get_symbols_set()))
        if missing:
            raise ValueError(
                f'`structures.{structure_name}` has elements {missing} outside the type map {type_map} of '
                "the models to train (`train.dp_train.parameters` model.type_map, else the training set's): "
                'the ensemble could not run it: add the elements to the type map, with labelled frames.'
            )


def trained_type_map(inputs: dict[str, Any]) -> list[str] | None:
    """Return the type map the ensemble will be trained with: ``model.type_map`` of the training
    parameters, else the training set's; ``None`` when neither is given."""
    parameters = inputs.get('train', {}).get('dp_train', {}).get('parameters')
    type_map = parameters.get_dict().get('model', {}).get('type_map') if parameters is not None else None
    if type_map is None and 'training_set' in inputs:
        type_map = inputs['training_set'].type_map
    return None if type_map is None else list(type_map)


def validate_inputs(inputs: dict[str, Any], _ctx: Any = None) -> str | None:
    """Check the run settings (:func:`check_run_settings`), then that every scheduled system has a structure
    and trust levels at each of its temperatures."""
    try:
        check_run_settings(inputs)
    except ValueError as exception:
        return str(exception)
    if 'schedule' not in inputs or 'structures' not in inputs:
        return None
    try:
        schedule = check_schedule(inputs['schedule'].get_list())
        table = TrustTable.from_dict(inputs['trust_levels'].get_dict()) if 'trust_levels' in inputs else None
    except (ValueError, TypeError, KeyError) as exception:
        return str(exception)
    table = table or PAPER_TRUST_TABLE
    for item in schedule:
        for entry in item:
            if entry['system'] not in inputs['structures']:
                return f'the schedule explores `{entry["system"]}`, which is not in `structures`'
            for temperature in entry['temperatures']:
                try:
                    table.lookup(entry['system'], temperature)
                except KeyError as exception:
                    return exception.args[0]
    return None


class ConcurrentLearningWorkChain(ProtocolMixin, WorkChain):
    """Train an ensemble, explore, select by model deviation, label, merge; until accurate (DP-GEN)."""

    _protocol_file = 'concurrent_learning'

    @classmethod
    def define(cls, spec):
        """Define the process specification."""
        super().define(spec)
        spec.input('training_set', valid_type=TrainingSetData, help='Initial labelled frames.')
        spec.input_namespace(
            'structures',
            valid_type=orm.StructureData,
            dynamic=True,
            help='Start configuration per system (Å).',
        )
        spec.input(
            'schedule',
            valid_type=orm.List,
            serializer=orm.to_aiida_type,
            validator=validate_schedule,
            help='Per iteration a list of {system, temperatures (K), n_steps, stride, ensemble, ...}; '
            'the last item repeats.',
        )
        spec.input(
            'trust_levels',
            valid_type=orm.Dict,
            required=False,
            serializer=orm.to_aiida_type,
            help='{system: {f_lo, f_hi} or [{t_min, t_max, f_lo, f_hi}, ...]} (eV/Å); default: the SI table.',
        )
        spec.input(
            'selection',
            valid_type=orm.Dict,
            required=False,
            serializer=orm.to_aiida_type,
            validator=validate_selection,
            help=f'DP-GEN selection settings {list(SELECTION_KEYS)}.',
        )
        spec.input(
            'fp_task_max',
            valid_type=orm.Int,
            serializer=orm.to_aiida_type,
            help='Most candidates labelled per system and iteration (pooled over its explorations).',
        )
        spec.input(
            'converged_accuracy',
            valid_type=orm.Float,
            default=lambda: orm.Float(0.99),
            serializer=orm.to_aiida_type,
            help='Stop when every explored system has at least this fraction of accurate frames.',
        )
        spec.input(
            'max_iterations', valid_type=orm.Int, serializer=orm.to_aiida_type, help='Most iterations.'
        )
        spec.input(
            'num_models',
            valid_type=orm.Int,
            default=lambda: orm.Int(4),
            serializer=orm.to_aiida_type,
            help='Models in the ensemble (the first drives the MD).',
        )
        spec.input('seed', valid_type=orm.Int, serializer=orm.to_aiida_type, help='Root of all seeds.')
        spec.input(
            'training_reuse',
            valid_type=orm.Dict,
            required=False,
            serializer=orm.to_aiida_type,
            validator=dict_port_validator(check_training_reuse),
            help="DP-GEN's training reuse: from iteration `from_iteration` (>= 2) on, each model starts from "
            'the same model of the previous iteration and trains `numb_steps` steps from `start_lr`, with '
            "`start_pref_e` and `start_pref_f` (each optional: the training parameters' otherwise).",
        )
        spec.expose_inputs(
            DpTrainWorkChain,
            namespace='train',
            exclude=('dp_train.training_set', 'dp_train.seed'),
            namespace_options={
                'help': 'Inputs of every `lisei.dp_train` (training set and seed are set here).'
            },
        )
        spec.expose_inputs(
            ExplorationCalculation,
            namespace='explore',
            exclude=('structure', 'models', 'seed', 'parameters'),
            namespace_options={'help': 'Inputs of every `lisei.exploration`.'},
        )
        spec.input(
            'explore.parameters',
            valid_type=orm.Dict,
            required=False,
            serializer=orm.to_aiida_type,
            help='Exploration parameters shared by all runs (timestep fs, dampings fs); the schedule wins.',
        )
        spec.expose_inputs(
            LabelWorkChain,
            namespace='label',
            exclude=('structures', 'system_label', 'tags'),
            namespace_options={'help': 'Inputs of every `lisei.label`.'},
        )
        spec.input_namespace(
            'label_overrides',
            dynamic=True,
            required=False,
            help='Per system, inputs merged over `label` (e.g. another engine and its code).',
        )
        spec.inputs.validator = validate_inputs

        spec.output_namespace(
            'models', valid_type=DeepPotentialData, dynamic=True, help='The final ensemble.'
        )
        spec.output('training_set', valid_type=TrainingSetData, help='Initial set plus all labels.')
        spec.output_namespace(
            'iterations', valid_type=orm.Dict, dynamic=True, help='Statistics per iteration.'
        )
        spec.exit_code(501, 'ERROR_TRAINING_FAILED', message='Training of model {index} failed: {message}')
        spec.exit_code(502, 'ERROR_EXPLORATION_FAILED', message='Exploration {key} failed without outputs.')
        spec.exit_code(503, 'ERROR_LABELLING_FAILED', message='Labelling of `{system}` failed: {message}')
        spec.outline(
            cls.setup,
            while_(cls.should_run_iteration)(
                cls.run_training,
                cls.inspect_training,
                cls.run_exploration,
                cls.inspect_exploration,
                cls.run_selection,
                if_(cls.has_candidates)(
                    cls.run_labelling,
                    cls.inspect_labelling,
                    cls.merge_training_set,
                ),
                cls.summarize_iteration,
            ),
            cls.results,
        )

    @classmethod
    def get_builder_from_protocol(
        cls,
        dp_code: orm.AbstractCode,
        lmp_code: orm.AbstractCode,
        label_code: orm.AbstractCode,
        training_set: TrainingSetData,
        structures: Mapping[str, orm.StructureData],
        protocol: str | None = None,
        overrides: dict[str, Any] | None = None,
        seed: int | None = None,
        **label_kwargs: Any,
    ):
        """Return a builder from a protocol (``demo`` by default, or ``paper``); no node is stored.

        :param dp_code: DeePMD-kit's ``dp``; :param lmp_code: LAMMPS with the DeePMD pair style;
        :param label_code: the code of the labelling engine (``label.engine`` of the protocol).
        :param structures: start configuration per system; schedule entries of other systems are dropped.
        :param overrides: nested dict merged over the protocol; ``train`` and ``label`` hold the ``protocol``
            and ``overrides`` passed to the children's own ``get_builder_from_protocol``.
        :param seed: root seed (default: the protocol's).
        :param label_kwargs: further arguments of ``LabelWorkChain.get_builder_from_protocol`` (e.g.
            ``engine_protocol``, ``potential_family`` for VASP).
        """
        inputs = cls.get_protocol_inputs(protocol, overrides)
        schedule = [[entry for entry in item if entry['system'] in structures] for item in inputs['schedule']]
        schedule = [item for item in schedule if item]
        if not schedule:
            raise ValueError(f'the protocol schedule explores none of the given systems {sorted(structures)}')
        train = cls._train_protocol_inputs(dp_code, training_set, inputs['train'])
        label = {
            system: cls._label_protocol_inputs(label_code, structure, inputs['label'], label_kwargs)
            for system, structure in structures.items()
        }
        first = next(iter(structures))
        engine = inputs['label']['engine']

        builder = cls.get_builder()
        builder.training_set = training_set
        builder.structures = dict(structures)
        builder.schedule = orm.List(schedule)
        if 'trust_levels' in inputs:
            builder.trust_levels = orm.Dict(inputs['trust_levels'])
        builder.selection = orm.Dict(inputs['selection'])
        for name in ('fp_task_max', 'max_iterations', 'num_models'):
            builder[name] = orm.Int(inputs[name])
        builder.converged_accuracy = orm.Float(inputs['converged_accuracy'])
        builder.seed = orm.Int(inputs['seed'] if seed is None else seed)
        if 'training_reuse' in inputs:
            builder.training_reuse = orm.Dict(inputs['training_reuse'])
        builder.train._update(train)
        builder.explore.code = lmp_code
        builder.explore.parameters = orm.Dict(inputs['explore']['parameters'])
        builder.explore.metadata = inputs['explore']['metadata']
        builder.label._update(label[first])
        if engine != 'tblite':  # the engine's settings (k-points, cell-dependent options) follow each system
            builder.label_overrides = {system: {engine: label[system][engine]} for system in structures}
        return builder

    @classmethod
    def get_refinement_inputs(
        cls,
        dp_code: orm.AbstractCode,
        label_code: orm.AbstractCode,
        training_set: TrainingSetData,
        system: str,
        structure: orm.StructureData,
        protocol: str | None = None,
        overrides: dict[str, Any] | None = None,
        fine_tune: bool = False,
        **label_kwargs: Any,
    ) -> dict[str, Any]:
        """Return the ``refinement`` inputs of ``lisei.restraint_md`` that continue this protocol's learning
        on the fly: its training set, labelling and training, ``fp_task_max`` and the system's lower trust
        level (eV/Å; the upper one is the restraint's ``deviation_f_hi`` guard). No node is stored.

        :param system: the label of the new frames in the training set (the restraint run's system).
        :param structure: frames like the restraint run's (the labelling engine's settings follow its cell).
        :param fine_tune: each model starts from the one it replaces; with the protocol's ``training_reuse``
            it trains as a reused model of the learning does (its steps, learning rate and prefactors).
        """
        inputs = cls.get_protocol_inputs(protocol, overrides)
        default_f_lo = inputs['selection'].get('f_lo', 0.10)
        f_lo = inputs.get('trust_levels', {}).get(system, {}).get('f_lo', default_f_lo)
        train = cls._train_protocol_inputs(dp_code, training_set, inputs['train'])
        if fine_tune and 'training_reuse' in inputs:
            parameters = train['dp_train']['parameters'].get_dict()
            reused = reused_training_parameters(parameters, check_training_reuse(inputs['training_reuse']))
            train['dp_train']['parameters'] = orm.Dict(reused)
        return {
            'training_set': training_set,
            'selection': orm.Dict({'fp_task_max': inputs['fp_task_max'], 'f_lo': f_lo, 'system': system}),
            'label': cls._label_protocol_inputs(label_code, structure, inputs['label'], label_kwargs),
            'train': train,
            'fine_tune': orm.Bool(fine_tune),
        }

    @staticmethod
    def _train_protocol_inputs(
        code: orm.AbstractCode, training_set: TrainingSetData, protocol: dict[str, Any]
    ) -> dict[str, Any]:
        """Return the ``lisei.dp_train`` inputs of a protocol, without the training set and the seed."""
        train = DpTrainWorkChain.get_builder_from_protocol(
            code, training_set, protocol=protocol['protocol'], overrides=protocol.get('overrides')
        )._inputs(prune=True)
        for key in ('training_set', 'seed'):
            train['dp_train'].pop(key)
        return train

    @staticmethod
    def _label_protocol_inputs(
        code: orm.AbstractCode, structure: orm.StructureData, protocol: dict[str, Any], kwargs: dict[str, Any]
    ) -> dict[str, Any]:
        """Return the ``lisei.label`` inputs of a protocol for frames like ``structure`` (no frames)."""
        inputs = LabelWorkChain.get_builder_from_protocol(
            code,
            {'start': structure},
            system_label='start',
            engine=protocol['engine'],
            protocol=protocol['protocol'],
            overrides=protocol.get('overrides'),
            **kwargs,
        )._inputs(prune=True)
        for key in ('structures', 'system_label'):
            inputs.pop(key, None)
        return inputs

    # -- outline steps ----------------------------------------------------------------------------------

    def setup(self):
        """Check the schedule and trust levels, and start from the initial training set."""
        self.ctx.schedule = check_schedule(self.inputs.schedule.get_list())
        self.ctx.training_set = self.inputs.training_set
        self.ctx.iteration = 0
        self.ctx.converged = False
        self.ctx.iterations = {}
        self.report(
            f'concurrent learning from {self.inputs.training_set.nframes} frames: {len(self.ctx.schedule)} '
            f'schedule item(s), at most {self.inputs.max_iterations.value} iterations, stop at '
            f'{100 * self.inputs.converged_accuracy.value:g} % accurate'
        )

    def should_run_iteration(self) -> bool:
        """Return whether to run another iteration (not converged, below ``max_iterations``)."""
        return not self.ctx.converged and self.ctx.iteration < self.inputs.max_iterations.value

    def run_training(self):
        """Train the ensemble on the current training set, one seed per model."""
        self.ctx.iteration += 1
        self.ctx.entry = schedule_entry(self.ctx.schedule, self.ctx.iteration)
        reuse = self._training_reuse()
        futures = {}
        for index in range(1, self.inputs.num_models.value + 1):
            inputs = AttributeDict(self.exposed_inputs(DpTrainWorkChain, namespace='train'))
            inputs.dp_train = {
                **inputs.dp_train,
                'training_set': self.ctx.training_set,
                'seed': orm.Int(derive_seed(self.inputs.seed.value, 'train', self.ctx.iteration, index)),
            }
            if reuse is not None:
                inputs.dp_train['init_model'] = self.ctx.models[f'model_{index}']
                inputs.dp_train['parameters'] = reuse
            inputs.metadata = {
                **inputs.get('metadata', {}),
                'call_link_label': f'{self._prefix()}_train_{index}',
            }
            futures[f'train_{index}'] = self.submit(DpTrainWorkChain, **inputs)
        pks = ', '.join(str(node.pk) for node in futures.values())
        start = 'from scratch' if reuse is None else f"from iteration {self.ctx.iteration - 1}'s models"
        self.report(
            f'iteration {self.ctx.iteration}: training {len(futures)} models {start} on '
            f'{self.ctx.training_set.nframes} frames <PK={pks}>'
        )
        return ToContext(**futures)

    def inspect_training(self):
        """Collect the models; fail if a training failed."""
        self.ctx.models = {}
        for index in range(1, self.inputs.num_models.value + 1):
            node = self.ctx[f'train_{index}']
            if not node.is_finished_ok:
                message = f'{node.process_label}<{node.pk}> exit status {node.exit_status}'
                return self.exit_codes.ERROR_TRAINING_FAILED.format(index=index, message=message)
            self.ctx.models[f'model_{index}'] = node.outputs.model
        return None

    def run_exploration(self):
        """Explore every scheduled system at each of its temperatures with the ensemble."""
        base = self.inputs.explore.parameters.get_dict() if 'parameters' in self.inputs.explore else {}
        futures = {}
        for entry in self.ctx.entry:
            system = entry['system']
            parameters = {key: value for key, value in entry.items() if key not in SCHEDULE_KEYS}
            for temperature in entry['temperatures']:
                key = f'{system}_{temperature_key(temperature)}'
                inputs = AttributeDict(self.exposed_inputs(ExplorationCalculation, namespace='explore'))
                inputs.structure = self.inputs.structures[system]
                inputs.models = self.ctx.models
                inputs.parameters = orm.Dict({**base, **parameters, 'temperature': temperature})
                inputs.seed = orm.Int(
                    derive_seed(self.inputs.seed.value, 'explore', self.ctx.iteration, system, temperature)
                )
                inputs.metadata = {
                    **inputs.get('metadata', {}),
                    'call_link_label': f'{self._prefix()}_explore_{key}',
                }
                futures[f'explore_{key}'] = self.submit(ExplorationCalculation, **inputs)
        pks = ', '.join(str(node.pk) for node in futures.values())
        self.report(f'iteration {self.ctx.iteration}: {len(futures)} explorations <PK={pks}>')
        return ToContext(**futures)

    def inspect_exploration(self):
        """Keep every exploration with a trajectory (a blown-up run still gives frames); fail otherwise."""
        for system, temperature in self._explored():
            key = f'{system}_{temperature_key(temperature)}'
            node = self.ctx[f'explore_{key}']
            if not {'model_devi', 'trajectory'} <= set(node.outputs):
                return self.exit_codes.ERROR_EXPLORATION_FAILED.format(key=f'{key}<{node.pk}>')
            if not node.is_finished_ok:
                self.report(
                    f'exploration {key}<{node.pk}> failed ({node.exit_message}): using its frames so far'
                )
        return None

    def run_selection(self):
        """Classify the frames of each system's explorations and draw candidates from the pool (seeded)."""
        settings = self.inputs.selection.get_dict() if 'selection' in self.inputs else {}
        self.ctx.statistics, self.ctx.candidates = {}, {}
        explored: dict[str, list[float]] = {}
        for system, temperature in self._explored():
            explored.setdefault(system, []).append(temperature)
        for system, temperatures in explored.items():
            explorations, per_exploration = {}, {}
            for temperature in temperatures:
                key = temperature_key(temperature)
                node = self.ctx[f'explore_{system}_{key}']
                explorations[key] = {
                    'model_devi': node.outputs.model_devi,
                    'trajectory': node.outputs.trajectory,
                }
                per_exploration[key] = {'temperature': temperature}
            parameters = {
                **{name: value for name, value in settings.items() if name in DEFAULT_SELECTION_PARAMETERS},
                'system': system,
                'fp_task_max': self.inputs.fp_task_max.value,
                'explorations': per_exploration,
            }
            if 'trust_levels' in self.inputs:  # else the selection looks the SI's table up
                parameters['trust_levels'] = self.inputs.trust_levels.get_dict()
            seed = derive_seed(self.inputs.seed.value, 'select', self.ctx.iteration, system)
            results = select_candidates(
                orm.Dict(parameters),
                orm.Int(seed),
                **explorations,
                metadata={'call_link_label': f'{self._prefix()}_select_{system}'},
            )
            self.ctx.statistics[system] = results['statistics']
            if 'candidates' in results:
                self.ctx.candidates[system] = results['candidates']

    def has_candidates(self) -> bool:
        """Return whether any exploration gave candidates to label."""
        return bool(self.ctx.candidates)

    def run_labelling(self):
        """Label the candidates of every system with its engine."""
        iteration = orm.Int(self.ctx.iteration)
        futures = {}
        for system, candidates in sorted(self.ctx.candidates.items()):
            frames = extract_candidates(
                iteration, **candidates, metadata={'call_link_label': f'{self._prefix()}_extract_{system}'}
            )
            inputs = self._label_inputs(system)
            inputs.update(
                structures=frames['structures'],
                system_label=orm.Str(system),
                tags=frames['tags'],
                metadata={
                    **inputs.get('metadata', {}),
                    'call_link_label': f'{self._prefix()}_label_{system}',
                },
            )
            futures[f'label_{system}'] = self.submit(LabelWorkChain, **inputs)
            self.report(
                f'iteration {self.ctx.iteration}: labelling {len(frames["structures"])} candidates of '
                f'{system} with {inputs["engine"].value} <PK={futures[f"label_{system}"].pk}>'
            )
        return ToContext(**futures)

    def inspect_labelling(self):
        """Collect the labels; go on without a system whose every candidate failed, fail on other errors."""
        self.ctx.labels, self.ctx.failed_frames = {}, {}
        for system in sorted(self.ctx.candidates):
            node = self.ctx[f'label_{system}']
            if 'failed_frames' in node.outputs:
                self.ctx.failed_frames[system] = node.outputs.failed_frames
            if node.is_finished_ok:
                self.ctx.labels[system] = node.outputs.training_set
            elif node.exit_status == LabelWorkChain.exit_codes.ERROR_ALL_FRAMES_FAILED.status:
                self.report(f'no candidate of {system} could be labelled ({node.process_label}<{node.pk}>)')
            else:
                message = f'{node.process_label}<{node.pk}> exit status {node.exit_status}'
                return self.exit_codes.ERROR_LABELLING_FAILED.format(system=system, message=message)
        return None

    def merge_training_set(self):
        """Add the new labels to the training set."""
        if not self.ctx.labels:
            return
        before = self.ctx.training_set.nframes
        self.ctx.training_set = extend_training_set(
            self.ctx.training_set,
            **self.ctx.labels,
            metadata={'call_link_label': f'{self._prefix()}_merge'},
        )
        self.report(
            f'iteration {self.ctx.iteration}: training set {before} -> {self.ctx.training_set.nframes} '
            f'frames '
            f'<PK={self.ctx.training_set.pk}>'
        )

    def summarize_iteration(self):
        """Record the iteration's statistics, report them and decide whether the models are converged."""
        iteration = self.ctx.iteration
        kwargs = {'statistics': self.ctx.statistics}
        if self.has_candidates():
            kwargs.update(labels=self.ctx.labels, failed_frames=self.ctx.failed_frames)
        summary = summarize_iteration(
            orm.Int(iteration), **kwargs, metadata={'call_link_label': f'{self._prefix()}_summarize'}
        )
        self.ctx.iterations[f'iteration_{iteration:02d}'] = summary
        threshold = self.inputs.converged_accuracy.value
        short = []
        for system, data in summary['systems'].items():
            for temperature, stats in data['temperatures'].items():
                fractions = stats['fractions']
                self.report(
                    f'iteration {iteration}: {system} {temperature} K: {100 * fractions["accurate"]:.1f} % '
                    f'accurate, {100 * fractions["candidate"]:.1f} % candidates, '
                    f'{100 * fractions["failed"]:.1f} % failed; {stats["n_selected"]} selected'
                )
            if data['accurate'] < threshold:
                short.append(f'{system} {100 * data["accurate"]:.1f} %')
        labelled = {
            system: data['n_labelled'] for system, data in summary['systems'].items() if data['n_labelled']
        }
        new = ', '.join(f'{system} {count}' for system, count in labelled.items()) or 'none'
        self.report(
            f'iteration {iteration}: {sum(labelled.values())} new labels ({new}); training set '
            f'{self.ctx.training_set.nframes} frames; statistics <PK={summary.pk}>'
        )
        self.ctx.converged = not short
        if self.ctx.converged:
            self.report(f'iteration {iteration}: converged, every system >= {100 * threshold:g} % accurate')
        else:
            self.report(f'iteration {iteration}: not converged ({", ".join(short)} < {100 * threshold:g} %)')

    def results(self):
        """Attach the last ensemble, the merged training set and the statistics of every iteration."""
        self.out('models', self.ctx.models)
        self.out('training_set', self.ctx.training_set)
        self.out('iterations', self.ctx.iterations)
        state = 'converged' if self.ctx.converged else 'not converged'
        self.report(
            f'{state} after {self.ctx.iteration} iteration(s): {len(self.ctx.models)} models, training '
            f'set of '
            f'{self.ctx.training_set.nframes} frames'
        )

    # -- helpers ----------------------------------------------------------------------------------------

    def _training_reuse(self) -> orm.Dict | None:
        """Return the training parameters of this iteration's models if they continue the previous
        iteration's (``training_reuse``), else ``None`` (from scratch)."""
        if 'training_reuse' not in self.inputs:
            return None
        reuse = self.inputs.training_reuse.get_dict()
        if self.ctx.iteration < reuse['from_iteration']:
            return None
        return orm.Dict(reused_training_parameters(self.inputs.train.dp_train.parameters.get_dict(), reuse))

    def _prefix(self) -> str:
        """Return the call-link prefix of the current iteration, e.g. ``iteration_02``."""
        return f'iteration_{self.ctx.iteration:02d}'

    def _explored(self) -> list[tuple[str, float]]:
        """Return the ``(system, temperature)`` pairs explored in this iteration."""
        return [
            (entry['system'], temperature)
            for entry in self.ctx.entry
            for temperature in entry['temperatures']
        ]

    def _label_inputs(self, system: str) -> AttributeDict:
        """Return the inputs of ``lisei.label`` for ``system``: ``label`` updated with its overrides."""
        inputs = dict(self.exposed_inputs(LabelWorkChain, namespace='label'))
        overrides = self.inputs.get('label_overrides', {}).get(system)
        return AttributeDict(_merge_inputs(inputs, overrides or {}))


def _merge_inputs(left: Mapping[str, Any], right: Mapping[str, Any]) -> dict[str, Any]:
    """Return ``left`` updated recursively with ``right`` (nodes are kept, not copied)."""
    merged = {
        key: _merge_inputs(value, {}) if isinstance(value, Mapping) else value for key, value in left.items()
    }
    for key, value in right.items():
        if isinstance(value, Mapping):
            merged[key] = _merge_inputs(
                merged.get(key, {}) if isinstance(merged.get(key), Mapping) else {}, value
            )
        else:
            merged[key] = value
    return merged
