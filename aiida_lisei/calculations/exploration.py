"""``ExplorationCalculation``: DeePMD molecular dynamics in LAMMPS with the model deviation of an ensemble."""

from __future__ import annotations

import io
from collections.abc import Mapping, Sequence
from typing import Any

from aiida import orm
from aiida.common.datastructures import CalcInfo
from aiida.common.folders import Folder
from aiida.engine import CalcJobProcessSpec

from aiida_lisei.calculations.base import LiseiCalcJob
from aiida_lisei.data.deep_potential import COMPRESSED_FILENAME, MODEL_FILENAME, DeepPotentialData
from aiida_lisei.data.frames import STUDY_TYPE_MAP
from aiida_lisei.validation import dict_port_validator

__all__ = (
    'DEFAULT_PARAMETERS',
    'DEFAULT_TYPE_MAP',
    'ExplorationCalculation',
    'check_parameters',
    'generate_input_script',
    'model_filename',
    'models_type_map',
)

#: Type map of a model node without a ``type_map`` attribute (a plain ``SinglefileData``): the study's.
DEFAULT_TYPE_MAP: tuple[str, ...] = STUDY_TYPE_MAP

#: Node types accepted as models: a plain frozen .pb, or a ``DeepPotentialData``.
ModelNode = orm.SinglefileData | DeepPotentialData

#: Parameters and their defaults (``None``: required or unused). Units: K, bar, fs, steps.
DEFAULT_PARAMETERS: dict[str, Any] = {
    'ensemble': 'nvt',  # 'nvt' (Nosé-Hoover) or 'npt' (Nosé-Hoover + isotropic/anisotropic barostat)
    'temperature': None,  # K, required
    'pressure': None,  # bar, required for npt only
    'n_steps': None,  # number of MD steps, required
    'timestep': 1.0,  # fs
    'stride': 10,  # steps between model-deviation rows, dumped frames and thermo lines
    'thermostat_damping': 100.0,  # fs
    'barostat_damping': 1000.0,  # fs
    'pressure_coupling': 'iso',  # 'iso' or 'aniso' (npt only)
}

#: LAMMPS' Park-Miller generator needs 0 < seed < 2^31 - 1.
MAX_SEED = 2**31 - 2

#: Fraction of ``max_wallclock_seconds`` after which LAMMPS stops the run itself (``timer timeout``).
TIMEOUT_FRACTION = 0.9


def check_parameters(parameters: Mapping[str, Any]) -> dict[str, Any]:
    """Return the parameters completed with :data:`DEFAULT_PARAMETERS`; raise ``ValueError`` if invalid."""
    unknown = set(parameters) - set(DEFAULT_PARAMETERS)
    if unknown:
        raise ValueError(f'unknown parameters {sorted(unknown)}; known: {sorted(DEFAULT_PARAMETERS)}')
    full = {**DEFAULT_PARAMETERS, **parameters}
    if full['ensemble'] not in ('nvt', 'npt'):
        raise ValueError(f"`ensemble` must be 'nvt' or 'npt', got {full['ensemble']!r}")
    if full['ensemble'] == 'npt' and full['pressure'] is None:
        raise ValueError('`pressure` (bar) is required for the npt ensemble')
    if full['ensemble'] == 'nvt' and full['pressure'] is not None:
        raise ValueError("`pressure` is given but `ensemble` is 'nvt': set `ensemble` to 'npt'")
    if full['pressure_coupling'] not in ('iso', 'aniso'):
        raise ValueError(f"`pressure_coupling` must be 'iso' or 'aniso', got {full['pressure_coupling']!r}")
    for name in ('n_steps', 'stride'):
        value = full[name]
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f'`{name}` must be a positive integer, got {value!r}')
    for name in ('temperature', 'timestep', 'thermostat_damping', 'barostat_damping'):
        value = full[name]
        if isinstance(value, bool) or not isinstance(value, int | float) or not value > 0:
            raise ValueError(f'`{name}` must be a positive number, got {value!r}')
    return full


def generate_input_script(
    parameters: Mapping[str, Any],
    model_files: Sequence[str],
    type_map: Sequence[str],
    seed: int,
    data_file: str = 'structure.data',
    model_devi_file: str = 'model_devi.out',
    dump_file: str = 'traj.dump',
    timeout_seconds: int | None = None,
) -> str:
    """Return the LAMMPS input script of an exploration (``units metal``; timestep and dampings in fs).

    The first model drives the dynamics; all models give the deviation, written every ``stride`` steps
    (step 0 included) together with the dumped frame and a thermo line, so rows and frames align.
    """
    p = check_parameters(parameters)
    stride, temperature = p['stride'], p['temperature']
    dt_ps = p['timestep'] / 1000.0
    t_damp, p_damp = p['thermostat_damping'] / 1000.0, p['barostat_damping'] / 1000.0
    if p['ensemble'] == 'nvt':
        fix = f'fix md all nvt temp {temperature} {temperature} {t_damp}'
    else:
        pressure = p['pressure']
        fix = (
            f'fix md all npt temp {temperature} {temperature} {t_damp} '
            f'{p["pressure_coupling"]} {pressure} {pressure} {p_damp}'
        )
    lines = [
        '# aiida-lisei exploration: DeePMD MD with model deviation (units metal: Å, eV, ps, K, bar)',
        'units metal',
        'boundary p p p',
        'atom_style atomic',
        f'read_data {data_file}',
        f'pair_style deepmd {" ".join(model_files)} out_file {model_devi_file} out_freq {stride}',
        f'pair_coeff * * {" ".join(type_map)}',
        f'timestep {dt_ps}',
        f'velocity all create {temperature} {seed} dist gaussian mom yes',
        'thermo_style custom step time temp pe ke etotal press vol',
        'thermo_modify lost error flush yes',
        f'thermo {stride}',
        f'dump traj all custom {stride} {dump_file} id type x y z',
        'dump_modify traj sort id format float %.12g',
        fix,
    ]
    if timeout_seconds is not None:
        hours, rest = divmod(int(timeout_seconds), 3600)
        lines.append(f'timer timeout {hours:d}:{rest // 60:02d}:{rest % 60:02d} every {stride}')
    lines.append(f'run {p["n_steps"]}')
    return '\n'.join(lines) + '\n'


