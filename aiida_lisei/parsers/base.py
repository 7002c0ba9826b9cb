"""``LiseiParser``: the one base of the package's parsers (retrieved files, scheduler status, decision order).

As aiida-quantumespresso's ``parsers/base.py``, the base owns what every parser needs; a parser adds only
what is its own (reading its formats through :mod:`aiida_lisei.formats`, attaching its outputs, mapping
its engine's failures to its exit codes):

* **retrieved files**: :meth:`LiseiParser.read` returns a file's text (or bytes); a file that is absent
  gives the *missing* exit code (302 ``ERROR_OUTPUT_MISSING`` unless the parser names another), or
  ``None`` when it is optional; a file that cannot be read or decoded (``OSError``,
  ``UnicodeDecodeError``) gives the *unreadable* exit code (310 ``ERROR_OUTPUT_UNREADABLE``);
  :meth:`LiseiParser.parse_file` also turns the reader's ``ValueError`` into the unreadable code;
* **the scheduler's diagnosis**: when a required file is missing and the scheduler already gave the job
  an exit status (e.g. 120, out of walltime), that status is kept (:meth:`LiseiParser.scheduler_exit_code`);
  :meth:`LiseiParser.out_of_walltime` says whether the scheduler killed the job on its walltime;
* **the decision order**: :meth:`LiseiParser.parse` runs the parser's :meth:`LiseiParser.parse_outputs`,
  which attaches what it can before it decides the exit code; a missing or unreadable required file
  stops it at once (:class:`OutputFileError`) with its exit code.
* **the contract** (``docs/reliability.md``): whatever the content of the retrieved files, :meth:`parse`
  returns outputs or a documented exit code, never raises. Any other exception of the parser gives 314
  ``ERROR_OUTPUT_PARSING_FAILED`` (logged with its traceback); a NaN or infinity in an attached output
  is replaced by ``None`` in a ``Dict`` or attribute (AiiDA cannot store it) and gives 313
  ``ERROR_OUTPUT_NONFINITE`` unless the parser already failed (arrays may keep documented NaN
  placeholders, :attr:`LiseiParser._NONFINITE_ALLOWED`, and any NaN once the parser failed); a parse that
  fails while the scheduler had already diagnosed the job (e.g. 120, out of walltime) keeps the
  scheduler's exit code.
"""

from __future__ import annotations

import math
import traceback
from collections.abc import Callable, Mapping
from typing import Any, ClassVar

import numpy as np
from aiida import orm
from aiida.engine import ExitCode
from aiida.parsers import Parser

from aiida_lisei.formats.cp2k import Cp2kOutputError, parse_cp2k_output
from aiida_lisei.formats.lammps import DumpFrames, LammpsLog, uses_berendsen
from aiida_lisei.science.guards import GuardResult, evaluate_guards

__all__ = (
    'Cp2kBaseParser',
    'LiseiParser',
    'OutputFileError',
    'array_data',
    'finite_or_none',
    'measure_guards',
)


class OutputFileError(Exception):
    """A required retrieved file is missing or unreadable: the parse ends with ``exit_code``."""

    def __init__(self, exit_code: ExitCode) -> None:
        super().__init__(exit_code.message)
        self.exit_code = exit_code


