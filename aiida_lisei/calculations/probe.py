"""``EngineProbeCalculation``: run ``lisei-probe`` on a computer and retrieve its JSON report."""

from __future__ import annotations

from aiida import orm
from aiida.common.datastructures import CalcInfo
from aiida.common.folders import Folder
from aiida.engine import CalcJobProcessSpec

from aiida_lisei.calculations.base import LiseiCalcJob

__all__ = ('EngineProbeCalculation',)


class EngineProbeCalculation(LiseiCalcJob):
    """Report which engines of the study (DeePMD, LAMMPS, PLUMED, CP2K, ...) are usable on a computer.

    The code is the ``lisei-probe`` console script of an ``aiida-lisei`` installation on the target computer
    (``<venv>/bin/lisei-probe``); it runs as ``lisei-probe --output probe.json``, serially (``withmpi`` False,
    one machine, one MPI process by default). Apart from ``code`` and ``metadata`` it takes no inputs.

    Outputs (from the ``lisei.probe`` parser): ``engines`` (``Dict``), the probe's JSON report plus a
    ``missing`` list of the engines that are not usable.

    Exit codes (ranges as in aiida-quantumespresso; 100-199 are aiida-core's scheduler codes):

    * 302 ``ERROR_OUTPUT_MISSING``: the report file was not retrieved (the probe did not run or crashed).
    * 310 ``ERROR_OUTPUT_UNREADABLE``: the report file is not valid JSON or lacks the ``engines`` table.
    """

    _DEFAULT_PARSER = 'lisei.probe'

    _DEFAULT_OUTPUT_FILE = 'probe.json'

    @classmethod
    def define(cls, spec: CalcJobProcessSpec) -> None:  # type: ignore[override]
        """Define the process specification: options, outputs and exit codes."""
        super().define(spec)
        spec.input(
            'metadata.options.report_filename',
            valid_type=str,
            default=cls._DEFAULT_OUTPUT_FILE,
            help='Name of the JSON report that lisei-probe writes (relative to the working directory).',
        )

        spec.output(
            'engines', valid_type=orm.Dict, help='The probe report, with a `missing` list of engines.'
        )
        spec.default_output_node = 'engines'

        cls.define_file_exit_codes(spec)

    def prepare_for_submission(self, folder: Folder) -> CalcInfo:
        """Write nothing into ``folder``; the command line is ``lisei-probe --output <report_filename>``."""
        report = self.inputs.metadata.options.report_filename

        return self.code_calcinfo(['--output', report], [report])
