"""``lisei.restraint_md``: a long moving-restraint DeePMD run in segments, stitched into one series (SI §4).

A 150 ps run spans many scheduler jobs. The work chain runs ``lisei.restraint_md`` CalcJobs of at most
``segment_steps`` steps each; every segment continues from the restart files of the previous one (the
restraint's ``s0(step)`` spans the whole run, so it continues where it stopped). A segment stopped by the
walltime (exit 400, LAMMPS' ``timer timeout`` or the scheduler's kill) is continued from its latest restart
file, not restarted from zero. The segments' COLVAR, thermo and frames are stitched into single outputs
(a later segment wins where they overlap), and the CV, the coordination numbers and the bias/work are
plotted as PNGs in the graph.

The restraint's start defaults to the CV of the starting structure, computed by a calcfunction with exactly
the definition of the run (so it is in the graph); its end defaults to start + ``delta`` (docs/restraint.md).
"""

from __future__ import annotations

import copy
from typing import Any

import numpy as np
from aiida import orm
from aiida.common import AttributeDict
from aiida.engine import ProcessHandlerReport, ToContext, calcfunction, if_, process_handler, while_

from aiida_lisei.calculations.base import define_guard_exit_codes, guard_exit_code
from aiida_lisei.calculations.exploration import ExplorationCalculation
from aiida_lisei.calculations.restraint_md import RestraintMdCalculation
from aiida_lisei.common.seeds import derive_seed
from aiida_lisei.data.deep_potential import DeepPotentialData, ensemble_models
from aiida_lisei.data.structure import GroupedStructureData, with_geometry
from aiida_lisei.data.training_set import TrainingSetData
from aiida_lisei.formats.lammps import check_restraint_md_parameters
from aiida_lisei.reporting.plots import restraint_figures
from aiida_lisei.reporting.tables import format_guard_report
from aiida_lisei.science.geometry import mean_cell_frame
from aiida_lisei.science.guards import GUARDS, combine_guard_summaries
from aiida_lisei.science.restraint_cv import (
    check_minimum_image,
    check_restraint_parameters,
    cv_from_parameters,
    evaluate_cv,
    resolve_restraint_parameters,
)
from aiida_lisei.workchains.concurrent_learning import (
    extend_training_set,
    extract_candidates,
    temperature_key,
)
from aiida_lisei.workchains.dp_train import DpTrainWorkChain
from aiida_lisei.workchains.label import LabelWorkChain
from aiida_lisei.workchains.restart import LiseiBaseRestartWorkChain
from aiida_lisei.workchains.selection import select_candidates

__all__ = (
    'RestraintMdWorkChain',
    'initial_restraint',
    'plot_restraint',
    'stitch_columns',
    'stitch_segments',
)


def stitch_columns(segments: list[dict[str, np.ndarray]], key: str) -> dict[str, np.ndarray]:
    """Concatenate column tables of consecutive segments ordered by ``key`` (e.g. ``time`` or ``step``).

    Where segments overlap (a continued segment starts at or before the last row of the previous one: the
    restart file may be older than the last row), the later segment wins.
    """
    tables = [segment for segment in segments if segment and segment[key].size]
    if not tables:
        return {}
    names = list(tables[0])
    pieces: dict[str, list[np.ndarray]] = {name: [] for name in names}
    for index, table in enumerate(tables):
        keep = np.ones(table[key].size, dtype=bool)
        if index + 1 < len(tables):
            keep = table[key] < tables[index + 1][key][0] - 1e-9
        for name in names:
            pieces[name].append(table[name][keep])
    return {name: np.concatenate(values) for name, values in pieces.items()}


def _work_continued(segments: list[dict[str, np.ndarray]]) -> list[dict[str, np.ndarray]]:
    """Return the COLVAR tables with the accumulated ``work`` (eV) continued across segments.

    PLUMED starts ``work`` at 0 in every new run; the offset of a segment is the previous segment's work at
    its first time (the last row at or before it).
    """
    continued, offset_table = [], None
    for table in segments:
        table = dict(table)
        if offset_table is not None and 'work' in table and table['time'].size:
            rows = np.flatnonzero(offset_table['time'] <= table['time'][0] + 1e-9)
            offset = offset_table['work'][rows[-1]] if rows.size else offset_table['work'][-1]
            table['work'] = table['work'] + offset
        continued.append(table)
        offset_table = table
    return continued


def _arrays(node: orm.ArrayData) -> dict[str, np.ndarray]:
    return {name: node.get_array(name) for name in node.get_arraynames()}


