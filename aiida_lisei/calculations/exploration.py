"""``ExplorationCalculation``: DeePMD molecular dynamics in LAMMPS with the model deviation of an ensemble."""

from __future__ import annotations

from typing import Any

from aiida import orm
from aiida.common.datastructures import CalcInfo
from aiida.common.folders import Folder
from aiida.engine import CalcJobProcessSpec

from aiida_lisei.calculations.base import LiseiCalcJob, validate_guards, validate_seed, validate_structure
from aiida_lisei.common.validation import dict_port_validator
from aiida_lisei.data.deep_potential import DeepPotentialData, model_filename, model_suffix, models_type_map
from aiida_lisei.formats.lammps import (
    check_exploration_parameters,
    generate_exploration_script,
    lammps_data_text,
    timeout_seconds,
)

__all__ = ('ExplorationCalculation',)

validate_parameters = dict_port_validator(check_exploration_parameters)


def validate_inputs(inputs: dict[str, Any], ctx: Any = None) -> str | None:
    """Check the ensemble (>= 2 models, one type map) and that the structure is periodic and typed by it."""
    if ctx is not None and ('models' not in ctx or 'structure' not in ctx):
        return None
    models = inputs.get('models', {})
    if len(models) < 2:
        return f'at least two models are needed for a model deviation, got {len(models)}'
    try:
        type_map = models_type_map(models)
    except ValueError as exception:
        return str(exception)
    structure = inputs['structure']
    if not all(structure.pbc):
        return 'the structure must be periodic in all three directions'
    missing = structure.get_symbols_set() - set(type_map)
    if missing:
        return f'elements {sorted(missing)} of the structure are not in the type map {list(type_map)}'
    return None


