"""``lisei.cp2k.md``: relax a structure or run Nosé-Hoover NVT MD with CP2K (the AIMD engine of the study).

Same contract as ``lisei.tblite_md`` (so :class:`~aiida_lisei.workchains.initial_data.InitialDataWorkChain`
can use either): inputs ``structure``, ``parameters`` (``task`` = ``relax`` | ``md`` and the ``relax`` /
``md`` sections of :data:`aiida_lisei.engines.tblite_md.DEFAULT_PARAMETERS`, no ``tblite`` section), ``seed``;
outputs ``structure``, ``trajectory`` and ``output_parameters``. The FORCE_EVAL is the one of the
``lisei.cp2k.label`` protocols (GFN1-xTB metal/insulator, PBE) given as ``cp2k.parameters``; this workchain
adds ``GLOBAL/RUN_TYPE``, ``GLOBAL/SEED`` and ``MOTION`` from ``parameters`` before each CalcJob:

* ``md``: ``MOTION/MD`` ``ENSEMBLE NVT`` for ``n_steps`` (``STEPS``, ``MAX_STEPS`` + 1) of ``timestep``
  fs at ``temperature`` K with a Nosé-Hoover chain (``THERMOSTAT/TYPE NOSE``, ``NOSE/LENGTH`` =
  ``tchain``, ``NOSE/TIMECON`` = ``tdamp`` fs); CP2K draws the initial velocities from ``GLOBAL/SEED``
  (= the ``seed`` input).
* ``relax``: ``GEO_OPT`` (``CELL_OPT`` with ``DIRECT_CELL_OPT`` when ``cell`` is true), ``BFGS``,
  ``MAX_ITER`` = ``max_steps``, ``MAX_FORCE`` = ``fmax`` and ``RMS_FORCE`` = ``fmax`` / 1.5 (CP2K's
  default ratio; CP2K also requires its default ``MAX_DR`` / ``RMS_DR``).
* Positions, forces and cell are printed every ``stride`` steps (``MOTION/PRINT/TRAJECTORY``, ``FORCES``,
  ``CELL``; not ``STRESS``), parsed by :class:`~aiida_lisei.parsers.cp2k_md.Cp2kMdParser`.

Handlers: out of walltime (CP2K's ``GLOBAL/WALLTIME`` is 0.9 of the scheduler's), an MD continues from
the last restart file of the killed run (``EXT_RESTART`` with its folder as ``parent_calc_folder``:
positions, velocities, thermostat and step counter), a relaxation restarts from the last geometry;
an unconverged SCF restarts from the start with :func:`~aiida_lisei.workchains.cp2k_label.gentler_scf`.
The trajectories of all CalcJobs are joined by a calcfunction.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import Any

import numpy as np
from aiida import orm
from aiida.common import AttributeDict
from aiida.engine import ProcessBuilder, ProcessHandlerReport, calcfunction, process_handler, while_
from aiida.plugins import CalculationFactory

from aiida_lisei.common.validation import dict_port_validator
from aiida_lisei.engines.tblite_md import check_parameters as check_md_parameters
from aiida_lisei.formats.cp2k import BOHR_TO_ANGSTROM, HARTREE_TO_EV
from aiida_lisei.parsers.cp2k_md import ENERGY_FILE
from aiida_lisei.workchains.cp2k_label import (
    Cp2kLabelWorkChain,
    _add_kinds,
    _validate_structure,
    gentler_scf,
    scale_with_size,
    structure_kinds,
    validate_cp2k_inputs,
)
from aiida_lisei.workchains.initial_data import LABEL_EXCLUDED, InitialDataWorkChain
from aiida_lisei.workchains.label import LabelWorkChain
from aiida_lisei.workchains.restart import LiseiBaseRestartWorkChain

__all__ = (
    'Cp2kMdWorkChain',
    'InitialDataCp2kWorkChain',
    'check_parameters',
    'join_runs',
    'motion_parameters',
)

Cp2kCalculation = CalculationFactory('cp2k')

#: Parser of the CalcJobs.
PARSER = 'lisei.cp2k.md'
#: CP2K's default MAX_FORCE / RMS_FORCE ratio (4.5e-4 / 3e-4).
RMS_FORCE_RATIO = 1.5
#: The file an MD run continues from after a walltime stop (in the parent folder).
RESTART_FILE = f'parent_calc/{Cp2kCalculation._DEFAULT_RESTART_FILE_NAME}'


def check_parameters(parameters: Mapping[str, Any]) -> dict[str, Any]:
    """Return the ``task`` / ``relax`` / ``md`` parameters completed with defaults; raise ``ValueError``.

    The schema is ``lisei.tblite_md``'s without its ``tblite`` section (CP2K's settings are ``cp2k``'s);
    the ``FIRE`` optimizer does not exist in CP2K.
    """
    if 'tblite' in parameters:
        raise ValueError('`tblite` settings do not apply to CP2K: set the FORCE_EVAL in `cp2k.parameters`')
    merged = check_md_parameters(parameters)
    if merged['task'] == 'relax' and merged['relax']['optimizer'] != 'BFGS':
        raise ValueError(f'relax.optimizer {merged["relax"]["optimizer"]!r}: CP2K offers BFGS only here')
    return {key: merged[key] for key in ('task', 'relax', 'md')}


def motion_parameters(parameters: Mapping[str, Any]) -> tuple[str, dict[str, Any]]:
    """Return CP2K's ``(RUN_TYPE, MOTION section)`` for checked ``parameters`` (units: K, fs, eV/Å)."""
    task = parameters['task']
    settings = parameters[task]
    each = {'EACH': {'MD': settings['stride'], 'GEO_OPT': settings['stride'], 'CELL_OPT': settings['stride']}}
    motion: dict[str, Any] = {
        'PRINT': {
            'TRAJECTORY': dict(each),
            'FORCES': dict(each),
            'CELL': dict(each),
            'RESTART': {'BACKUP_COPIES': 0, **each},
            'RESTART_HISTORY': {'_': 'OFF'},
        }
    }
    if task == 'md':
        motion['MD'] = {
            'ENSEMBLE': 'NVT',
            'STEPS': settings['n_steps'],
            # STEPS counts from a restart's step; the run stops before step MAX_STEPS (checked, 2023.1)
            'MAX_STEPS': settings['n_steps'] + 1,
            'TIMESTEP': settings['timestep'],
            'TEMPERATURE': settings['temperature'],
            'THERMOSTAT': {
                'TYPE': 'NOSE',
                'NOSE': {'LENGTH': settings['tchain'], 'TIMECON': settings['tdamp']},
            },
        }
        return 'MD', motion
    max_force = settings['fmax'] * BOHR_TO_ANGSTROM / HARTREE_TO_EV
    optimizer = {
        'OPTIMIZER': settings['optimizer'],
        'MAX_ITER': settings['max_steps'],
        'MAX_FORCE': max_force,
        'RMS_FORCE': max_force / RMS_FORCE_RATIO,
    }
    if settings['cell']:
        motion['CELL_OPT'] = {'TYPE': 'DIRECT_CELL_OPT', **optimizer}
        return 'CELL_OPT', motion
    motion['GEO_OPT'] = optimizer
    return 'GEO_OPT', motion


