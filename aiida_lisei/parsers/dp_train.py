"""``DpTrainParser``: learning curve, frozen model and summary of a ``lisei.dp_train`` job.

Pure functions :func:`parse_lcurve` and :func:`parse_train_log` read DeePMD-kit's text outputs; the
parser attaches ``learning_curve`` first, then decides the exit code, and attaches ``model`` and
``output_parameters`` only for a finished, finite training.
"""

from __future__ import annotations

import json
import re
from typing import Any

import numpy as np
from aiida import orm
from aiida.engine import ExitCode

from aiida_lisei.calculations.dp_train import DpTrainCalculation, output_files, resolve_settings
from aiida_lisei.data.deep_potential import DeepPotentialData, model_metadata
from aiida_lisei.formats.protobuf import frozen_graph_problem
from aiida_lisei.parsers.base import LiseiParser

__all__ = ('DpTrainParser', 'first_nonfinite_step', 'parse_lcurve', 'parse_train_log')

#: Columns of ``lcurve.out`` whose non-finite value means the loss diverged (total loss, train/valid).
LOSS_COLUMNS = ('rmse_trn', 'rmse_val')

_VERSION = re.compile(r'Source:\s+v?(\S+)')
_WALL_TIME = re.compile(r'wall time:\s+([0-9.eE+-]+)\s*s')
_BATCH_TIME = re.compile(r'average training time:\s+([0-9.eE+-]+)\s*s/batch')
#: The last words of a complete training: TensorFlow backend, PyTorch backend.
_FINISHED = ('finished training', 'Trained model has been saved to:')
_NAN = re.compile(r'NaN detected at batch\s+(\d+)')


def parse_lcurve(text: str) -> dict[str, np.ndarray]:
    """Return the columns of DeePMD's ``lcurve.out`` by header name (``step`` as int, the rest float).

    RMSEs of energies and virials are per atom (eV/atom), of forces in eV/Å; ``lr`` is the learning rate.
    A restarted run appends to the file: a step printed twice keeps its last row. Raises ``ValueError``
    when there is no header or no data row, or a row has the wrong number of columns.
    """
    header = None
    rows = []
    for line in text.splitlines():
        fields = line.split()
        if not fields:
            continue
        if fields[0] == '#':
            if len(fields) > 1 and fields[1] == 'step':
                header = fields[1:]
            continue
        if header is None:
            raise ValueError('data before the `# step ...` header')
        if len(fields) != len(header):
            raise ValueError(f'row {line.strip()!r} has {len(fields)} columns, the header {len(header)}')
        rows.append([float(value) for value in fields])
    if header is None or not rows:
        raise ValueError('no header or no data rows')
    table = np.array(rows)
    steps = table[:, 0].astype(int)
    last = {step: index for index, step in enumerate(steps)}  # the last row of a repeated step wins
    table = table[sorted(last.values())]
    columns = {name: table[:, index] for index, name in enumerate(header)}
    columns['step'] = columns['step'].astype(int)
    return columns


def first_nonfinite_step(lcurve: dict[str, np.ndarray]) -> int | None:
    """Return the first step whose total loss (train or validation RMSE) is NaN/inf, else ``None``."""
    finite = np.all([np.isfinite(lcurve[name]) for name in LOSS_COLUMNS if name in lcurve], axis=0)
    bad = np.nonzero(~finite)[0]
    return int(lcurve['step'][bad[0]]) if bad.size else None


def disp_freq(parameters: dict[str, Any]) -> int:
    """Steps between rows of ``lcurve.out`` (DeePMD's ``training.disp_freq``, default 1000)."""
    value = parameters.get('training', {}).get('disp_freq', 1000)
    return value if isinstance(value, int) and value > 0 else 1000


def parse_train_log(text: str) -> dict[str, Any]:
    """Return ``finished``, ``deepmd_version``, ``wall_time`` (s), ``time_per_batch`` (s), ``nan_step``
    (DeePMD >= 3 stops with "NaN detected at batch N") and DeePMD ``warnings`` (e.g. a ``sel`` smaller
    than the neighbours found) from the log of ``dp train``."""
    result: dict[str, Any] = {'finished': any(words in text for words in _FINISHED), 'warnings': []}
    for key, pattern, kind in (
        ('deepmd_version', _VERSION, str),
        ('wall_time', _WALL_TIME, float),
        ('time_per_batch', _BATCH_TIME, float),
    ):
        matches = pattern.findall(text)
        result[key] = kind(matches[-1]) if matches else None
    nan = _NAN.search(text)
    result['nan_step'] = int(nan.group(1)) if nan else None
    result['warnings'] = [
        line.split('WARNING', 1)[1].strip() for line in text.splitlines() if 'DEEPMD WARNING' in line
    ]
    return result


