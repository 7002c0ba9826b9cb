"""``lisei.cp2k.md``: relax a structure or run Nosé-Hoover NVT MD with CP2K (the AIMD engine of the study).

Runs ``lisei.cp2k.base`` (the restarts) through ``expose_inputs``. Same contract as ``lisei.tblite_md``
(so :class:`~aiida_lisei.workchains.initial_data.InitialDataWorkChain` can use either): inputs
``structure``, ``parameters`` (``task`` = ``relax`` | ``md`` and the ``relax`` / ``md`` sections of
:data:`aiida_lisei.engines.ase_md.DEFAULT_PARAMETERS`, no calculator section), ``seed``; outputs
``structure``, ``trajectory`` and ``output_parameters``. The FORCE_EVAL is the one of the CP2K protocols
(``protocols/cp2k.yaml``: GFN1-xTB metal/insulator, PBE) given as ``cp2k.parameters``; this workchain adds
``GLOBAL/RUN_TYPE``, ``GLOBAL/SEED`` and ``MOTION`` from ``parameters``:

* ``md``: ``MOTION/MD`` ``ENSEMBLE NVT`` for ``n_steps`` (``STEPS``, ``MAX_STEPS`` + 1) of ``timestep``
  fs at ``temperature`` K with a Nosé-Hoover chain (``THERMOSTAT/TYPE NOSE``, ``NOSE/LENGTH`` =
  ``tchain``, ``NOSE/TIMECON`` = ``tdamp`` fs); CP2K draws the initial velocities from ``GLOBAL/SEED``
  (= the ``seed`` input).
* ``relax``: ``GEO_OPT`` (``CELL_OPT`` with ``DIRECT_CELL_OPT`` when ``cell`` is true), ``BFGS``,
  ``MAX_ITER`` = ``max_steps``, ``MAX_FORCE`` = ``fmax`` and ``RMS_FORCE`` = ``fmax`` / 1.5 (CP2K's
  default ratio; CP2K also requires its default ``MAX_DR`` / ``RMS_DR``).
* Positions, forces and cell are printed every ``stride`` steps (``MOTION/PRINT/TRAJECTORY``, ``FORCES``,
  ``CELL``; not ``STRESS``), parsed by :class:`~aiida_lisei.parsers.cp2k_md.Cp2kMdParser`.

Handlers (of ``lisei.cp2k.base``): out of walltime (CP2K's ``GLOBAL/WALLTIME`` is 0.9 of the scheduler's),
an MD continues from the last restart file of the killed run (``EXT_RESTART`` with its folder as
``parent_calc_folder``: positions, velocities, thermostat and step counter), a relaxation restarts from the
last geometry; an unconverged SCF restarts from the start with
:func:`~aiida_lisei.workchains.cp2k_base.gentler_scf`.
The trajectories of all CalcJobs are joined by a calcfunction.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import Any

import numpy as np
from aiida import orm
from aiida.common import AttributeDict
from aiida.engine import ToContext, WorkChain, calcfunction

from aiida_lisei.common.validation import dict_port_validator
from aiida_lisei.engines.ase_md import check_parameters as check_md_parameters
from aiida_lisei.engines.calculators import CALCULATORS
from aiida_lisei.formats.cp2k import BOHR_TO_ANGSTROM, HARTREE_TO_EV
from aiida_lisei.formats.cp2k_md import ENERGY_FILE
from aiida_lisei.protocols import ProtocolMixin
from aiida_lisei.workchains.cp2k_base import (
    Cp2kBaseWorkChain,
    add_kinds,
    calculations,
    cp2k_exit_code,
    define_cp2k_exit_codes,
    scale_with_size,
    structure_kinds,
)
from aiida_lisei.workchains.cp2k_base import validate_inputs as validate_base_inputs

__all__ = (
    'PARSER',
    'Cp2kMdWorkChain',
    'check_parameters',
    'join_runs',
    'motion_parameters',
)

#: Parser of the CalcJobs.
PARSER = 'lisei.cp2k.md'
#: CP2K's default MAX_FORCE / RMS_FORCE ratio (4.5e-4 / 3e-4).
RMS_FORCE_RATIO = 1.5


def check_parameters(parameters: Mapping[str, Any]) -> dict[str, Any]:
    """Return the ``task`` / ``relax`` / ``md`` parameters completed with defaults; raise ``ValueError``.

    The schema is ``lisei.tblite_md``'s without its calculator section (CP2K's settings are ``cp2k``'s);
    the ``FIRE`` optimizer does not exist in CP2K.
    """
    calculators = sorted(set(parameters) & set(CALCULATORS))
    if calculators:
        raise ValueError(
            f'{calculators} settings do not apply to CP2K: set the FORCE_EVAL in `cp2k.parameters`'
        )
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
    """Check the CP2K inputs (as ``lisei.cp2k.base`` does); an MD run needs a seed."""
    message = validate_base_inputs(inputs, ctx)
    if message:
        return message
    exposed_without_seed = ctx is not None and 'seed' not in ctx  # the parent sets the seed itself
    task = inputs['parameters'].get('task', 'md') if 'parameters' in inputs else None
    if task == 'md' and 'seed' not in inputs and not exposed_without_seed:
        return 'an MD run needs a `seed` (CP2K draws the initial velocities from GLOBAL/SEED)'
    return None


#: Failures of ``lisei.cp2k.base`` passed on with their label and number (the table's rule).
PASSED_ON = ('ERROR_RELAX_NOT_CONVERGED', 'ERROR_SCF_NOT_CONVERGED', 'ERROR_WALLTIME_CAP_REACHED')


class Cp2kMdWorkChain(ProtocolMixin, WorkChain):
    """Relax or run NVT MD with CP2K through ``lisei.cp2k.base`` (walltime continues the MD, SCF restarts)."""

    _protocol_file = 'cp2k'

    @classmethod
    def define(cls, spec):
        """Define the process specification."""
        super().define(spec)
        spec.expose_inputs(Cp2kBaseWorkChain, exclude=('cp2k.parent_calc_folder',))
        spec.inputs['cp2k'].help = 'CP2K inputs: `parameters` holds the FORCE_EVAL (protocols/cp2k.yaml).'
        spec.inputs['cp2k']['metadata']['options']['parser_name'].default = PARSER
        spec.inputs['structure'].help = 'Start (Å).'
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
        spec.outline(cls.setup, cls.run_cp2k, cls.results)
        spec.output('structure', valid_type=orm.StructureData, help='The last geometry (restart file).')
        spec.output(
            'trajectory',
            valid_type=orm.TrajectoryData,
            help='Printed frames: positions, cells (Å), times (fs, MD), arrays `energies` eV, `forces` eV/Å.',
        )
        spec.output('output_parameters', valid_type=orm.Dict, help='Summary of the run (see the parser).')
        define_cp2k_exit_codes(spec, PASSED_ON)

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
        """Return a builder: the FORCE_EVAL of the CP2K ``protocol`` (``gfn1_xtb``, ``pbe``).

        :param parameters: ``task`` and the ``relax`` / ``md`` settings (see :func:`check_parameters`).
        :param seed: GLOBAL/SEED (initial velocities of an MD run).
        :param overrides: merged over the protocol (``cp2k.parameters`` is CP2K's input).
        :param options: merged into ``cp2k.metadata.options``.
        """
        protocol = Cp2kBaseWorkChain.resolve_protocol(
            protocol, set(structure.get_ase().get_chemical_symbols())
        )
        inputs = cls.get_protocol_inputs(protocol, overrides)
        check_parameters(parameters)
        builder = cls.get_builder()
        builder.cp2k.code = code
        builder.cp2k.parameters = orm.Dict(
            add_kinds(inputs['cp2k']['parameters'], inputs.get('kinds', {}), structure_kinds(structure))
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
        """Build CP2K's input: FORCE_EVAL (sized to the structure), RUN_TYPE, SEED, MOTION, files."""
        self.ctx.task_parameters = check_parameters(self.inputs.parameters.get_dict())
        run_type, motion = motion_parameters(self.ctx.task_parameters)
        meta = Cp2kBaseWorkChain.get_protocol_inputs()['meta_parameters']
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

        inputs = AttributeDict(self.exposed_inputs(Cp2kBaseWorkChain))
        inputs.cp2k = AttributeDict(inputs.cp2k)
        inputs.cp2k.parameters = orm.Dict(parameters)
        settings = inputs.cp2k.settings.get_dict() if 'settings' in inputs.cp2k else {}
        retrieve = settings.get('additional_retrieve_list', [])
        settings['additional_retrieve_list'] = [
            *retrieve,
            *([ENERGY_FILE] if ENERGY_FILE not in retrieve else []),
        ]
        inputs.cp2k.settings = orm.Dict(settings)
        self.ctx.inputs = inputs

    def run_cp2k(self):
        """Run the relaxation or the MD through ``lisei.cp2k.base`` (restarts and continuations included)."""
        inputs = self.ctx.inputs
        inputs.metadata = {**inputs.get('metadata', {}), 'call_link_label': 'cp2k'}
        node = self.submit(Cp2kBaseWorkChain, **inputs)
        self.report(f'CP2K {self.ctx.task_parameters["task"]} <PK={node.pk}> submitted')
        return ToContext(base=node)

    def _usable_children(self) -> list[orm.CalcJobNode]:
        """The CalcJobs whose trajectory continues the run (those after the last fresh start)."""
        children = [child for child in calculations(self.ctx.base) if 'output_trajectory' in child.outputs]
        fresh = [index for index, child in enumerate(children) if 'parent_calc_folder' not in child.inputs]
        return children[fresh[-1] :] if fresh else children

    def results(self):
        """Attach the joined trajectory, the last structure and the summary; pass on the base's failure."""
        node = self.ctx.base
        children = self._usable_children()
        jobs = calculations(node)
        last = jobs[-1] if jobs else None
        if last is not None and 'output_structure' in last.outputs:
            self.out('structure', last.outputs.output_structure)
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
            self.report(f'CP2K run <{node.pk}> failed: [{node.exit_status}] {node.exit_message}')
            return cp2k_exit_code(node, self.exit_codes, PASSED_ON)
        self.report(f'work chain completed: {len(jobs)} CP2K job(s)')
        return None