@calcfunction
def join_runs(**outputs: orm.Data) -> dict[str, orm.Data]:
    """Join the ``trajectory_<i>`` and ``parameters_<i>`` of consecutive CalcJobs of one run.

    A frame whose step is not after the last kept one (a restart repeating its first step) is dropped.
    ``nframes`` and ``steps`` are those of the joined trajectory, ``mean_temperature`` the frame-weighted
    mean of the runs', the rest is the last run's.
    """
    count = len([key for key in outputs if key.startswith('trajectory_')])
    trajectories = [outputs[f'trajectory_{index:04d}'] for index in range(count)]
    parameters = [outputs[f'parameters_{index:04d}'].get_dict() for index in range(count)]
    arrays: dict[str, list[np.ndarray]] = {}
    last_step = -1
    for trajectory in trajectories:
        keep = trajectory.get_stepids() > last_step
        for name in trajectory.get_arraynames():
            arrays.setdefault(name, []).append(trajectory.get_array(name)[keep])
        last_step = max(last_step, int(trajectory.get_stepids().max()))
    joined = orm.TrajectoryData()
    joined.set_trajectory(
        symbols=trajectories[0].symbols,
        positions=np.concatenate(arrays.pop('positions')),
        stepids=np.concatenate(arrays.pop('steps')),
        cells=np.concatenate(arrays.pop('cells')),
        times=np.concatenate(arrays.pop('times')) if 'times' in arrays else None,
    )
    for name, values in arrays.items():
        joined.set_array(name, np.concatenate(values))
    summary = {**parameters[-1], 'nframes': joined.numsteps, 'steps': int(joined.get_stepids()[-1])}
    temperatures = [(p['mean_temperature'], p['nframes']) for p in parameters if 'mean_temperature' in p]
    if temperatures:
        summary['mean_temperature'] = float(
            sum(value * weight for value, weight in temperatures) / sum(weight for _, weight in temperatures)
        )
    return {'trajectory': joined, 'output_parameters': orm.Dict(summary)}


