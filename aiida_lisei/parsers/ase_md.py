"""``AseMdParser``: turn the JSON Lines trajectory of ``lisei-tblite-md``/``lisei-chgnet-md`` into nodes."""

from __future__ import annotations

from typing import Any

import numpy as np
from aiida import orm
from aiida.engine import ExitCode

from aiida_lisei.calculations.ase_md import AseMdCalculation
from aiida_lisei.data.structure import with_geometry
from aiida_lisei.formats.frames_jsonl import read_ase_results
from aiida_lisei.parsers.base import LiseiParser

__all__ = ('AseMdParser', 'build_trajectory')


def build_trajectory(structure: orm.StructureData, frames: list[dict[str, Any]]) -> orm.TrajectoryData:
    """Return the frame records of a run of ``structure`` as a ``TrajectoryData`` (positions Å, cells Å,
    times fs, and the arrays ``energies`` eV, ``forces`` eV/Å, ``stresses`` eV/Å³, ``temperatures`` K)."""
    trajectory = orm.TrajectoryData()
    trajectory.set_trajectory(
        structure.get_ase().get_chemical_symbols(),
        np.array([frame['positions'] for frame in frames], dtype=float),
        stepids=np.array([frame['step'] for frame in frames], dtype=int),
        cells=np.array([frame['cell'] for frame in frames], dtype=float),
        times=np.array([frame['time'] for frame in frames], dtype=float),
        pbc=structure.pbc,
    )
    for name, key in (
        ('energies', 'energy'),
        ('forces', 'forces'),
        ('stresses', 'stress'),
        ('temperatures', 'temperature'),
    ):
        trajectory.set_array(name, np.array([frame[key] for frame in frames], dtype=float))
    return trajectory


class AseMdParser(LiseiParser):
    """Parser of ``AseMdCalculation`` (entry points ``lisei.tblite_md``, ``lisei.chgnet_md``).

    Attaches ``trajectory``, ``structure`` (the last written step) and ``output_parameters`` whenever
    at least one step was written, then decides the exit code: a job that stopped early, ran out of
    walltime, hit a calculator failure or did not converge its relaxation still delivers its last geometry.
    """

    def parse_outputs(self, **kwargs: Any) -> ExitCode | None:
        """Attach the outputs; return an exit code if the run is incomplete, failed or did not converge."""
        results = self.parse_file(AseMdCalculation._RESULTS_FILE, read_ase_results)
        footer = results.footer or {}
        frames = list(results.frames.values())
        steps = footer.get('steps', frames[-1]['step'] if frames else 0)

        if frames:
            structure = self.node.inputs.structure
            self.out('trajectory', build_trajectory(structure, frames))
            self.out('structure', with_geometry(structure, frames[-1]['cell'], frames[-1]['positions']))
            self.out('output_parameters', orm.Dict(self._summary(results.header, footer, frames, steps)))

        if not results.complete:
            if self.out_of_walltime():
                return self.exit_codes.ERROR_OUT_OF_WALLTIME.format(steps=steps)
            return self.exit_codes.ERROR_OUTPUT_INCOMPLETE.format(steps=steps)
        if footer.get('error') or not frames:
            return self.exit_codes.ERROR_CALCULATOR_FAILED.format(steps=steps, reason=footer.get('error'))
        if footer['task'] == 'relax' and not footer.get('converged'):
            return self.exit_codes.ERROR_RELAX_NOT_CONVERGED.format(steps=steps)
        return None

    @staticmethod
    def _summary(
        header: dict[str, Any], footer: dict[str, Any], frames: list[dict[str, Any]], steps: int
    ) -> dict[str, Any]:
        """Return the ``output_parameters`` of a run."""
        task = header['parameters']['task']
        summary = {
            'task': task,
            'steps': steps,
            'nframes': len(frames),
            'final_energy': frames[-1]['energy'],
            'final_energy_units': 'eV',
            'calculator': header['calculator'],
            'version': header['version'],
            'seed': header['seed'],
            'wall_time': footer.get('wall_time'),
            'error': footer.get('error'),
        }
        if task == 'relax':
            summary['converged'] = bool(footer.get('converged'))
            summary['final_fmax'] = frames[-1]['fmax']
        else:
            summary['mean_temperature'] = float(np.mean([frame['temperature'] for frame in frames]))
            drift = frames[-1]['conserved_energy'] - frames[0]['conserved_energy']
            summary['conserved_energy_drift'] = drift
        return summary
