"""Base class of the CalcJobs of aiida-lisei: serial one-rank defaults, parser and stdout names, and the
exit-code table's cache rule (:mod:`aiida_lisei.common.exit_codes`) applied to every exit code."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from aiida.common.datastructures import CalcInfo, CodeInfo
from aiida.engine import CalcJob, CalcJobProcessSpec, ExitCode, Process, ProcessSpec
from aiida.orm import SinglefileData

from aiida_lisei.common.exit_codes import invalidates_cache as status_invalidates_cache
from aiida_lisei.common.seeds import check_seed
from aiida_lisei.common.validation import (
    check_code_plugin,
    check_finite_geometry,
    dict_port_validator,
    port_validator,
    safe_label,
    value_port_validator,
)
from aiida_lisei.data.deep_potential import check_model_file
from aiida_lisei.science.guards import GUARDS, check_guard_thresholds, enforced_failure

__all__ = (
    'LiseiCalcJob',
    'LiseiCalcJobProcessSpec',
    'check_code',
    'check_model_node',
    'check_structure',
    'define_guard_exit_codes',
    'guard_exit_code',
    'validate_guards',
    'validate_label',
    'validate_model',
    'validate_seed',
    'validate_structure',
    'validate_trajectory',
)

#: Port validator of an engine's ``seed`` input: an integer in ``[1, MAX_SEED]``.
validate_seed = value_port_validator(check_seed)


def check_structure(structure: Any, name: str = '`structure`') -> Any:
    """Raise ``ValueError`` if a ``StructureData`` has NaN/inf positions or cell, or a periodic cell of zero
    volume (:func:`~aiida_lisei.common.validation.check_finite_geometry`); return it."""
    positions = [site.position for site in structure.sites]
    check_finite_geometry(structure.cell, positions, name, periodic=any(structure.pbc))
    return structure


def check_trajectory(trajectory: Any, name: str = '`trajectory`') -> Any:
    """Raise ``ValueError`` if a ``TrajectoryData`` has NaN/inf positions or cells, or a zero-volume cell."""
    cells = trajectory.get_cells()
    positions = trajectory.get_positions()
    for index in range(trajectory.numsteps):
        cell = cells[index] if cells is not None else [[1.0, 0, 0], [0, 1.0, 0], [0, 0, 1.0]]
        check_finite_geometry(cell, positions[index], f'{name} frame {index}', periodic=cells is not None)
    return trajectory


def check_code(code: Any, name: str, plugins: tuple[str, ...]) -> None:
    """Raise ``ValueError`` if ``code`` is missing (``None``) or its default CalcJob plugin is not in
    ``plugins`` (:func:`~aiida_lisei.common.validation.check_code_plugin`); a code without a default plugin
    cannot be checked and passes."""
    if code is not None and code.default_calc_job_plugin is None:
        return
    check_code_plugin(None if code is None else code.default_calc_job_plugin, name, plugins)


def check_model_node(model: Any) -> Any:
    """Raise ``ValueError`` if a model given as a ``SinglefileData`` is empty or not a frozen model of its
    suffix (:func:`~aiida_lisei.data.deep_potential.check_model_file`; a ``DeepPotentialData`` was checked
    when stored); return it."""
    if isinstance(model, SinglefileData):
        with model.open(mode='rb') as handle:
            check_model_file(handle.read(8), model.filename)
    return model


#: Port validators: a finite, non-degenerate structure or trajectory; a safe system label; a model file.
validate_structure = port_validator(check_structure, lambda node: node)
validate_trajectory = port_validator(check_trajectory, lambda node: node)
validate_label = value_port_validator(lambda value: safe_label(value, '`system_label`'))
validate_model = port_validator(check_model_node, lambda node: node)


class LiseiCalcJobProcessSpec(CalcJobProcessSpec):
    """A CalcJob spec whose exit codes follow the table's cache rule: 300-409 invalidate the cache.

    As aiida-quantumespresso's ``calculations/base.py``: no exit code says ``invalidates_cache`` by hand.
    """

    def exit_code(self, status: int, label: str, message: str, invalidates_cache: bool | None = None) -> None:
        """Add an exit code; from 300 on, ``invalidates_cache`` follows from the range and must not be given
        (aiida-core's own codes, below 300, keep theirs)."""
        if status < 300:
            super().exit_code(status, label, message, invalidates_cache=bool(invalidates_cache))
            return
        if invalidates_cache is not None:
            raise ValueError(f'{label}: `invalidates_cache` follows from the status range, do not set it')
        super().exit_code(status, label, message, invalidates_cache=status_invalidates_cache(status))


class LiseiCalcJob(CalcJob):
    """A CalcJob with one machine, one rank, no MPI by default, its own parser and a stdout file.

    Subclasses set ``_DEFAULT_PARSER`` (the parser's entry point, the CalcJob's own name). Exit codes
    follow :mod:`aiida_lisei.common.exit_codes`: 300-409 (outputs missing or unreadable, engine errors,
    walltime) invalidate the cache, by the spec class, not by hand.
    """

    _spec_class = LiseiCalcJobProcessSpec
    _DEFAULT_PARSER: str = ''
    _STDOUT_FILE = 'aiida.out'

    @classmethod
    def define(cls, spec: CalcJobProcessSpec) -> None:  # type: ignore[override]
        """Set the defaults of the scheduler options."""
        super().define(spec)
        options = spec.inputs['metadata']['options']
        options['resources'].default = lambda: {'num_machines': 1, 'num_mpiprocs_per_machine': 1}
        options['withmpi'].default = False
        options['parser_name'].default = cls._DEFAULT_PARSER
        options['output_filename'].default = cls._STDOUT_FILE
        cls.define_parser_contract_exit_codes(spec)

    @staticmethod
    def define_parser_contract_exit_codes(spec: CalcJobProcessSpec) -> None:
        """Define the exit codes of the parser contract (``parsers/base.py``, ``docs/reliability.md``):
        313 ``ERROR_OUTPUT_NONFINITE``, 314 ``ERROR_OUTPUT_PARSING_FAILED``, 315 ``ERROR_OUTPUT_TRUNCATED``.
        """
        spec.exit_code(
            313,
            'ERROR_OUTPUT_NONFINITE',
            message='The outputs hold NaN or infinite values, so they are not a result: {detail}',
        )
        spec.exit_code(
            314,
            'ERROR_OUTPUT_PARSING_FAILED',
            message='The retrieved files could not be parsed: {exception}',
        )
        spec.exit_code(
            315,
            'ERROR_OUTPUT_TRUNCATED',
            message='The file `{filename}` is truncated: {detail}.',
        )

    @staticmethod
    def define_file_exit_codes(spec: CalcJobProcessSpec) -> None:
        """Define 302 ``ERROR_OUTPUT_MISSING`` and 310 ``ERROR_OUTPUT_UNREADABLE`` (invalidate the cache)."""
        spec.exit_code(
            302,
            'ERROR_OUTPUT_MISSING',
            message='The file `{filename}` was not retrieved.',
        )
        spec.exit_code(
            310,
            'ERROR_OUTPUT_UNREADABLE',
            message='The file `{filename}` could not be read: {exception}',
        )

    @staticmethod
    def define_frame_batch_exit_codes(spec: CalcJobProcessSpec) -> None:
        """Define 312 ``ERROR_OUTPUT_INCOMPLETE`` and 400 ``ERROR_OUT_OF_WALLTIME`` of an engine writing one
        result per frame of a batch (message arguments ``missing``, ``nframes``)."""
        spec.exit_code(
            312,
            'ERROR_OUTPUT_INCOMPLETE',
            message='The engine stopped early: {missing} of {nframes} frames have no result.',
        )
        spec.exit_code(
            400,
            'ERROR_OUT_OF_WALLTIME',
            message='The job ran out of walltime: {missing} of {nframes} frames have no result.',
        )

    def code_calcinfo(
        self,
        cmdline_params: Sequence[str],
        retrieve_list: Sequence[str],
        local_copy_list: Sequence[tuple[str, str, str]] = (),
        remote_copy_list: Sequence[tuple[str, str, str]] = (),
    ) -> CalcInfo:
        """Return the ``CalcInfo`` of one run of ``code`` with ``cmdline_params``, stdout to the output file.

        The stdout file is retrieved with ``retrieve_list``; copy lists as in ``CalcInfo``.
        """
        options = self.inputs.metadata.options
        codeinfo = CodeInfo()
        codeinfo.code_uuid = self.inputs.code.uuid
        codeinfo.cmdline_params = list(cmdline_params)
        codeinfo.stdout_name = options.output_filename
        codeinfo.withmpi = options.withmpi

        calcinfo = CalcInfo()
        calcinfo.codes_info = [codeinfo]
        calcinfo.local_copy_list = list(local_copy_list)
        calcinfo.remote_copy_list = list(remote_copy_list)
        calcinfo.retrieve_list = [*retrieve_list, options.output_filename]
        return calcinfo


#: Port validator of the ``guards`` thresholds (``science.guards.DEFAULT_GUARD_THRESHOLDS``).
validate_guards = dict_port_validator(check_guard_thresholds)


def guard_exit_code(process: Process, guards: dict[str, Any], where: str) -> ExitCode | None:
    """Return ``process``'s exit code of the first failed guard of ``guards`` (a guards summary) when they
    are enforced, its message naming what was measured and ``where`` (the run); ``None`` otherwise."""
    failure = enforced_failure(guards)
    if failure is None:
        return None
    definition, detail = failure
    return process.exit_codes[definition.label].format(detail=f'{detail} ({where})')


def define_guard_exit_codes(spec: ProcessSpec) -> None:
    """Declare the exit codes of the guards (450-456, ``science/guards.py``) on a process ``spec``.

    The message of each names the guard and carries ``{detail}``: what was measured, when, and the limit.
    """
    for guard in GUARDS:
        spec.exit_code(
            guard.status,
            guard.label,
            message=f'Unphysical run, guard `{guard.name}` failed ({guard.description}): {{detail}}',
        )