_validate_parameters = dict_port_validator(check_parameters)


def _validate_inputs(inputs: Mapping[str, Any], ctx: Any = None) -> str | None:
    """Check the FORCE_EVAL against the structure's elements; an MD run needs a seed."""
    if 'structure' in inputs and 'cp2k' in inputs and 'parameters' in inputs['cp2k']:
        message = validate_cp2k_inputs(
            inputs['cp2k']['parameters'].get_dict(), structure_kinds(inputs['structure'])
        )
        if message:
            return message
    exposed_without_seed = ctx is not None and 'seed' not in ctx  # the parent sets the seed itself
    task = inputs['parameters'].get('task', 'md') if 'parameters' in inputs else None
    if task == 'md' and 'seed' not in inputs and not exposed_without_seed:
        return 'an MD run needs a `seed` (CP2K draws the initial velocities from GLOBAL/SEED)'
    return None


class Cp2kMdWorkChain(LiseiBaseRestartWorkChain):
    """Relax or run NVT MD with CP2K; restart on walltime (continuing the MD) and SCF failures."""

    _process_class = Cp2kCalculation
    _protocol_file = 'cp2k_label'

    defaults = AttributeDict({**Cp2kLabelWorkChain.defaults})
    #: ``max_wallclock_seconds`` and CP2K's ``GLOBAL/WALLTIME`` (a fraction of it), as in lisei.cp2k.label.
    _set_walltime = Cp2kLabelWorkChain._set_walltime

    @classmethod
    def define(cls, spec):
        """Define the process specification."""
        super().define(spec)
        spec.expose_inputs(
            Cp2kCalculation,
            namespace='cp2k',
            exclude=('structure', 'trajectory', 'kpoints', 'parent_calc_folder'),
            namespace_options={'help': 'CP2K inputs: `parameters` holds the FORCE_EVAL (lisei.cp2k.label).'},
        )
        spec.inputs['cp2k']['metadata']['options']['parser_name'].default = PARSER
        spec.input(
            'structure', valid_type=orm.StructureData, validator=_validate_structure, help='Start (Å).'
        )
        spec.input(
            'parameters',
            valid_type=orm.Dict,
            validator=_validate_parameters,
            help='`task` (`relax` | `md`) and the `relax` / `md` settings of lisei.tblite_md (K, fs, eV/Å).',
        )
        spec.input(
            'seed',
            valid_type=orm.Int,
            required=False,
            help='GLOBAL/SEED: CP2K draws the MD initial velocities from it (required for `md`).',
        )
        spec.inputs.validator = _validate_inputs
        spec.outline(
            cls.setup,
            while_(cls.should_run_process)(
                cls.run_process,
                cls.inspect_process,
            ),
            cls.results,
        )
        spec.output('structure', valid_type=orm.StructureData, help='The last geometry (restart file).')
        spec.output(
            'trajectory',
            valid_type=orm.TrajectoryData,
            help='Printed frames: positions, cells (Å), times (fs, MD), arrays `energies` eV, `forces` eV/Å.',
        )
        spec.output('output_parameters', valid_type=orm.Dict, help='Summary of the run (see the parser).')
        spec.exit_code(
            410, 'ERROR_RELAX_NOT_CONVERGED', message='The relaxation did not converge in `max_steps` steps.'
        )
        spec.exit_code(
            411,
            'ERROR_SCF_NOT_CONVERGED',
            message='The SCF did not converge after {restarts} restarts with gentler solver settings.',
        )
        spec.exit_code(
            420,
            'ERROR_WALLTIME_CAP_REACHED',
            message='Out of walltime before a restart file was written, walltime at the cap ({cap} s).',
        )

    @classmethod
    def get_builder_from_protocol(
        cls,
        code: orm.AbstractCode,
        structure: orm.StructureData,
        parameters: Mapping[str, Any],
        *,
        seed: int | None = None,
        protocol: str | None = None,
        overrides: dict[str, Any] | None = None,
        options: dict[str, Any] | None = None,
    ):
        """Return a builder: the FORCE_EVAL of ``lisei.cp2k.label``'s ``protocol`` (``gfn1_xtb``, ``pbe``).

        :param parameters: ``task`` and the ``relax`` / ``md`` settings (see :func:`check_parameters`).
        :param seed: GLOBAL/SEED (initial velocities of an MD run).
        :param overrides: merged over ``lisei.cp2k.label``'s protocol (``cp2k.parameters`` is CP2K's input).
        :param options: merged into ``cp2k.metadata.options``.
        """
        protocol = Cp2kLabelWorkChain._resolve_protocol(
            protocol, set(structure.get_ase().get_chemical_symbols())
        )
        inputs = cls.get_protocol_inputs(protocol, overrides)
        check_parameters(parameters)
        builder = cls.get_builder()
        builder.cp2k.code = code
        builder.cp2k.parameters = orm.Dict(
            _add_kinds(inputs['cp2k']['parameters'], inputs.get('kinds', {}), structure_kinds(structure))
        )
        metadata = copy.deepcopy(inputs['cp2k'].get('metadata', {}))
        metadata.setdefault('options', {}).update({'parser_name': PARSER, **(options or {})})
        builder.cp2k.metadata = metadata
        builder.structure = structure
        builder.parameters = orm.Dict(dict(parameters))
        if seed is not None:
            builder.seed = orm.Int(seed)
        builder.clean_workdir = orm.Bool(inputs['clean_workdir'])
        builder.max_iterations = orm.Int(inputs['max_iterations'])
        return builder

    def setup(self):
        """Build CP2K's input: FORCE_EVAL (sized to the structure), RUN_TYPE, SEED, MOTION, WALLTIME."""
        super().setup()
        self.ctx.task_parameters = check_parameters(self.inputs.parameters.get_dict())
        run_type, motion = motion_parameters(self.ctx.task_parameters)
        meta = Cp2kLabelWorkChain._load_protocol_file()['default_inputs']['meta_parameters']
        parameters = scale_with_size(
            self.inputs.cp2k.parameters.get_dict(), len(self.inputs.structure.sites), meta
        )
        force_eval = parameters['FORCE_EVAL']
        force_eval.pop('PRINT', None)  # forces come from MOTION/PRINT/FORCES
        if run_type != 'CELL_OPT':
            force_eval.pop('STRESS_TENSOR', None)
        parameters.setdefault('GLOBAL', {})['RUN_TYPE'] = run_type
        if 'seed' in self.inputs:
            parameters['GLOBAL']['SEED'] = self.inputs.seed.value
        parameters['MOTION'] = motion

        self.ctx.inputs = AttributeDict(self.exposed_inputs(Cp2kCalculation, 'cp2k'))
        self.ctx.inputs.structure = self.inputs.structure
        self.ctx.inputs.parameters = orm.Dict(parameters)
        settings = self.ctx.inputs.settings.get_dict() if 'settings' in self.ctx.inputs else {}
        retrieve = settings.get('additional_retrieve_list', [])
        settings['additional_retrieve_list'] = [
            *retrieve,
            *([ENERGY_FILE] if ENERGY_FILE not in retrieve else []),
        ]
        self.ctx.inputs.settings = orm.Dict(settings)
        self.ctx.inputs.metadata = AttributeDict(copy.deepcopy(dict(self.ctx.inputs.get('metadata', {}))))
        self.ctx.scf_restarts = 0
        self._set_walltime(self.ctx.inputs.metadata.get('options', {}).get('max_wallclock_seconds'))

    def _usable_children(self) -> list[orm.CalcJobNode]:
        """The CalcJobs whose trajectory continues the run (those after the last fresh start)."""
        children = [child for child in self.ctx.children if 'output_trajectory' in child.outputs]
        fresh = [index for index, child in enumerate(children) if 'parent_calc_folder' not in child.inputs]
        return children[fresh[-1] :] if fresh else children

    def results(self):
        """Attach the joined trajectory, the last structure and the summary; 410 for an unconverged relax."""
        node = self.ctx.children[self.ctx.iteration - 1]
        children = self._usable_children()
        if 'output_structure' in node.outputs:
            self.out('structure', node.outputs.output_structure)
        if len(children) == 1:
            self.out('trajectory', children[0].outputs.output_trajectory)
            self.out('output_parameters', children[0].outputs.output_parameters)
        elif children:
            joined = join_runs(
                **{
                    f'trajectory_{i:04d}': child.outputs.output_trajectory for i, child in enumerate(children)
                },
                **{
                    f'parameters_{i:04d}': child.outputs.output_parameters for i, child in enumerate(children)
                },
            )
            self.out('trajectory', joined['trajectory'])
            self.out('output_parameters', joined['output_parameters'])
        if not node.is_finished_ok:
            self.report(f'last CalcJob <{node.pk}> failed after {self.ctx.iteration} iterations')
            return self.exit_codes.ERROR_MAXIMUM_ITERATIONS_EXCEEDED
        self.report(f'work chain completed after {self.ctx.iteration} iterations')
        return None

    @process_handler(
        priority=600, exit_codes=[Cp2kCalculation.exit_codes.ERROR_MAXIMUM_NUMBER_OPTIMIZATION_STEPS_REACHED]
    )
    def handle_relax_not_converged(self, calculation):
        """Stop with 410, the last structure and trajectory attached (the caller may go on from it)."""
        self.results()
        self.report_error_handled(calculation, 'relaxation not converged: last structure attached, giving up')
        return ProcessHandlerReport(True, self.exit_codes.ERROR_RELAX_NOT_CONVERGED)

    @process_handler(priority=500, exit_codes=[Cp2kCalculation.exit_codes.ERROR_OUT_OF_WALLTIME])
    def handle_out_of_walltime(self, calculation):
        """Continue an MD from the last restart file (``EXT_RESTART``), a relaxation from its last geometry.

        Without a restart file (stopped before it wrote one) the same inputs (an MD continuation keeps its
        parent folder) are resubmitted with ``walltime_factor`` times more walltime, as ``lisei.cp2k.label``
        does (420 at the cap).
        """
        parameters = self.ctx.inputs.parameters.get_dict()
        if 'output_structure' not in calculation.outputs:
            return Cp2kLabelWorkChain.handle_out_of_walltime.__wrapped__(self, calculation)
        if self.ctx.task_parameters['task'] == 'md':
            parameters['EXT_RESTART'] = {'RESTART_FILE_NAME': RESTART_FILE}
            self.ctx.inputs.parent_calc_folder = calculation.outputs.remote_folder
            action = f'continuing the MD from {RESTART_FILE} of <{calculation.pk}>'
        else:
            self.ctx.inputs.structure = calculation.outputs.output_structure
            action = f'restarting the relaxation from the last geometry of <{calculation.pk}>'
        self.ctx.inputs.parameters = orm.Dict(parameters)
        self.report_error_handled(calculation, action)
        return ProcessHandlerReport(True)

    @process_handler(priority=410, exit_codes=[Cp2kCalculation.exit_codes.ERROR_SCF_NOT_CONVERGED])
    def handle_scf_not_converged(self, calculation):
        """Restart from the start with gentler SCF settings (at most ``max_scf_restarts`` times)."""
        if self.ctx.scf_restarts >= self.defaults.max_scf_restarts:
            self.report_error_handled(
                calculation, f'SCF still not converged after {self.ctx.scf_restarts} restarts'
            )
            return ProcessHandlerReport(
                True, self.exit_codes.ERROR_SCF_NOT_CONVERGED.format(restarts=self.ctx.scf_restarts)
            )
        parameters, changes = gentler_scf(self.ctx.inputs.parameters.get_dict(), self.defaults)
        parameters.pop('EXT_RESTART', None)
        self.ctx.inputs.pop('parent_calc_folder', None)
        self.ctx.inputs.structure = self.inputs.structure
        self.ctx.inputs.parameters = orm.Dict(parameters)
        self.ctx.scf_restarts += 1
        self.report_error_handled(
            calculation, f'handle_scf_not_converged, restart {self.ctx.scf_restarts}: {", ".join(changes)}'
        )
        return ProcessHandlerReport(True)


