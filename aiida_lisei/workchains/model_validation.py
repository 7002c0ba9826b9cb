"""``lisei.model_validation``: test a DeePMD model on random frames of its own NPT DPMD run (paper §2, SI).

The paper validates its DP on the 185-atom Li/Li6PS5Cl interface: 200 ps of NPT DPMD with the model,
100 configurations drawn at random from the trajectory, VASP single points on them, and the RMSE of the
model against DFT: 5.45 meV/atom for energies and 93.9 meV/Å for forces (Figure 1d, e). This workchain
runs the same chain of processes with any engine:

``lisei.exploration`` (NPT DPMD driven by ``model``) → :func:`draw_frames` (``n_frames`` random frames
after the first ``equilibration_fraction`` of the run, drawn with a seed that is an input) →
``lisei.label`` (any engine) → ``lisei.dp_test`` (the model on the labels) → :func:`compare_with_paper`
(``comparison``: our RMSEs next to the paper's, flagged ``demo`` whenever the setup differs from the
paper's) and :func:`plot_parity` (``parity_plot``: a PNG with the energy-per-atom and force panels).

The exploration needs at least two models (it records their deviation along the run): the ``ensemble``
input adds models for that; without it ``model`` is passed twice and the deviation is zero.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
from aiida import orm
from aiida.common import AttributeDict
from aiida.engine import ProcessBuilder, ToContext, WorkChain, calcfunction

from aiida_lisei.calculations.base import define_guard_exit_codes, guard_exit_code
from aiida_lisei.calculations.dp_test import DpTestCalculation
from aiida_lisei.calculations.exploration import ExplorationCalculation
from aiida_lisei.common.seeds import derive_seed
from aiida_lisei.data.deep_potential import DeepPotentialData, ensemble_models, models_type_map
from aiida_lisei.data.training_set import TrainingSetData
from aiida_lisei.formats.lammps import check_exploration_parameters as check_md_parameters
from aiida_lisei.protocols import ProtocolMixin
from aiida_lisei.reporting.comparisons import validation_comparison
from aiida_lisei.reporting.tables import format_guard_report
from aiida_lisei.workchains.label import LabelWorkChain

__all__ = (
    'ModelValidationWorkChain',
    'compare_with_paper',
    'count_drawable_frames',
    'draw_frame_indices',
    'draw_frames',
    'drawable_indices',
    'plot_parity',
)

#: Name of the PNG file in the ``parity_plot`` output.
PARITY_PLOT_FILENAME = 'parity.png'


# ----------------------------------------------------------------------------------------------------------
# Pure helpers (no database access)
# ----------------------------------------------------------------------------------------------------------


def drawable_indices(steps: np.ndarray, equilibration_fraction: float) -> np.ndarray:
    """Return the indices of the frames that may be drawn: step > ``equilibration_fraction`` x last step.

    The first frame (step 0, the input configuration) is never drawn, even with a fraction of 0.
    """
    steps = np.asarray(steps)
    if steps.size == 0:
        return np.zeros(0, dtype=int)
    threshold = equilibration_fraction * float(steps.max())
    return np.flatnonzero((steps > threshold) & (steps > 0))


def count_drawable_frames(n_steps: int, stride: int, equilibration_fraction: float) -> int:
    """Return how many frames a complete run of ``n_steps`` dumped every ``stride`` steps offers."""
    return int(drawable_indices(np.arange(0, n_steps + 1, stride), equilibration_fraction).size)


def draw_frame_indices(
    steps: np.ndarray, n_frames: int, equilibration_fraction: float, seed: int
) -> np.ndarray:
    """Return ``n_frames`` sorted frame indices drawn without replacement after the equilibration.

    The draw is ``numpy.random.default_rng(seed).choice`` over :func:`drawable_indices`: the same steps,
    count, fraction and seed give the same frames. Raises ``ValueError`` if there are too few frames.
    """
    candidates = drawable_indices(steps, equilibration_fraction)
    if n_frames > candidates.size:
        raise ValueError(
            f'{n_frames} frames requested but only {candidates.size} frames lie after the first '
            f'{100 * equilibration_fraction:g} % of the run'
        )
    rng = np.random.default_rng(seed)
    return np.sort(rng.choice(candidates, size=n_frames, replace=False))


# ----------------------------------------------------------------------------------------------------------
# Calcfunctions
# ----------------------------------------------------------------------------------------------------------


@calcfunction
def draw_frames(
    trajectory: orm.TrajectoryData, n_frames: orm.Int, equilibration_fraction: orm.Float, seed: orm.Int
) -> dict[str, Any]:
    """Draw ``n_frames`` random frames after the first ``equilibration_fraction`` of ``trajectory``.

    :return: ``structures`` (namespace, keys ``step_<step>``, Å), ``tags`` (``Dict``: ``source`` =
        ``validation_md`` and per frame ``step`` and ``time`` in ps) and ``sampling`` (``Dict``: seed, counts,
        the drawn indices, steps and keys).
    """
    steps = np.asarray(trajectory.get_stepids())
    fraction = equilibration_fraction.value
    candidates = drawable_indices(steps, fraction)
    indices = draw_frame_indices(steps, n_frames.value, fraction, seed.value)
    times = trajectory.get_array('times') if 'times' in trajectory.get_arraynames() else None
    structures, tags = {}, {'source': 'validation_md'}
    for index in indices:
        key = f'step_{int(steps[index]):09d}'
        structures[key] = trajectory.get_step_structure(int(index))
        tags[key] = {'step': int(steps[index])}
        if times is not None:
            tags[key]['time'] = float(times[index])
    sampling = {
        'seed': seed.value,
        'n_frames': n_frames.value,
        'equilibration_fraction': fraction,
        'n_trajectory_frames': int(steps.size),
        'n_drawable_frames': int(candidates.size),
        'equilibration_step': fraction * float(steps.max()),
        'first_drawable_step': int(steps[candidates[0]]),
        'indices': [int(index) for index in indices],
        'steps': [int(steps[index]) for index in indices],
        'keys': sorted(structures),
    }
    return {'structures': structures, 'tags': orm.Dict(tags), 'sampling': orm.Dict(sampling)}


@calcfunction
def compare_with_paper(errors: orm.Dict, test_set: TrainingSetData, md_parameters: orm.Dict) -> orm.Dict:
    """Return the dp_test ``errors`` beside the paper's (``reporting.comparisons.validation_comparison``).

    The setup is read from the labels (engine and method of the level of theory, atoms, frames) and the MD
    parameters (ensemble, temperature K, pressure bar, ``n_steps`` x ``timestep`` in ps).
    """
    level = test_set.level_of_theory
    md = check_md_parameters(md_parameters.get_dict())
    natoms = sorted({system['natoms'] for system in test_set.systems})
    setup = {
        'engine': level['engine'],
        'method': level['method'],
        'natoms': natoms[0] if len(natoms) == 1 else natoms,
        'n_frames': errors['nframes'],
        'ensemble': md['ensemble'],
        'temperature': float(md['temperature']),
        'pressure': None if md['pressure'] is None else float(md['pressure']),
        'md_time': md['n_steps'] * md['timestep'] / 1000.0,
    }
    if isinstance(setup['natoms'], list):  # several systems: never the paper's single 185-atom system
        setup['natoms'] = None
    comparison = validation_comparison(errors.get_dict(), setup)
    comparison['level_of_theory_key'] = test_set.level_of_theory_key
    return orm.Dict(comparison)


@calcfunction
def plot_parity(parity: orm.ArrayData, comparison: orm.Dict) -> orm.SinglefileData:
    """Return the parity plot (PNG): energy per atom and force components, model vs reference.

    ``parity`` holds the arrays of ``lisei.dp_test`` (energies eV, forces eV/Å, ``natoms`` per frame);
    ``comparison`` gives the paper's RMSEs printed in the panels and the demo flag of the title.
    """
    import io

    from aiida_lisei.reporting.plots import energy_force_parity_png

    data = comparison.get_dict()
    title = (
        'Model validation: paper setup'
        if data['mode'] == 'paper'
        else 'Model validation: DEMO (setup differs from the paper; not comparable)'
    )
    png = energy_force_parity_png(
        parity.get_array('energy_reference'),
        parity.get_array('energy_predicted'),
        parity.get_array('natoms'),
        parity.get_array('force_reference'),
        parity.get_array('force_predicted'),
        paper_energy_rmse=data['rmse_e_per_atom']['paper'],
        paper_force_rmse=data['rmse_f']['paper'],
        title=title,
    )
    return orm.SinglefileData(io.BytesIO(png), filename=PARITY_PLOT_FILENAME)


# ----------------------------------------------------------------------------------------------------------
# Validators
# ----------------------------------------------------------------------------------------------------------


def _validate_n_frames(value: orm.Int, _ctx: Any = None) -> str | None:
    """Return an error message unless ``n_frames`` >= 1."""
    return None if value.value >= 1 else f'`n_frames` must be at least 1, got {value.value}'


def _validate_fraction(value: orm.Float, _ctx: Any = None) -> str | None:
    """Return an error message unless 0 <= ``equilibration_fraction`` < 1."""
    if not 0.0 <= value.value < 1.0:
        return f'`equilibration_fraction` must be in [0, 1), got {value.value}'
    return None


def _validate_seed(value: orm.Int, _ctx: Any = None) -> str | None:
    """Return an error message for a negative root seed."""
    return None if value.value >= 0 else f'`seed` must be >= 0, got {value.value}'


def validate_inputs(inputs: dict[str, Any], _ctx: Any = None) -> str | None:
    """Check the MD (NPT, enough frames), the elements, and the labelling engine against the model."""
    if 'model' not in inputs or 'md' not in inputs or 'parameters' not in inputs['md']:
        return None
    try:
        md = check_md_parameters(inputs['md']['parameters'].get_dict())
    except ValueError as exception:
        return f'`md.parameters`: {exception}'
    if md['ensemble'] != 'npt':
        return f"`md.parameters.ensemble` must be 'npt' (the paper's validation run), got {md['ensemble']!r}"
    if 'n_frames' in inputs and 'equilibration_fraction' in inputs:
        n_frames, fraction = inputs['n_frames'].value, inputs['equilibration_fraction'].value
        available = count_drawable_frames(md['n_steps'], md['stride'], fraction)
        if 0.0 <= fraction < 1.0 and n_frames > available:
            return (
                f'`n_frames` = {n_frames} but the NPT run gives only {available} frames after the first '
                f'{100 * fraction:g} % of its {md["n_steps"]} steps (a frame every {md["stride"]} steps, '
                'step 0 excluded): raise `md.parameters.n_steps`, lower `md.parameters.stride`, '
                '`equilibration_fraction` or `n_frames`'
            )

    model = inputs['model']
    try:
        type_map = models_type_map(ensemble_models(model, inputs.get('ensemble', {})))
    except ValueError as exception:
        return f'`ensemble`: {exception}'
    if 'structure' in inputs:
        missing = sorted(inputs['structure'].get_symbols_set() - set(type_map))
        if missing:
            return f'elements {missing} of `structure` are not in the type map {type_map} of the model'

    engine = inputs.get('label', {}).get('engine')
    engine = engine.value if engine is not None else 'tblite'
    trained_on = model.level_of_theory_key
    if trained_on and trained_on.split('/')[0] != engine:
        return (
            f'the model was trained on labels at {trained_on}; labelling the test frames with `{engine}` '
            'would compare across levels of theory (lisei.dp_test refuses it): set `label.engine` to '
            f'`{trained_on.split("/")[0]}` or test a model trained on `{engine}` labels'
        )
    return None


# ----------------------------------------------------------------------------------------------------------
# The workchain
# ----------------------------------------------------------------------------------------------------------


class ModelValidationWorkChain(ProtocolMixin, WorkChain):
    """Validate a DeePMD model as the paper does: NPT DPMD, random frames, labels, RMSE, parity plot."""

    _protocol_file = 'model_validation'

    @classmethod
    def define(cls, spec):
        """Define the process specification."""
        super().define(spec)
        spec.input('model', valid_type=DeepPotentialData, help='The model to validate; it drives the MD.')
        spec.input_namespace(
            'ensemble',
            valid_type=(orm.SinglefileData, DeepPotentialData),
            dynamic=True,
            required=False,
            help='Further models for the model deviation along the MD (default: `model` twice, deviation 0).',
        )
        spec.input('structure', valid_type=orm.StructureData, help='Start configuration of the MD (Å).')
        spec.input(
            'n_frames',
            valid_type=orm.Int,
            serializer=orm.to_aiida_type,
            validator=_validate_n_frames,
            help='Number of random frames to label and test (the paper: 100).',
        )
        spec.input(
            'equilibration_fraction',
            valid_type=orm.Float,
            default=lambda: orm.Float(0.1),
            serializer=orm.to_aiida_type,
            validator=_validate_fraction,
            help='Fraction of the MD steps skipped before frames may be drawn (0.1: the first 20 of 200 ps).',
        )
        spec.input(
            'seed',
            valid_type=orm.Int,
            serializer=orm.to_aiida_type,
            validator=_validate_seed,
            help='Root seed: the MD velocities and the frame draw use seeds derived from it.',
        )
        spec.input(
            'system_label',
            valid_type=orm.Str,
            default=lambda: orm.Str('interface'),
            serializer=orm.to_aiida_type,
            help='System label of the frames in the labelled test set.',
        )
        spec.expose_inputs(
            ExplorationCalculation,
            namespace='md',
            exclude=('structure', 'models', 'seed'),
            namespace_options={'help': 'Inputs of the NPT DPMD run (`lisei.exploration`, ensemble npt).'},
        )
        spec.expose_inputs(
            LabelWorkChain,
            namespace='label',
            exclude=('structures', 'system_label', 'tags'),
            namespace_options={'help': 'Inputs of `lisei.label` (engine and its settings).'},
        )
        spec.expose_inputs(
            DpTestCalculation,
            namespace='test',
            exclude=('model', 'test_set'),
            namespace_options={'help': 'Inputs of `lisei.dp_test` (code, options, compressed).'},
        )
        spec.inputs.validator = validate_inputs

        spec.output('trajectory', valid_type=orm.TrajectoryData, help='The NPT DPMD trajectory.')
        spec.output(
            'guards',
            valid_type=orm.Dict,
            required=False,
            help='Physics guards of the NPT DPMD (a failed one ends the validation with its code, 450-456).',
        )
        spec.output(
            'sampling', valid_type=orm.Dict, help='Seed, counts, indices and steps of the drawn frames.'
        )
        spec.output('test_set', valid_type=TrainingSetData, help='The labelled frames.')
        spec.output(
            'failed_frames', valid_type=orm.Dict, required=False, help='Frames the engine could not label.'
        )
        spec.output(
            'errors', valid_type=orm.Dict, help='RMSE/MAE of the model on the labels (eV/atom, eV/Å).'
        )
        spec.output('parity', valid_type=orm.ArrayData, help='Reference and predicted energies and forces.')
        spec.output(
            'comparison',
            valid_type=orm.Dict,
            help="Our RMSEs (meV/atom, meV/Å) next to the paper's; `mode` is 'demo' unless the setup is the "
            "paper's.",
        )
        spec.output('parity_plot', valid_type=orm.SinglefileData, help='Parity plot (PNG), two panels.')

        spec.exit_code(
            501,
            'ERROR_MD_FAILED',
            message='The NPT DPMD run {process} failed without a usable trajectory: {message}',
        )
        spec.exit_code(
            502,
            'ERROR_NOT_ENOUGH_FRAMES',
            message='The trajectory has {available} frames after the equilibration, fewer than n_frames = '
            '{n_frames}.',
        )
        spec.exit_code(503, 'ERROR_LABELLING_FAILED', message='Labelling of the frames failed: {message}')
        spec.exit_code(
            504,
            'ERROR_LEVEL_OF_THEORY_MISMATCH',
            message='The labels are at {labels}, the model was trained at {model}: the errors would compare '
            'two levels of theory.',
        )
        spec.exit_code(505, 'ERROR_DP_TEST_FAILED', message='Testing the model failed: {message}')
        define_guard_exit_codes(spec)
        spec.outline(
            cls.setup,
            cls.run_md,
            cls.inspect_md,
            cls.sample_frames,
            cls.run_labelling,
            cls.inspect_labelling,
            cls.run_test,
            cls.inspect_test,
            cls.compare,
            cls.plot,
        )

    @classmethod
    def get_builder_from_protocol(
        cls,
        lmp_code: orm.AbstractCode,
        dp_code: orm.AbstractCode,
        label_code: orm.AbstractCode,
        model: DeepPotentialData,
        structure: orm.StructureData,
        *,
        protocol: str | None = None,
        overrides: dict[str, Any] | None = None,
        ensemble: Mapping[str, orm.Data] | None = None,
        seed: int | None = None,
        **label_kwargs: Any,
    ) -> ProcessBuilder:
        """Return a builder from a protocol (``demo`` by default, or ``paper``); no node is stored.

        :param lmp_code: LAMMPS with the DeePMD pair style (``lisei.exploration``).
        :param dp_code: DeePMD-kit's ``dp`` (``lisei.dp_test``).
        :param label_code: the code of the labelling engine (``label.engine`` of the protocol).
        :param model: the model to validate; :param structure: start of the MD (the 185-atom interface in
            the paper, any structure of the model's elements in a demo).
        :param overrides: nested dict merged over the protocol; ``label`` holds ``engine``, ``protocol``,
            ``engine_protocol`` and ``overrides`` passed to ``LabelWorkChain.get_builder_from_protocol``.
        :param ensemble: further models for the model deviation along the MD.
        :param seed: root seed (default: the protocol's).
        :param label_kwargs: further arguments of ``LabelWorkChain.get_builder_from_protocol`` (e.g.
            ``potential_family`` for VASP, ``options``).
        """
        inputs = cls.get_protocol_inputs(protocol, overrides)
        md = check_md_parameters(inputs['md']['parameters'])
        available = count_drawable_frames(md['n_steps'], md['stride'], inputs['equilibration_fraction'])
        if inputs['n_frames'] > available:
            raise ValueError(
                f'n_frames = {inputs["n_frames"]} but the protocol MD gives only {available} frames after '
                f'the equilibration: override md.parameters.n_steps/stride or n_frames'
            )
        label = inputs['label']
        label_inputs = LabelWorkChain.get_builder_from_protocol(
            label_code,
            {'start': structure},
            system_label=inputs['system_label'],
            engine=label['engine'],
            protocol=label.get('protocol'),
            overrides=label.get('overrides'),
            engine_protocol=label.get('engine_protocol'),
            **label_kwargs,
        )._inputs(prune=True)
        for key in ('structures', 'system_label', 'tags'):
            label_inputs.pop(key, None)

        builder = cls.get_builder()
        builder.model = model
        if ensemble:
            builder.ensemble = dict(ensemble)
        builder.structure = structure
        builder.n_frames = orm.Int(inputs['n_frames'])
        builder.equilibration_fraction = orm.Float(inputs['equilibration_fraction'])
        builder.seed = orm.Int(inputs['seed'] if seed is None else seed)
        builder.system_label = orm.Str(inputs['system_label'])
        builder.md.code = lmp_code
        builder.md.parameters = orm.Dict(md)
        builder.md.metadata = inputs['md']['metadata']
        if 'guards' in inputs['md']:
            builder.md.guards = orm.Dict(inputs['md']['guards'])
        builder.label._update(label_inputs)
        builder.test.code = dp_code
        builder.test.metadata = inputs['test']['metadata']
        return builder

    # -- outline steps ----------------------------------------------------------------------------------

    def setup(self):
        """Derive the seeds of the MD and of the draw, and report the plan."""
        root = self.inputs.seed.value
        self.ctx.md_seed = derive_seed(root, 'validation', 'md')
        self.ctx.draw_seed = derive_seed(root, 'validation', 'draw')
        md = check_md_parameters(self.inputs.md.parameters.get_dict())
        self.report(
            f'validating model <PK={self.inputs.model.pk}> on {len(self.inputs.structure.sites)} atoms: '
            f'NPT {md["temperature"]:g} K {md["pressure"]:g} bar for {md["n_steps"]} steps '
            f'({md["n_steps"] * md["timestep"] / 1000:g} ps), then {self.inputs.n_frames.value} random '
            f'frames after the first {100 * self.inputs.equilibration_fraction.value:g} %, labelled with '
            f'{self.inputs.label.engine.value}'
        )

    def run_md(self):
        """Run the NPT DPMD with the model (and the ensemble for the deviation)."""
        inputs = AttributeDict(self.exposed_inputs(ExplorationCalculation, namespace='md'))
        inputs.structure = self.inputs.structure
        inputs.models = ensemble_models(self.inputs.model, self.inputs.get('ensemble', {}))
        inputs.seed = orm.Int(self.ctx.md_seed)
        inputs.metadata = {**inputs.get('metadata', {}), 'call_link_label': 'md'}
        node = self.submit(ExplorationCalculation, **inputs)
        self.report(f'NPT DPMD <PK={node.pk}> submitted (velocity seed {self.ctx.md_seed})')
        return ToContext(md=node)

    def inspect_md(self):
        """Fail unless the MD finished with its trajectory."""
        node = self.ctx.md
        if not node.is_finished_ok or 'trajectory' not in node.outputs:
            message = f'exit status {node.exit_status}: {node.exit_message or "no message"}'
            return self.exit_codes.ERROR_MD_FAILED.format(
                process=f'{node.process_label}<{node.pk}>', message=message
            )
        trajectory = self.ctx.trajectory = node.outputs.trajectory
        parameters = node.outputs.output_parameters
        self.out('trajectory', trajectory)
        failed_guard = self._check_guards(node)
        if failed_guard is not None:
            return failed_guard
        self.report(
            f'NPT DPMD <PK={node.pk}> done: {trajectory.numsteps} frames, <T> = '
            f'{parameters.get("temperature_mean", float("nan")):.1f} K, <V> = '
            f'{parameters.get("volume_mean", float("nan")):.1f} Å^3, <P> = '
            f'{parameters.get("pressure_mean", float("nan")):.0f} bar'
        )
        return None

    def _check_guards(self, node: orm.CalcJobNode):
        """Report the NPT run's physics guards; return the first failed guard's exit code when enforced."""
        if 'guards' not in node.outputs:
            return None
        guards = node.outputs.guards
        self.out('guards', guards)
        self.report(format_guard_report(guards.get_dict(), f'NPT DPMD guards <PK={guards.pk}>'))
        return guard_exit_code(self, guards.get_dict(), f'NPT DPMD <{node.pk}>')

    def sample_frames(self):
        """Draw the random frames (seeded calcfunction); fail if the run gave too few."""
        trajectory = self.ctx.trajectory
        available = drawable_indices(trajectory.get_stepids(), self.inputs.equilibration_fraction.value).size
        if available < self.inputs.n_frames.value:
            return self.exit_codes.ERROR_NOT_ENOUGH_FRAMES.format(
                available=available, n_frames=self.inputs.n_frames.value
            )
        self.ctx.frames = draw_frames(
            trajectory,
            self.inputs.n_frames,
            self.inputs.equilibration_fraction,
            orm.Int(self.ctx.draw_seed),
            metadata={'call_link_label': 'draw_frames'},
        )
        sampling = self.ctx.frames['sampling']
        self.out('sampling', sampling)
        steps = sampling['steps']
        self.report(
            f'drew {len(steps)} of {sampling["n_drawable_frames"]} frames after step '
            f'{sampling["equilibration_step"]:g} (seed {self.ctx.draw_seed}): steps {steps[:5]}'
            f'{" ..." if len(steps) > 5 else ""} <PK={sampling.pk}>'
        )
        return None

    def run_labelling(self):
        """Label the drawn frames with the chosen engine."""
        inputs = AttributeDict(self.exposed_inputs(LabelWorkChain, namespace='label'))
        inputs.structures = self.ctx.frames['structures']
        inputs.system_label = self.inputs.system_label
        inputs.tags = self.ctx.frames['tags']
        inputs.metadata = {**inputs.get('metadata', {}), 'call_link_label': 'label'}
        node = self.submit(LabelWorkChain, **inputs)
        self.report(f'labelling {len(inputs.structures)} frames with {inputs.engine.value} <PK={node.pk}>')
        return ToContext(label=node)

    def inspect_labelling(self):
        """Keep the labels; fail if labelling failed or the labels are at another level than the model's."""
        node = self.ctx.label
        if 'failed_frames' in node.outputs:
            self.out('failed_frames', node.outputs.failed_frames)
        if not node.is_finished_ok:
            message = f'{node.process_label}<{node.pk}> exit status {node.exit_status}: {node.exit_message}'
            return self.exit_codes.ERROR_LABELLING_FAILED.format(message=message)
        test_set = self.ctx.test_set = node.outputs.training_set
        self.out('test_set', test_set)
        trained_on = self.inputs.model.level_of_theory_key
        if trained_on and trained_on != test_set.level_of_theory_key:
            return self.exit_codes.ERROR_LEVEL_OF_THEORY_MISMATCH.format(
                labels=test_set.level_of_theory_key, model=trained_on
            )
        left_out = self.inputs.n_frames.value - test_set.nframes
        if left_out:
            self.report(f'{left_out} frame(s) could not be labelled: testing on {test_set.nframes} frames')
        return None

    def run_test(self):
        """Test the model on the labelled frames with ``dp test``."""
        inputs = AttributeDict(self.exposed_inputs(DpTestCalculation, namespace='test'))
        inputs.model = self.inputs.model
        inputs.test_set = self.ctx.test_set
        inputs.metadata = {**inputs.get('metadata', {}), 'call_link_label': 'dp_test'}
        node = self.submit(DpTestCalculation, **inputs)
        self.report(f'testing the model on {inputs.test_set.nframes} frames <PK={node.pk}>')
        return ToContext(dp_test=node)

    def inspect_test(self):
        """Keep the errors and parity arrays; fail if the test failed."""
        node = self.ctx.dp_test
        if not node.is_finished_ok:
            message = f'{node.process_label}<{node.pk}> exit status {node.exit_status}: {node.exit_message}'
            return self.exit_codes.ERROR_DP_TEST_FAILED.format(message=message)
        self.out('errors', node.outputs.output_parameters)
        self.out('parity', node.outputs.parity)
        return None

    def compare(self):
        """Compare the RMSEs with the paper's, flagging a setup that is not the paper's."""
        comparison = self.ctx.comparison = compare_with_paper(
            self.ctx.dp_test.outputs.output_parameters,
            self.ctx.test_set,
            self.inputs.md.parameters,
            metadata={'call_link_label': 'compare_with_paper'},
        )
        self.out('comparison', comparison)
        self.report(f'{comparison["summary"]} <PK={comparison.pk}>')
        for line in comparison['differences']:
            self.report(f'differs from the paper: {line}')

    def plot(self):
        """Store the parity plot (PNG) made from the dp_test arrays."""
        plot = plot_parity(
            self.ctx.dp_test.outputs.parity, self.ctx.comparison, metadata={'call_link_label': 'plot_parity'}
        )
        self.out('parity_plot', plot)
        self.report(
            f'parity plot <PK={plot.pk}>: verdi node repo cat {plot.pk} {PARITY_PLOT_FILENAME} > parity.png'
        )
