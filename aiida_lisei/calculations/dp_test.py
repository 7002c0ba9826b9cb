"""``DpTestCalculation`` (``lisei.dp_test``): errors of a DeePMD model on labelled frames (``dp test``).

Runs ``dp --tf test -m model.pb -s systems -n 0 -d detail > test.log 2>&1`` on every frame of ``test_set``
(one deepmd/npy directory per system under ``systems/``); the parser reads the per-frame ``detail.*.out``
files (reference and prediction side by side) and computes the errors itself.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from aiida import orm
from aiida.common.datastructures import CalcInfo, CodeInfo
from aiida.common.folders import Folder
from aiida.engine import CalcJobProcessSpec

from aiida_lisei.calculations.base import LiseiCalcJob
from aiida_lisei.data.deep_potential import BACKEND_FLAGS, DeepPotentialData, model_suffix
from aiida_lisei.data.training_set import TrainingSetData

__all__ = ('DpTestCalculation', 'validate_inputs')


def validate_inputs(inputs: Mapping[str, Any], _ctx: Any = None) -> str | None:
    """Refuse test frames with elements outside the model's type map or at another level of theory."""
    if 'model' not in inputs or 'test_set' not in inputs:
        return None
    model, test_set = inputs['model'], inputs['test_set']
    unknown = sorted(set(test_set.type_map) - set(model.type_map))
    if unknown:
        return f'`test_set` has elements {unknown} outside the model type map {model.type_map}'
    if model.level_of_theory_key and model.level_of_theory_key != test_set.level_of_theory_key:
        return (
            f'the model was trained at {model.level_of_theory_key}, the test frames are labelled at '
            f'{test_set.level_of_theory_key}: never compare across levels of theory'
        )
    if inputs.get('compressed', orm.Bool(False)).value and not model.compressed:
        return '`compressed` is set but the model has no compressed version'
    return None


class DpTestCalculation(LiseiCalcJob):
    """Test a ``DeepPotentialData`` on a ``TrainingSetData`` with ``dp test`` (TensorFlow backend).

    Outputs: ``output_parameters`` (``Dict``: RMSE and MAE of energy per atom in eV/atom, forces in eV/Å,
    virial per atom in eV/atom where the frames have virials; overall and per system) and ``parity``
    (``ArrayData``: reference and predicted energies (eV) per frame, forces (eV/Å) per atom, virials
    (eV) per frame, number of atoms and system index per frame).
    """

    _DEFAULT_PARSER = 'lisei.dp_test'

    _MODEL_FILE = 'model.pb'
    _SYSTEMS_DIR = 'systems'
    _DETAIL_PREFIX = 'detail'
    _LOG_FILE = 'test.log'
    _STDOUT_FILE = _LOG_FILE

    @classmethod
    def define(cls, spec: CalcJobProcessSpec) -> None:  # type: ignore[override]
        """Define the process specification: inputs, outputs and exit codes."""
        super().define(spec)

        spec.input('model', valid_type=DeepPotentialData, help='The model to test.')
        spec.input('test_set', valid_type=TrainingSetData, help='Labelled frames to test on (all are used).')
        spec.input(
            'compressed',
            valid_type=orm.Bool,
            default=lambda: orm.Bool(False),
            serializer=orm.to_aiida_type,
            help='Test the compressed model instead of the frozen one.',
        )
        spec.inputs.validator = validate_inputs

        spec.output('output_parameters', valid_type=orm.Dict, help='RMSE/MAE overall and per system.')
        spec.output(
            'parity', valid_type=orm.ArrayData, help='Reference vs predicted energies, forces, virials.'
        )
        spec.default_output_node = 'output_parameters'

        spec.exit_code(
            301,
            'ERROR_DETAIL_MISSING',
            message='The detail file `{filename}` was not retrieved (see test.log).',
        )
        spec.exit_code(
            310,
            'ERROR_DETAIL_UNREADABLE',
            message='The detail files could not be read: {exception}',
        )
        spec.exit_code(
            311,
            'ERROR_FRAMES_MISSING',
            message='dp test reported {tested} frames, the test set has {expected}.',
        )

    def prepare_for_submission(self, folder: Folder) -> CalcInfo:
        """Write the test frames and the model; run ``dp test`` on all frames."""
        self.inputs.test_set.to_deepmd_npy(folder.get_subfolder(self._SYSTEMS_DIR, create=True).abspath)
        model = self.inputs.model
        source = model.filename(compressed=self.inputs.compressed.value)
        # the backend explicit (`dp --tf` / `dp --pt`) and the file with its extension
        model_file = f'{Path(self._MODEL_FILE).stem}{model_suffix(model)}'
        backend = [BACKEND_FLAGS[model.deepmd_backend]]

        codeinfo = CodeInfo()
        codeinfo.code_uuid = self.inputs.code.uuid
        codeinfo.cmdline_params = [
            *backend, 'test', '-m', model_file, '-s', self._SYSTEMS_DIR, '-n', '0', '-d', self._DETAIL_PREFIX
        ]  # fmt: skip
        codeinfo.stdout_name = self._LOG_FILE
        codeinfo.join_files = True
        codeinfo.withmpi = self.inputs.metadata.options.withmpi

        calcinfo = CalcInfo()
        calcinfo.codes_info = [codeinfo]
        calcinfo.local_copy_list = [(model.uuid, source, model_file)]
        calcinfo.remote_copy_list = []
        calcinfo.retrieve_list = [self._LOG_FILE, f'{self._DETAIL_PREFIX}.*.out']
        calcinfo.provenance_exclude_list = [self._SYSTEMS_DIR]  # the frames are the test_set input
        return calcinfo
