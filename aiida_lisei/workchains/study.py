"""``lisei.study``: the whole study as one work chain, so that the graph has one node that *is* the study.

Atomic models -> initial data -> concurrent learning -> moving-restraint DPMD (refining the ensemble on
the fly where it is asked to) -> validation of the models that drove it -> charges and nucleation analysis
-> gaps of the SEI and the bulk. Each step is its own work chain, run with the builder its
``get_builder_from_protocol`` makes from the step's protocol (the ``steps`` input: protocol name,
overrides, systems) and the outputs of the steps before it, so every step is cached and resumable on its
own. A step whose result is given as an input (``structures``, ``training_set``, ``models``) is skipped.
A restraint run that fails its physics guards ends the study with the guard's exit code (450-456), and no
analysis presents it as a result.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import Any

from aiida import orm
from aiida.engine import ProcessBuilder, ToContext, WorkChain, if_
from aiida.plugins import WorkflowFactory

from aiida_lisei.calculations.base import define_guard_exit_codes
from aiida_lisei.common.seeds import derive_seed
from aiida_lisei.data.deep_potential import DeepPotentialData
from aiida_lisei.data.training_set import TrainingSetData
from aiida_lisei.protocols import ProtocolMixin
from aiida_lisei.science.guards import GUARDS
from aiida_lisei.workchains.atomic_models import AtomicModelsWorkChain
from aiida_lisei.workchains.concurrent_learning import ConcurrentLearningWorkChain, extend_training_set
from aiida_lisei.workchains.model_validation import ModelValidationWorkChain
from aiida_lisei.workchains.nucleation_analysis import NucleationAnalysisWorkChain
from aiida_lisei.workchains.restraint_md import RestraintMdWorkChain

__all__ = ('STEPS', 'StudyWorkChain', 'check_steps')

#: The steps in the order they run -> the codes each needs (keys of the ``codes`` input).
STEPS: dict[str, tuple[str, ...]] = {
    'atomic_models': (),
    'initial_data': ('md_engine', 'label'),
    'concurrent_learning': ('dp', 'lmp', 'label'),
    'restraint_md': ('lmp_plumed',),
    'model_validation': ('lmp', 'dp', 'label'),
    'nucleation_analysis': ('qeq',),
    'electronic_structure': ('electronic_structure', 'lmp'),
}

#: Keys a step's settings may have (besides ``protocol`` and ``overrides``).
STEP_KEYS: dict[str, set[str]] = {
    'atomic_models': set(),
    'initial_data': {'workflow', 'systems'},
    'concurrent_learning': {'systems', 'builder_kwargs'},
    'restraint_md': {'system', 'refinement_rounds'},
    'model_validation': {'system', 'builder_kwargs'},
    'nucleation_analysis': {'allow_failed_guards'},
    'electronic_structure': {'frame', 'region', 'relax'},
}

#: Initial-data work chains a study can run (entry points): all take (md code, label code, structures).
INITIAL_DATA_WORKFLOWS = ('lisei.initial_data', 'lisei.initial_data.chgnet', 'lisei.initial_data.cp2k')


def check_steps(steps: Mapping[str, Any]) -> dict[str, Any]:
    """Return the steps' settings checked: known step names and keys, a ``protocol`` each, systems as lists;
    raise ``ValueError`` saying what to fix."""
    unknown = sorted(set(steps) - set(STEPS))
    if unknown:
        raise ValueError(f'unknown step(s) {unknown}: the steps are {list(STEPS)}')
    checked: dict[str, Any] = {}
    for name in STEPS:
        settings = steps.get(name)
        if settings is None:
            checked[name] = None
            continue
        if not isinstance(settings, Mapping):
            raise ValueError(f'step `{name}`: expected a mapping of settings or null, got {settings!r}')
        extra = sorted(set(settings) - {'protocol', 'overrides'} - STEP_KEYS[name])
        if extra:
            raise ValueError(
                f'step `{name}`: unknown key(s) {extra}; known: protocol, overrides, '
                f'{", ".join(sorted(STEP_KEYS[name])) or "nothing else"}'
            )
        if not isinstance(settings.get('protocol'), str):
            raise ValueError(f'step `{name}`: `protocol` (the name of its work chain protocol) is required')
        if 'systems' in STEP_KEYS[name] and not (
            isinstance(settings.get('systems'), list) and settings['systems']
        ):
            raise ValueError(f'step `{name}`: `systems` must be a non-empty list of atomic model names')
        if 'system' in STEP_KEYS[name] and not isinstance(settings.get('system'), str):
            raise ValueError(f'step `{name}`: `system` (an atomic model name) is required')
        rounds = settings.get('refinement_rounds', 0)
        if not isinstance(rounds, int) or isinstance(rounds, bool) or rounds < 0:
            raise ValueError(f'step `{name}`: `refinement_rounds` must be an integer >= 0, not {rounds!r}')
        if name == 'initial_data' and settings.get('workflow') not in INITIAL_DATA_WORKFLOWS:
            raise ValueError(
                f'step `initial_data`: `workflow` must be one of {INITIAL_DATA_WORKFLOWS}, '
                f'got {settings.get("workflow")!r}'
            )
        checked[name] = copy.deepcopy(dict(settings))
    return checked


def steps_to_run(steps: Mapping[str, Any], given: set[str]) -> list[str]:
    """Return the steps that run: those with settings whose result is not among the ``given`` inputs."""
    skipped_by = {
        'atomic_models': 'structures',
        'initial_data': 'training_set',
        'concurrent_learning': 'models',
    }
    return [name for name in STEPS if steps.get(name) is not None and skipped_by.get(name) not in given]


def validate_inputs(inputs: dict[str, Any], _ctx: Any = None) -> str | None:
    """Check the steps, that each step's input is made by an earlier step or given, and the codes."""
    if 'steps' not in inputs:
        return None
    try:
        steps = check_steps(inputs['steps'].get_dict())
    except ValueError as exception:
        return f'`steps`: {exception}'
    given = {name for name in ('structures', 'training_set', 'models') if inputs.get(name)}
    running = steps_to_run(steps, given)
    needs = {
        'initial_data': 'structures',
        'concurrent_learning': 'training_set',
        'model_validation': 'models',
        'restraint_md': 'models',
        'nucleation_analysis': 'models',
    }
    made_by = {'structures': 'atomic_models', 'training_set': 'initial_data', 'models': 'concurrent_learning'}
    for step in running:
        need = needs.get(step)
        if need and need not in given and made_by[need] not in running:
            return (
                f'step `{step}` needs `{need}`: give it as an input or run step `{made_by[need]}` '
                f'(its settings in `steps` are null)'
            )
    if 'electronic_structure' in running and 'restraint_md' not in running:
        return "step `electronic_structure` extracts the SEI of the study's restraint run: run `restraint_md`"
    if 'nucleation_analysis' in running and 'restraint_md' not in running:
        return "step `nucleation_analysis` analyses the study's restraint run: run step `restraint_md` too"
    if 'concurrent_learning' in running and 'structures' not in given and 'atomic_models' not in running:
        return (
            'step `concurrent_learning` explores the atomic models: give `structures` or run `atomic_models`'
        )
    codes = inputs.get('codes', {})
    missing = sorted({code for step in running for code in STEPS[step] if code not in codes})
    if 'restraint_md' in running and 'lmp' not in codes:
        missing = sorted({*missing, 'lmp'})  # the unbiased NPT equilibration before the pull
    if missing:
        return f'`codes` lacks {missing}, needed by the steps {running}: give each as a code (label@computer)'
    return None