class LiseiParser(Parser):
    """Base of the parsers: retrieved files, the scheduler's exit status, the exit-code decision order.

    Subclasses implement :meth:`parse_outputs` and may rename the file exit codes (``_MISSING``,
    ``_UNREADABLE``: labels of the CalcJob's exit codes, formatted with ``filename`` and ``exception``).
    """

    _MISSING = 'ERROR_OUTPUT_MISSING'
    _UNREADABLE = 'ERROR_OUTPUT_UNREADABLE'
    _PARSING_FAILED = 'ERROR_OUTPUT_PARSING_FAILED'
    _NONFINITE = 'ERROR_OUTPUT_NONFINITE'
    #: Arrays of an output (link label -> array names) whose NaN are documented placeholders (e.g. no time).
    _NONFINITE_ALLOWED: ClassVar[Mapping[str, frozenset[str]]] = {}

    def parse(self, **kwargs: Any) -> ExitCode | None:
        """Run :meth:`parse_outputs` under the contract: an exit code for any content, never an exception.

        A missing or unreadable required file ends it with its exit code; any other exception gives the
        parsing-failed code; non-finite values in the outputs are removed and give the non-finite code; a
        failed parse keeps the scheduler's diagnosis when there is one.
        """
        try:
            exit_code = self.parse_outputs(**kwargs)
        except OutputFileError as error:
            exit_code = error.exit_code
        except Exception as exception:  # the contract: any content of the files gives an exit code
            self.logger.error(f'the parser failed on the retrieved files:\n{traceback.format_exc()}')
            exit_code = self.exit_codes[self._PARSING_FAILED].format(
                exception=f'{type(exception).__name__}: {exception}'
            )
        nonfinite = self.remove_nonfinite(allow_arrays=bool(exit_code and exit_code.status))
        if nonfinite and not (exit_code and exit_code.status):
            exit_code = self.exit_codes[self._NONFINITE].format(detail='; '.join(nonfinite[:5]))
        elif nonfinite:
            self.logger.warning(f'NaN/inf replaced by None in {"; ".join(nonfinite[:5])}')
        if exit_code is not None and exit_code.status in self._parse_failure_statuses():
            scheduler = self.scheduler_exit_code()
            if scheduler is not None and scheduler.status != exit_code.status:
                self.logger.error(f"parse failed ({exit_code.message}); keeping the scheduler's diagnosis")
                return scheduler
        return exit_code

    def _parse_failure_statuses(self) -> set[int]:
        """Statuses of the file exit codes (missing, unreadable, parsing failed, non-finite)."""
        labels = (self._MISSING, self._UNREADABLE, self._PARSING_FAILED, self._NONFINITE)
        return {self.exit_codes[label].status for label in labels if label in self.exit_codes}

    def parse_outputs(self, **kwargs: Any) -> ExitCode | None:
        """Attach the outputs, then return the exit code (``None``: success)."""
        raise NotImplementedError

    def remove_nonfinite(self, allow_arrays: bool = False) -> list[str]:
        """Replace NaN/inf in the attributes of the attached outputs by ``None``; return where any was found.

        Arrays (``ArrayData``) are reported unless ``allow_arrays`` or listed in :attr:`_NONFINITE_ALLOWED`;
        they are kept as they are (``ArrayData`` stores NaN; the exit code says the result is not valid).
        """
        found = []
        for label, node in self._outputs.items():
            if not isinstance(node, orm.Data) or node.is_stored:
                continue
            for key, value in node.base.attributes.all.items():
                if key.startswith('array|'):
                    continue
                cleaned, bad = finite_or_none(value)
                if bad:
                    node.base.attributes.set(key, cleaned)
                    found.append(f'`{label}` {key}')
            if isinstance(node, orm.ArrayData) and not allow_arrays:
                allowed = self._NONFINITE_ALLOWED.get(label, frozenset())
                for name in node.get_arraynames():
                    array = node.get_array(name)
                    if name not in allowed and array.dtype.kind in 'fc' and not np.isfinite(array).all():
                        found.append(f'`{label}` array {name}')
        return found

    # -- retrieved files ------------------------------------------------------------------------------------

    def retrieved_names(self) -> list[str]:
        """Names of the retrieved files."""
        return self.retrieved.base.repository.list_object_names()

    def read(
        self,
        filename: str,
        *,
        mode: str = 'r',
        required: bool = True,
        missing: str | None = None,
        unreadable: str | None = None,
    ) -> Any:
        """Return the content of the retrieved file ``filename`` (text, or bytes with ``mode='rb'``).

        :param required: if false, return ``None`` for an absent file; else raise :class:`OutputFileError`
            with :meth:`missing_exit_code` (label ``missing``, default ``_MISSING``).
        :param unreadable: label of the exit code of a file that cannot be read or decoded (default
            ``_UNREADABLE``).
        """
        try:
            return self.retrieved.base.repository.get_object_content(filename, mode=mode)
        except FileNotFoundError:
            if not required:
                return None
            raise OutputFileError(self.missing_exit_code(filename, missing)) from None
        except (OSError, UnicodeDecodeError) as exception:
            raise OutputFileError(self.unreadable_exit_code(filename, exception, unreadable)) from None

    def parse_file(self, filename: str, reader: Callable[[str], Any], **kwargs: Any) -> Any:
        """Return ``reader`` applied to the text of ``filename`` (``None`` for an absent optional file).

        ``kwargs`` go to :meth:`read`; a ``ValueError`` of ``reader`` gives the unreadable exit code.
        """
        text = self.read(filename, **kwargs)
        if text is None:
            return None
        try:
            return reader(text)
        except ValueError as exception:
            raise OutputFileError(
                self.unreadable_exit_code(filename, exception, kwargs.get('unreadable'))
            ) from None

    # -- exit codes -----------------------------------------------------------------------------------------

    def missing_exit_code(self, filename: str, label: str | None = None) -> ExitCode:
        """The exit code of a missing required file: the scheduler's if it gave one, else ``label``'s."""
        return self.scheduler_exit_code() or self.exit_codes[label or self._MISSING].format(filename=filename)

    def unreadable_exit_code(self, filename: str, exception: Exception, label: str | None = None) -> ExitCode:
        """The exit code of a file that cannot be read, decoded or parsed."""
        self.logger.error(f'cannot read `{filename}`: {exception}')
        return self.exit_codes[label or self._UNREADABLE].format(filename=filename, exception=exception)

    def scheduler_exit_code(self) -> ExitCode | None:
        """The exit status the scheduler output parser already set on the job (e.g. 120), else ``None``."""
        status = self.node.exit_status
        if not status:
            return None
        known = [code for code in self.exit_codes.values() if code.status == status]
        return known[0] if known else ExitCode(status, self.node.exit_message or '')

    def out_of_walltime(self) -> bool:
        """Whether the scheduler stopped the job on its walltime (aiida-core's 120)."""
        return self.node.exit_status == self.exit_codes.ERROR_SCHEDULER_OUT_OF_WALLTIME.status


