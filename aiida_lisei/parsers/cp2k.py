"""``Cp2kLabelParser``: energy, forces and analytical stress of a CP2K single point (``cp2k`` CalcJob).

Use it on aiida-cp2k's ``cp2k`` CalcJob with ``metadata.options.parser_name = 'lisei.cp2k'`` (aiida-cp2k's
own parser does not read forces). The text is read by :mod:`aiida_lisei.formats.cp2k`.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from aiida import orm
from aiida.engine import ExitCode

from aiida_lisei.formats.cp2k import cp2k_stress_to_ase
from aiida_lisei.parsers.base import Cp2kBaseParser

__all__ = ('Cp2kLabelParser',)


class Cp2kLabelParser(Cp2kBaseParser):
    """Parse a CP2K ``ENERGY_FORCE`` run (``PRINT_LEVEL MEDIUM``, ``&PRINT &FORCES ON``, analytical stress).

    Outputs, attached whenever they were printed (also when the run then fails):

    * ``output_parameters`` (Dict): ``energy`` (eV; CP2K's total energy, the free energy with smearing),
      ``scf_converged``, ``n_scf_steps``, ``cp2k_version``, ``wall_time_seconds``, ``natoms``,
      ``pressure`` (GPa, positive under compression) when the stress was printed;
    * ``forces`` (ArrayData, array ``forces``, eV/Å, shape (natoms, 3), atoms in input order);
    * ``stress`` (ArrayData, array ``stress``, eV/Å³, **ASE's sign**: negative under compression).

    Exit codes are those of aiida-cp2k's ``Cp2kCalculation``, checked in this order: 210 output file
    missing, 301 unreadable, 302 not a CP2K output or malformed block, 400 CP2K's ``GLOBAL/WALLTIME`` or
    the scheduler's walltime was hit, 304 ``[ABORT]``, 450 ``SCF run NOT converged`` (CP2K still prints
    forces: they are attached, the calculation fails), 303 run incomplete or no energy/forces.
    """

    def parse_outputs(self, **kwargs: Any) -> ExitCode | None:
        """Parse the main output file and attach the outputs, then return the exit code."""
        _, results = self.read_output()
        exit_code = self._attach_outputs(results)
        if exit_code is not None:
            return exit_code
        return self._exit_code(results)

    def _attach_outputs(self, results: dict[str, Any]) -> ExitCode | None:
        """Attach ``output_parameters``, ``forces`` and ``stress``; return 302 if the atom count is wrong."""
        forces, stress = results['forces'], results['stress']
        natoms = len(self.node.inputs.structure.sites) if 'structure' in self.node.inputs else None
        if forces is not None and natoms is not None and len(forces) != natoms:
            self.logger.error(f'{len(forces)} atoms in the ATOMIC FORCES block, {natoms} in the structure')
            return self.exit_codes.ERROR_OUTPUT_PARSE

        parameters = {
            'energy': results['energy'],
            'energy_units': 'eV',
            'scf_converged': results['scf_converged'],
            'n_scf_steps': results['n_scf_steps'],
            'cp2k_version': results['version'],
            'wall_time_seconds': results['wall_time_seconds'],
            'natoms': None if forces is None else len(forces),
        }
        if stress is not None:
            parameters['pressure'] = float(np.trace(stress) / 3)
            parameters['pressure_units'] = 'GPa'
        self.out('output_parameters', orm.Dict(parameters))
        if forces is not None:
            self.out('forces', _array('forces', forces))
        if stress is not None:
            self.out('stress', _array('stress', cp2k_stress_to_ase(stress)))
        return None

    def _exit_code(self, results: dict[str, Any]) -> ExitCode | None:
        """Return the exit code that the parsed results call for (``None`` if the run is complete)."""
        stopped = self.walltime_or_abort(results)
        if stopped is not None:
            return stopped
        if not results['scf_converged'] and results['n_scf_steps']:
            self.logger.error(f'SCF run NOT converged after {results["n_scf_steps"]} steps')
            return self.exit_codes.ERROR_SCF_NOT_CONVERGED
        if not results['completed'] or results['energy'] is None or results['forces'] is None:
            return self.exit_codes.ERROR_OUTPUT_INCOMPLETE
        return None


def _array(name: str, values: np.ndarray) -> orm.ArrayData:
    """Return an ArrayData holding ``values`` as the array ``name``."""
    node = orm.ArrayData()
    node.set_array(name, np.asarray(values, dtype=float))
    return node
