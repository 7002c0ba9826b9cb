"""``TbliteParser``: turn the JSON Lines results of ``lisei-tblite`` into a ``TrainingSetData``."""

from __future__ import annotations

from typing import Any

import numpy as np
from aiida import orm
from aiida.engine import ExitCode
from aiida.parsers import Parser

from aiida_lisei.calculations.tblite import TbliteCalculation, resolve_frame_tags
from aiida_lisei.data.training_set import TrainingSetData
from aiida_lisei.formats.frames_jsonl import FrameRecords, read_tblite_results

__all__ = ('TbliteParser', 'read_results_file', 'tblite_level_of_theory')

#: Reason recorded for a frame that has no line in the results file.
NO_RESULT = 'no result: the engine stopped before labelling this frame (see aiida.out)'


def tblite_level_of_theory(header: dict[str, Any]) -> dict[str, Any]:
    """Return the level of theory of a run; ``max_iterations`` is left out (it does not change a label)."""
    parameters = header['parameters']
    return {
        'engine': 'tblite',
        'method': parameters['method'],
        'version': header['tblite_version'],
        'settings': {name: parameters[name] for name in ('electronic_temperature', 'accuracy')},
    }


def read_results_file(parser: Parser, filename: str) -> tuple[str, Any] | ExitCode:
    """Return ``(text, read_tblite_results(text))`` of a retrieved JSON Lines results file, or the exit code.

    A missing file keeps the scheduler's diagnosis (e.g. 120, out of walltime) when there is one, else
    gives ``ERROR_OUTPUT_MISSING``; an unreadable one gives ``ERROR_OUTPUT_UNREADABLE``.
    """
    try:
        text = parser.retrieved.base.repository.get_object_content(filename, mode='r')
    except (FileNotFoundError, OSError):
        if parser.node.exit_status:
            return ExitCode(parser.node.exit_status, parser.node.exit_message or '')
        return parser.exit_codes.ERROR_OUTPUT_MISSING.format(filename=filename)
    try:
        return text, read_tblite_results(text)
    except ValueError as exception:
        return parser.exit_codes.ERROR_OUTPUT_UNREADABLE.format(filename=filename, exception=exception)


class TbliteParser(Parser):
    """Parser of ``TbliteCalculation`` (entry point ``lisei.tblite``).

    Positions and cells of the labels are those of the input structures (exact); energies, forces and
    virials (``-stress * volume``, eV) come from the results file. Frames with no line in the file are
    reported in ``failed_frames`` as well. Outputs are attached before the exit code is decided, so a job
    that stopped early or ran out of walltime still delivers the frames it labelled.
    """

    def parse(self, **kwargs: Any) -> ExitCode | None:
        """Attach ``labels`` and ``failed_frames``; return an exit code if results are incomplete or empty."""
        read = read_results_file(self, TbliteCalculation._RESULTS_FILE)
        if isinstance(read, ExitCode):
            return read
        _, results = read

        keys = sorted(self.node.inputs.structures)
        failed = {key: results.failures.get(key, NO_RESULT) for key in keys if key not in results.frames}
        labelled = [key for key in keys if key in results.frames]
        if labelled:
            self.out('labels', self._build_labels(results, labelled))
        if failed:
            self.out('failed_frames', orm.Dict(failed))
            self.logger.warning(
                f'{len(failed)} of {len(keys)} frames not labelled: '
                + '; '.join(f'{key}: {reason}' for key, reason in list(failed.items())[:5])
            )

        missing = sum(reason == NO_RESULT for reason in failed.values())
        if missing:
            walltime = self.node.exit_status == self.exit_codes.ERROR_SCHEDULER_OUT_OF_WALLTIME.status
            exit_code = (
                self.exit_codes.ERROR_OUT_OF_WALLTIME if walltime else self.exit_codes.ERROR_OUTPUT_INCOMPLETE
            )
            return exit_code.format(missing=missing, nframes=len(keys))
        if not labelled:
            return self.exit_codes.ERROR_ALL_FRAMES_FAILED.format(nframes=len(keys))
        return None

    def _build_labels(self, results: FrameRecords, keys: list[str]) -> TrainingSetData:
        """Return the labelled frames ``keys`` as a one-system training set."""
        from ase.calculators.singlepoint import SinglePointCalculator

        atoms_list = []
        for key in keys:
            record = results.frames[key]
            atoms = self.node.inputs.structures[key].get_ase()
            atoms.calc = SinglePointCalculator(
                atoms,
                energy=record['energy'],
                forces=np.array(record['forces']),
                stress=np.array(record['stress']),
            )
            atoms_list.append(atoms)
        tags = self.node.inputs.tags.get_dict() if 'tags' in self.node.inputs else None
        frame_tags = resolve_frame_tags(tags, keys)
        return TrainingSetData.from_ase(
            atoms_list,
            tblite_level_of_theory(results.header),
            self.node.inputs.system_label.value,
            labelled_by=self.node.uuid,
            tags=[frame_tags[key] for key in keys],
        )