class Cp2kBaseParser(LiseiParser):
    """Base of the parsers of aiida-cp2k's ``cp2k`` CalcJob: its exit-code labels and walltime policy.

    The main output missing gives 400 ``ERROR_OUT_OF_WALLTIME`` when the scheduler stopped the job on its
    walltime (so the restart handlers see one code), else aiida-cp2k's ``ERROR_OUTPUT_MISSING``; a file
    that cannot be read gives ``ERROR_OUTPUT_READ``, one that is not a CP2K output ``ERROR_OUTPUT_PARSE``.
    The contract's codes are aiida-cp2k's too: any other exception 350 ``ERROR_UNEXPECTED_PARSER_EXCEPTION``,
    NaN/inf in the outputs 302 ``ERROR_OUTPUT_PARSE``.
    """

    _UNREADABLE = 'ERROR_OUTPUT_READ'
    _PARSING_FAILED = 'ERROR_UNEXPECTED_PARSER_EXCEPTION'  # aiida-cp2k's codes: 350
    _NONFINITE = 'ERROR_OUTPUT_PARSE'  # 302

    def scheduler_exit_code(self) -> ExitCode | None:
        """Return 400 if the scheduler reported that the job ran out of walltime, else ``None``."""
        return self.exit_codes.ERROR_OUT_OF_WALLTIME if self.out_of_walltime() else None

    def walltime_or_abort(self, results: dict[str, Any]) -> ExitCode | None:
        """400: CP2K (or the scheduler, before CP2K ended) stopped on the walltime; 304: an ``[ABORT]``."""
        if results['walltime_exceeded'] or (not results['completed'] and self.out_of_walltime()):
            return self.exit_codes.ERROR_OUT_OF_WALLTIME
        if results['abort'] is not None:
            self.logger.error(f'CP2K aborted: {results["abort"]}')
            return self.exit_codes.ERROR_OUTPUT_CONTAINS_ABORT
        return None

    def read_output(self) -> tuple[str, dict[str, Any]]:
        """Return the text of the main output and what ``formats.cp2k.parse_cp2k_output`` reads in it."""
        filename = self.node.get_option('output_filename')
        text = self.read(filename)
        try:
            return text, parse_cp2k_output(text)
        except Cp2kOutputError as exception:
            exit_code = self.unreadable_exit_code(filename, exception, 'ERROR_OUTPUT_PARSE')
            raise OutputFileError(exit_code) from None


def finite_or_none(value: Any) -> tuple[Any, bool]:
    """Return ``value`` with NaN/inf floats (in nested lists and dicts) replaced by ``None``, and whether any
    was."""
    if isinstance(value, float):
        return (value, False) if math.isfinite(value) else (None, True)
    if isinstance(value, Mapping):
        items = {key: finite_or_none(item) for key, item in value.items()}
        return {key: item for key, (item, _) in items.items()}, any(bad for _, bad in items.values())
    if isinstance(value, list | tuple):
        items = [finite_or_none(item) for item in value]
        return [item for item, _ in items], any(bad for _, bad in items)
    return value, False


def array_data(columns: dict[str, Any]) -> orm.ArrayData:
    """Return an unstored ``ArrayData`` with one array per column."""
    node = orm.ArrayData()
    for name, values in columns.items():
        node.set_array(name, values)
    return node


def measure_guards(
    log: LammpsLog,
    frames: DumpFrames | None,
    *,
    symbols: list[str],
    reference_cell: np.ndarray,
    parameters: dict[str, Any],
    thresholds: dict[str, Any],
    work: tuple[np.ndarray, np.ndarray] | None = None,
    deviation: dict[str, np.ndarray] | None = None,
) -> list[GuardResult] | None:
    """Measure the physics guards (``science.guards``) on what a LAMMPS run wrote; ``None`` without thermo.

    :param frames: the dump (positions in atom-id order, which is the order of ``symbols``).
    :param parameters: the run's MD parameters (``temperature`` K, ``ensemble``, ``pressure`` bar).
    :param work: ``(time ps, work eV)`` of a restraint; ``deviation``: ``model_devi.out`` columns.
    """
    thermo = {name.lower(): values for name, values in log.thermo.items() if values is not None}
    if 'step' not in thermo or not thermo['step'].size:
        return None
    if frames is not None and frames.steps.size:
        order = np.argsort(frames.ids)
        steps, positions, cells = frames.steps, frames.positions[:, order], frames.cells
    else:
        steps, positions, cells = np.zeros(0, dtype=int), np.zeros((0, len(symbols), 3)), np.zeros((0, 3, 3))
    return evaluate_guards(
        thresholds=thresholds,
        thermo=thermo,
        steps=steps,
        positions=positions,
        cells=cells,
        symbols=symbols,
        reference_cell=reference_cell,
        temperature=parameters['temperature'],
        pressure=parameters['pressure'] if parameters['ensemble'] == 'npt' else None,
        work=work,
        deviation=(deviation['step'], deviation['max_devi_f']) if deviation is not None else None,
        conserves_energy=not uses_berendsen(parameters),
    )