class StudyWorkChain(ProtocolMixin, WorkChain):
    """The whole study: atomic models -> initial data -> concurrent learning -> restraint MD -> validation ->
    nucleation analysis -> gaps, each step a work chain of its own, every number traceable to its inputs."""

    _protocol_file = 'study'

    @classmethod
    def define(cls, spec):
        """Define the process specification."""
        super().define(spec)
        spec.input(
            'steps',
            valid_type=orm.Dict,
            help='Per step: `protocol` of its work chain, `overrides`, and `systems`/`system` (atomic model '
            'names); a step set to null is not run (docs/study.md).',
        )
        spec.input_namespace(
            'codes',
            valid_type=orm.AbstractCode,
            dynamic=True,
            help='md_engine (relax/MD of the initial data), label (labelling engine), dp (DeePMD-kit), lmp '
            '(LAMMPS with the DeePMD pair style), lmp_plumed (LAMMPS + PLUMED), qeq (lisei-qeq), '
            "electronic_structure (CP2K or VASP, as the step's protocol says).",
        )
        spec.input(
            'seed',
            valid_type=orm.Int,
            serializer=orm.to_aiida_type,
            help='Root seed: each step gets a seed derived from it and the step name.',
        )
        spec.input(
            'paper_size_models',
            valid_type=orm.Bool,
            default=lambda: orm.Bool(False),
            serializer=orm.to_aiida_type,
            help='Also build the atomic models at the paper size, to compare them with the paper.',
        )
        spec.input_namespace(
            'structures',
            valid_type=orm.StructureData,
            dynamic=True,
            required=False,
            help='Atomic models to start from (skips `atomic_models`); the sandwich needs its atom groups.',
        )
        spec.input(
            'training_set',
            valid_type=TrainingSetData,
            required=False,
            help='Initial training set (skips `initial_data`).',
        )
        spec.input_namespace(
            'models',
            valid_type=DeepPotentialData,
            dynamic=True,
            required=False,
            help='A trained ensemble (skips `concurrent_learning`): the first in sorted order drives the MD.',
        )
        spec.inputs.validator = validate_inputs

        spec.output_namespace(
            'structures', valid_type=orm.StructureData, dynamic=True, help='The atomic models used.'
        )
        spec.output(
            'training_set', valid_type=TrainingSetData, required=False, help='The final training set.'
        )
        spec.output_namespace('models', valid_type=DeepPotentialData, dynamic=True, help='The ensemble used.')
        spec.output('validation', valid_type=orm.Dict, required=False, help='RMSEs beside the paper.')
        spec.output('parity_plot', valid_type=orm.SinglefileData, required=False, help='Validation parity.')
        spec.output('trajectory', valid_type=orm.TrajectoryData, required=False, help='Restraint run.')
        spec.output('colvar', valid_type=orm.ArrayData, required=False, help='CV, s0, bias of the run.')
        spec.output(
            'guards', valid_type=orm.Dict, required=False, help='Physics guards of the restraint run.'
        )
        spec.output('summary', valid_type=orm.Dict, required=False, help='Nucleation summary vs the paper.')
        spec.output('gaps', valid_type=orm.Dict, required=False, help='Bulk and SEI gaps beside the paper.')
        spec.output('dos_figure', valid_type=orm.SinglefileData, required=False, help='DOS, bulk above SEI.')

        spec.exit_code(
            501,
            'ERROR_STEP_FAILED',
            message='Step `{step}` <{process}> failed: exit status {status}: {message}',
        )
        spec.exit_code(
            502,
            'ERROR_SEI_EXTRACTION',
            message='The SEI could not be extracted from the restraint run: {message}',
        )
        define_guard_exit_codes(spec)
        spec.outline(
            cls.setup,
            if_(cls.should_run('atomic_models'))(cls.run_atomic_models, cls.inspect_atomic_models),
            if_(cls.should_run('initial_data'))(cls.run_initial_data, cls.inspect_initial_data),
            if_(cls.should_run('concurrent_learning'))(cls.run_learning, cls.inspect_learning),
            if_(cls.should_run('restraint_md'))(cls.run_restraint, cls.inspect_restraint),
            if_(cls.should_run('model_validation'))(cls.run_validation, cls.inspect_validation),
            if_(cls.should_run('nucleation_analysis'))(cls.run_analysis, cls.inspect_analysis),
            if_(cls.should_run('electronic_structure'))(
                cls.run_electronic_structure, cls.inspect_electronic_structure
            ),
            cls.results,
        )

    @classmethod
    def get_builder_from_protocol(
        cls,
        codes: Mapping[str, orm.AbstractCode],
        *,
        protocol: str | None = None,
        overrides: dict[str, Any] | None = None,
        seed: int | None = None,
        **given: Any,
    ) -> ProcessBuilder:
        """Return a builder from a protocol (``demo`` by default, or ``paper``); no node is stored.

        :param codes: by role, see the ``codes`` input (only those the steps that run need).
        :param overrides: merged over the protocol, e.g. ``{'steps': {'restraint_md': {'overrides': ...}}}``.
        :param seed: root seed (default: the protocol's).
        :param given: ``structures``, ``training_set`` and/or ``models``: results to start from.
        """
        inputs = cls.get_protocol_inputs(protocol, overrides)
        builder = cls.get_builder()
        builder.steps = orm.Dict(check_steps(inputs['steps']))
        builder.codes = dict(codes)
        builder.seed = orm.Int(inputs['seed'] if seed is None else seed)
        builder.paper_size_models = orm.Bool(inputs['paper_size_models'])
        for name, value in given.items():
            builder[name] = value
        return builder

    # -- outline ----------------------------------------------------------------------------------------

    def setup(self):
        """Check the steps, note what is given, and report the plan."""
        self.ctx.steps = check_steps(self.inputs.steps.get_dict())
        given = {name for name in ('structures', 'training_set', 'models') if name in self.inputs}
        self.ctx.running = steps_to_run(self.ctx.steps, given)
        self.ctx.structures = dict(self.inputs.get('structures', {}))
        self.ctx.training_set = self.inputs.get('training_set')
        self.ctx.models = dict(sorted(self.inputs.get('models', {}).items()))
        self.ctx.sound = True
        skipped = [name for name in STEPS if name not in self.ctx.running]
        self.report(
            f'study (root seed {self.inputs.seed.value}): steps {", ".join(self.ctx.running)}'
            + (f'; not run: {", ".join(skipped)} (given or null)' if skipped else '')
        )

    @staticmethod
    def should_run(step: str):
        """Return the outline predicate: whether ``step`` runs (and the study is still sound)."""

        def predicate(self) -> bool:
            after_restraint = step in ('nucleation_analysis', 'electronic_structure')
            return step in self.ctx.running and (not after_restraint or self.ctx.sound)

        predicate.__name__ = f'should_run_{step}'
        return predicate

    def _seed(self, step: str) -> int:
        return derive_seed(self.inputs.seed.value, 'study', step)

    def _settings(self, step: str) -> dict[str, Any]:
        return self.ctx.steps[step]

    def _submit(self, step: str, builder: ProcessBuilder):
        builder.metadata.call_link_label = step
        node = self.submit(builder)
        self.report(
            f'{step}: {node.process_label}<{node.pk}> submitted (protocol {self._settings(step)["protocol"]})'
        )
        return ToContext(**{step: node})

    def _check(self, step: str):
        """Return ``ERROR_STEP_FAILED`` unless the child of ``step`` finished ok."""
        node = self.ctx[step]
        if node.is_finished_ok:
            return None
        return self.exit_codes.ERROR_STEP_FAILED.format(
            step=step,
            process=f'{node.process_label}<{node.pk}>',
            status=node.exit_status,
            message=node.exit_message or 'no message',
        )

    def _system(self, name: str) -> orm.StructureData:
        if name not in self.ctx.structures:
            raise ValueError(
                f'atomic model `{name}` is neither built nor given (have {sorted(self.ctx.structures)})'
            )
        return self.ctx.structures[name]

    def run_atomic_models(self):
        """Build the atomic models (and, if asked, the paper-size ones for the comparison)."""
        settings = self._settings('atomic_models')
        builder = AtomicModelsWorkChain.get_builder_from_protocol(
            protocol=settings['protocol'], overrides=settings.get('overrides')
        )
        futures = self._submit('atomic_models', builder)
        if self.inputs.paper_size_models.value:
            paper = AtomicModelsWorkChain.get_builder_from_protocol(protocol='paper')
            paper.metadata.call_link_label = 'paper_size_models'
            futures['paper_size_models'] = self.submit(paper)
        return futures

    def inspect_atomic_models(self):
        """Take the atomic models."""
        failed = self._check('atomic_models')
        if failed:
            return failed
        node = self.ctx.atomic_models
        self.ctx.structures = {
            name: node.outputs[name] for name in ('bcc_lithium', 'argyrodite', 'interface', 'sandwich')
        }
        if 'paper_size_models' in self.ctx and not self.ctx.paper_size_models.is_finished_ok:
            return self.exit_codes.ERROR_STEP_FAILED.format(
                step='paper_size_models',
                process=f'<{self.ctx.paper_size_models.pk}>',
                status=self.ctx.paper_size_models.exit_status,
                message='the paper-size models failed',
            )
        return None

    def run_initial_data(self):
        """Run the initial-data work chain on the step's systems."""
        settings = self._settings('initial_data')
        process = WorkflowFactory(settings['workflow'])
        builder = process.get_builder_from_protocol(
            self.inputs.codes.md_engine,
            self.inputs.codes.label,
            {name: self._system(name) for name in settings['systems']},
            protocol=settings['protocol'],
            overrides=settings.get('overrides'),
        )
        builder.seed = orm.Int(self._seed('initial_data'))
        return self._submit('initial_data', builder)

    def inspect_initial_data(self):
        """Merge the systems' training sets into one (a calcfunction, in the order of the step's systems)."""
        failed = self._check('initial_data')
        if failed:
            return failed
        training_sets = self.ctx.initial_data.outputs.training_sets
        first, *others = self._settings('initial_data')['systems']
        self.ctx.training_set = extend_training_set(
            training_sets[first],
            **{name: training_sets[name] for name in others},
            metadata={'call_link_label': 'merge_initial_data'},
        )
        self.report(
            f'initial training set: {self.ctx.training_set.nframes} frames <PK={self.ctx.training_set.pk}>'
        )
        return None

    def run_learning(self):
        """Run concurrent learning from the initial training set on the step's systems."""
        settings = self._settings('concurrent_learning')
        codes = self.inputs.codes
        builder = ConcurrentLearningWorkChain.get_builder_from_protocol(
            codes.dp,
            codes.lmp,
            codes.label,
            self.ctx.training_set,
            {name: self._system(name) for name in settings['systems']},
            protocol=settings['protocol'],
            overrides=settings.get('overrides'),
            seed=self._seed('concurrent_learning'),
            **settings.get('builder_kwargs', {}),
        )
        return self._submit('concurrent_learning', builder)

    def inspect_learning(self):
        """Take the ensemble and the final training set."""
        failed = self._check('concurrent_learning')
        if failed:
            return failed
        node = self.ctx.concurrent_learning
        self.ctx.models = dict(sorted(node.outputs.models.items()))
        self.ctx.training_set = node.outputs.training_set
        return None

    def _ensemble(self) -> tuple[DeepPotentialData, dict[str, DeepPotentialData]]:
        driver, *others = self.ctx.models
        return self.ctx.models[driver], {name: self.ctx.models[name] for name in others}

    def run_validation(self):
        """Validate the models that drove the restraint run (the refined ensemble where the run refined it,
        else the learning's) on the step's system: NPT DPMD, labelled frames, RMSE, parity plot."""
        settings = self._settings('model_validation')
        codes = self.inputs.codes
        model, others = self._ensemble()
        structure = self._system(settings['system'])
        restraint = self.ctx.get('restraint_md')
        if (
            restraint is not None
            and settings['system'] == self._settings('restraint_md')['system']
            and 'equilibration' in restraint.outputs
            and 'structure' in restraint.outputs.equilibration
        ):
            # the NPT run starts where the restraint run's equilibration left the system (its lateral cell
            # relaxed to the model's), not from the built cell
            structure = restraint.outputs.equilibration.structure
            self.report(
                f'model_validation starts from the equilibrated `{settings["system"]}` <PK={structure.pk}> '
                f'of the restraint run <PK={restraint.pk}>'
            )
        builder = ModelValidationWorkChain.get_builder_from_protocol(
            codes.lmp,
            codes.dp,
            codes.label,
            model,
            structure,
            protocol=settings['protocol'],
            overrides=settings.get('overrides'),
            ensemble=others,
            seed=self._seed('model_validation'),
            **settings.get('builder_kwargs', {}),
        )
        return self._submit('model_validation', builder)

    def inspect_validation(self):
        """Report the validation; a failed one (e.g. its NPT run fails a guard) is reported, the study goes
        on: the restraint run's own guards decide whether its results stand."""
        node = self.ctx.model_validation
        if node.is_finished_ok:
            self.out('validation', node.outputs.comparison)
            self.out('parity_plot', node.outputs.parity_plot)
            self.report(
                f'model validation <PK={node.pk}> finished: comparison <PK={node.outputs.comparison.pk}>'
            )
        else:
            self.report(
                f'model validation <PK={node.pk}> did not pass (exit status {node.exit_status}: '
                f'{node.exit_message}); going on: the restraint run is guarded on its own'
            )

    def run_restraint(self):
        """Run the moving-restraint DPMD (with its NPT equilibration) on the step's system."""
        settings = self._settings('restraint_md')
        codes = self.inputs.codes
        model, others = self._ensemble()
        builder = RestraintMdWorkChain.get_builder_from_protocol(
            codes.lmp_plumed,
            self._system(settings['system']),
            model,
            protocol=settings['protocol'],
            overrides=settings.get('overrides'),
            seed=self._seed('restraint_md'),
            deviation_models=others,
            equilibration_code=codes.lmp,
        )
        rounds = settings.get('refinement_rounds', 0)
        if rounds and 'concurrent_learning' in self.ctx.running:
            learning = self._settings('concurrent_learning')
            builder.refinement = {
                'max_rounds': orm.Int(rounds),
                **ConcurrentLearningWorkChain.get_refinement_inputs(
                    codes.dp,
                    codes.label,
                    self.ctx.training_set,
                    settings['system'],
                    self._system(settings['system']),
                    protocol=learning['protocol'],
                    overrides=learning.get('overrides'),
                    fine_tune=True,  # the learning's models go on learning (init from each)
                    **learning.get('builder_kwargs', {}),
                ),
            }
            self.report(
                f'restraint_md: refinement on the fly, at most {rounds} round(s), continuing the concurrent '
                f'learning (protocol {learning["protocol"]}) from its training set '
                f'<PK={self.ctx.training_set.pk}>'
            )
        elif rounds:
            self.report(
                'restraint_md: no refinement on the fly (`refinement_rounds` is set, but the models were '
                'given: the study has no concurrent learning to continue)'
            )
        return self._submit('restraint_md', builder)

    def inspect_restraint(self):
        """Attach the run; a failed guard ends the study with its exit code after the outputs are kept."""
        node = self.ctx.restraint_md
        for name in ('trajectory', 'colvar', 'guards'):
            if name in node.outputs:
                self.out(name, node.outputs[name])
        if 'refinement' in node.outputs and 'models' in node.outputs.refinement:
            self.ctx.models = dict(sorted(node.outputs.refinement.models.items()))
            self.ctx.training_set = node.outputs.refinement.training_set
            pks = ', '.join(str(model.pk) for model in self.ctx.models.values())
            self.report(
                f'restraint_md refined the ensemble: its models <PK={pks}> and '
                f'training set <PK={self.ctx.training_set.pk}> ({self.ctx.training_set.nframes} frames) are '
                "the study's from here on (validation, SEI relaxation, outputs)"
            )
        guard = next((guard for guard in GUARDS if guard.status == node.exit_status), None)
        if guard is not None:
            self.ctx.sound = False
            detail = node.exit_message or ''
            if 'guards' in node.outputs and guard.name in node.outputs.guards['guards']:
                detail = node.outputs.guards['guards'][guard.name]['detail']
            self.ctx.failed_guard = (guard.label, f'{detail} (restraint run <{node.pk}>)')
            self.report(
                f'the restraint run <PK={node.pk}> failed its physics guards: the analysis is not run'
            )
            return None
        return self._check('restraint_md')

    def run_analysis(self):
        """Run the charges and the nucleation analysis on the restraint trajectory."""
        settings = self._settings('nucleation_analysis')
        restraint = self.ctx.restraint_md
        builder = NucleationAnalysisWorkChain.get_builder_from_protocol(
            self.inputs.codes.qeq,
            restraint.outputs.trajectory,
            self._system(self._settings('restraint_md')['system']),
            protocol=settings['protocol'],
            overrides=settings.get('overrides'),
            colvar=restraint.outputs.colvar,
            allow_failed_guards=settings.get('allow_failed_guards', False),
        )
        return self._submit('nucleation_analysis', builder)

    def inspect_analysis(self):
        """Attach the nucleation summary."""
        failed = self._check('nucleation_analysis')
        if failed:
            return failed
        self.out('summary', self.ctx.nucleation_analysis.outputs.summary)
        return None

    def run_electronic_structure(self):
        """Extract the SEI (the analysis's cluster-onset frame, or the step's ``frame``, or the last frame),
        relax it with the driving model, and compute the gaps of the SEI and the bulk electrolyte."""
        from aiida_lisei.workchains.electronic_structure import sei_electronic_structure_builder

        settings = self._settings('electronic_structure')
        restraint = self.ctx.restraint_md
        analysis = self.ctx.get('nucleation_analysis')
        model, _ = self._ensemble()
        relax = settings.get('relax', True)
        try:
            builder = sei_electronic_structure_builder(
                self.inputs.codes.electronic_structure,
                restraint.outputs.trajectory,
                self._system(self._settings('restraint_md')['system']),
                analysis=analysis.outputs.analysis if analysis is not None else None,
                frame=settings.get('frame'),
                region=settings.get('region'),
                bulk=self.ctx.structures.get('argyrodite'),
                lammps_code=self.inputs.codes.lmp if relax else None,
                model=model if relax else None,
                protocol=settings['protocol'],
                overrides=settings.get('overrides'),
            )
        except ValueError as exception:
            return self.exit_codes.ERROR_SEI_EXTRACTION.format(message=str(exception))
        return self._submit('electronic_structure', builder)

    def inspect_electronic_structure(self):
        """Attach the gaps beside the paper and the DOS figure."""
        failed = self._check('electronic_structure')
        if failed:
            return failed
        node = self.ctx.electronic_structure
        if 'comparison' in node.outputs:
            self.out('gaps', node.outputs.comparison)
        if 'dos_figure' in node.outputs:
            self.out('dos_figure', node.outputs.dos_figure)
        return None

    def results(self):
        """Attach the models and structures; end with the restraint's guard code if it failed one."""
        self.out('structures', self.ctx.structures)
        if self.ctx.models:
            self.out('models', self.ctx.models)
        if self.ctx.training_set is not None:
            self.out('training_set', self.ctx.training_set)
        if not self.ctx.sound:
            label, detail = self.ctx.failed_guard
            return self.exit_codes[label].format(detail=f'{detail}: no analysis presents it as a result')
        self.report(f'study completed: {", ".join(self.ctx.running)}')
        return None