class DpTrainParser(LiseiParser):
    """Parser of ``DpTrainCalculation`` (entry point ``lisei.dp_train``).

    Every file is optional to the base: the order of the checks is the training's (walltime, NaN loss,
    learning curve, finished, model)."""

    _MISSING = 'ERROR_LCURVE_MISSING'
    _UNREADABLE = 'ERROR_LCURVE_UNREADABLE'

    def _read(self, filename: str, mode: str = 'r') -> Any:
        """Return the content of a retrieved file, or ``None`` if it is missing."""
        return self.read(filename, mode=mode, required=False)

    def parse_outputs(self, **kwargs: Any) -> ExitCode | None:
        """Attach ``learning_curve``; then ``model`` and ``output_parameters`` if training finished."""
        calc = DpTrainCalculation
        log = parse_train_log(self._read(calc._TRAIN_LOG) or '')
        text = self._read(calc._LCURVE_FILE)
        lcurve, error = None, None
        if text is not None:
            try:
                lcurve = parse_lcurve(text)
            except ValueError as exception:
                error = exception
        if lcurve is not None:
            curve = orm.ArrayData()
            for name, values in lcurve.items():
                curve.set_array(name, values)
            self.out('learning_curve', curve)
        last_step = int(lcurve['step'][-1]) if lcurve is not None else 0

        if self.out_of_walltime():
            return self.exit_codes.ERROR_OUT_OF_WALLTIME.format(step=last_step)
        nan_step = log['nan_step']
        if nan_step is None and lcurve is not None:
            nan_step = first_nonfinite_step(lcurve)
        if nan_step is not None:
            return self.exit_codes.ERROR_NAN_LOSS.format(step=nan_step)
        if text is None:
            return self.exit_codes.ERROR_LCURVE_MISSING
        if lcurve is None:
            return self.exit_codes.ERROR_LCURVE_UNREADABLE.format(exception=error)

        parameters = self._full_parameters()
        numb_steps = parameters['training']['numb_steps']
        if not log['finished']:
            return self.exit_codes.ERROR_TRAINING_INCOMPLETE.format(step=last_step, numb_steps=numb_steps)
        settings = resolve_settings(self.node.inputs.settings if 'settings' in self.node.inputs else None)
        files = output_files(settings['backend'])
        expected = numb_steps // disp_freq(parameters) * disp_freq(parameters)
        if last_step < expected:  # the log says finished: the learning curve was cut short
            return self.exit_codes.ERROR_OUTPUT_TRUNCATED.format(
                filename=calc._LCURVE_FILE,
                detail=f'the last row is step {last_step}, training finished at step {numb_steps}',
            )
        model = self._read(files['model'], mode='rb')
        if model is None:
            return self.exit_codes.ERROR_MODEL_MISSING
        if files['model'].endswith('.pb') and (problem := frozen_graph_problem(model)) is not None:
            return self.exit_codes.ERROR_MODEL_UNREADABLE.format(filename=files['model'], reason=problem)
        compressed = self._read(files['compressed'], mode='rb') if settings['compress'] else None
        if settings['compress'] and compressed is None:
            return self.exit_codes.ERROR_COMPRESSED_MODEL_MISSING

        metadata = model_metadata(parameters)
        metadata.update(
            training_steps=numb_steps,
            seed=self.node.inputs.seed.value,
            deepmd_version=log['deepmd_version'] or 'unknown',
            level_of_theory_key=self.node.inputs.training_set.level_of_theory_key,
            deepmd_backend=settings['backend'],
        )
        self.out('model', DeepPotentialData(model, compressed_model=compressed, **metadata))
        final = {f'final_{name}': float(values[-1]) for name, values in lcurve.items() if name != 'step'}
        summary = {
            **final,
            'steps_done': numb_steps,
            'last_lcurve_step': last_step,
            'wall_time': log['wall_time'],
            'time_per_batch': log['time_per_batch'],
            'deepmd_version': log['deepmd_version'],
            'warnings': log['warnings'],
            'units': {'rmse_e': 'eV/atom', 'rmse_f': 'eV/Å', 'rmse_v': 'eV/atom', 'time': 's'},
        }
        self.out('output_parameters', orm.Dict(summary))
        return None

    def _full_parameters(self) -> dict[str, Any]:
        """Return DeePMD's normalised input (``out.json``), else the ``parameters`` input with the seed."""
        text = self._read(DpTrainCalculation._OUTPUT_JSON)
        if text:
            try:
                return json.loads(text)
            except json.JSONDecodeError:
                self.logger.warning('out.json is not valid JSON: using the `parameters` input')
        parameters = self.node.inputs.parameters.get_dict()
        parameters['model'].setdefault('type_map', self.node.inputs.training_set.type_map)
        return parameters
