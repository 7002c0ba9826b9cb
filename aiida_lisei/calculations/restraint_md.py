"""``RestraintMdCalculation``: moving-restraint DeePMD MD (LAMMPS + PLUMED) on a grouped structure (SI §4).

The CalcJob writes a standard LAMMPS input with ``fix restraint all plumed plumedfile plumed.dat`` and the
``plumed.dat`` of the paper's coordination-number CV, generated from the structure's atom groups. The same
two files run unchanged on any LAMMPS built with PLUMED and the DeePMD pair style (code ``lmp``), or here
through ``lisei-lmp-plumed`` (the LAMMPS Python module with ``fix external`` and the PLUMED kernel, or the
fast CV proven equal to PLUMED's; ``settings.cmdline`` passes e.g. ``['--route', 'plumed']`` or
``['--route', 'jax']``).

A segment of a longer run gets ``parent_folder`` (the previous segment's remote folder): its restart files
``restart.<step>`` are copied and LAMMPS reads the newest (``read_restart restart.*``: the final one, or the
last periodic one of a segment killed by the scheduler: positions, velocities, box, timestep, thermostat and
barostat state) and runs ``up to`` step ``parameters.n_steps``; the restraint's schedule ``s0(step)`` spans
the whole simulation (``restraint.step_start`` .. ``restraint.step_end``), so it continues where the previous
segment stopped.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from aiida import orm
from aiida.common.datastructures import CalcInfo
from aiida.common.folders import Folder
from aiida.engine import CalcJobProcessSpec

from aiida_lisei.calculations.base import (
    LiseiCalcJob,
    define_guard_exit_codes,
    validate_guards,
    validate_model,
    validate_seed,
    validate_structure,
)
from aiida_lisei.common.validation import complete_parameters, dict_port_validator
from aiida_lisei.data.deep_potential import DeepPotentialData, model_filename, model_suffix, models_type_map
from aiida_lisei.data.frames import STUDY_TYPE_MAP
from aiida_lisei.data.structure import GroupedStructureData
from aiida_lisei.engines.lammps_packages import installed_packages
from aiida_lisei.formats.lammps import (
    RESTART_PATTERN,
    check_restraint_md_parameters,
    generate_restraint_md_script,
    lammps_data_text,
    timeout_seconds,
)
from aiida_lisei.formats.plumed import write_plumed_input
from aiida_lisei.science.restraint_cv import (
    RESTRAINT_DEFAULTS,
    check_minimum_image,
    check_restraint_parameters,
    cv_from_parameters,
    moving_restraint,
)

__all__ = ('RestraintMdCalculation',)

validate_parameters = dict_port_validator(check_restraint_md_parameters)


def validate_inputs(inputs: dict[str, Any], ctx: Any = None) -> str | None:
    """Check the structure against the model's type map, and the restraint on the structure (once).

    The restraint's parameters are completed and checked, its CV is built on the structure's atom groups
    and layers, and its cut-off must fit the cell (minimum image).
    """
    if ctx is not None and not {'structure', 'model', 'restraint', 'parameters'} <= set(ctx):
        return None
    structure = inputs['structure']
    try:  # the driving model and the deviation models: one ensemble, one type map
        type_map = models_type_map({'model': inputs['model'], **inputs.get('deviation_models', {})})
    except ValueError as exception:
        return f'`model` and `deviation_models`: {exception}'
    missing = structure.get_symbols_set() - set(type_map)
    if missing:
        return f'elements {sorted(missing)} of the structure are not in the model type map {list(type_map)}'
    if not all(structure.pbc):
        return 'the structure must be periodic in all three directions (add vacuum along z for a slab)'
    try:
        parameters = check_restraint_parameters(inputs['restraint'].get_dict())
        cv = cv_from_parameters(structure.atom_groups, structure.atom_layers, parameters)
        check_minimum_image(cv.d_max, structure.cell)
    except ValueError as exception:
        return f'restraint: {exception}'
    return lammps_without_plumed(inputs.get('code'))


#: The executable that runs ``fix plumed`` on any LAMMPS (PLUMED kernel or the fast CV route).
PLUMED_RUNNER = 'lisei-lmp-plumed'


def lammps_without_plumed(code: orm.AbstractCode | None) -> str | None:
    """Return an error message if ``code`` is a LAMMPS without the PLUMED package, which cannot run the
    restraint's ``fix plumed``.

    Told only where it can be told before submission: an installed code on a computer of the local
    transport, whose executable (not ``lisei-lmp-plumed``) answers ``-h`` with its package list. A remote
    LAMMPS without PLUMED stops at its first step with exit status 350 and LAMMPS's own message.
    """
    if not isinstance(code, orm.InstalledCode) or code.computer.transport_type != 'core.local':
        return None
    executable = str(code.filepath_executable)
    if Path(executable).name == PLUMED_RUNNER:
        return None
    packages = installed_packages(executable)
    if packages is None or 'PLUMED' in packages:
        return None
    return (
        f'code `{code.full_label}` ({executable}) is a LAMMPS without the PLUMED package, so the '
        f"restraint's `fix plumed` cannot run: give the `{PLUMED_RUNNER}` code (`aiida-lisei setup codes` "
        'makes it) or a LAMMPS built with PLUMED and the DeePMD pair style'
    )


class RestraintMdCalculation(LiseiCalcJob):
    """DeePMD MD in LAMMPS under PLUMED's moving harmonic restraint on the paper's coordination CV.

    Inputs: ``structure`` (``GroupedStructureData``: the CV's groups come from its atom groups and layers),
    ``model`` (one frozen model, its compressed version when it has one), ``parameters`` (MD settings,
    :data:`~aiida_lisei.formats.lammps.DEFAULT_RESTRAINT_MD_PARAMETERS`: K, bar, fs, steps;
    ``n_steps`` is the step to run up to), ``restraint``
    (:data:`~aiida_lisei.science.restraint_cv.RESTRAINT_DEFAULTS`), ``seed`` (initial velocities; unused when
    continuing), optional ``parent_folder`` (continue from its restart
    file) and ``settings`` (``cmdline``: extra arguments of the code), ``deviation_models`` (the other models
    of the ensemble: the model deviation along the run) and ``guards`` (thresholds of the physics guards,
    :data:`~aiida_lisei.science.guards.DEFAULT_GUARD_THRESHOLDS`).

    Outputs (``lisei.restraint_md`` parser): ``colvar`` (``ArrayData``: time ps, cv, each CN, s0, bias eV,
    work eV), ``thermo`` (``ArrayData``: one array per thermo column), ``trajectory`` (``TrajectoryData``:
    positions Å, cells, ``stepids``, times ps, ``atom_ids``, ``images``), ``structure`` (the last frame
    with the input's atom groups), ``restart`` (``SinglefileData``, LAMMPS binary restart) and
    ``output_parameters`` (``Dict``), ``guards`` (``Dict``: each guard's value, limit, verdict and first
    failing step) and, with ``deviation_models``, ``model_deviation`` (``ArrayData``: ``model_devi.out``'s
    columns at the dumped steps, eV/Å). A failed guard ends the job with its status 450-456, outputs kept.
    """

    _DEFAULT_PARSER = 'lisei.restraint_md'

    _INPUT_FILE = 'input.lammps'
    _DATA_FILE = 'structure.data'
    _LOG_FILE = 'log.lammps'
    _PLUMED_FILE = 'plumed.dat'
    _PLUMED_LOG = 'plumed.log'
    _COLVAR_FILE = 'COLVAR'
    _DUMP_FILE = 'traj.dump'
    _MODEL_FILE = 'model.pb'
    _MODEL_DEVI_FILE = 'model_devi.out'
    _RESTART_PATTERN = RESTART_PATTERN

    @classmethod
    def define(cls, spec: CalcJobProcessSpec) -> None:  # type: ignore[override]
        """Define the process specification: inputs, outputs and exit codes."""
        super().define(spec)
        spec.input(
            'structure',
            valid_type=GroupedStructureData,
            validator=validate_structure,
            help='Start configuration (Å) with atom groups and layers (e.g. the sandwich of step 1).',
        )
        spec.input(
            'model',
            valid_type=(DeepPotentialData, orm.SinglefileData),
            validator=validate_model,
            help='Frozen DeePMD model (its compressed version is used when it has one).',
        )
        spec.input(
            'parameters',
            valid_type=orm.Dict,
            serializer=orm.to_aiida_type,
            validator=validate_parameters,
            help='MD settings: ensemble, temperature (K), pressure (bar, x and y), n_steps (run up to), '
            'timestep (fs), dampings (fs), thermo/dump/restart strides.',
        )
        spec.input(
            'restraint',
            valid_type=orm.Dict,
            serializer=orm.to_aiida_type,
            help='CV and moving restraint (science.restraint_cv.RESTRAINT_DEFAULTS): kappa (eV per CV '
            'unit²), normalisation, d_max (Å), anode_layers, r_0, delta, at_start, at_end, step_start, '
            'step_end, colvar_stride, nl_stride, nl_cutoff; the ends are required.',
        )
        spec.input(
            'seed',
            valid_type=orm.Int,
            serializer=orm.to_aiida_type,
            validator=validate_seed,
            help='Seed of the initial velocities (unused when continuing from `parent_folder`).',
        )
        spec.input(
            'parent_folder',
            valid_type=orm.RemoteData,
            required=False,
            help='Remote folder of the previous segment: continue from its final restart file.',
        )
        spec.input(
            'settings',
            valid_type=orm.Dict,
            required=False,
            serializer=orm.to_aiida_type,
            help='`cmdline`: extra command-line arguments (e.g. ["--route", "plumed"] or ["--route", "jax"] '
            'for lisei-lmp-plumed).',
        )
        spec.input_namespace(
            'deviation_models',
            valid_type=(DeepPotentialData, orm.SinglefileData),
            dynamic=True,
            required=False,
            help='The other models of the ensemble (same type map): with `model` they give the model '
            'deviation at every dumped frame (`model_devi.out`), which the `deviation` guard checks.',
        )
        spec.input(
            'guards',
            valid_type=orm.Dict,
            required=False,
            serializer=orm.to_aiida_type,
            validator=validate_guards,
            help='Thresholds of the physics guards (science.guards.DEFAULT_GUARD_THRESHOLDS, the defaults '
            'when absent): lateral_cell (fraction), min_distance (Å), temperature (K), pressure (bar), '
            'energy_drift (eV/atom/ps), deviation_f_hi (eV/Å), deviation (fraction); enabled=False reports '
            'them without failing.',
        )
        spec.inputs.validator = validate_inputs

        spec.output(
            'colvar', valid_type=orm.ArrayData, help='COLVAR: time (ps), cv, CNs, s0, bias and work (eV).'
        )
        spec.output('thermo', valid_type=orm.ArrayData, help='Thermo columns (metal units).')
        spec.output(
            'trajectory', valid_type=orm.TrajectoryData, help='Dumped frames with atom ids and images.'
        )
        spec.output('structure', valid_type=GroupedStructureData, help='Last frame, with the atom groups.')
        spec.output('restart', valid_type=orm.SinglefileData, required=False, help='LAMMPS restart file.')
        spec.output('output_parameters', valid_type=orm.Dict, help='Steps, final CV, bias, work, timings.')
        spec.output(
            'guards', valid_type=orm.Dict, required=False, help='The physics guards: value, limit, verdict.'
        )
        spec.output(
            'model_deviation',
            valid_type=orm.ArrayData,
            required=False,
            help='Model deviation of the ensemble at the dumped steps (model_devi.out columns, eV/Å).',
        )
        spec.default_output_node = 'output_parameters'

        cls.define_file_exit_codes(spec)
        spec.exit_code(
            312,
            'ERROR_OUTPUT_INCOMPLETE',
            message='LAMMPS stopped at step {step} of {n_steps} without an error message.',
        )
        spec.exit_code(350, 'ERROR_LAMMPS', message='LAMMPS stopped with an error: {error}')
        spec.exit_code(
            400,
            'ERROR_OUT_OF_WALLTIME',
            message='The segment ran out of walltime at step {step} of {n_steps} (outputs and restart kept).',
        )
        spec.exit_code(410, 'ERROR_LOST_ATOMS', message='LAMMPS lost atoms: {error}')
        spec.exit_code(411, 'ERROR_NAN_ENERGY', message='The energy became NaN at step {step}.')
        spec.exit_code(
            412, 'ERROR_RESTRAINT', message='The restraint failed (PLUMED or the fast CV route): {error}'
        )
        define_guard_exit_codes(spec)

    def prepare_for_submission(self, folder: Folder) -> CalcInfo:
        """Write the data file (fresh start), plumed.dat and the LAMMPS input; copy model and restart."""
        structure = self.inputs.structure
        model = self.inputs.model
        type_map = tuple(model.base.attributes.get('type_map', STUDY_TYPE_MAP))
        # checked once, by validate_inputs: here only completed with the defaults
        restraint_parameters = complete_parameters(self.inputs.restraint.get_dict(), RESTRAINT_DEFAULTS)
        cv = cv_from_parameters(structure.atom_groups, structure.atom_layers, restraint_parameters)
        continuing = 'parent_folder' in self.inputs
        deviation_models = dict(sorted(self.inputs.get('deviation_models', {}).items()))

        if not continuing:
            with folder.open(self._DATA_FILE, 'w') as handle:
                handle.write(lammps_data_text(structure.get_ase(), type_map))
        with folder.open(self._PLUMED_FILE, 'w') as handle:
            handle.write(
                write_plumed_input(
                    cv,
                    moving_restraint(restraint_parameters),
                    stride=restraint_parameters['colvar_stride'],
                    colvar_file=self._COLVAR_FILE,
                    nl_stride=restraint_parameters['nl_stride'],
                    nl_cutoff=restraint_parameters['nl_cutoff'],
                )
            )
        walltime = self.inputs.metadata.options.get('max_wallclock_seconds')
        model_file = self._model_file(model)
        script = generate_restraint_md_script(
            self.inputs.parameters.get_dict(),
            model_file,
            type_map,
            self.inputs.seed.value,
            data_file=self._DATA_FILE,
            restart_file=self._RESTART_PATTERN if continuing else None,
            plumed_file=self._PLUMED_FILE,
            plumed_log=self._PLUMED_LOG,
            dump_file=self._DUMP_FILE,
            timeout_seconds=timeout_seconds(walltime),
            deviation_model_files=[self._deviation_model_file(*item) for item in deviation_models.items()],
            model_devi_file=self._MODEL_DEVI_FILE,
        )
        with folder.open(self._INPUT_FILE, 'w') as handle:
            handle.write(script)

        settings = self.inputs.settings.get_dict() if 'settings' in self.inputs else {}
        remote_copy_list = []
        if continuing:  # every restart file of the parent: LAMMPS reads the one with the largest timestep
            parent = self.inputs.parent_folder
            remote_copy_list.append(
                (parent.computer.uuid, f'{parent.get_remote_path()}/{self._RESTART_PATTERN}', '.')
            )
        calcinfo = self.code_calcinfo(
            [
                '-in',
                self._INPUT_FILE,
                '-log',
                self._LOG_FILE,
                '-nocite',
                *map(str, settings.get('cmdline', [])),
            ],
            [self._LOG_FILE, self._COLVAR_FILE, self._DUMP_FILE, self._PLUMED_LOG, self._MODEL_DEVI_FILE],
            local_copy_list=[
                (model.uuid, model_filename(model), model_file),
                *(
                    (node.uuid, model_filename(node), self._deviation_model_file(name, node))
                    for name, node in deviation_models.items()
                ),
            ],
            remote_copy_list=remote_copy_list,
        )
        calcinfo.retrieve_temporary_list = [self._RESTART_PATTERN]  # the parser keeps the newest
        return calcinfo

    @classmethod
    def _model_file(cls, model: DeepPotentialData | orm.SinglefileData) -> str:
        """File name of the driving model: ``model.pb``, or ``model.pth`` for a PyTorch model."""
        return f'{Path(cls._MODEL_FILE).stem}{model_suffix(model)}'

    @staticmethod
    def _deviation_model_file(name: str, node: DeepPotentialData | orm.SinglefileData) -> str:
        """File name of the deviation model ``name`` (the extension of its backend)."""
        return f'deviation_{name}{model_suffix(node)}'