class ExplorationCalculation(LiseiCalcJob):
    """Explore configurations by DeePMD MD in LAMMPS and record the model deviation of an ensemble.

    The code is LAMMPS with the DeePMD-kit pair style (``<venv>/bin/lmp`` loads it as a plugin), run as
    ``lmp -in input.lammps -log log.lammps -nocite``. The models are copied as ``model_<i>.pb`` in the
    sorted order of their keys; the first drives the dynamics, all give the deviation
    (``pair_style deepmd ... out_file model_devi.out out_freq <stride>``). The structure is written as
    ``structure.data`` with atom types in the models' type map order (LAMMPS' lower-triangular cell: the
    frames are in that orientation). Velocities come from ``velocity create`` with the ``seed`` input: with
    one MPI rank a run is deterministic. With ``max_wallclock_seconds`` set, ``timer timeout`` stops LAMMPS
    at 90 % of it, so that the frames so far are parsed.

    Inputs: ``structure`` (``StructureData``, Å), ``models`` (namespace of frozen models:
    ``DeepPotentialData``, its compressed model if any, or ``SinglefileData`` .pb files, whose optional
    ``type_map`` attribute defaults to the study's Li P S Cl; all models must share one type map),
    ``parameters`` (``Dict``, see :data:`~aiida_lisei.formats.lammps.DEFAULT_EXPLORATION_PARAMETERS`),
    ``seed`` (``Int``, velocity seed).

    Outputs (``lisei.exploration`` parser): ``model_devi`` (``ArrayData``, one array per column of
    ``model_devi.out``: ``step``, ``max_devi_v`` ... ``avg_devi_f``; forces eV/Å), ``trajectory``
    (``TrajectoryData``: positions Å, cells Å, symbols, ``stepids``, times ps, ``atom_ids``),
    ``output_parameters`` (``Dict``: thermo averages, ``n_frames``, LAMMPS version, wall time s, ...).

    Exit codes: 302 ``ERROR_OUTPUT_MISSING``, 310 ``ERROR_OUTPUT_UNREADABLE``,
    311 ``ERROR_FRAMES_MISALIGNED``, 312 ``ERROR_OUTPUT_INCOMPLETE``, 350 ``ERROR_LAMMPS``,
    400 ``ERROR_OUT_OF_WALLTIME``, 410 ``ERROR_LOST_ATOMS``, 411 ``ERROR_NAN_ENERGY``.
    """

    _DEFAULT_PARSER = 'lisei.exploration'

    _INPUT_FILE = 'input.lammps'
    _DATA_FILE = 'structure.data'
    _LOG_FILE = 'log.lammps'
    _MODEL_DEVI_FILE = 'model_devi.out'
    _DUMP_FILE = 'traj.dump'

    @classmethod
    def define(cls, spec: CalcJobProcessSpec) -> None:  # type: ignore[override]
        """Define the process specification: inputs, outputs and exit codes."""
        super().define(spec)

        spec.input(
            'structure',
            valid_type=orm.StructureData,
            validator=validate_structure,
            help='Initial configuration (Å), 3D periodic.',
        )
        spec.input_namespace(
            'models',
            valid_type=(orm.SinglefileData, DeepPotentialData),
            dynamic=True,
            help='Frozen DeePMD models (SinglefileData .pb or DeepPotentialData); the first in sorted key '
            'order drives the MD.',
        )
        spec.input(
            'parameters',
            valid_type=orm.Dict,
            serializer=orm.to_aiida_type,
            validator=validate_parameters,
            help='MD settings: ensemble, temperature (K), pressure (bar), n_steps, timestep (fs), stride, '
            'thermostat_damping and barostat_damping (fs), pressure_coupling, barostat (nose_hoover or '
            'berendsen, equilibration only) and barostat_modulus (bar, Berendsen).',
        )
        spec.input(
            'seed',
            valid_type=orm.Int,
            serializer=orm.to_aiida_type,
            validator=validate_seed,
            help='Seed of the initial velocities (LAMMPS `velocity create`).',
        )
        spec.input(
            'guards',
            valid_type=orm.Dict,
            required=False,
            serializer=orm.to_aiida_type,
            validator=validate_guards,
            help='Thresholds of the physics guards (science.guards, the defaults when absent): measured and '
            'reported in the `guards` output, never failing the job (finding bad regions is its purpose).',
        )
        spec.inputs.validator = validate_inputs

        spec.output('model_devi', valid_type=orm.ArrayData, help='Columns of model_devi.out, one array each.')
        spec.output('trajectory', valid_type=orm.TrajectoryData, help='Frames at the model-deviation steps.')
        spec.output('output_parameters', valid_type=orm.Dict, help='Thermo averages, counts, timings.')
        spec.output(
            'guards',
            valid_type=orm.Dict,
            required=False,
            help='The physics guards, reported (never enforced).',
        )
        spec.default_output_node = 'output_parameters'

        cls.define_file_exit_codes(spec)
        spec.exit_code(
            311,
            'ERROR_FRAMES_MISALIGNED',
            message='The dumped frames and the model-deviation rows are at different steps: {detail}',
        )
        spec.exit_code(
            312,
            'ERROR_OUTPUT_INCOMPLETE',
            message='LAMMPS stopped after {steps} of {n_steps} steps without an error message.',
        )
        spec.exit_code(350, 'ERROR_LAMMPS', message='LAMMPS stopped with an error: {error}')
        spec.exit_code(
            400,
            'ERROR_OUT_OF_WALLTIME',
            message='The run ran out of walltime after {steps} of {n_steps} steps (outputs attached).',
        )
        spec.exit_code(410, 'ERROR_LOST_ATOMS', message='LAMMPS lost atoms: {error}')
        spec.exit_code(411, 'ERROR_NAN_ENERGY', message='The energy became NaN at step {step}.')

    def prepare_for_submission(self, folder: Folder) -> CalcInfo:
        """Write the data file and input script; copy the models as ``model_<i>.pb`` (PyTorch: ``.pth``)."""
        type_map = models_type_map(self.inputs.models)
        keys = sorted(self.inputs.models)
        models = [self.inputs.models[key] for key in keys]
        model_files = [f'model_{index}{model_suffix(model)}' for index, model in enumerate(models)]
        with folder.open(self._DATA_FILE, 'w') as handle:
            handle.write(lammps_data_text(self.inputs.structure.get_ase(), type_map))
        script = generate_exploration_script(
            self.inputs.parameters.get_dict(),
            model_files,
            type_map,
            self.inputs.seed.value,
            data_file=self._DATA_FILE,
            model_devi_file=self._MODEL_DEVI_FILE,
            dump_file=self._DUMP_FILE,
            timeout_seconds=timeout_seconds(self.inputs.metadata.options.get('max_wallclock_seconds')),
        )
        with folder.open(self._INPUT_FILE, 'w') as handle:
            handle.write(script)

        return self.code_calcinfo(
            ['-in', self._INPUT_FILE, '-log', self._LOG_FILE, '-nocite'],
            [self._LOG_FILE, self._MODEL_DEVI_FILE, self._DUMP_FILE],
            local_copy_list=[
                (self.inputs.models[key].uuid, model_filename(self.inputs.models[key]), name)
                for key, name in zip(keys, model_files, strict=True)
            ],
        )
