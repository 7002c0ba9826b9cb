"""``AseMdCalculation``: relax a structure or run NVT MD (Nosé-Hoover chain) with an ASE calculator.

``TbliteMdCalculation`` (``lisei.tblite_md``, GFN1-xTB) and ``ChgnetMdCalculation`` (``lisei.chgnet_md``,
the pretrained CHGNet) differ only by their calculator.
"""

from __future__ import annotations

import functools
import json
from typing import Any

from aiida import orm
from aiida.common.datastructures import CalcInfo
from aiida.common.folders import Folder
from aiida.engine import CalcJobProcessSpec

from aiida_lisei.calculations.base import LiseiCalcJob
from aiida_lisei.common.validation import dict_port_validator
from aiida_lisei.engines.ase_md import check_parameters
from aiida_lisei.formats.frames_npz import write_structures
from aiida_lisei.science.geometry import validate_frame

__all__ = ('AseMdCalculation', 'ChgnetMdCalculation', 'TbliteMdCalculation')


def validate_structure(structure: orm.StructureData, _ctx: Any = None) -> str | None:
    """Return an error message unless the structure is 3D periodic with no overlapping atoms."""
    reason = validate_frame(structure.get_ase())
    return None if reason is None else f'structure: {reason}'


def validate_inputs(inputs: dict[str, Any], ctx: Any = None) -> str | None:
    """An MD run needs a ``seed`` (its initial velocities are random)."""
    if ctx is not None and 'seed' not in ctx:
        return None  # exposed by a parent that sets the seed itself
    parameters = inputs.get('parameters')
    if parameters is not None and parameters.get('task', 'md') == 'md' and 'seed' not in inputs:
        return 'an MD run (task `md`) needs a `seed` for its initial velocities'
    return None


