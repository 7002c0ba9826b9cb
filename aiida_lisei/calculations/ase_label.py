"""``AseLabelCalculation``: label a batch of frames of one system with an ASE calculator in one job.

``TbliteCalculation`` (``lisei.tblite``, GFN1-xTB) and ``ChgnetCalculation`` (``lisei.chgnet``, the
pretrained CHGNet: a demo level of theory) differ only by their calculator.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from aiida import orm
from aiida.common.datastructures import CalcInfo
from aiida.common.folders import Folder
from aiida.engine import CalcJobProcessSpec

from aiida_lisei.calculations.base import LiseiCalcJob, validate_label
from aiida_lisei.common.validation import dict_port_validator
from aiida_lisei.data.frames import validate_frame_tags
from aiida_lisei.data.training_set import TrainingSetData
from aiida_lisei.engines.calculators import CALCULATORS
from aiida_lisei.formats.frames_npz import write_structures
from aiida_lisei.science.geometry import validate_frames

__all__ = ('AseLabelCalculation', 'ChgnetCalculation', 'TbliteCalculation', 'validate_structures')


def validate_structures(
    structures: Mapping[str, orm.StructureData], max_atomic_number: int | None = None
) -> str | None:
    """Return an error message unless ``structures`` is a batch of labellable frames of one system
    (:func:`~aiida_lisei.science.geometry.validate_frames`)."""
    return validate_frames({key: node.get_ase() for key, node in structures.items()}, max_atomic_number)


def validate_inputs_of(calculator: str) -> Any:
    """Return the inputs validator of a calculation with ``calculator``: the batch (elements up to the
    calculator's heaviest) and its tags; skipped where ``structures`` is not a port (exposed inputs)."""
    max_atomic_number = CALCULATORS[calculator].max_atomic_number

    def validate_inputs(inputs: dict[str, Any], ctx: Any = None) -> str | None:
        """Validate the batch and its tags."""
        if ctx is not None and 'structures' not in ctx:
            return None
        structures = inputs.get('structures', {})
        message = validate_structures(structures, max_atomic_number)
        if message is None and 'tags' in inputs:
            message = validate_frame_tags(inputs['tags'].get_dict(), structures)
        return message

    return validate_inputs


class AseLabelCalculation(LiseiCalcJob):
    """Label a batch of frames of one system with an ASE calculator: energy (eV), forces (eV/Å), virial (eV).

    The code is the ``lisei-<calculator>`` console script of an ``aiida-lisei`` installation
    (``<venv>/bin/lisei-tblite``, ``lisei-chgnet``), run serially as
    ``lisei-<calculator> --frames frames.npz --parameters parameters.json --output results.jsonl``.
    One job labels many frames (no file per frame); tblite threads follow ``OMP_NUM_THREADS`` (set it
    through ``metadata.options.environment_variables``), CHGNet's the ``threads`` parameter.

    Inputs: ``structures`` (namespace of ``StructureData``, key = frame name, one atom list),
    ``parameters`` (``Dict`` of the calculator's settings, defaults in
    :data:`~aiida_lisei.engines.calculators.CALCULATORS`), ``system_label`` (``Str``)
    and optional ``tags`` (``Dict``: scalar entries tag every frame, a dict under a frame key adds or
    overrides tags of that frame, see :func:`~aiida_lisei.data.frames.resolve_frame_tags`).

    Outputs: ``labels`` (``TrainingSetData``, one system ``system_label``, frames in sorted key order,
    ``labelled_by`` = this job) when at least one frame was labelled; ``failed_frames`` (``Dict``
    key -> reason) when some were not. Failed frames do not fail the job: it finishes with 0 and
    logs a warning, so that a parent keeps the labelled frames.

    Exit codes (ranges as in aiida-quantumespresso):

    * 302 ``ERROR_OUTPUT_MISSING``: the results file was not retrieved.
    * 310 ``ERROR_OUTPUT_UNREADABLE``: the results file has no valid header or a corrupt line.
    * 312 ``ERROR_OUTPUT_INCOMPLETE``: the engine stopped before labelling every frame (outputs attached).
    * 400 ``ERROR_OUT_OF_WALLTIME``: the scheduler killed the job on walltime (outputs attached).
    * 410 ``ERROR_ALL_FRAMES_FAILED``: no frame could be labelled (``failed_frames`` attached).
    """

    #: The calculator of :data:`~aiida_lisei.engines.calculators.CALCULATORS` (set by each subclass).
    _CALCULATOR = ''
    _DEFAULT_PARSER = ''

    _FRAMES_FILE = 'frames.npz'
    _PARAMETERS_FILE = 'parameters.json'
    _RESULTS_FILE = 'results.jsonl'

    @classmethod
    def define(cls, spec: CalcJobProcessSpec) -> None:  # type: ignore[override]
        """Define the process specification: inputs, outputs and exit codes."""
        super().define(spec)

        spec.input_namespace(
            'structures',
            valid_type=orm.StructureData,
            dynamic=True,
            help='Frames to label (positions and cells in Å), keyed by frame name; one atom list for all.',
        )
        spec.input(
            'parameters',
            valid_type=orm.Dict,
            serializer=orm.to_aiida_type,
            validator=dict_port_validator(CALCULATORS[cls._CALCULATOR].check_parameters),
            help=f'{cls._CALCULATOR} settings: {", ".join(CALCULATORS[cls._CALCULATOR].defaults)}.',
        )
        spec.input(
            'system_label',
            valid_type=orm.Str,
            validator=validate_label,
            serializer=orm.to_aiida_type,
            help='Label of the system in the training set (e.g. `bcc_li`, `interface`).',
        )
        spec.input(
            'tags',
            valid_type=orm.Dict,
            required=False,
            serializer=orm.to_aiida_type,
            help='Scalar tags for every frame, and/or `{frame key: {tag: value}}` for single frames.',
        )
        spec.inputs.validator = validate_inputs_of(cls._CALCULATOR)

        spec.output('labels', valid_type=TrainingSetData, required=False, help='The labelled frames.')
        spec.output(
            'failed_frames', valid_type=orm.Dict, required=False, help='Frames not labelled: key -> reason.'
        )

        cls.define_file_exit_codes(spec)
        cls.define_frame_batch_exit_codes(spec)
        spec.exit_code(
            410,
            'ERROR_ALL_FRAMES_FAILED',
            message='None of the {nframes} frames could be labelled (see the `failed_frames` output).',
        )

    def prepare_for_submission(self, folder: Folder) -> CalcInfo:
        """Write the frames (sorted by key) and the complete parameters; run ``lisei-<calculator>``."""
        keys = sorted(self.inputs.structures)
        with folder.open(self._FRAMES_FILE, 'wb') as handle:
            write_structures(handle, {key: self.inputs.structures[key].get_ase() for key in keys})
        with folder.open(self._PARAMETERS_FILE, 'w') as handle:
            json.dump(
                CALCULATORS[self._CALCULATOR].check_parameters(self.inputs.parameters.get_dict()),
                handle,
                indent=2,
                sort_keys=True,
            )

        arguments = [
            '--frames',
            self._FRAMES_FILE,
            '--parameters',
            self._PARAMETERS_FILE,
            '--output',
            self._RESULTS_FILE,
        ]
        return self.code_calcinfo(arguments, [self._RESULTS_FILE])


class TbliteCalculation(AseLabelCalculation):
    """:class:`AseLabelCalculation` with tblite (GFN1-xTB by default; code ``lisei-tblite``)."""

    _CALCULATOR = 'tblite'
    _DEFAULT_PARSER = 'lisei.tblite'


class ChgnetCalculation(AseLabelCalculation):
    """:class:`AseLabelCalculation` with the pretrained CHGNet (MPtrj PBE/PBE+U; code ``lisei-chgnet``).

    CHGNet is its own level of theory (method ``CHGNet-<model>``): demo labels, not the paper's PBE.
    """

    _CALCULATOR = 'chgnet'
    _DEFAULT_PARSER = 'lisei.chgnet'
