"""``lisei.initial_data``: the initial DeePMD dataset of the study (SI §2.1).

For every system (bcc Li 16, Li6PS5Cl 52, the 185-atom interface in the paper): relax it, make
``n_copies`` randomly perturbed copies (dpdata-style, seeded), run NVT MD (Nosé-Hoover chain) from
each copy with seeded velocities, keep every ``stride``-th written frame and label those frames with
``lisei.label``; return one training set per system.

All seeds derive from the one ``seed`` input (:func:`~aiida_lisei.workchains.functions.derive_seed`
of ``<system>_perturbation`` and ``<system>_copy_<i>``) through a calcfunction, so each sub-process
records its own seed as an input with the root seed upstream. Everything is deterministic, so a rerun
with caching enabled recomputes nothing.

The relax/MD engine is the process class :attr:`InitialDataWorkChain._engine_process` (``lisei.tblite_md``,
GFN1-xTB; ``lisei.initial_data.chgnet`` runs ``lisei.chgnet_md`` and labels with CHGNet): any process with the
same contract (inputs ``structure``, ``parameters`` with ``task`` = ``relax`` | ``md``, ``seed``; outputs
``structure``, ``trajectory``) can replace it in a subclass. The paper's AIMD (PBE, 20 ps) runs with
``lisei.initial_data.cp2k`` (:class:`~aiida_lisei.workchains.initial_data_cp2k.InitialDataCp2kWorkChain`,
engine ``lisei.cp2k.md``).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from aiida import orm
from aiida.common import AttributeDict
from aiida.engine import ProcessBuilder, WorkChain, calcfunction

from aiida_lisei.calculations.ase_md import TbliteMdCalculation
from aiida_lisei.common.validation import dict_port_validator
from aiida_lisei.data.frames import LABEL_PATTERN
from aiida_lisei.data.training_set import TrainingSetData
from aiida_lisei.engines.ase_md import DEFAULT_PARAMETERS
from aiida_lisei.engines.calculators import CALCULATORS
from aiida_lisei.protocols import ProtocolMixin
from aiida_lisei.workchains.functions import (
    check_perturbation_parameters,
    check_sampling_parameters,
    derive_seeds,
    merge_parameters,
    perturb_structure,
    sample_trajectory,
)
from aiida_lisei.workchains.label import LabelWorkChain

__all__ = ('InitialDataWorkChain', 'summarize_training_sets')

#: Inputs of ``lisei.label`` that this workchain sets itself, per system.
LABEL_EXCLUDED = ('structures', 'system_label', 'tags')


@calcfunction
def summarize_training_sets(**training_sets: TrainingSetData) -> orm.Dict:
    """Return ``{system: {nframes, natoms, formula}}`` of the training sets."""
    return orm.Dict(
        {
            label: {key: summary[key] for key in ('nframes', 'natoms', 'formula')}
            for label, training_set in sorted(training_sets.items())
            for summary in training_set.systems
        }
    )


def validate_inputs(inputs: dict[str, Any], _ctx: Any = None) -> str | None:
    """Check the system labels, the tasks of the ``relax`` and ``md`` parameters and the overrides."""
    systems = inputs.get('structures', {})
    if not systems:
        return 'no structures given'
    for label in systems:
        if not LABEL_PATTERN.match(label):
            return f'system label `{label}` must match {LABEL_PATTERN.pattern}'
    for namespace in ('relax', 'md'):
        parameters = inputs.get(namespace, {}).get('parameters')
        if parameters is not None and parameters.get('task') != namespace:
            return f'`{namespace}.parameters` must have task `{namespace}`, got {parameters.get("task")!r}'
    unknown = sorted(set(inputs.get('system_overrides', {})) - set(systems))
    if unknown:
        return f'`system_overrides` for {unknown}, which are not keys of `structures`'
    return None


class InitialDataWorkChain(ProtocolMixin, WorkChain):
    """Relax, perturb, run MD from and label each small system: one training set per system (SI §2.1)."""

    _protocol_file = 'initial_data'
    _engine_process = TbliteMdCalculation
    #: The ``lisei.label`` engine of the sampled frames.
    _label_engine: str | None = 'tblite'

    @classmethod
    def define(cls, spec):
        """Define the process specification."""
        super().define(spec)
        spec.input_namespace(
            'structures',
            valid_type=orm.StructureData,
            dynamic=True,
            help='The systems (Å), keyed by system label (e.g. `bcc_lithium`, `argyrodite`, `interface`).',
        )
        spec.input(
            'seed',
            valid_type=orm.Int,
            serializer=orm.to_aiida_type,
            help='Root seed: the perturbation and MD seeds of every system and copy derive from it.',
        )
        spec.input(
            'perturbation',
            valid_type=orm.Dict,
            serializer=orm.to_aiida_type,
            validator=dict_port_validator(check_perturbation_parameters),
            help='n_copies, cell_perturbation (fraction), atom_perturbation (Å), style (`uniform`, ...).',
        )
        spec.input(
            'sampling',
            valid_type=orm.Dict,
            serializer=orm.to_aiida_type,
            validator=dict_port_validator(check_sampling_parameters),
            help='Frames of each MD trajectory to label: every `stride`-th written frame after `skip_first`.',
        )
        spec.input(
            'relax_must_converge',
            valid_type=orm.Bool,
            default=lambda: orm.Bool(True),
            serializer=orm.to_aiida_type,
            help='Fail on an unconverged relaxation (else go on from its last structure, with a warning).',
        )
        spec.input_namespace(
            'system_overrides',
            valid_type=orm.Dict,
            dynamic=True,
            required=False,
            help='Per system: a dict merged over `relax.parameters` and `md.parameters` (own sections).',
        )
        for namespace, task in (('relax', 'relaxation'), ('md', 'MD run')):
            spec.expose_inputs(
                cls._engine_process,
                namespace=namespace,
                exclude=('structure', 'seed'),
                namespace_options={'help': f'Inputs of the {task} of each system (task `{namespace}`).'},
            )
        spec.expose_inputs(
            LabelWorkChain,
            namespace='label',
            exclude=LABEL_EXCLUDED,
            namespace_options={'help': 'Inputs of the labelling of the sampled frames of each system.'},
        )
        spec.inputs.validator = validate_inputs

        spec.output_namespace(
            'training_sets', valid_type=TrainingSetData, dynamic=True, help='One training set per system.'
        )
        spec.output('summary', valid_type=orm.Dict, help='Frames, atoms and formula of each training set.')

        spec.exit_code(501, 'ERROR_SUB_PROCESS_FAILED_RELAX', message='The relaxation of {systems} failed.')
        spec.exit_code(502, 'ERROR_SUB_PROCESS_FAILED_MD', message='No MD run of {systems} wrote a frame.')
        spec.exit_code(503, 'ERROR_NO_FRAMES_SAMPLED', message='No frame was sampled for {systems}.')
        spec.exit_code(504, 'ERROR_SUB_PROCESS_FAILED_LABEL', message='The labelling of {systems} failed.')
        spec.outline(
            cls.setup,
            cls.run_relax,
            cls.inspect_relax,
            cls.perturb,
            cls.run_md,
            cls.inspect_md,
            cls.sample,
            cls.run_label,
            cls.inspect_label,
            cls.results,
        )

    @classmethod
    def get_builder_from_protocol(
        cls,
        code: orm.AbstractCode,
        label_code: orm.AbstractCode,
        structures: Mapping[str, orm.StructureData],
        *,
        protocol: str | None = None,
        overrides: dict[str, Any] | None = None,
    ) -> ProcessBuilder:
        """Return a builder for ``structures`` from the ``demo`` or ``paper`` protocol.

        :param code: the relax/MD code (the ``lisei-tblite-md`` console script).
        :param label_code: the labelling code (the ``lisei-tblite`` console script).
        :param structures: systems keyed by label; per-system overrides of the protocol apply to the
            labels it names (others are ignored).
        :param overrides: nested dict merged over the protocol, e.g. ``{'md': {'parameters': {'md':
            {'n_steps': 50}}}}``; ``label`` holds ``protocol`` and ``overrides`` of ``lisei.label``.
        """
        inputs = cls.get_protocol_inputs(protocol, overrides)
        builder = cls.get_builder()
        builder.structures = dict(structures)
        builder.seed = orm.Int(inputs['seed'])
        builder.perturbation = orm.Dict(inputs['perturbation'])
        builder.sampling = orm.Dict(inputs['sampling'])
        builder.relax_must_converge = orm.Bool(inputs['relax_must_converge'])
        for namespace in ('relax', 'md'):
            cls._set_engine_inputs(builder[namespace], code, inputs[namespace])
        builder.system_overrides = {
            label: orm.Dict(value)
            for label, value in inputs.get('system_overrides', {}).items()
            if label in structures
        }
        if cls._label_engine is None:  # the subclass fills the labelling inputs itself
            return builder
        label = LabelWorkChain.get_builder_from_protocol(
            label_code,
            {},
            system_label='unused',
            engine=cls._label_engine,
            protocol=inputs['label'].get('protocol'),
            overrides=inputs['label'].get('overrides'),
        )
        builder.label = {
            key: value for key, value in label._inputs(prune=True).items() if key not in LABEL_EXCLUDED
        }
        return builder

    # --- engine hook (added for lisei.cp2k.md; see InitialDataCp2kWorkChain) ---
    @classmethod
    def _set_engine_inputs(cls, namespace: Any, code: orm.AbstractCode, inputs: Mapping[str, Any]) -> None:
        """Fill the ``relax`` or ``md`` namespace of a builder from the protocol's section ``inputs``; of the
        calculators' settings only those of the engine's calculator are kept."""
        calculator = cls._engine_process._CALCULATOR
        namespace.code = code
        namespace.parameters = orm.Dict(
            {
                key: value
                for key, value in inputs['parameters'].items()
                if key not in CALCULATORS or key == calculator
            }
        )
        namespace.metadata.options = inputs['metadata']['options']

    # --- end of engine hook ---

    @property
    def _systems(self) -> list[str]:
        """The system labels, sorted."""
        return sorted(self.inputs.structures)

    def setup(self):
        """Derive the seeds of every system and copy, and the relax and MD parameters of every system."""
        copies = self.inputs.perturbation['n_copies']
        labels = [
            name
            for system in self._systems
            for name in (f'{system}_perturbation', *(f'{system}_copy_{i:04d}' for i in range(copies)))
        ]
        self.ctx.seeds = derive_seeds(self.inputs.seed, orm.List(labels))
        self.ctx.parameters = {'relax': {}, 'md': {}}
        overrides = self.inputs.get('system_overrides', {})
        for namespace, parameters in self.ctx.parameters.items():
            for system in self._systems:
                parameters[system] = self.inputs[namespace].parameters
                if system in overrides:
                    parameters[system] = merge_parameters(parameters[system], overrides[system])
        self.report(
            f'initial data for {len(self._systems)} systems ({", ".join(self._systems)}): relax, {copies} '
            f'perturbed copies each, MD, label; root seed {self.inputs.seed.value}'
        )

    def run_relax(self):
        """Relax every system (all at once)."""
        for system in self._systems:
            inputs = self._engine_inputs('relax', system, self.inputs.structures[system], f'relax_{system}')
            node = self.submit(self._engine_process, **inputs)
            self.to_context(**{f'relax_{system}': node})
            self.report(f'{system}: relaxation <PK={node.pk}> submitted')

    def inspect_relax(self):
        """Keep the relaxed structures; accept an unconverged one if ``relax_must_converge`` is false."""
        self.ctx.relaxed, failed = {}, []
        not_converged = self._engine_process.exit_codes.ERROR_RELAX_NOT_CONVERGED.status
        accept_unconverged = not self.inputs.relax_must_converge.value
        for system in self._systems:
            node = self.ctx[f'relax_{system}']
            usable = node.is_finished_ok or (accept_unconverged and node.exit_status == not_converged)
            if not usable or 'structure' not in node.outputs:
                failed.append(system)
                self.report(
                    f'{system}: relaxation <PK={node.pk}> failed: [{node.exit_status}] {node.exit_message}'
                )
                continue
            self.ctx.relaxed[system] = node.outputs.structure
            summary = node.outputs.output_parameters
            state = 'relaxed' if node.is_finished_ok else 'NOT converged (going on from the last step)'
            self.report(
                f'{system}: {state} after {summary["steps"]} steps, E = {summary["final_energy"]:.4f} eV, '
                f'fmax = {summary["final_fmax"]:.3f} eV/Å'
            )
        if failed:
            return self.exit_codes.ERROR_SUB_PROCESS_FAILED_RELAX.format(systems=', '.join(failed))
        return None

    def perturb(self):
        """Make the seeded perturbed copies of every relaxed structure."""
        self.ctx.copies = {}
        for system in self._systems:
            seed = self.ctx.seeds[f'{system}_perturbation']
            self.ctx.copies[system] = perturb_structure(
                self.ctx.relaxed[system], self.inputs.perturbation, seed
            )
            self.report(f'{system}: {len(self.ctx.copies[system])} perturbed copies (seed {seed.value})')

    def run_md(self):
        """Run MD from every perturbed copy (all at once), each with its own seed."""
        for system in self._systems:
            for copy, structure in sorted(self.ctx.copies[system].items()):
                name = f'md_{system}_{copy}'
                inputs = self._engine_inputs('md', system, structure, name)
                inputs.seed = self.ctx.seeds[f'{system}_{copy}']
                node = self.submit(self._engine_process, **inputs)
                self.to_context(**{name: node})
            self.report(f'{system}: {len(self.ctx.copies[system])} MD runs submitted')

    def inspect_md(self):
        """Keep the trajectories, also the partial one of a run that stopped early (with a warning)."""
        self.ctx.trajectories, failed = {system: {} for system in self._systems}, []
        for system in self._systems:
            for copy in sorted(self.ctx.copies[system]):
                node = self.ctx[f'md_{system}_{copy}']
                if 'trajectory' not in node.outputs:
                    self.report(
                        f'{system} {copy}: MD <PK={node.pk}> failed: [{node.exit_status}] {node.exit_message}'
                    )
                    continue
                if not node.is_finished_ok:
                    self.report(
                        f'{system} {copy}: MD <PK={node.pk}> stopped early; using its partial trajectory'
                    )
                self.ctx.trajectories[system][copy] = node.outputs.trajectory
                summary = node.outputs.output_parameters
                self.report(
                    f'{system} {copy}: {summary["steps"]} MD steps, {summary["nframes"]} frames written, '
                    f'<T> = {summary["mean_temperature"]:.0f} K'
                )
            if not self.ctx.trajectories[system]:
                failed.append(system)
        if failed:
            return self.exit_codes.ERROR_SUB_PROCESS_FAILED_MD.format(systems=', '.join(failed))
        return None

    def sample(self):
        """Keep every ``stride``-th frame of each trajectory; tag each with its copy and MD step."""
        self.ctx.frames = {system: {} for system in self._systems}
        self.ctx.frame_tags = {system: {} for system in self._systems}
        for system, trajectories in self.ctx.trajectories.items():
            for copy, trajectory in sorted(trajectories.items()):
                for step, structure in sorted(sample_trajectory(trajectory, self.inputs.sampling).items()):
                    key = f'{copy}_{step}'
                    self.ctx.frames[system][key] = structure
                    self.ctx.frame_tags[system][key] = {
                        'copy': int(copy.split('_')[1]),
                        'md_step': int(step.split('_')[1]),
                    }
        empty = [system for system in self._systems if not self.ctx.frames[system]]
        if empty:
            return self.exit_codes.ERROR_NO_FRAMES_SAMPLED.format(systems=', '.join(empty))
        for system in self._systems:
            self.report(f'{system}: {len(self.ctx.frames[system])} frames sampled for labelling')
        return None

    def run_label(self):
        """Label the sampled frames of every system (one ``lisei.label`` per system)."""
        for system in self._systems:
            inputs = AttributeDict(self.exposed_inputs(LabelWorkChain, namespace='label'))
            inputs.structures = self.ctx.frames[system]
            inputs.system_label = orm.Str(system)
            md = self.ctx.parameters['md'][system].get_dict().get('md', {})
            temperature = md.get('temperature', DEFAULT_PARAMETERS['md']['temperature'])
            inputs.tags = orm.Dict(
                {'source': 'aimd', 'temperature': temperature, **self.ctx.frame_tags[system]}
            )
            inputs.metadata = {**inputs.get('metadata', {}), 'call_link_label': f'label_{system}'}
            node = self.submit(LabelWorkChain, **inputs)
            self.to_context(**{f'label_{system}': node})
            self.report(f'{system}: labelling <PK={node.pk}> submitted')

    def inspect_label(self):
        """Keep the training set of every system."""
        self.ctx.training_sets, failed = {}, []
        for system in self._systems:
            node = self.ctx[f'label_{system}']
            if 'training_set' not in node.outputs:
                failed.append(system)
                self.report(
                    f'{system}: labelling <PK={node.pk}> failed: [{node.exit_status}] {node.exit_message}'
                )
                continue
            self.ctx.training_sets[system] = node.outputs.training_set
            if not node.is_finished_ok or 'failed_frames' in node.outputs:
                self.report(f'{system}: some frames could not be labelled (see <PK={node.pk}>)')
        if failed:
            return self.exit_codes.ERROR_SUB_PROCESS_FAILED_LABEL.format(systems=', '.join(failed))
        return None

    def results(self):
        """Attach the training sets and their summary."""
        self.out('training_sets', self.ctx.training_sets)
        summary = summarize_training_sets(**self.ctx.training_sets)
        self.out('summary', summary)
        counts = ', '.join(f'{system} {entry["nframes"]}' for system, entry in summary.get_dict().items())
        self.report(f'training sets: {counts} frames <PK={summary.pk}>')

    def _engine_inputs(
        self, namespace: str, system: str, structure: orm.StructureData, link_label: str
    ) -> AttributeDict:
        """Return the inputs of a relaxation or MD run of ``system`` starting from ``structure``."""
        inputs = AttributeDict(self.exposed_inputs(self._engine_process, namespace=namespace))
        inputs.structure = structure
        inputs.parameters = self.ctx.parameters[namespace][system]
        inputs.metadata = {**inputs.get('metadata', {}), 'call_link_label': link_label}
        return inputs