@calcfunction
def initial_restraint(structure: GroupedStructureData, restraint: orm.Dict, parameters: orm.Dict) -> orm.Dict:
    """Return the run's complete restraint parameters, resolved once.

    ``at_start`` = the CV of ``structure`` (computed with exactly the run's definition), ``at_end`` =
    ``at_start + delta``, ``step_end`` = the last step.

    :param restraint: the work chain's ``restraint`` input (see ``science.restraint_cv.RESTRAINT_DEFAULTS``).
    :param parameters: the MD parameters (``n_steps``: the whole run, the default end of the pull).
    """
    n_steps = check_restraint_md_parameters(parameters.get_dict())['n_steps']
    request = check_restraint_parameters(restraint.get_dict(), resolved=False)
    cv = cv_from_parameters(structure.atom_groups, structure.atom_layers, request)
    # The NumPy reference (equal to the engines' numba, JAX and PLUMED routes to 1e-10): runs on a daemon
    # machine without the engines.
    positions = np.array([site.position for site in structure.sites])
    value = evaluate_cv(cv, positions, np.array(structure.cell)).value
    return orm.Dict(resolve_restraint_parameters(request, value, n_steps))


@calcfunction
def equilibrated_structure(
    structure: GroupedStructureData, trajectory: orm.TrajectoryData
) -> GroupedStructureData:
    """Return the last frame of ``trajectory`` (Å; frames in atom-id order = the sites of ``structure``) in
    the mean cell of the second half of the run (``science.geometry.mean_cell_frame``), with the atom groups
    and layers of ``structure``: the start of the pulled run, and the reference of its lateral-cell guard."""
    if trajectory.numsites != len(structure.sites):
        raise ValueError(
            f'{trajectory.numsites} atoms in the trajectory, {len(structure.sites)} in the structure'
        )
    cell, positions = mean_cell_frame(trajectory.get_cells(), trajectory.get_positions())
    return with_geometry(structure, cell, positions)


@calcfunction
def stitch_segments(**segments: Any) -> dict[str, orm.Data]:
    """Stitch consecutive segments (``segment_01``, ...: each ``colvar``, ``thermo``, ``trajectory``).

    :return: ``colvar`` (work continued across segments), ``thermo``, ``trajectory`` and
        ``model_deviation`` as single series; ``guards``: the segments' guards in one table
        (``science.guards.combine_guard_summaries``).
    """
    order = sorted(segments)
    outputs: dict[str, orm.Data] = {}
    deviations = [
        _arrays(segments[key]['model_deviation']) for key in order if 'model_deviation' in segments[key]
    ]
    if deviations:
        outputs['model_deviation'] = _array_node(stitch_columns(deviations, 'step'))
    guards = [segments[key]['guards'].get_dict() for key in order if 'guards' in segments[key]]
    if guards:
        outputs['guards'] = orm.Dict(combine_guard_summaries(guards))
    colvars = [_arrays(segments[key]['colvar']) for key in order if 'colvar' in segments[key]]
    if colvars:
        outputs['colvar'] = _array_node(stitch_columns(_work_continued(colvars), 'time'))
    thermos = [_arrays(segments[key]['thermo']) for key in order if 'thermo' in segments[key]]
    if thermos:
        outputs['thermo'] = _array_node(stitch_columns(thermos, 'step'))
    trajectories = [segments[key]['trajectory'] for key in order if 'trajectory' in segments[key]]
    if trajectories:
        outputs['trajectory'] = _stitch_trajectories(trajectories)
    return outputs


def _array_node(columns: dict[str, np.ndarray]) -> orm.ArrayData:
    node = orm.ArrayData()
    for name, values in columns.items():
        node.set_array(name, values)
    return node


def _stitch_trajectories(trajectories: list[orm.TrajectoryData]) -> orm.TrajectoryData:
    """Return one trajectory of the frames of consecutive segments (the later segment wins on overlaps)."""
    tables = []
    for trajectory in trajectories:
        table = {
            'step': trajectory.get_stepids(),
            'positions': trajectory.get_positions(),
            'cells': trajectory.get_cells(),
            'times': trajectory.get_times(),
        }
        if 'images' in trajectory.get_arraynames():
            table['images'] = trajectory.get_array('images')
        tables.append(table)
    merged = stitch_columns(tables, 'step')
    first = trajectories[0]
    stitched = orm.TrajectoryData()
    stitched.set_trajectory(
        symbols=first.symbols,
        positions=merged['positions'],
        stepids=merged['step'],
        cells=merged['cells'],
        times=merged['times'],
        pbc=first.pbc,
    )
    if 'atom_ids' in first.get_arraynames():
        stitched.set_array('atom_ids', first.get_array('atom_ids'))
    if 'images' in merged:
        stitched.set_array('images', merged['images'])
    return stitched


@calcfunction
def plot_restraint(colvar: orm.ArrayData) -> dict[str, orm.SinglefileData]:
    """Return PNG figures of a COLVAR: ``cv`` (CV and s0 vs time), ``coordination`` (each CN vs time),
    ``bias_work`` (bias energy and accumulated work, eV)."""
    import io

    figures = restraint_figures(_arrays(colvar))
    return {
        name: orm.SinglefileData(io.BytesIO(content), filename=f'{name}.png')
        for name, content in figures.items()
    }


