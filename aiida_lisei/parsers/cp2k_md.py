"""``Cp2kMdParser``: trajectory, final structure and summary of a CP2K ``MD``/``GEO_OPT``/``CELL_OPT`` run.

Use it on aiida-cp2k's ``cp2k`` CalcJob with ``metadata.options.parser_name = 'lisei.cp2k.md'`` (as
:class:`~aiida_lisei.workchains.cp2k_md.Cp2kMdWorkChain` does); add ``aiida-1.ener`` to the retrieved
files (``settings.additional_retrieve_list``) for the temperatures. The files are read by
:mod:`aiida_lisei.formats.cp2k_md` and the main output by :mod:`aiida_lisei.formats.cp2k`.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from aiida import orm
from aiida.engine import ExitCode

from aiida_lisei.data.structure import with_geometry
from aiida_lisei.formats.cp2k import Cp2kOutputError
from aiida_lisei.formats.cp2k_md import (
    ENERGY_FILE,
    parse_cp2k_energies,
    parse_cp2k_restart_geometry,
    parse_cp2k_trajectory,
)
from aiida_lisei.parsers.base import Cp2kBaseParser

__all__ = ('Cp2kMdParser',)

_MAX_STEPS_REACHED = 'MAXIMUM NUMBER OF OPTIMIZATION STEPS REACHED'


class Cp2kMdParser(Cp2kBaseParser):
    """Parse a CP2K MD or geometry/cell optimisation with the trajectory printed by ``MOTION/PRINT``.

    Outputs, attached whenever they were written (also when the run then fails, so a walltime-killed MD
    keeps its frames):

    * ``output_trajectory`` (TrajectoryData): positions (Å), cells (Å), step ids, times (fs; MD only),
      arrays ``energies`` (eV, CP2K's potential energy of each printed frame) and ``forces`` (eV/Å);
    * ``output_structure`` (StructureData): the geometry of the restart file (the last step), with the
      kinds of the input structure;
    * ``output_parameters`` (Dict): ``cp2k_version``, ``run_type``, ``steps`` (last step), ``nframes``,
      ``final_energy`` (eV), ``final_fmax`` (eV/Å), ``scf_converged`` (every SCF of the run),
      ``wall_time_seconds``; with an ``.ener`` file ``mean_temperature`` (K) and ``conserved_energy_drift``
      (eV/atom, last minus first).

    Exit codes (aiida-cp2k's): 210 output missing, 301/302 unreadable, 321/323/325 a positions, forces or
    cell file with fewer frames than another (cut short), 400 walltime, 304 ``[ABORT]``,
    450 an SCF did not converge (not for MD: a warning and ``scf_converged`` false), 501 optimisation
    not converged in ``MAX_ITER``, 303 incomplete.
    """

    def parse_outputs(self, **kwargs: Any) -> ExitCode | None:
        """Parse the main output and the trajectory files, attach the outputs, return the exit code."""
        text, results = self.read_output()
        try:
            frames = self._parse_frames()
            structure = self._final_structure()
        except Cp2kOutputError as exception:
            self.logger.error(f'cannot parse the CP2K output: {exception}')
            return self.exit_codes.ERROR_OUTPUT_PARSE

        truncated = self._truncated_file(frames) if results['completed'] else None  # else 400 or 303
        if truncated is not None:
            return truncated

        parameters = {
            'cp2k_version': results['version'],
            'run_type': self.node.inputs.parameters['GLOBAL']['RUN_TYPE'],
            'scf_converged': results['scf_converged'],
            'wall_time_seconds': results['wall_time_seconds'],
            'nframes': 0 if frames is None else len(frames['steps']),
        }
        if frames is not None and len(frames['steps']):
            self.out('output_trajectory', self._trajectory(frames))
            parameters.update(
                {
                    'steps': int(frames['steps'][-1]),
                    'final_energy': float(frames['energies'][-1]),
                    'final_fmax': float(np.linalg.norm(frames['forces'][-1], axis=1).max()),
                }
            )
            parameters.update(self._thermodynamics(len(frames['symbols'])))
        if structure is not None:
            self.out('output_structure', structure)
        self.out('output_parameters', orm.Dict(parameters))

        stopped = self.walltime_or_abort(results)
        # CP2K's own walltime stop can follow the MD's last step: nothing is missing, nothing to continue
        finished_md = (
            results['walltime_exceeded'] and self._reached_last_step(parameters) and structure is not None
        )
        if stopped is not None and not finished_md:  # CP2K's walltime message comes first: stopped is 400
            return stopped
        if not results['scf_converged'] and results['n_scf_steps']:
            if parameters['run_type'] != 'MD':
                return self.exit_codes.ERROR_SCF_NOT_CONVERGED
            # CP2K goes on after an unconverged SCF step; failing would throw away a long AIMD run
            self.logger.warning('an SCF of the MD did not converge (`scf_converged` false)')
        if _MAX_STEPS_REACHED in text:
            return self.exit_codes.ERROR_MAXIMUM_NUMBER_OPTIMIZATION_STEPS_REACHED
        if not (results['completed'] or finished_md) or structure is None:  # no frame: no step left
            return self.exit_codes.ERROR_OUTPUT_INCOMPLETE
        return None

    def _reached_last_step(self, parameters: dict[str, Any]) -> bool:
        """Whether an MD wrote the frame of its last step (``MOTION/MD/STEPS``, counted from step 0)."""
        steps = self.node.inputs.parameters.get_dict().get('MOTION', {}).get('MD', {}).get('STEPS')
        return parameters['run_type'] == 'MD' and steps is not None and parameters.get('steps', -1) >= steps

    def _read(self, name: str) -> str | None:
        """Return the text of a retrieved file, or ``None`` if it is absent."""
        return self.read(name, required=False)

    def _parse_frames(self) -> dict[str, Any] | None:
        """Return the frames of the positions, forces and cell files (``None`` without positions)."""
        calculation = self.node.process_class
        positions = self._read(calculation._DEFAULT_TRAJECT_XYZ_FILE_NAME)
        if positions is None:
            return None
        return parse_cp2k_trajectory(
            positions,
            self._read(calculation._DEFAULT_TRAJECT_FORCES_FILE_NAME),
            self._read(calculation._DEFAULT_TRAJECT_CELL_FILE_NAME),
        )

    def _truncated_file(self, frames: dict[str, Any] | None) -> ExitCode | None:
        """Return the read error (321, 323, 325) of a trajectory file with fewer frames than another one.

        The three files are written at the same steps; a file cut short (a truncated copy, a full disk) would
        otherwise drop frames silently from the matched trajectory.
        """
        if frames is None:
            return None
        counts = {name: count for name, count in frames['counts'].items() if count is not None}
        most = max(counts.values())
        labels = {
            'positions': 'ERROR_COORDINATES_TRAJECTORY_READ',
            'forces': 'ERROR_FORCES_TRAJECTORY_READ',
            'cells': 'ERROR_CELLS_TRAJECTORY_READ',
        }
        for name, count in counts.items():
            if count < most:
                self.logger.error(f'the {name} file has {count} frames, another trajectory file {most}')
                return self.exit_codes[labels[name]]
        return None

    def _trajectory(self, frames: dict[str, Any]) -> orm.TrajectoryData:
        """Return the TrajectoryData of the parsed frames (the input cell for every frame if none printed)."""
        cells = frames['cells']
        if cells is None:
            cells = np.repeat(np.array(self.node.inputs.structure.cell)[None], len(frames['steps']), axis=0)
        energies = self._read(ENERGY_FILE)
        times = None
        if energies is not None:
            table = parse_cp2k_energies(energies)
            by_step = dict(zip(table['steps'].tolist(), table['times'].tolist(), strict=True))
            if all(int(step) in by_step for step in frames['steps']):
                times = np.array([by_step[int(step)] for step in frames['steps']])
        trajectory = orm.TrajectoryData()
        trajectory.set_trajectory(
            symbols=frames['symbols'],
            positions=frames['positions'],
            stepids=frames['steps'],
            cells=cells,
            times=times,
        )
        trajectory.set_array('energies', frames['energies'])
        if frames['forces'] is not None:
            trajectory.set_array('forces', frames['forces'])
        return trajectory

    def _thermodynamics(self, natoms: int) -> dict[str, float]:
        """Return the mean temperature (K) and conserved-energy drift (eV/atom) of an MD run's ``.ener``."""
        text = self._read(ENERGY_FILE)
        if text is None:
            return {}
        table = parse_cp2k_energies(text)
        if not len(table['steps']):
            return {}
        conserved = table['conserved_energies']
        return {
            'mean_temperature': float(table['temperatures'].mean()),
            'conserved_energy_drift': float((conserved[-1] - conserved[0]) / natoms),
        }

    def _final_structure(self) -> orm.StructureData | None:
        """Return the input structure with the cell and positions of the restart file, or ``None``."""
        text = self._read(self.node.process_class._DEFAULT_RESTART_FILE_NAME)
        if text is None:
            return None
        cell, positions = parse_cp2k_restart_geometry(text)
        return with_geometry(self.node.inputs.structure, cell, positions)
