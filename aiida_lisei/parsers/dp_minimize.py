"""``DpMinimizeParser``: relaxed structure and minimisation statistics of a ``DpMinimizeCalculation``."""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

import numpy as np
from aiida import orm
from aiida.engine import ExitCode

from aiida_lisei.data.structure import with_geometry
from aiida_lisei.formats.lammps import parse_dump, parse_log, parse_minimization, summarize_log
from aiida_lisei.parsers.base import LiseiParser

__all__ = ('DpMinimizeParser',)

#: LAMMPS stopping criteria of a converged minimisation.
CONVERGED = ('energy tolerance', 'force tolerance', 'forces are zero')
#: Stopping criteria of a minimisation cut short by its iteration budget.
BUDGET = ('max iterations', 'max force evaluations')


class DpMinimizeParser(LiseiParser):
    """Attach the relaxed structure and the statistics, then decide the exit code."""

    def parse_outputs(self, **kwargs: Any) -> ExitCode | None:
        """Read ``log.lammps`` and ``relaxed.dump``; the relaxed structure first, the exit code last."""
        log_text = self.read('log.lammps')
        log = parse_log(log_text)
        stats = parse_minimization(log_text)
        frames = self.parse_file('relaxed.dump', parse_dump, required=False)

        summary = summarize_log(log)
        if stats is not None:
            summary.update(asdict(stats))
            summary['converged'] = stats.stopping_criterion in CONVERGED
        for column, key in (('Press', 'pressure_final'), ('Volume', 'volume_final')):
            values = log.thermo.get(column)
            if values is not None and values.size:
                summary[key] = float(values[-1])
        summary['units'] = {**summary['units'], 'force': 'eV/Å'}
        if frames is not None and frames.steps.size:
            order = np.argsort(frames.ids)
            structure = self.node.inputs.structure
            if len(order) != len(structure.sites):
                return self.exit_codes.ERROR_OUTPUT_UNREADABLE.format(
                    filename='relaxed.dump', exception=f'{len(order)} atoms for {len(structure.sites)} sites'
                )
            self.out('structure', with_geometry(structure, frames.cells[-1], frames.positions[-1][order]))
        self.out('output_parameters', orm.Dict(summary))

        if log.errors:
            return self.exit_codes.ERROR_LAMMPS.format(error=log.errors[0])
        if log.timeout or self.out_of_walltime():
            return self.exit_codes.ERROR_OUT_OF_WALLTIME
        if stats is None:
            return self.exit_codes.ERROR_OUTPUT_INCOMPLETE
        if frames is None or not frames.steps.size:
            return self.exit_codes.ERROR_OUTPUT_MISSING.format(filename='relaxed.dump')
        if stats.stopping_criterion in BUDGET:
            return self.exit_codes.ERROR_MAX_ITERATIONS.format(
                criterion=stats.stopping_criterion, fmax=stats.force_max_final
            )
        if stats.stopping_criterion not in CONVERGED:
            return self.exit_codes.WARNING_MINIMIZATION_STALLED.format(
                criterion=stats.stopping_criterion, fmax=stats.force_max_final
            )
        return None