class InitialDataCp2kWorkChain(InitialDataWorkChain):
    """``lisei.initial_data`` with ``lisei.cp2k.md`` as the relax/MD engine (the paper's AIMD).

    The protocols of ``initial_data.yaml`` apply; in ``relax`` and ``md`` a ``cp2k_protocol`` names the
    ``lisei.cp2k.label`` protocol of the FORCE_EVAL (``pbe`` for ``paper_cp2k``) and the ``tblite`` section
    is dropped. The FORCE_EVAL gets the protocol's KIND sections of all its elements (CP2K ignores those
    of absent kinds), so one ``cp2k.parameters`` serves every system; SCF sizes are set per system.
    """

    _engine_process = Cp2kMdWorkChain

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
        """Return a builder as ``lisei.initial_data``'s, with ``lisei.label`` on the ``cp2k`` engine.

        :param code: ``cp2k.psmp`` (relax and MD); :param label_code: ``cp2k.psmp`` (labels).
        The labelling FORCE_EVAL is ``label.cp2k_protocol`` of ``lisei.cp2k.label``, built on the largest
        system (its KIND sections and SCF sizes serve all systems: give it every element).
        """
        builder = super().get_builder_from_protocol(
            code, label_code, structures, protocol=protocol, overrides=overrides
        )
        inputs = cls.get_protocol_inputs(protocol, overrides)['label']
        largest = max(structures.values(), key=lambda structure: len(structure.sites))
        label = LabelWorkChain.get_builder_from_protocol(
            label_code,
            {'largest': largest},
            system_label='unused',
            engine='cp2k',
            protocol=inputs.get('protocol'),
            overrides=inputs.get('overrides'),
            engine_protocol=inputs['cp2k_protocol'],
            options=inputs.get('options'),
        )
        builder.label = {
            key: value for key, value in label._inputs(prune=True).items() if key not in LABEL_EXCLUDED
        }
        return builder

    @classmethod
    def _set_engine_inputs(cls, namespace: Any, code: orm.AbstractCode, inputs: Mapping[str, Any]) -> None:
        """Fill ``relax``/``md``: ``cp2k`` from ``cp2k_protocol``, ``parameters`` without ``tblite``."""
        protocols = Cp2kLabelWorkChain._load_protocol_file()['protocols']
        if 'select_by_composition' in protocols[inputs['cp2k_protocol']]:
            raise ValueError(
                f'cp2k_protocol `{inputs["cp2k_protocol"]}` picks its settings per structure: one FORCE_EVAL '
                'serves all systems here, name a concrete protocol (e.g. `gfn1_xtb_insulator`, `pbe`)'
            )
        protocol = Cp2kLabelWorkChain.get_protocol_inputs(inputs['cp2k_protocol'])
        kinds = protocol.get('kinds', {})
        namespace.cp2k.code = code
        namespace.cp2k.parameters = orm.Dict(
            _add_kinds(protocol['cp2k']['parameters'], kinds, {element: element for element in kinds})
        )
        namespace.cp2k.metadata.options = {**inputs['metadata']['options'], 'parser_name': PARSER}
        namespace.parameters = orm.Dict({k: v for k, v in inputs['parameters'].items() if k != 'tblite'})
        namespace.clean_workdir = orm.Bool(protocol['clean_workdir'])
        namespace.max_iterations = orm.Int(protocol['max_iterations'])
