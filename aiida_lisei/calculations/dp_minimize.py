"""``DpMinimizeCalculation``: energy minimisation of a structure with a DeePMD model in LAMMPS."""

from __future__ import annotations

from typing import Any

from aiida import orm
from aiida.common.datastructures import CalcInfo
from aiida.common.folders import Folder
from aiida.engine import CalcJobProcessSpec

from aiida_lisei.calculations.base import LiseiCalcJob
from aiida_lisei.common.validation import dict_port_validator
from aiida_lisei.data.deep_potential import DeepPotentialData, model_filename, models_type_map
from aiida_lisei.formats.lammps import (
    check_minimize_parameters,
    generate_minimize_script,
    lammps_data_text,
    timeout_seconds,
)

__all__ = ('DpMinimizeCalculation',)

validate_parameters = dict_port_validator(check_minimize_parameters)


def validate_inputs(inputs: dict[str, Any], ctx: Any = None) -> str | None:
    """Check that the structure is 3D periodic and that the model's type map covers its elements."""
    if ctx is not None and ('model' not in ctx or 'structure' not in ctx):
        return None
    structure = inputs['structure']
    if not all(structure.pbc):
        return 'the structure must be periodic in all three directions (no vacuum slab here)'
    type_map = models_type_map({'model': inputs['model']})
    missing = structure.get_symbols_set() - set(type_map)
    if missing:
        return f'elements {sorted(missing)} of the structure are not in the type map {list(type_map)}'
    return None


class DpMinimizeCalculation(LiseiCalcJob):
    """Relax a structure with a DeePMD model in LAMMPS (``minimize``), the cell too if asked.

    The code is LAMMPS with the DeePMD-kit pair style (``<venv>/bin/lmp``), run as
    ``lmp -in input.lammps -log log.lammps -nocite``. The model is copied as ``model.pb``; the structure is
    written as ``structure.data`` (atom ids = site index + 1; LAMMPS' lower-triangular cell, so the relaxed
    structure is in that orientation). The final configuration is written by ``write_dump``.

    Inputs: ``structure`` (``StructureData``, Å; a ``GroupedStructureData`` keeps its groups),
    ``model`` (``DeepPotentialData`` or ``SinglefileData`` .pb), ``parameters`` (``Dict``, see
    :data:`~aiida_lisei.formats.lammps.DEFAULT_MINIMIZE_PARAMETERS`: ``ftol`` eV/Å, ``pressure`` bar).

    Outputs (``lisei.dp_minimize`` parser): ``structure`` (relaxed, same class and attributes as the input),
    ``output_parameters`` (``Dict``: initial and final energy eV, final force two-norm and largest
    component eV/Å, iterations, stopping criterion, final pressure bar and volume Å³).

    Exit codes: 302 ``ERROR_OUTPUT_MISSING``, 310 ``ERROR_OUTPUT_UNREADABLE``,
    312 ``ERROR_OUTPUT_INCOMPLETE``, 350 ``ERROR_LAMMPS``, 400 ``ERROR_OUT_OF_WALLTIME``,
    410 ``ERROR_MAX_ITERATIONS``,
    710 ``WARNING_MINIMIZATION_STALLED``.
    """

    _DEFAULT_PARSER = 'lisei.dp_minimize'

    _INPUT_FILE = 'input.lammps'
    _DATA_FILE = 'structure.data'
    _LOG_FILE = 'log.lammps'
    _DUMP_FILE = 'relaxed.dump'
    _MODEL_FILE = 'model.pb'

    @classmethod
    def define(cls, spec: CalcJobProcessSpec) -> None:  # type: ignore[override]
        """Define the process specification: inputs, outputs and exit codes."""
        super().define(spec)
        spec.input('structure', valid_type=orm.StructureData, help='Structure to relax (Å), 3D periodic.')
        spec.input(
            'model',
            valid_type=(orm.SinglefileData, DeepPotentialData),
            help='Frozen DeePMD model (SinglefileData .pb or DeepPotentialData).',
        )
        spec.input(
            'parameters',
            valid_type=orm.Dict,
            serializer=orm.to_aiida_type,
            default=lambda: orm.Dict({}),
            validator=validate_parameters,
            help='min_style, etol, ftol (eV/Å), maxiter, maxeval, relax_box, pressure (bar), box_coupling, '
            'vmax.',
        )
        spec.inputs.validator = validate_inputs

        spec.output('structure', valid_type=orm.StructureData, help='The relaxed structure (Å).')
        spec.output('output_parameters', valid_type=orm.Dict, help='Energies (eV), forces (eV/Å), counts.')
        spec.default_output_node = 'output_parameters'

        cls.define_file_exit_codes(spec)
        spec.exit_code(
            312, 'ERROR_OUTPUT_INCOMPLETE', message='LAMMPS stopped without minimisation statistics.'
        )
        spec.exit_code(350, 'ERROR_LAMMPS', message='LAMMPS stopped with an error: {error}')
        spec.exit_code(400, 'ERROR_OUT_OF_WALLTIME', message='The minimisation ran out of walltime.')
        spec.exit_code(
            410,
            'ERROR_MAX_ITERATIONS',
            message='The minimisation stopped on `{criterion}` with the largest force component {fmax:.4g} '
            'eV/Å '
            '(relaxed structure attached: restart from it).',
        )
        spec.exit_code(
            710,
            'WARNING_MINIMIZATION_STALLED',
            message='The minimisation stopped on `{criterion}` with the largest force component {fmax:.4g} '
            'eV/Å '
            '(outputs usable; a tolerance below the model precision cannot be met).',
        )

    def prepare_for_submission(self, folder: Folder) -> CalcInfo:
        """Write the data file and the input script; copy the model as ``model.pb``."""
        type_map = models_type_map({'model': self.inputs.model})
        with folder.open(self._DATA_FILE, 'w') as handle:
            handle.write(lammps_data_text(self.inputs.structure.get_ase(), type_map))
        script = generate_minimize_script(
            self.inputs.parameters.get_dict(),
            self._MODEL_FILE,
            type_map,
            data_file=self._DATA_FILE,
            dump_file=self._DUMP_FILE,
            timeout_seconds=timeout_seconds(self.inputs.metadata.options.get('max_wallclock_seconds')),
        )
        with folder.open(self._INPUT_FILE, 'w') as handle:
            handle.write(script)
        model = self.inputs.model
        return self.code_calcinfo(
            ['-in', self._INPUT_FILE, '-log', self._LOG_FILE, '-nocite'],
            [self._LOG_FILE, self._DUMP_FILE],
            local_copy_list=[(model.uuid, model_filename(model), self._MODEL_FILE)],
        )