def validate_refinement(inputs: dict[str, Any], _ctx: Any = None) -> str | None:
    """The restraint on the structure (κ, ``d_max`` within half the cell), then: refinement on the fly needs
    the training set, the labelling and training inputs, and an ensemble."""
    structure = inputs.get('md', {}).get('structure')
    if 'restraint' in inputs:
        try:
            request = check_restraint_parameters(inputs['restraint'].get_dict(), resolved=False)
            if structure is not None:
                check_minimum_image(request['d_max'], structure.cell)
        except ValueError as exception:
            return f'restraint: {exception}'
    refinement = inputs.get('refinement', {})
    rounds = refinement.get('max_rounds')
    if rounds is None or rounds.value <= 0:
        return None
    missing = [
        f'refinement.{name}' for name in ('training_set', 'label', 'train') if not refinement.get(name)
    ]
    if not inputs.get('md', {}).get('deviation_models'):
        missing.append('md.deviation_models (the ensemble: its deviation picks the frames)')
    fine_tune = refinement.get('fine_tune')
    if fine_tune is not None and fine_tune.value:
        md = inputs.get('md', {})
        models = [md.get('model'), *md.get('deviation_models', {}).values()]
        if not all(isinstance(model, DeepPotentialData) for model in models if model is not None):
            return 'refinement.fine_tune needs every model of the ensemble as a DeepPotentialData'
    if missing:
        return f'refinement.max_rounds = {rounds.value} needs {", ".join(missing)}'
    return None


def validate_segment_steps(value: orm.Int, _ctx: Any = None) -> str | None:
    """Return an error message unless ``segment_steps`` is positive."""
    return (
        None if value.value > 0 else f'`segment_steps` must be a positive number of steps, got {value.value}'
    )


