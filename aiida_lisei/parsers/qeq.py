"""``QEqParser``: turn the JSON Lines results of ``lisei-qeq`` into charge arrays and group statistics."""

from __future__ import annotations

from typing import Any

import numpy as np
from aiida import orm
from aiida.engine import ExitCode

from aiida_lisei.calculations.qeq import (
    QEqCalculation,
    selected_frames,
    trajectory_site_indices,
    trajectory_species,
)
from aiida_lisei.formats.frames_jsonl import FrameRecords, read_qeq_results
from aiida_lisei.parsers.base import LiseiParser
from aiida_lisei.science.nucleation import group_statistics

__all__ = ('QEqParser', 'charge_arrays')


def charge_arrays(results: FrameRecords, nframes: int) -> dict[str, np.ndarray]:
    """Arrays of the ``charges`` output for ``nframes`` expected frames (NaN, -1, False where none).

    :return: ``charges`` (F, N) e, ``iterations``, ``converged``, ``chemical_potential`` (eV/e),
        ``energy`` (eV), ``residual`` (eV/e).
    """
    natoms = int(results.header['natoms'])
    arrays = {
        'charges': np.full((nframes, natoms), np.nan),
        'iterations': np.full(nframes, -1, dtype=np.int64),
        'converged': np.zeros(nframes, dtype=bool),
        'chemical_potential': np.full(nframes, np.nan),
        'energy': np.full(nframes, np.nan),
        'residual': np.full(nframes, np.nan),
    }
    for index, record in results.frames.items():
        if not 0 <= index < nframes:
            continue
        arrays['charges'][index] = np.asarray(record['charges'], dtype=float)
        for key in ('iterations', 'converged', 'chemical_potential', 'energy', 'residual'):
            arrays[key][index] = record[key]
    return arrays


class QEqParser(LiseiParser):
    """Parser of ``QEqCalculation`` (entry point ``lisei.qeq``).

    Frame indices, step ids and times come from the input trajectory and stride (exact); charges and
    solver data from the results file. Outputs are attached before the exit code is decided, so a job that
    stopped early, failed on some frames or did not converge still delivers what it computed.
    """

    #: A trajectory without times gives NaN times (documented placeholders, not a failure).
    _NONFINITE_ALLOWED = {'charges': frozenset({'times'})}

    def parse_outputs(self, **kwargs: Any) -> ExitCode | None:
        """Attach ``charges`` and ``statistics``; return an exit code for missing, failed or slow frames."""
        trajectory = self.node.inputs.trajectory

        def read(text: str) -> FrameRecords:
            try:
                results = read_qeq_results(text)
                natoms = int(results.header['natoms'])
            except (TypeError, KeyError) as exception:
                raise ValueError(f'{type(exception).__name__}: {exception}') from None
            if natoms != trajectory.numsites:
                raise ValueError(f'{natoms} atoms in the header, {trajectory.numsites} in the trajectory')
            return results

        results = self.parse_file(QEqCalculation._RESULTS_FILE, read)

        indices = selected_frames(trajectory.numsteps, self.node.inputs.stride.value)
        nframes = len(indices)
        arrays = charge_arrays(results, nframes)
        if results.frames:
            self.out('charges', self._charges_node(arrays, indices))
            self.out('statistics', self._statistics(arrays, indices, results))

        missing = nframes - len(set(results.frames) | set(results.failures))
        if missing:
            exit_code = (
                self.exit_codes.ERROR_OUT_OF_WALLTIME
                if self.out_of_walltime()
                else self.exit_codes.ERROR_OUTPUT_INCOMPLETE
            )
            return exit_code.format(missing=missing, nframes=nframes)
        if results.failures:
            reasons = '; '.join(
                f'frame {index}: {reason}' for index, reason in list(results.failures.items())[:3]
            )
            self.logger.warning(f'QEq failed on {len(results.failures)} of {nframes} frames: {reasons}')
            return self.exit_codes.ERROR_QEQ_FAILED.format(
                failed=len(results.failures), nframes=nframes, reasons=reasons
            )
        not_converged = int(np.count_nonzero(~arrays['converged']))
        if not_converged:
            return self.exit_codes.ERROR_NOT_CONVERGED.format(count=not_converged, nframes=nframes)
        if not results.complete:  # every frame has a line, but the engine never wrote its footer
            return self.exit_codes.ERROR_OUTPUT_TRUNCATED.format(
                filename=QEqCalculation._RESULTS_FILE, detail='no footer after the last frame'
            )
        return None

    def _charges_node(self, arrays: dict[str, np.ndarray], indices: np.ndarray) -> orm.ArrayData:
        """Return the ``charges`` ArrayData: solver arrays plus frame indices, step ids and times (ps)."""
        trajectory = self.node.inputs.trajectory
        times = trajectory.get_times()
        node = orm.ArrayData()
        for name, values in arrays.items():
            node.set_array(name, values)
        node.set_array('frame_indices', indices.astype(np.int64))
        node.set_array('stepids', np.asarray(trajectory.get_stepids())[indices].astype(np.int64))
        node.set_array(
            'times',
            np.full(len(indices), np.nan) if times is None else np.asarray(times, dtype=float)[indices],
        )
        return node

    def _statistics(
        self, arrays: dict[str, np.ndarray], indices: np.ndarray, results: FrameRecords
    ) -> orm.Dict:
        """Return mean and std of the charges (e) per region group and per element, per frame."""
        trajectory = self.node.inputs.trajectory
        structure = self.node.inputs.structure if 'structure' in self.node.inputs else None
        charges = arrays['charges']
        species = trajectory_species(trajectory, structure)
        data: dict[str, Any] = {
            'units': {'charges': 'e', 'times': 'ps'},
            'frame_indices': indices.tolist(),
            'stepids': np.asarray(trajectory.get_stepids())[indices].tolist(),
            'species': group_statistics(charges, species),
            'total_charge': [float(value) if np.isfinite(value) else None for value in charges.sum(axis=1)],
            'not_converged': [
                int(i) for i in np.flatnonzero(~arrays['converged']) if int(i) in results.frames
            ],
            'failed': {str(index): reason for index, reason in sorted(results.failures.items())},
        }
        times = trajectory.get_times()
        data['times'] = (
            [None] * len(indices)
            if times is None
            else [float(value) for value in np.asarray(times, dtype=float)[indices]]
        )
        if structure is not None:
            labels = np.asarray(structure.atom_groups)[trajectory_site_indices(trajectory)]
            data['groups'] = group_statistics(charges, labels)
        return orm.Dict(data)