class AseMdCalculation(LiseiCalcJob):
    """Relax a structure (BFGS/FIRE, optionally the cell) or run NVT MD with an ASE calculator.

    The code is the ``lisei-<calculator>-md`` console script of an ``aiida-lisei`` installation
    (``lisei-tblite-md``, ``lisei-chgnet-md``), run serially as ``lisei-<calculator>-md --structure
    structure.npz --parameters parameters.json --seed N --output trajectory.jsonl``; tblite threads follow
    ``OMP_NUM_THREADS``, CHGNet's its ``threads`` setting.

    Inputs: ``structure`` (Å), ``parameters`` (``Dict``: ``task`` = ``relax`` | ``md``, the calculator's
    settings in the section of its name (``tblite`` or ``chgnet``), ``relax`` = {optimizer, fmax eV/Å,
    max_steps, cell, stride}, ``md`` = {temperature K, timestep fs, n_steps, stride, tdamp fs, tchain};
    defaults in :func:`~aiida_lisei.engines.ase_md.default_parameters`), ``seed`` (``Int``, the
    Maxwell-Boltzmann velocities; required for MD).

    Outputs: ``structure`` (the last geometry, same node class and atom groups as the input),
    ``trajectory`` (``TrajectoryData``: the written steps with ``positions``, ``cells``, ``times`` (fs) and
    the arrays ``energies`` eV, ``forces`` eV/Å, ``stresses`` eV/Å³ (ASE sign), ``temperatures`` K),
    ``output_parameters`` (task, steps, converged, final energy eV, wall time s, calculator and version, mean
    temperature K of an MD run).

    Exit codes (outputs are attached first, so a restart can continue from ``structure``):

    * 302 ``ERROR_OUTPUT_MISSING``: the results file was not retrieved.
    * 310 ``ERROR_OUTPUT_UNREADABLE``: the results file has no valid header or a corrupt line.
    * 312 ``ERROR_OUTPUT_INCOMPLETE``: the engine stopped without its footer line.
    * 400 ``ERROR_OUT_OF_WALLTIME``: the scheduler killed the job on walltime.
    * 410 ``ERROR_RELAX_NOT_CONVERGED``: the relaxation did not reach ``fmax`` within ``max_steps``.
    * 411 ``ERROR_CALCULATOR_FAILED``: the calculator failed during the run (e.g. tblite's SCF not converged).
    """

    _STRUCTURE_FILE = 'structure.npz'
    _PARAMETERS_FILE = 'parameters.json'
    _RESULTS_FILE = 'trajectory.jsonl'
    #: The calculator of :data:`~aiida_lisei.engines.calculators.CALCULATORS` (set by each subclass).
    _CALCULATOR = ''
    _DEFAULT_PARSER = ''

    @classmethod
    def define(cls, spec: CalcJobProcessSpec) -> None:  # type: ignore[override]
        """Define the process specification: inputs, outputs and exit codes."""
        super().define(spec)

        spec.input(
            'structure',
            valid_type=orm.StructureData,
            validator=validate_structure,
            help='Starting structure (Å), 3D periodic.',
        )
        spec.input(
            'parameters',
            valid_type=orm.Dict,
            serializer=orm.to_aiida_type,
            validator=dict_port_validator(functools.partial(check_parameters, calculator=cls._CALCULATOR)),
            help=f'task (`relax` | `md`), and the `{cls._CALCULATOR}`, `relax` and `md` settings.',
        )
        spec.input(
            'seed',
            valid_type=orm.Int,
            required=False,
            serializer=orm.to_aiida_type,
            help='Seed of the Maxwell-Boltzmann initial velocities (required for MD).',
        )
        spec.inputs.validator = validate_inputs

        spec.output('structure', valid_type=orm.StructureData, help='The last geometry of the run.')
        spec.output(
            'trajectory',
            valid_type=orm.TrajectoryData,
            help='Written steps: positions, cells, times (fs), energies, forces, stresses, temperatures.',
        )
        spec.output('output_parameters', valid_type=orm.Dict, help='Summary of the run.')
        spec.default_output_node = 'output_parameters'

        cls.define_file_exit_codes(spec)
        spec.exit_code(
            312,
            'ERROR_OUTPUT_INCOMPLETE',
            message='The engine stopped early, after {steps} steps (no footer line).',
        )
        spec.exit_code(
            400,
            'ERROR_OUT_OF_WALLTIME',
            message='The job ran out of walltime after {steps} steps.',
        )
        spec.exit_code(
            410,
            'ERROR_RELAX_NOT_CONVERGED',
            message='The relaxation did not converge within {steps} steps (the last structure is attached).',
        )
        spec.exit_code(
            411, 'ERROR_CALCULATOR_FAILED', message='The calculator failed after {steps} steps: {reason}'
        )

    def prepare_for_submission(self, folder: Folder) -> CalcInfo:
        """Write the structure and the complete parameters; run ``lisei-<calculator>-md`` on them."""
        with folder.open(self._STRUCTURE_FILE, 'wb') as handle:
            write_structures(handle, {'structure': self.inputs.structure.get_ase()})
        with folder.open(self._PARAMETERS_FILE, 'w') as handle:
            json.dump(
                check_parameters(self.inputs.parameters.get_dict(), self._CALCULATOR),
                handle,
                indent=2,
                sort_keys=True,
            )

        arguments = [
            '--structure',
            self._STRUCTURE_FILE,
            '--parameters',
            self._PARAMETERS_FILE,
            '--seed',
            str(self.inputs.seed.value if 'seed' in self.inputs else 0),
            '--output',
            self._RESULTS_FILE,
        ]
        return self.code_calcinfo(arguments, [self._RESULTS_FILE])


class TbliteMdCalculation(AseMdCalculation):
    """:class:`AseMdCalculation` with tblite (GFN1-xTB by default; code ``lisei-tblite-md``)."""

    _CALCULATOR = 'tblite'
    _DEFAULT_PARSER = 'lisei.tblite_md'


class ChgnetMdCalculation(AseMdCalculation):
    """:class:`AseMdCalculation` with the pretrained CHGNet (code ``lisei-chgnet-md``; a demo level)."""

    _CALCULATOR = 'chgnet'
    _DEFAULT_PARSER = 'lisei.chgnet_md'
