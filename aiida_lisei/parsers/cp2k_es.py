"""``Cp2kElectronicParser``: orbital energies, occupations and element projections of a CP2K single point.

Use it on aiida-cp2k's ``cp2k`` CalcJob with ``metadata.options.parser_name = 'lisei.cp2k.es'`` and the
``&PDOS`` (``NLUMO -1``) and ``&MO`` prints on; the ``*.pdos`` files must be retrieved
(``settings.additional_retrieve_list``). The text is read by :mod:`aiida_lisei.formats.cp2k`.
"""

from __future__ import annotations

import re
from typing import Any

import numpy as np
from aiida import orm
from aiida.engine import ExitCode

from aiida_lisei.formats.cp2k import Cp2kOutputError, parse_cp2k_mo_summary, parse_cp2k_pdos
from aiida_lisei.parsers.base import Cp2kBaseParser, OutputFileError

__all__ = ('Cp2kElectronicParser',)

#: Names of the PDOS files CP2K writes (one per kind, Gamma point, no spin polarisation).
PDOS_FILE = re.compile(r'.*-k\d+-1\.pdos$')


class Cp2kElectronicParser(Cp2kBaseParser):
    """Parse a CP2K ``ENERGY`` run with ``&PDOS`` and ``&MO`` prints.

    Outputs, attached whenever they were printed:

    * ``output_parameters`` (Dict): ``energy`` (eV), ``scf_converged``, ``fermi_energy`` (eV, CP2K's
      ``E(Fermi)``), ``cp2k_band_gap`` (eV, CP2K's own ``MO| Band gap``, None if not printed),
      ``n_orbitals``, ``cp2k_version``, ``kpoints`` (``'Gamma'``);
    * ``eigenvalues`` (ArrayData): ``energies`` (eV), ``occupations`` (0-2), ``weights_<element>`` (each
      orbital's projection on the element's atoms, summed over its kinds and angular momenta).

    Exit codes (aiida-cp2k's): 210 output missing, 301 unreadable, 302 not a CP2K output or a malformed
    PDOS file, 400 walltime, 304 ``[ABORT]``, 450 SCF not converged, 303 incomplete or no PDOS files.
    """

    def parse_outputs(self, **kwargs: Any) -> ExitCode | None:
        """Parse the main output and the PDOS files, attach the outputs, then return the exit code."""
        text, results = self.read_output()
        summary = parse_cp2k_mo_summary(text)
        names = sorted(name for name in self.retrieved_names() if PDOS_FILE.match(name))
        pdos = []
        for name in names:
            try:
                pdos.append(parse_cp2k_pdos(self.read(name)))
            except Cp2kOutputError as exception:
                raise OutputFileError(
                    self.unreadable_exit_code(name, exception, 'ERROR_OUTPUT_PARSE')
                ) from None
        parameters = {
            'energy': results['energy'],
            'energy_units': 'eV',
            'scf_converged': results['scf_converged'],
            'n_scf_steps': results['n_scf_steps'],
            'cp2k_version': results['version'],
            'wall_time_seconds': results['wall_time_seconds'],
            'fermi_energy': summary['fermi']
            if summary['fermi'] is not None
            else (pdos[0]['fermi'] if pdos else None),
            'cp2k_band_gap': summary['band_gap'],
            'kpoints': 'Gamma',
        }
        if pdos:
            energies = pdos[0]['energies']
            if any(not np.allclose(item['energies'], energies, atol=1e-5) for item in pdos):
                self.logger.error('the PDOS files list different orbitals')
                return self.exit_codes.ERROR_OUTPUT_PARSE
            elements = self._kind_elements()
            eigenvalues = orm.ArrayData()
            eigenvalues.set_array('energies', energies)
            eigenvalues.set_array('occupations', pdos[0]['occupations'])
            weights: dict[str, np.ndarray] = {}
            for item in pdos:
                element = elements.get(item['kind'], item['kind'].rstrip('0123456789'))
                weights[element] = weights.get(element, 0.0) + item['weights']
            for element, values in sorted(weights.items()):
                eigenvalues.set_array(f'weights_{element}', np.asarray(values))
            self.out('eigenvalues', eigenvalues)
            parameters['n_orbitals'] = len(energies)
        self.out('output_parameters', orm.Dict(parameters))

        stopped = self.walltime_or_abort(results)
        if stopped is not None:
            return stopped
        if not results['scf_converged'] and results['n_scf_steps']:
            return self.exit_codes.ERROR_SCF_NOT_CONVERGED
        if not results['completed'] or results['energy'] is None or not pdos:
            return self.exit_codes.ERROR_OUTPUT_INCOMPLETE
        return None

    def _kind_elements(self) -> dict[str, str]:
        """``{kind name: element}`` of the input structure (empty without one)."""
        if 'structure' not in self.node.inputs:
            return {}
        return {kind.name: kind.symbol for kind in self.node.inputs.structure.kinds}
