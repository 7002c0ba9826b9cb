"""``RestraintMdParser``: thermo, COLVAR, frames, last structure and restart of ``RestraintMdCalculation``."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from aiida import orm
from aiida.engine import ExitCode

from aiida_lisei.calculations.restraint_md import RestraintMdCalculation
from aiida_lisei.data.structure import GroupedStructureData, with_geometry
from aiida_lisei.formats.lammps import (
    DumpFrames,
    LammpsLog,
    check_restraint_md_parameters,
    lammps_failure,
    parse_dump,
    parse_log,
    parse_model_devi,
    summarize_log,
)
from aiida_lisei.formats.plumed import CV_LABEL, LAUNCHER_ERROR, RESTRAINT_LABEL, read_colvar
from aiida_lisei.parsers.base import LiseiParser, OutputFileError, array_data, measure_guards
from aiida_lisei.science.guards import GuardResult, first_failure, guards_summary
from aiida_lisei.science.restraint_cv import check_restraint_parameters

__all__ = ('COLVAR_ARRAY_NAMES', 'RestraintMdParser', 'colvar_arrays')

#: COLVAR fields renamed for ``ArrayData`` (the rest, ``cv`` and ``cn_<A>_<B>``, keep their names).
COLVAR_ARRAY_NAMES = {
    f'{RESTRAINT_LABEL}.{CV_LABEL}_cntr': 's0',
    f'{RESTRAINT_LABEL}.bias': 'bias',
    f'{RESTRAINT_LABEL}.work': 'work',
}


def colvar_arrays(text: str) -> dict[str, np.ndarray]:
    """Return the COLVAR columns with array-safe names: ``time`` (ps), ``cv``, ``cn_*``, ``s0``, ``bias``,
    ``work`` (eV).

    Rows with a repeated time (a continued run prints its first step again) keep the last copy.
    """
    columns = read_colvar(text)
    arrays = {COLVAR_ARRAY_NAMES.get(name, name): values for name, values in columns.items()}
    time = arrays['time']
    keep = np.ones(time.size, dtype=bool)
    if time.size > 1:
        keep[:-1] = ~np.isclose(time[:-1], time[1:], rtol=0.0, atol=1e-9)
    return {name: values[keep] for name, values in arrays.items()}


class RestraintMdParser(LiseiParser):
    """Parser of ``RestraintMdCalculation`` (entry point ``lisei.restraint_md``).

    Attaches what was written (``thermo``, ``colvar``, ``trajectory``, ``structure``, ``restart``,
    ``model_deviation``, ``output_parameters``), measures the physics guards on it (``guards``), then decides
    the exit code: lost atoms 410, NaN energy 411, a restraint error 412, another LAMMPS error 350, a failed
    guard 450-456 (the first in ``science.guards.GUARDS`` order), a stop on ``timer timeout`` or the
    scheduler's walltime 400 (the restart file lets the work chain continue), an unfinished run 312, a
    missing file 302, a dump or COLVAR that ends before the last step of the log 315.
    """

    def parse_outputs(self, **kwargs: Any) -> ExitCode | None:
        """Parse the log, COLVAR and dump; attach the outputs; return an exit code on failure."""
        calc = RestraintMdCalculation
        files = self.retrieved_names()
        launcher_error = self._launcher_error()
        if launcher_error is not None and calc._LOG_FILE not in files:
            return self.exit_codes.ERROR_RESTRAINT.format(error=launcher_error)
        log = self.parse_file(calc._LOG_FILE, parse_log)
        summary = summarize_log(log)

        thermo = orm.ArrayData()
        for name, values in log.thermo.items():
            thermo.set_array(name.replace('_', '').lower() if name.startswith('f_') else name.lower(), values)
        if log.thermo:
            self.out('thermo', thermo)

        exit_code = None
        frames: DumpFrames | None = None
        colvar = deviation = None
        try:
            colvar = self.parse_file(calc._COLVAR_FILE, colvar_arrays, required=False)
            if colvar is not None:
                self.out('colvar', array_data(colvar))
                summary.update(_colvar_summary(colvar))
            frames = self.parse_file(calc._DUMP_FILE, parse_dump, required=False)
            deviation = self.parse_file(calc._MODEL_DEVI_FILE, parse_model_devi, required=False)
        except OutputFileError as error:  # attach what was read, then fail with 310
            exit_code = error.exit_code

        parameters = check_restraint_md_parameters(self.node.inputs.parameters.get_dict())
        if frames is not None and frames.steps.size:
            trajectory = self._trajectory(frames, parameters['timestep'] / 1000)
            self.out('trajectory', trajectory)
            self.out('structure', self._last_structure(trajectory))
        summary['n_frames'] = 0 if frames is None else int(frames.steps.size)
        restart = newest_restart_file(kwargs.get('retrieved_temporary_folder'))
        if restart is not None:
            self.out('restart', orm.SinglefileData(restart, filename=restart.name))
            summary['restart_step'] = int(restart.suffix[1:])
        if deviation is not None and deviation['step'].size:
            self.out('model_deviation', array_data(deviation))
        structure = self.node.inputs.structure
        guards = measure_guards(
            log,
            frames,
            symbols=[site.kind_name for site in structure.sites],
            reference_cell=np.array(structure.cell),
            parameters=parameters,
            thresholds=self._guard_thresholds(),
            work=(colvar['time'], colvar['work']) if colvar is not None and 'work' in colvar else None,
            deviation=deviation,
        )
        if guards is not None:
            self.out('guards', orm.Dict(guards_summary(guards, self._guard_thresholds())))
            summary['guards_failed'] = [result.name for result in guards if result.passed is False]
        self.out('output_parameters', orm.Dict(summary))
        return (
            exit_code
            or self._exit_code(log, files, restart is not None, parameters['n_steps'], guards, launcher_error)
            or self._truncated(log, frames, colvar, parameters)
        )

    def _truncated(
        self,
        log: LammpsLog,
        frames: DumpFrames | None,
        colvar: dict[str, np.ndarray] | None,
        parameters: dict[str, Any],
    ) -> ExitCode | None:
        """315 if the dump or the COLVAR ends before the last step the log reached (a file cut short).

        LAMMPS dumps, and the restraint prints a COLVAR row, at every multiple of its stride up to the
        last step of the run (the last thermo row).
        """
        calc = RestraintMdCalculation
        last = int(log.thermo['Step'][-1])
        stride = parameters['dump_stride']
        expected = last // stride * stride
        found = int(frames.steps[-1]) if frames is not None and frames.steps.size else -1
        if found < expected:
            count = 0 if frames is None else int(frames.steps.size)
            detail = f'{count} frames, the last at step {found}' if count else 'no frame'
            return self.exit_codes.ERROR_OUTPUT_TRUNCATED.format(
                filename=calc._DUMP_FILE, detail=f'{detail}; the log reached step {last} (stride {stride})'
            )
        stride = check_restraint_parameters(self.node.inputs.restraint.get_dict())['colvar_stride']
        timestep_ps = parameters['timestep'] / 1000
        expected_time = last // stride * stride * timestep_ps
        found_time = float(colvar['time'][-1]) if colvar is not None and colvar['time'].size else -1.0
        if found_time < expected_time - 1e-6 * max(1.0, expected_time):
            count = 0 if colvar is None else int(colvar['time'].size)
            return self.exit_codes.ERROR_OUTPUT_TRUNCATED.format(
                filename=calc._COLVAR_FILE,
                detail=f'{count} rows, the last at {found_time} ps; the log reached {expected_time} ps',
            )
        return None

    def _launcher_error(self) -> str | None:
        """The error line ``lisei-lmp-plumed`` wrote to stderr (the scheduler's stderr file) when it stopped
        before or outside LAMMPS (no PLUMED kernel, no numba for the fast route), else ``None``."""
        filename = self.node.get_option('scheduler_stderr')
        stderr = (self.read(filename, required=False) if filename else None) or ''
        return next((line for line in stderr.splitlines() if line.startswith(LAUNCHER_ERROR)), None)

    def _guard_thresholds(self) -> dict[str, Any]:
        return self.node.inputs.guards.get_dict() if 'guards' in self.node.inputs else {}

    def _trajectory(self, frames: DumpFrames, timestep_ps: float) -> orm.TrajectoryData:
        """Return the frames as ``TrajectoryData`` in the order of the atom ids (= structure sites)."""
        structure = self.node.inputs.structure
        order = np.argsort(frames.ids)
        trajectory = orm.TrajectoryData()
        trajectory.set_trajectory(
            symbols=[site.kind_name for site in structure.sites],
            positions=frames.positions[:, order],
            stepids=frames.steps,
            cells=frames.cells,
            times=frames.steps * timestep_ps,
            pbc=structure.pbc,
        )
        trajectory.set_array('atom_ids', frames.ids[order])
        if frames.images is not None:
            trajectory.set_array('images', frames.images[:, order])
        return trajectory

    def _last_structure(self, trajectory: orm.TrajectoryData) -> GroupedStructureData:
        """Return the last frame (sites in atom-id order) with the input structure's kinds, groups, layers."""
        return with_geometry(
            self.node.inputs.structure, trajectory.get_cells()[-1], trajectory.get_positions()[-1]
        )

    def _exit_code(
        self,
        log: LammpsLog,
        files: list[str],
        has_restart: bool,
        n_steps: int,
        guards: list[GuardResult] | None,
        launcher_error: str | None,
    ) -> ExitCode | None:
        """Decide the exit code once the outputs are attached (``launcher_error``: see
        :meth:`_launcher_error`)."""
        calc = RestraintMdCalculation
        failure = lammps_failure(log)
        if failure is not None:
            label, arguments = failure
            return self.exit_codes[label].format(**arguments)
        stdout = self.node.base.attributes.get('output_filename', calc._STDOUT_FILE)
        text = self.read(stdout, required=False) or ''
        restraint_errors = [
            line for line in text.splitlines() if 'restraint callback' in line or 'PLUMED' in line
        ]
        if launcher_error is not None:
            restraint_errors.append(launcher_error)
        if restraint_errors and not log.completed:
            return self.exit_codes.ERROR_RESTRAINT.format(error=restraint_errors[-1].strip())
        if log.errors:
            return self.exit_codes.ERROR_LAMMPS.format(error=log.errors[0])
        failed = first_failure(guards or [])
        if failed is not None and self._guard_thresholds().get('enabled', True):
            definition, result = failed
            return self.exit_codes[definition.label].format(detail=result.detail)

        step = (
            int(log.thermo['Step'][-1])
            if log.thermo.get('Step') is not None and log.thermo['Step'].size
            else 0
        )
        if log.timeout or self.out_of_walltime():
            return self.exit_codes.ERROR_OUT_OF_WALLTIME.format(step=step, n_steps=n_steps)
        if not log.completed or step < n_steps:
            return self.exit_codes.ERROR_OUTPUT_INCOMPLETE.format(step=step, n_steps=n_steps)
        for filename in (calc._COLVAR_FILE, calc._DUMP_FILE):
            if filename not in files:
                return self.exit_codes.ERROR_OUTPUT_MISSING.format(filename=filename)
        if not has_restart:
            return self.exit_codes.ERROR_OUTPUT_MISSING.format(filename=calc._RESTART_PATTERN)
        return None


def newest_restart_file(folder: str | None) -> Path | None:
    """Return the ``restart.<step>`` file with the largest step in ``folder`` (``None`` if there is none)."""
    if folder is None:
        return None
    candidates = [path for path in Path(folder).glob('restart.*') if path.suffix[1:].isdigit()]
    return max(candidates, key=lambda path: int(path.suffix[1:]), default=None)


def _colvar_summary(colvar: dict[str, np.ndarray]) -> dict[str, Any]:
    """Return the first and last CV, s0, bias and work of a COLVAR (CV units, eV)."""
    if not colvar['time'].size:
        return {'n_colvar_rows': 0}
    summary: dict[str, Any] = {'n_colvar_rows': int(colvar['time'].size)}
    for name in ('cv', 's0', 'bias', 'work'):
        if name in colvar:
            summary[f'{name}_initial'] = float(colvar[name][0])
            summary[f'{name}_final'] = float(colvar[name][-1])
    return summary