def model_filename(node: ModelNode) -> str:
    """Return the repository name of the frozen model to run: a ``DeepPotentialData``'s compressed model
    when it has one (about 3x faster in LAMMPS), else its ``model.pb``; a ``SinglefileData``'s file."""
    if isinstance(node, orm.SinglefileData):
        return node.filename
    names = node.base.repository.list_object_names()
    return COMPRESSED_FILENAME if COMPRESSED_FILENAME in names else MODEL_FILENAME


def models_type_map(models: Mapping[str, ModelNode]) -> tuple[str, ...]:
    """Return the type map shared by the models (their ``type_map`` attribute, else :data:`DEFAULT_TYPE_MAP`).

    Raises ``ValueError`` if two models declare different type maps.
    """
    maps = {tuple(node.base.attributes.get('type_map', DEFAULT_TYPE_MAP)) for node in models.values()}
    if len(maps) > 1:
        raise ValueError(f'the models have different type maps: {sorted(maps)}')
    return maps.pop() if maps else DEFAULT_TYPE_MAP


validate_parameters = dict_port_validator(check_parameters)


def validate_seed(seed: orm.Int, _ctx: Any = None) -> str | None:
    """Return an error message unless ``0 < seed <= MAX_SEED``."""
    if not 0 < seed.value <= MAX_SEED:
        return f'`seed` must be in [1, {MAX_SEED}], got {seed.value}'
    return None


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
    ``parameters`` (``Dict``, see :data:`DEFAULT_PARAMETERS`), ``seed`` (``Int``, velocity seed).

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

        spec.input('structure', valid_type=orm.StructureData, help='Initial configuration (Å), 3D periodic.')
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
            'thermostat_damping and barostat_damping (fs), pressure_coupling.',
        )
        spec.input(
            'seed',
            valid_type=orm.Int,
            serializer=orm.to_aiida_type,
            validator=validate_seed,
            help='Seed of the initial velocities (LAMMPS `velocity create`).',
        )
        spec.inputs.validator = validate_inputs

        spec.output('model_devi', valid_type=orm.ArrayData, help='Columns of model_devi.out, one array each.')
        spec.output('trajectory', valid_type=orm.TrajectoryData, help='Frames at the model-deviation steps.')
        spec.output('output_parameters', valid_type=orm.Dict, help='Thermo averages, counts, timings.')
        spec.default_output_node = 'output_parameters'

        cls.define_file_exit_codes(spec)
        spec.exit_code(
            311,
            'ERROR_FRAMES_MISALIGNED',
            invalidates_cache=True,
            message='The dumped frames and the model-deviation rows are at different steps: {detail}',
        )
        spec.exit_code(
            312,
            'ERROR_OUTPUT_INCOMPLETE',
            invalidates_cache=True,
            message='LAMMPS stopped after {steps} of {n_steps} steps without an error message.',
        )
        spec.exit_code(
            350, 'ERROR_LAMMPS', invalidates_cache=True, message='LAMMPS stopped with an error: {error}'
        )
        spec.exit_code(
            400,
            'ERROR_OUT_OF_WALLTIME',
            invalidates_cache=True,
            message='The run ran out of walltime after {steps} of {n_steps} steps (outputs attached).',
        )
        spec.exit_code(410, 'ERROR_LOST_ATOMS', message='LAMMPS lost atoms: {error}')
        spec.exit_code(411, 'ERROR_NAN_ENERGY', message='The energy became NaN at step {step}.')

    def prepare_for_submission(self, folder: Folder) -> CalcInfo:
        """Write the data file and the input script; copy the models as ``model_<i>.pb``."""
        from ase.io import write

        type_map = models_type_map(self.inputs.models)
        keys = sorted(self.inputs.models)
        model_files = [f'model_{index}.pb' for index in range(len(keys))]

        buffer = io.StringIO()
        write(
            buffer,
            self.inputs.structure.get_ase(),
            format='lammps-data',
            specorder=list(type_map),
            masses=True,
            units='metal',
            atom_style='atomic',
        )
        with folder.open(self._DATA_FILE, 'w') as handle:
            handle.write(buffer.getvalue())

        walltime = self.inputs.metadata.options.get('max_wallclock_seconds')
        timeout = None if walltime is None else int(TIMEOUT_FRACTION * walltime)
        script = generate_input_script(
            self.inputs.parameters.get_dict(),
            model_files,
            type_map,
            self.inputs.seed.value,
            data_file=self._DATA_FILE,
            model_devi_file=self._MODEL_DEVI_FILE,
            dump_file=self._DUMP_FILE,
            timeout_seconds=timeout,
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
