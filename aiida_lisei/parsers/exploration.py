"""``ExplorationParser``: model deviation, frames and thermo of an ``ExplorationCalculation``."""

from __future__ import annotations

from typing import Any

import numpy as np
from aiida import orm
from aiida.engine import ExitCode

from aiida_lisei.calculations.exploration import ExplorationCalculation
from aiida_lisei.data.deep_potential import models_type_map
from aiida_lisei.formats.lammps import (
    DumpFrames,
    LammpsLog,
    check_exploration_parameters,
    lammps_failure,
    parse_dump,
    parse_log,
    parse_model_devi,
    summarize_log,
)
from aiida_lisei.parsers.base import LiseiParser, OutputFileError, array_data, measure_guards
from aiida_lisei.science.guards import guards_summary
from aiida_lisei.science.selection import last_rows_per_step

__all__ = ('ExplorationParser',)


class ExplorationParser(LiseiParser):
    """Parser of ``ExplorationCalculation`` (entry point ``lisei.exploration``).

    Attaches ``model_devi``, ``trajectory``, ``guards`` (the physics guards measured and reported, never
    enforced: an exploration is meant to find where the model fails) and ``output_parameters`` from
    whatever was written, then
    decides the exit code: a LAMMPS error (lost atoms 410, other 350), a NaN energy (411), a stop on
    ``timer timeout`` or the scheduler's walltime (400), an unfinished run (312), a missing file (302) or
    frames that do not match the model-deviation rows (311).
    """

    def parse_outputs(self, **kwargs: Any) -> ExitCode | None:
        """Parse log, model deviation and dump; attach the outputs; return an exit code on failure."""
        calc = ExplorationCalculation
        files = self.retrieved_names()
        log = self.parse_file(calc._LOG_FILE, parse_log)

        model_devi, frames, exit_code = None, None, None
        try:
            model_devi = self.parse_file(calc._MODEL_DEVI_FILE, parse_model_devi, required=False)
            frames = self.parse_file(calc._DUMP_FILE, parse_dump, required=False)
        except OutputFileError as error:  # attach what was read, then fail with 310
            exit_code = error.exit_code

        summary = summarize_log(log)
        if model_devi is not None:
            self.out('model_devi', array_data(model_devi))
            summary['n_model_devi_rows'] = int(model_devi['step'].size)
        if frames is not None and frames.steps.size:
            self.out('trajectory', self._build_trajectory(frames))
        summary['n_frames'] = 0 if frames is None else int(frames.steps.size)
        if frames is not None and frames.steps.size and frames.types is not None:
            self._report_guards(log, frames, model_devi, summary)
        self.out('output_parameters', orm.Dict(summary))

        return exit_code or self._exit_code(log, model_devi, frames, files)

    def _report_guards(
        self, log: LammpsLog, frames: DumpFrames, model_devi: dict[str, np.ndarray] | None, summary: dict
    ) -> None:
        """Measure the physics guards and attach them (``guards``); the start cell is the structure's."""
        type_map = models_type_map(self.node.inputs.models)
        thresholds = self.node.inputs.guards.get_dict() if 'guards' in self.node.inputs else {}
        structure = self.node.inputs.structure if 'structure' in self.node.inputs else None
        guards = measure_guards(
            log,
            frames,
            symbols=[type_map[atom_type - 1] for atom_type in frames.types[np.argsort(frames.ids)]],
            reference_cell=np.array(structure.cell) if structure is not None else frames.cells[0],
            parameters=check_exploration_parameters(self.node.inputs.parameters.get_dict()),
            thresholds=thresholds,
            deviation=model_devi,
        )
        if guards is not None:  # reported, never enforced
            self.out('guards', orm.Dict(guards_summary(guards, thresholds)))
            summary['guards_failed'] = [result.name for result in guards if result.passed is False]

    def _exit_code(
        self,
        log: LammpsLog,
        model_devi: dict[str, np.ndarray] | None,
        frames: DumpFrames | None,
        files: list[str],
    ) -> ExitCode | None:
        """Decide the exit code once the outputs are attached."""
        calc = ExplorationCalculation
        failure = lammps_failure(log)
        if failure is not None:
            label, arguments = failure
            return self.exit_codes[label].format(**arguments)
        if log.errors:
            return self.exit_codes.ERROR_LAMMPS.format(error=log.errors[0])

        n_steps = check_exploration_parameters(self.node.inputs.parameters.get_dict())['n_steps']
        steps_done = int(log.thermo['Step'][-1]) if log.thermo.get('Step') is not None else 0
        if log.timeout or self.out_of_walltime():
            return self.exit_codes.ERROR_OUT_OF_WALLTIME.format(steps=steps_done, n_steps=n_steps)
        if not log.completed or steps_done < n_steps:
            return self.exit_codes.ERROR_OUTPUT_INCOMPLETE.format(steps=steps_done, n_steps=n_steps)

        for filename in (calc._MODEL_DEVI_FILE, calc._DUMP_FILE):
            if filename not in files:
                return self.exit_codes.ERROR_OUTPUT_MISSING.format(filename=filename)
        devi_steps = model_devi['step'][last_rows_per_step(model_devi['step'])]
        if not np.array_equal(np.sort(devi_steps), frames.steps):
            detail = f'{devi_steps.size} rows at {devi_steps[:5]}..., {frames.steps.size} frames at '
            detail += f'{frames.steps[:5]}...'
            return self.exit_codes.ERROR_FRAMES_MISALIGNED.format(detail=detail)
        return None

    def _build_trajectory(self, frames: DumpFrames) -> orm.TrajectoryData:
        """Return the dumped frames as a ``TrajectoryData`` (symbols from the models' type map)."""
        type_map = models_type_map(self.node.inputs.models)
        parameters = check_exploration_parameters(self.node.inputs.parameters.get_dict())
        timestep_ps = parameters['timestep'] / 1000.0
        trajectory = orm.TrajectoryData()
        trajectory.set_trajectory(
            symbols=[type_map[atom_type - 1] for atom_type in frames.types],
            positions=frames.positions,
            stepids=frames.steps,
            cells=frames.cells,
            times=frames.steps * timestep_ps,
            pbc=(True, True, True),
        )
        trajectory.set_array('atom_ids', frames.ids)
        return trajectory