class RestraintMdWorkChain(LiseiBaseRestartWorkChain):
    """Moving-restraint DeePMD MD in segments (``lisei.restraint_md`` CalcJobs), stitched, with plots."""

    _process_class = RestraintMdCalculation
    _protocol_file = 'restraint_md'

    @classmethod
    def define(cls, spec):
        """Define the process specification."""
        super().define(spec)
        spec.expose_inputs(
            RestraintMdCalculation,
            namespace='md',
            exclude=('restraint', 'parent_folder'),
            namespace_options={'help': 'Inputs of every segment (`parameters.n_steps`: the whole run).'},
        )
        spec.input(
            'restraint',
            valid_type=orm.Dict,
            serializer=orm.to_aiida_type,
            help='CV and moving restraint (science.restraint_cv.RESTRAINT_DEFAULTS; the protocols carry '
            'every key); at_start defaults to the initial CV, at_end to at_start + delta, step_end to the '
            'last step.',
        )
        spec.input(
            'segment_steps',
            valid_type=orm.Int,
            required=False,
            serializer=orm.to_aiida_type,
            validator=validate_segment_steps,
            help='Most MD steps per segment (scheduler job); default: the whole run in one.',
        )
        spec.input(
            'refinement.max_rounds',
            valid_type=orm.Int,
            default=lambda: orm.Int(0),
            serializer=orm.to_aiida_type,
            help='Refinement on the fly: most rounds (0: off), equilibration and segments together. '
            'An equilibration or a segment that fails a guard has its candidate frames (deviation within the '
            'trust window) labelled, the ensemble retrained on the extended set, and is run again from its '
            'start with the new models.',
        )
        spec.input(
            'refinement.training_set',
            valid_type=TrainingSetData,
            required=False,
            help='The training set of the ensemble (extended with the new labels each round).',
        )
        spec.input(
            'refinement.selection',
            valid_type=orm.Dict,
            default=lambda: orm.Dict({'fp_task_max': 10, 'f_lo': 0.10, 'system': 'sandwich'}),
            serializer=orm.to_aiida_type,
            help='Candidate selection: fp_task_max (frames per round), f_lo (eV/Å; the upper level is the '
            "guard's deviation_f_hi), system (label of the new frames in the training set).",
        )
        spec.input(
            'refinement.fine_tune',
            valid_type=orm.Bool,
            default=lambda: orm.Bool(False),
            serializer=orm.to_aiida_type,
            help='Start each retrained model from the one it replaces (`dp train --init-frz-model`, as '
            'DP-GEN reuses models) instead of from random weights; needs `DeepPotentialData` models.',
        )
        spec.expose_inputs(
            LabelWorkChain,
            namespace='refinement.label',
            exclude=('structures', 'system_label', 'tags'),
            namespace_options={
                'required': False,
                'populate_defaults': False,
                'help': 'Inputs of `lisei.label`.',
            },
        )
        spec.expose_inputs(
            DpTrainWorkChain,
            namespace='refinement.train',
            exclude=('dp_train.training_set', 'dp_train.seed'),
            namespace_options={
                'required': False,
                'populate_defaults': False,
                'help': 'Inputs of every `lisei.dp_train` of the retrained ensemble.',
            },
        )
        spec.expose_inputs(
            ExplorationCalculation,
            namespace='equilibration',
            exclude=('structure', 'models', 'seed'),
            namespace_options={
                'required': False,
                'populate_defaults': False,
                'help': 'Unbiased NPT equilibration before the pull (`lisei.exploration`, LAMMPS + DeePMD, '
                "the ensemble's deviation and guards measured; pressure_coupling `xy` for the sandwich): "
                'its last frame starts the pulled run and is the reference of its guards. Absent: none.',
            },
        )
        spec.inputs.validator = validate_refinement
        spec.outline(
            cls.setup,
            if_(cls.should_equilibrate)(
                while_(cls.should_run_equilibration)(
                    cls.run_equilibration,
                    cls.inspect_equilibration,
                    if_(cls.should_refine)(
                        cls.run_refinement_labelling,
                        cls.inspect_refinement_labelling,
                        cls.run_refinement_training,
                        cls.inspect_refinement_training,
                    ),
                ),
            ),
            cls.resolve_restraint,
            while_(cls.should_run_process)(
                cls.run_process,
                cls.inspect_process,
                if_(cls.should_refine)(
                    cls.run_refinement_labelling,
                    cls.inspect_refinement_labelling,
                    cls.run_refinement_training,
                    cls.inspect_refinement_training,
                ),
            ),
            cls.stitch,
            cls.results,
        )
        spec.expose_outputs(
            RestraintMdCalculation, exclude=('colvar', 'thermo', 'trajectory', 'guards', 'model_deviation')
        )
        spec.output(
            'guards',
            valid_type=orm.Dict,
            required=False,
            help='The physics guards of the whole run: per guard the first failing (or worst) segment.',
        )
        spec.output(
            'model_deviation',
            valid_type=orm.ArrayData,
            required=False,
            help='Model deviation of the ensemble at the dumped steps of the whole run (eV/Å).',
        )
        spec.output(
            'colvar',
            valid_type=orm.ArrayData,
            help='COLVAR of the whole run: time ps, cv, CNs, s0, bias, work.',
        )
        spec.output('thermo', valid_type=orm.ArrayData, help='Thermo of the whole run.')
        spec.output(
            'trajectory', valid_type=orm.TrajectoryData, help='Frames of the whole run (atom ids, images).'
        )
        spec.output(
            'restraint', valid_type=orm.Dict, help='The restraint as run (at_start, at_end resolved).'
        )
        spec.output_namespace('plots', valid_type=orm.SinglefileData, dynamic=True, help='PNG figures.')
        spec.exit_code(
            510,
            'ERROR_RESTRAINT_DEFINITION',
            message='The restraint cannot be built on the structure: {message}',
        )
        spec.exit_code(511, 'ERROR_NO_OUTPUT', message='No segment produced a COLVAR: nothing to stitch.')
        spec.exit_code(
            513,
            'ERROR_EQUILIBRATION_FAILED',
            message='The NPT equilibration {process} failed: {message}',
        )
        spec.exit_code(
            514,
            'ERROR_EQUILIBRATED_CELL_TOO_SMALL',
            message='After the NPT equilibration the restraint does not fit the cell: {message}',
        )
        spec.output(
            'equilibration.structure',
            valid_type=GroupedStructureData,
            required=False,
            help='The equilibrated structure: the start of the pulled run.',
        )
        spec.output(
            'equilibration.guards', valid_type=orm.Dict, required=False, help='Guards of the equilibration.'
        )
        spec.exit_code(
            512, 'ERROR_REFINEMENT_FAILED', message='Refinement round {round}: {step} failed: {message}'
        )
        spec.output_namespace(
            'refinement.models',
            valid_type=DeepPotentialData,
            dynamic=True,
            required=False,
            help='The ensemble retrained by the last refinement round.',
        )
        spec.output(
            'refinement.training_set',
            valid_type=TrainingSetData,
            required=False,
            help='The training set extended with the labels of every refinement round.',
        )
        spec.output_namespace(
            'refinement.rounds',
            valid_type=orm.Dict,
            dynamic=True,
            required=False,
            help='Selection per round.',
        )
        define_guard_exit_codes(spec)

    @classmethod
    def get_builder_from_protocol(
        cls,
        code: orm.AbstractCode,
        structure: GroupedStructureData,
        model: orm.Data,
        protocol: str | None = None,
        overrides: dict[str, Any] | None = None,
        seed: int | None = None,
        options: dict[str, Any] | None = None,
        deviation_models: dict[str, orm.Data] | None = None,
        equilibration_code: orm.AbstractCode | None = None,
    ):
        """Return a builder from a protocol (``demo`` by default, or ``paper``); no node is stored.

        :param code: ``lisei-lmp-plumed`` here, or an HPC ``lmp`` with PLUMED and the DeePMD pair style.
        :param structure: the sandwich (``GroupedStructureData`` with atom groups and layers).
        :param model: the frozen DeePMD model (``DeepPotentialData`` or ``SinglefileData``).
        :param overrides: nested dict merged over the protocol.
        :param seed: velocity seed (default: the protocol's).
        :param options: merged into ``md.metadata.options``.
        :param deviation_models: the ensemble's other models: the ``deviation`` guard along the run.
        :param equilibration_code: LAMMPS with the DeePMD pair style (``lisei.exploration``): runs the
            protocol's unbiased NPT ``equilibration`` before the pull (none without it).
        """
        inputs = cls.get_protocol_inputs(protocol, overrides)
        builder = cls.get_builder()
        builder.md.code = code
        builder.md.structure = structure
        builder.md.model = model
        builder.md.parameters = orm.Dict(inputs['md']['parameters'])
        builder.md.seed = orm.Int(inputs['seed'] if seed is None else seed)
        builder.md.guards = orm.Dict(inputs['md']['guards'])
        if deviation_models:
            builder.md.deviation_models = deviation_models
        if inputs['md'].get('settings'):
            builder.md.settings = orm.Dict(inputs['md']['settings'])
        metadata = copy.deepcopy(inputs['md'].get('metadata', {}))
        metadata.setdefault('options', {}).update(options or {})
        builder.md.metadata = metadata
        builder.restraint = orm.Dict(inputs['restraint'])
        if equilibration_code is not None and inputs.get('equilibration'):
            equilibration = inputs['equilibration']
            builder.equilibration.code = equilibration_code
            builder.equilibration.parameters = orm.Dict(equilibration['parameters'])
            builder.equilibration.guards = orm.Dict(
                {**inputs['md']['guards'], **equilibration.get('guards', {})}
            )
            builder.equilibration.metadata = copy.deepcopy(equilibration.get('metadata', metadata))
        if inputs.get('segment_steps'):
            builder.segment_steps = orm.Int(inputs['segment_steps'])
        builder.max_iterations = orm.Int(inputs['max_iterations'])
        builder.clean_workdir = orm.Bool(inputs['clean_workdir'])
        return builder

    def setup(self):
        """Collect the segment inputs; the first segment starts from the structure."""
        super().setup()
        self.ctx.inputs = AttributeDict(self.exposed_inputs(RestraintMdCalculation, 'md'))
        parameters = check_restraint_md_parameters(self.ctx.inputs.parameters.get_dict())
        self.ctx.total_steps = parameters['n_steps']
        self.ctx.segment_steps = self.inputs.segment_steps.value if 'segment_steps' in self.inputs else None
        self.ctx.segments = []
        self.ctx.refine = False
        self.ctx.refinement_round = 0
        self.ctx.refinement_rounds = {}
        self.ctx.equilibrated = False
        self._set_segment_end(0)

    def should_equilibrate(self) -> bool:
        """Return whether an NPT equilibration precedes the pull."""
        return 'code' in self.inputs.get('equilibration', {})

    def should_run_equilibration(self) -> bool:
        """Return whether the equilibration (again, after a refinement round) is to run."""
        return not self.ctx.equilibrated

    def run_equilibration(self):
        """Run the unbiased NPT equilibration with the ensemble (seed derived from the run's seed)."""
        inputs = AttributeDict(self.exposed_inputs(ExplorationCalculation, namespace='equilibration'))
        inputs.structure = self.ctx.inputs.structure
        inputs.models = ensemble_models(self.ctx.inputs.model, self.ctx.inputs.get('deviation_models', {}))
        inputs.seed = orm.Int(derive_seed(self.ctx.inputs.seed.value, 'equilibration'))
        inputs.metadata = {**inputs.get('metadata', {}), 'call_link_label': 'equilibration'}
        node = self.submit(ExplorationCalculation, **inputs)
        parameters = inputs.parameters.get_dict()
        self.report(
            f'equilibration <PK={node.pk}>: {parameters.get("n_steps")} steps of unbiased NPT '
            f'({parameters.get("pressure_coupling", "iso")}) before the pull'
        )
        return ToContext(equilibration=node)

    def inspect_equilibration(self):
        """Enforce the equilibration's guards; its last frame starts the pulled run."""
        node = self.ctx.equilibration
        if 'trajectory' not in node.outputs or not node.is_finished_ok:
            message = f'exit status {node.exit_status}: {node.exit_message or "no message"}'
            return self.exit_codes.ERROR_EQUILIBRATION_FAILED.format(
                process=f'{node.process_label}<{node.pk}>', message=message
            )
        if 'guards' in node.outputs:
            guards = node.outputs.guards
            self.report(format_guard_report(guards.get_dict(), f'equilibration guards <PK={guards.pk}>'))
            failed_guard = guard_exit_code(self, guards.get_dict(), f'equilibration <{node.pk}>')
            if failed_guard is not None:
                temperature = node.inputs.parameters['temperature']
                if self._start_refinement(node, node.outputs.model_devi, temperature):
                    return None  # the equilibration runs again with the retrained ensemble
                self.out('equilibration.guards', guards)
                return failed_guard
            self.out('equilibration.guards', guards)
        self.ctx.equilibrated = True
        structure = equilibrated_structure(
            self.ctx.inputs.structure, node.outputs.trajectory, metadata={'call_link_label': 'equilibrated'}
        )
        before = np.linalg.norm(np.array(self.ctx.inputs.structure.cell)[:2], axis=1)
        after = np.linalg.norm(np.array(structure.cell)[:2], axis=1)
        self.report(
            f'equilibrated lateral cell {before[0]:.3f} x {before[1]:.3f} -> {after[0]:.3f} x '
            f'{after[1]:.3f} Å <PK={structure.pk}>: the pulled run starts here'
        )
        self.ctx.inputs.structure = structure
        self.out('equilibration.structure', structure)
        request = check_restraint_parameters(self.inputs.restraint.get_dict(), resolved=False)
        try:  # a shrunk cell may no longer hold the CV's cut-off within half its width
            check_minimum_image(request['d_max'], structure.cell)
        except ValueError as exception:
            return self.exit_codes.ERROR_EQUILIBRATED_CELL_TOO_SMALL.format(message=str(exception))
        return None

    def resolve_restraint(self):
        """Fill the restraint's defaults (start = the initial CV) by a calcfunction (in the graph)."""
        try:
            self.ctx.inputs.restraint = initial_restraint(  # the whole run's parameters: step_end = its end
                self.ctx.inputs.structure, self.inputs.restraint, self.inputs.md.parameters
            )
        except ValueError as exception:
            return self.exit_codes.ERROR_RESTRAINT_DEFINITION.format(message=str(exception))
        restraint = self.ctx.inputs.restraint
        self.report(
            f'restraint: s0 from {restraint["at_start"]:.6g} to {restraint["at_end"]:.6g} over steps '
            f'{restraint["step_start"]}-{restraint["step_end"]}, '
            f'kappa {restraint["kappa"]} eV; '
            f'{self.ctx.total_steps} steps in segments of {self.ctx.segment_steps or self.ctx.total_steps}'
        )
        return None

    def _set_segment_end(self, start: int) -> None:
        """Set ``parameters.n_steps`` of the next segment: ``start + segment_steps``, at most the total."""
        end = self.ctx.total_steps if self.ctx.segment_steps is None else start + self.ctx.segment_steps
        end = min(end, self.ctx.total_steps)
        self.ctx.segment_end = end
        parameters = self.ctx.inputs.parameters.get_dict()
        if parameters.get('n_steps') != end:
            self.ctx.inputs.parameters = orm.Dict({**parameters, 'n_steps': end})

    def _continue_from(self, calculation: orm.CalcJobNode) -> None:
        """Make the next segment continue from the restart files in ``calculation``'s remote folder."""
        self.ctx.inputs.parent_folder = calculation.outputs.remote_folder

    @process_handler(priority=600)
    def handle_segment_done(self, calculation):
        """After a complete segment short of the total, run the next one from its restart file."""
        if not calculation.is_finished_ok:
            return None
        self.ctx.segments.append(calculation)
        step = calculation.outputs.output_parameters.get('n_steps_done', self.ctx.segment_end)
        if step >= self.ctx.total_steps:
            return None
        self._continue_from(calculation)
        self._set_segment_end(step)
        self.report(
            f'segment {len(self.ctx.segments)} done at step {step} of {self.ctx.total_steps}; next one up '
            f'to step {self.ctx.segment_end}'
        )
        return ProcessHandlerReport(True)

    @process_handler(priority=500, exit_codes=[RestraintMdCalculation.exit_codes.ERROR_OUT_OF_WALLTIME])
    def handle_out_of_walltime(self, calculation):
        """Continue a segment stopped by the walltime from its latest restart file (not from zero)."""
        self.ctx.segments.append(calculation)
        self._continue_from(calculation)
        step = calculation.outputs.output_parameters.get('n_steps_done', 0)
        self.report_error_handled(calculation, f'continuing from its restart files (last thermo step {step})')
        return ProcessHandlerReport(True)

    @process_handler(priority=550, exit_codes=[RestraintMdCalculation.exit_codes[g.label] for g in GUARDS])
    def handle_unphysical(self, calculation):
        """A segment failed a physics guard: stop, keep and stitch what ran, and fail with the guard's code.

        Not restarted: the same model on the same system would do it again (see the docs for the way out),
        unless refinement on the fly is on and the segment has candidate frames (the ensemble's deviation
        within the trust window): then they are labelled, the ensemble retrained and the segment run again.
        """
        deviation = calculation.outputs.model_deviation if 'model_deviation' in calculation.outputs else None
        temperature = check_restraint_md_parameters(calculation.inputs.parameters.get_dict())['temperature']
        if self._start_refinement(calculation, deviation, temperature):
            return ProcessHandlerReport(True)
        self.ctx.segments.append(calculation)
        self.report_error_handled(calculation, 'stopping: the run is not physical; its outputs are kept')
        if self.stitch() is None:
            self._attach_outputs()
        status = calculation.exit_status
        label = next(guard.label for guard in GUARDS if guard.status == status)
        detail = calculation.exit_message.split('): ', 1)[-1]
        return ProcessHandlerReport(True, self.exit_codes[label].format(detail=detail))

    # -- refinement on the fly ---------------------------------------------------------------------------

    def _start_refinement(
        self, calculation: orm.CalcJobNode, deviation: orm.ArrayData | None, temperature: float
    ) -> bool:
        """Select the candidate frames of an MD run (the equilibration or a segment) that failed a guard,
        seeded as in concurrent learning; return whether a refinement round starts.

        Any failed guard starts a round, not only `deviation`: a cell that drifts or atoms that come too
        close while the ensemble disagrees on some frames is the model's error where it is uncertain. A run
        with no frame in the candidate window is not refined (the model is confident there, or too far off).

        :param deviation: the run's model deviation at its dumped frames (eV/Å).
        :param temperature: the run's target temperature (K).
        """
        refinement = self.inputs.refinement
        guards = calculation.outputs.guards if 'guards' in calculation.outputs else None
        if (
            refinement.max_rounds.value <= self.ctx.refinement_round
            or guards is None
            or not guards['failed']
            or deviation is None
            or 'trajectory' not in calculation.outputs
        ):
            return False
        round_ = self.ctx.refinement_round + 1
        settings = refinement.selection.get_dict()
        key = temperature_key(temperature)
        parameters = {
            'system': settings.get('system', 'sandwich'),
            'fp_task_max': settings.get('fp_task_max', 10),
            'f_lo': settings.get('f_lo', 0.10),
            'f_hi': guards['thresholds']['deviation_f_hi'],
            'explorations': {key: {'temperature': temperature}},
        }
        seed = derive_seed(self.ctx.inputs.seed.value, 'refine', round_)
        selection = select_candidates(
            orm.Dict(parameters),
            orm.Int(seed),
            **{
                key: {
                    'model_devi': deviation,
                    'trajectory': calculation.outputs.trajectory,
                }
            },
            metadata={'call_link_label': f'refinement_{round_:02d}_select'},
        )
        self.ctx.refinement_rounds[f'round_{round_:02d}'] = selection['statistics']
        if 'candidates' not in selection:
            counts = selection['statistics']['counts']
            why = (
                "the ensemble agrees on every frame: what failed is not the models' uncertainty (their "
                'shared error, or the physics of the level of theory they learnt)'
                if counts['failed'] == 0
                else f'{counts["failed"]} frame(s) lie beyond it: the models are too far off for refinement'
            )
            self.report(
                f'refinement round {round_}: no frame of {calculation.process_label}<{calculation.pk}> lies '
                f'in the candidate window [{parameters["f_lo"]}, {parameters["f_hi"]}) eV/Å '
                f'({counts["accurate"]} below it); {why}'
            )
            return False
        self.ctx.refinement_round = round_
        self.ctx.refine_candidates = selection['candidates']
        self.ctx.refine = True
        n_selected = selection['statistics']['n_selected']
        self.report(
            f'{calculation.process_label}<{calculation.pk}> failed the guard(s) '
            f'{", ".join(guards["failed"])}; refinement round {round_}: labelling {n_selected} candidate '
            f'frames, retraining the ensemble, then running the '
            f'{self._refined_run()} again from its start'
        )
        return True

    def _refined_run(self) -> str:
        """Name the run a refinement round repeats."""
        return 'segment' if self.ctx.equilibrated or not self.should_equilibrate() else 'equilibration'

    def should_refine(self) -> bool:
        """Return whether a refinement round was started by the last segment."""
        return self.ctx.refine

    def _training_set(self) -> TrainingSetData:
        return self.ctx.get('refined_training_set') or self.inputs.refinement.training_set

    def run_refinement_labelling(self):
        """Label the candidate frames (the `refinement.label` engine)."""
        round_ = self.ctx.refinement_round
        frames = extract_candidates(
            orm.Int(round_),
            **self.ctx.refine_candidates,
            metadata={'call_link_label': f'refinement_{round_:02d}_extract'},
        )
        inputs = AttributeDict(self.exposed_inputs(LabelWorkChain, namespace='refinement.label'))
        inputs.structures = frames['structures']
        inputs.system_label = orm.Str(self.inputs.refinement.selection.get('system', 'sandwich'))
        inputs.tags = frames['tags']
        inputs.metadata = {**inputs.get('metadata', {}), 'call_link_label': f'refinement_{round_:02d}_label'}
        node = self.submit(LabelWorkChain, **inputs)
        self.report(f'refinement round {round_}: labelling {len(frames["structures"])} frames <PK={node.pk}>')
        return ToContext(refinement_label=node)

    def inspect_refinement_labelling(self):
        """Extend the training set with the new labels."""
        node, round_ = self.ctx.refinement_label, self.ctx.refinement_round
        if not node.is_finished_ok:
            message = f'{node.process_label}<{node.pk}> exit status {node.exit_status}'
            return self.exit_codes.ERROR_REFINEMENT_FAILED.format(
                round=round_, step='labelling', message=message
            )
        before = self._training_set()
        self.ctx.refined_training_set = extend_training_set(
            before,
            new=node.outputs.training_set,
            metadata={'call_link_label': f'refinement_{round_:02d}_merge'},
        )
        self.report(
            f'refinement round {round_}: training set {before.nframes} -> '
            f'{self.ctx.refined_training_set.nframes} frames <PK={self.ctx.refined_training_set.pk}>'
        )
        return None

    def run_refinement_training(self):
        """Retrain the ensemble (as many models as it had) on the extended set, seeds from the run's seed."""
        round_ = self.ctx.refinement_round
        others = self.ctx.inputs.get('deviation_models', {})
        current = [self.ctx.inputs.model, *(others[name] for name in sorted(others))]  # model_1 drives
        futures = {}
        for index, model in enumerate(current, start=1):
            inputs = AttributeDict(self.exposed_inputs(DpTrainWorkChain, namespace='refinement.train'))
            inputs.dp_train = {
                **inputs.dp_train,
                'training_set': self.ctx.refined_training_set,
                'seed': orm.Int(derive_seed(self.ctx.inputs.seed.value, 'refine', round_, 'train', index)),
            }
            if self.inputs.refinement.fine_tune.value:
                inputs.dp_train['init_model'] = model
            inputs.metadata = {
                **inputs.get('metadata', {}),
                'call_link_label': f'refinement_{round_:02d}_train_{index}',
            }
            futures[f'refinement_train_{index}'] = self.submit(DpTrainWorkChain, **inputs)
        pks = ', '.join(str(node.pk) for node in futures.values())
        start = (
            'fine-tuned from the current ones' if self.inputs.refinement.fine_tune.value else 'from scratch'
        )
        self.report(f'refinement round {round_}: training {len(futures)} models, {start} <PK={pks}>')
        return ToContext(**futures)

    def inspect_refinement_training(self):
        """Put the new ensemble in place: the next run repeats the failed segment with it."""
        round_ = self.ctx.refinement_round
        models = {}
        for index in range(1, 2 + len(self.ctx.inputs.get('deviation_models', {}))):
            node = self.ctx[f'refinement_train_{index}']
            if not node.is_finished_ok:
                message = f'{node.process_label}<{node.pk}> exit status {node.exit_status}'
                return self.exit_codes.ERROR_REFINEMENT_FAILED.format(
                    round=round_, step='training', message=message
                )
            models[f'model_{index}'] = node.outputs.model
        self.ctx.refined_models = models
        self.ctx.inputs.model = models['model_1']
        if len(models) > 1:
            self.ctx.inputs.deviation_models = {
                name: model for name, model in models.items() if name != 'model_1'
            }
        self.ctx.refine = False
        start = 'the start' if 'parent_folder' not in self.ctx.inputs else 'its restart files'
        self.report(
            f'refinement round {round_}: {self._refined_run()} runs again from {start} with the new ensemble'
        )
        return None

    def stitch(self):
        """Stitch the segments' outputs into one series and plot it."""
        segments = {}
        for index, node in enumerate(self.ctx.segments, start=1):
            outputs = {
                name: node.outputs[name]
                for name in ('colvar', 'thermo', 'trajectory', 'model_deviation', 'guards')
                if name in node.outputs
            }
            if outputs:
                segments[f'segment_{index:02d}'] = outputs
        if not any('colvar' in outputs for outputs in segments.values()):
            return self.exit_codes.ERROR_NO_OUTPUT
        self.ctx.stitched = stitch_segments(**segments)
        self.ctx.plots = plot_restraint(self.ctx.stitched['colvar'])
        colvar = self.ctx.stitched['colvar']
        time, cv = colvar.get_array('time'), colvar.get_array('cv')
        self.report(
            f'{len(segments)} segment(s) stitched: {time.size} COLVAR rows, {time[0]:g}-{time[-1]:g} ps, CV '
            f'{cv[0]:.6g} -> {cv[-1]:.6g}; plots <PK={", ".join(str(n.pk) for n in self.ctx.plots.values())}>'
        )
        if 'guards' in self.ctx.stitched:
            guards = self.ctx.stitched['guards']
            self.report(format_guard_report(guards.get_dict(), f'guards <PK={guards.pk}>'))
        return None

    def results(self):
        """Report the end and attach the outputs."""
        self.report(
            f'work chain completed after {len(self.ctx.segments)} segment(s), {self.ctx.iteration} job(s)'
        )
        self._attach_outputs()

    def _attach_outputs(self):
        """Attach the stitched series, the last job's outputs, the restraint and the plots."""
        node = self.ctx.children[self.ctx.iteration - 1]
        self.out_many(self.exposed_outputs(node, RestraintMdCalculation))
        for name, node in self.ctx.stitched.items():
            self.out(name, node)
        self.out('restraint', self.ctx.inputs.restraint)
        self.out('plots', dict(self.ctx.plots))
        if self.ctx.refinement_rounds:
            self.out('refinement.rounds', self.ctx.refinement_rounds)
        if self.ctx.get('refined_models'):
            self.out('refinement.models', self.ctx.refined_models)
            self.out('refinement.training_set', self.ctx.refined_training_set)
