"""``AseLabelParser``: turn the JSON Lines results of ``lisei-tblite``/``lisei-chgnet`` into labels."""

from __future__ import annotations

from typing import Any

import numpy as np
from aiida import orm
from aiida.engine import ExitCode

from aiida_lisei.calculations.ase_label import AseLabelCalculation
from aiida_lisei.data.frames import resolve_frame_tags
from aiida_lisei.data.training_set import TrainingSetData
from aiida_lisei.engines.calculators import get_calculator
from aiida_lisei.formats.frames_jsonl import FrameRecords, read_ase_results
from aiida_lisei.parsers.base import LiseiParser

__all__ = ('NO_RESULT', 'AseLabelParser', 'level_of_theory')

#: Reason recorded for a frame that has no line in the results file.
NO_RESULT = 'no result: the engine stopped before labelling this frame (see aiida.out)'


def level_of_theory(header: dict[str, Any]) -> dict[str, Any]:
    """Return the level of theory of a run from its header (calculator, version, parameters)."""
    spec = get_calculator(header['calculator'])
    return spec.level_of_theory(header['parameters'], header['version'])


class AseLabelParser(LiseiParser):
    """Parser of ``AseLabelCalculation`` (entry points ``lisei.tblite``, ``lisei.chgnet``).

    Positions and cells of the labels are those of the input structures (exact); energies, forces and
    virials (``-stress * volume``, eV) come from the results file. Frames with no line in the file are
    reported in ``failed_frames`` as well. Outputs are attached before the exit code is decided, so a job
    that stopped early or ran out of walltime still delivers the frames it labelled.
    """

    def parse_outputs(self, **kwargs: Any) -> ExitCode | None:
        """Attach ``labels`` and ``failed_frames``; return an exit code if results are incomplete or empty."""
        results = self.parse_file(AseLabelCalculation._RESULTS_FILE, read_ase_results)

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
            exit_code = (
                self.exit_codes.ERROR_OUT_OF_WALLTIME
                if self.out_of_walltime()
                else self.exit_codes.ERROR_OUTPUT_INCOMPLETE
            )
            return exit_code.format(missing=missing, nframes=len(keys))
        if not labelled:
            return self.exit_codes.ERROR_ALL_FRAMES_FAILED.format(nframes=len(keys))
        if not results.complete:  # every frame has a line, but the engine never wrote its footer
            return self.exit_codes.ERROR_OUTPUT_TRUNCATED.format(
                filename=AseLabelCalculation._RESULTS_FILE, detail='no footer after the last frame'
            )
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
            level_of_theory(results.header),
            self.node.inputs.system_label.value,
            labelled_by=self.node.uuid,
            tags=[frame_tags[key] for key in keys],
        )
