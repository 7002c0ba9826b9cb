"""``DpTrainCalculation`` (``lisei.dp_train``): train, freeze and optionally compress one DeePMD-kit model.

The job runs the code's executable (``dp`` of DeePMD-kit 3) up to three times, one after the other in one
scheduler job (``CodeRunMode.SERIAL``), with the backend of ``settings.backend`` explicit (``--tf``, the
default, or ``--pt``; files ``.pb`` or ``.pth``)::

    dp --tf train input.json [--restart model.ckpt | --init-frz-model init_model.pb] [--skip-neighbor-stat] \
        > train.log 2>&1
    dp --tf freeze -o frozen_model.pb > freeze.log 2>&1
    dp --tf compress -i frozen_model.pb -o frozen_model_compressed.pb -s <compress_step> > compress.log 2>&1

Checkpoints: DeePMD saves ``model.ckpt*`` every ``training.save_freq`` steps. They stay in the remote
working directory, the ``remote_folder`` output, which is what a restart uses (``restart_folder``); they
are retrieved too only with ``settings.retrieve_checkpoint`` (a restart from the ``retrieved`` FolderData
then also works once the remote is gone). Not retrieving them by default is a choice of size: the
checkpoint of the paper network (Adam moments included) is tens of MB per model, four models per DP-GEN
iteration, while the frozen model is all later steps need. ``lcurve.out`` is copied along on a restart
and DeePMD appends to it, so the learning curve of a restarted run covers the whole training.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Mapping
from typing import Any

from aiida import orm
from aiida.common.datastructures import CalcInfo, CodeInfo, CodeRunMode
from aiida.common.folders import Folder
from aiida.engine import CalcJobProcessSpec

from aiida_lisei.calculations.base import LiseiCalcJob
from aiida_lisei.common.validation import dict_port_validator
from aiida_lisei.data.deep_potential import BACKEND_FLAGS, BACKEND_SUFFIXES, DeepPotentialData
from aiida_lisei.data.training_set import TrainingSetData

__all__ = (
    'DEFAULT_SETTINGS',
    'DpTrainCalculation',
    'build_input',
    'check_parameters',
    'check_settings',
    'resolve_settings',
)

#: ``settings`` keys and defaults: the DeePMD-kit backend (``tensorflow`` or ``pytorch``); compress the
#: frozen model; table step of ``dp compress``; skip DeePMD's neighbour statistics (faster start, but no sel
#: check and no compression); retrieve the last checkpoint.
DEFAULT_SETTINGS: dict[str, Any] = {
    'backend': 'tensorflow',
    'compress': False,
    'compress_step': 0.01,
    'skip_neighbor_stat': False,
    'retrieve_checkpoint': False,
}

#: Checkpoint files copied from ``restart_folder``: the TF checkpoint of prefix ``model.ckpt`` (the
#: ``model.ckpt.*`` names are symbolic links to the latest ``model.ckpt-<step>.*`` files) and its index.
CHECKPOINT_PATTERNS = ('checkpoint', 'model.ckpt*')
#: The last checkpoint under the fixed prefix ``model.ckpt`` (symbolic links dereferenced on retrieval);
#: ``dp train --restart`` reads the graph (``.meta``) as well as the weights.
RETRIEVED_CHECKPOINT = ('checkpoint', 'model.ckpt.index', 'model.ckpt.meta', 'model.ckpt.data-*')
#: Per backend: the ``dp`` flag, the checkpoint ``--restart`` reads (and that ``restart_folder`` must hold),
#: the checkpoint files retrieved with ``settings.retrieve_checkpoint``.
BACKENDS: dict[str, dict[str, Any]] = {
    'tensorflow': {'flag': BACKEND_FLAGS['tensorflow'], 'restart': 'model.ckpt', 'index': 'model.ckpt.index'},
    'pytorch': {'flag': BACKEND_FLAGS['pytorch'], 'restart': 'model.ckpt.pt', 'index': 'model.ckpt.pt'},
}
RETRIEVED_CHECKPOINTS = {'tensorflow': RETRIEVED_CHECKPOINT, 'pytorch': ('checkpoint', 'model.ckpt.pt')}


def output_files(backend: str) -> dict[str, str]:
    """Return the job's model file names for ``backend``: ``model``, ``compressed`` and ``init_model``
    (``frozen_model.pb``, ``frozen_model_compressed.pb``, ``init_model.pb``; ``.pth`` for PyTorch)."""
    suffix = BACKEND_SUFFIXES[backend]
    return {
        'model': f'frozen_model{suffix}',
        'compressed': f'frozen_model_compressed{suffix}',
        'init_model': f'init_model{suffix}',
    }


def check_parameters(parameters: Mapping[str, Any]) -> dict[str, Any]:
    """Return ``parameters`` if it is a DeePMD input without data systems and seeds; raise ``ValueError``."""
    missing = [key for key in ('model', 'learning_rate', 'loss', 'training') if key not in parameters]
    if missing:
        raise ValueError(f'the DeePMD input lacks the section(s) {missing}')
    model, training = parameters['model'], parameters['training']
    for section in ('descriptor', 'fitting_net'):
        if section not in model:
            raise ValueError(f'the DeePMD input lacks `model.{section}`')
        if 'seed' in model[section]:
            raise ValueError(f'`model.{section}.seed` is set by the `seed` input: remove it from parameters')
    if 'seed' in training:
        raise ValueError('`training.seed` is set by the `seed` input: remove it from `parameters`')
    for key in ('training_data', 'validation_data'):
        if 'systems' in training.get(key, {}):
            raise ValueError(f'`training.{key}.systems` is written by the CalcJob from its inputs: remove it')
    if not isinstance(training.get('numb_steps'), int) or training['numb_steps'] < 1:
        raise ValueError('`training.numb_steps` must be a positive integer')
    check_with_deepmd(parameters)
    return dict(parameters)


def check_with_deepmd(parameters: Mapping[str, Any]) -> dict[str, Any]:
    """Return the complete input as DeePMD-kit's own argument checker normalises it; raise ``ValueError``.

    ``deepmd.utils.argcheck.normalize`` (strict: unknown keys are refused with DeePMD-kit's "Did you mean"
    suggestion, wrong types and choices too) on what :func:`build_input` writes, with placeholder seed and
    data systems. It imports neither TensorFlow nor PyTorch (the ``deepmd-kit`` of the core install).
    """
    from dargs.dargs import ArgumentError
    from deepmd.utils.argcheck import normalize

    model = parameters['model']
    data = build_input(parameters, 0, list(model.get('type_map') or []), ['systems/train/placeholder'])
    try:
        return normalize(data)
    except ArgumentError as exception:
        raise ValueError(f'DeePMD-kit refuses the input: {exception}') from exception


def resolve_settings(settings: orm.Dict | Mapping[str, Any] | None) -> dict[str, Any]:
    """Return ``settings`` (a ``Dict``, a mapping or ``None``) completed with :data:`DEFAULT_SETTINGS`."""
    given = settings.get_dict() if isinstance(settings, orm.Dict) else dict(settings or {})
    return {**DEFAULT_SETTINGS, **given}


def check_settings(settings: Mapping[str, Any]) -> dict[str, Any]:
    """Return ``settings`` completed with the defaults; raise ``ValueError`` on unknown keys or a compression
    without neighbour statistics."""
    unknown = sorted(set(settings) - set(DEFAULT_SETTINGS))
    if unknown:
        raise ValueError(f'unknown settings {unknown}; known: {sorted(DEFAULT_SETTINGS)}')
    if settings.get('backend', 'tensorflow') not in BACKENDS:
        raise ValueError(f'unknown `backend` {settings["backend"]!r}; known: {sorted(BACKENDS)}')
    if settings.get('compress') and settings.get('skip_neighbor_stat'):
        raise ValueError('`compress` needs the neighbour statistics: do not set `skip_neighbor_stat`')
    return {**DEFAULT_SETTINGS, **settings}


def build_input(
    parameters: Mapping[str, Any],
    seed: int,
    type_map: list[str],
    training_systems: list[str],
    validation_systems: list[str] | None = None,
) -> dict[str, Any]:
    """Return the complete DeePMD input: ``parameters`` plus seeds, type map, data systems and file names.

    ``seed`` goes to ``model.descriptor.seed``, ``model.fitting_net.seed`` and ``training.seed``;
    ``model.type_map`` defaults to ``type_map`` (the training set's); the learning curve is written to
    ``lcurve.out`` and checkpoints to ``model.ckpt`` (fixed names the parser and restarts rely on).
    """
    data = copy.deepcopy(dict(parameters))
    model, training = data['model'], data['training']
    model.setdefault('type_map', list(type_map))
    model['descriptor']['seed'] = seed
    model['fitting_net']['seed'] = seed
    training['seed'] = seed
    training['disp_file'] = DpTrainCalculation._LCURVE_FILE
    training['save_ckpt'] = 'model.ckpt'
    training.setdefault('training_data', {})['systems'] = list(training_systems)
    if validation_systems:
        training.setdefault('validation_data', {})['systems'] = list(validation_systems)
    else:
        training.pop('validation_data', None)
    return data


validate_parameters = dict_port_validator(check_parameters)
validate_settings = dict_port_validator(check_settings)


def validate_inputs(inputs: Mapping[str, Any], _ctx: Any = None) -> str | None:
    """Check type maps and levels of theory of the sets, and that at most one start model is given."""
    if 'restart_folder' in inputs and 'init_model' in inputs:
        return 'give `restart_folder` or `init_model`, not both'
    restart = inputs.get('restart_folder')
    backend = resolve_settings(inputs.get('settings'))['backend']
    index = BACKENDS.get(backend, BACKENDS['tensorflow'])['index']
    if isinstance(restart, orm.FolderData) and index not in restart.base.repository.list_object_names():
        return f'`restart_folder` has no checkpoint `{index}` (use settings.retrieve_checkpoint)'
    init_model = inputs.get('init_model')
    if init_model is not None and init_model.deepmd_backend != backend:
        return f'`init_model` is a {init_model.deepmd_backend} model, `settings.backend` is {backend}'
    if 'training_set' not in inputs or 'parameters' not in inputs:
        return None
    sets = [inputs['training_set']] + ([inputs['validation_set']] if 'validation_set' in inputs else [])
    type_map = inputs['parameters'].get_dict()['model'].get('type_map', sets[0].type_map)
    for name, data in zip(('training_set', 'validation_set'), sets, strict=False):
        unknown = sorted(set(data.type_map) - set(type_map))
        if unknown:
            return f'`{name}` has elements {unknown} that are not in `model.type_map` {type_map}'
        if data.level_of_theory_key != sets[0].level_of_theory_key:
            return (
                f'`validation_set` is labelled at {data.level_of_theory_key}, the training set at '
                f'{sets[0].level_of_theory_key}: never mix levels of theory'
            )
    if 'init_model' in inputs and inputs['init_model'].type_map != list(type_map):
        return f'`init_model` has type map {inputs["init_model"].type_map}, the input {type_map}'
    return None


class DpTrainCalculation(LiseiCalcJob):
    """Train one DeePMD-kit model (TensorFlow backend), freeze it and optionally compress it.

    Inputs: ``training_set`` and optional ``validation_set`` (``TrainingSetData``, one level of theory),
    ``parameters`` (``Dict``: the DeePMD input without data systems and seeds, see :func:`build_input`),
    ``seed`` (``Int``: one seed for descriptor, fitting net and training; an ensemble = several seeds),
    optional ``settings`` (``Dict``, :data:`DEFAULT_SETTINGS`), and at most one of ``restart_folder``
    (``RemoteData`` or ``FolderData`` with a checkpoint ``model.ckpt``: ``dp train --restart``) and
    ``init_model`` (``DeepPotentialData``: ``dp train --init-frz-model``, same network required).

    Outputs: ``model`` (``DeepPotentialData``), ``learning_curve`` (``ArrayData``, one array per
    ``lcurve.out`` column), ``output_parameters`` (``Dict``: last RMSEs, steps done, wall time).
    """

    _DEFAULT_PARSER = 'lisei.dp_train'

    _INPUT_FILE = 'input.json'
    _OUTPUT_JSON = 'out.json'
    _LCURVE_FILE = 'lcurve.out'
    #: TensorFlow names; :func:`output_files` gives those of each backend.
    _MODEL_FILE = 'frozen_model.pb'
    _COMPRESSED_FILE = 'frozen_model_compressed.pb'
    _INIT_MODEL_FILE = 'init_model.pb'
    _TRAIN_LOG = 'train.log'
    _STDOUT_FILE = _TRAIN_LOG
    _FREEZE_LOG = 'freeze.log'
    _COMPRESS_LOG = 'compress.log'
    _SYSTEMS_DIR = 'systems'

    @classmethod
    def define(cls, spec: CalcJobProcessSpec) -> None:  # type: ignore[override]
        """Define the process specification: inputs, outputs and exit codes."""
        super().define(spec)

        spec.input('training_set', valid_type=TrainingSetData, help='Labelled frames to train on.')
        spec.input(
            'validation_set',
            valid_type=TrainingSetData,
            required=False,
            help='Frames for the validation columns of the learning curve (same level of theory).',
        )
        spec.input(
            'parameters',
            valid_type=orm.Dict,
            serializer=orm.to_aiida_type,
            validator=validate_parameters,
            help='DeePMD input (model, learning_rate, loss, training) without data systems and seeds.',
        )
        spec.input(
            'seed',
            valid_type=orm.Int,
            serializer=orm.to_aiida_type,
            help='Random seed of descriptor, fitting net and training (recorded on the model).',
        )
        spec.input(
            'settings',
            valid_type=orm.Dict,
            required=False,
            serializer=orm.to_aiida_type,
            validator=validate_settings,
            help=f'Job settings, defaults {DEFAULT_SETTINGS}.',
        )
        spec.input(
            'restart_folder',
            valid_type=(orm.RemoteData, orm.FolderData),
            required=False,
            help='Folder with the checkpoint `model.ckpt` (and `lcurve.out`) of an earlier run to continue.',
        )
        spec.input(
            'init_model',
            valid_type=DeepPotentialData,
            required=False,
            help='Frozen model to initialise the network from (`--init-frz-model`).',
        )
        spec.inputs.validator = validate_inputs

        spec.output('model', valid_type=DeepPotentialData, help='The frozen (and compressed) model.')
        spec.output(
            'learning_curve',
            valid_type=orm.ArrayData,
            help='lcurve.out columns: step, rmse_* (energy eV/atom, forces eV/Å, virial eV/atom), lr.',
        )
        spec.output(
            'output_parameters',
            valid_type=orm.Dict,
            help='Last RMSEs, steps done, wall time (s), time per batch (s), DeePMD version.',
        )
        spec.default_output_node = 'output_parameters'

        spec.exit_code(301, 'ERROR_LCURVE_MISSING', message='No `lcurve.out`.')
        spec.exit_code(
            302,
            'ERROR_MODEL_MISSING',
            message='No frozen model: training or `dp freeze` failed (see train.log, freeze.log).',
        )
        spec.exit_code(
            303,
            'ERROR_COMPRESSED_MODEL_MISSING',
            message='No compressed model: `dp compress` failed (see compress.log).',
        )
        spec.exit_code(
            316,
            'ERROR_MODEL_UNREADABLE',
            message='The frozen model `{filename}` is not a whole model: {reason}.',
        )
        spec.exit_code(
            310,
            'ERROR_LCURVE_UNREADABLE',
            message='`lcurve.out` could not be read: {exception}',
        )
        spec.exit_code(
            311,
            'ERROR_TRAINING_INCOMPLETE',
            message='Training stopped at step {step} of {numb_steps} (see train.log).',
        )
        spec.exit_code(
            400,
            'ERROR_OUT_OF_WALLTIME',
            message='The job ran out of walltime at step {step}: the checkpoint is in the remote folder.',
        )
        spec.exit_code(
            410,
            'ERROR_NAN_LOSS',
            message='The loss became NaN/inf at step {step}: lower the learning rate or check the data.',
        )

    def prepare_for_submission(self, folder: Folder) -> CalcInfo:
        """Write the data systems and ``input.json``; run ``dp train``, ``dp freeze`` (, ``dp compress``)."""
        settings = resolve_settings(self.inputs.get('settings'))
        systems = {}
        for name, key in (('train', 'training_set'), ('valid', 'validation_set')):
            if key in self.inputs:
                subfolder = folder.get_subfolder(f'{self._SYSTEMS_DIR}/{name}', create=True)
                paths = self.inputs[key].to_deepmd_npy(subfolder.abspath)
                systems[name] = [f'{self._SYSTEMS_DIR}/{name}/{path.name}' for path in paths]
        data = build_input(
            self.inputs.parameters.get_dict(),
            self.inputs.seed.value,
            self.inputs.training_set.type_map,
            systems['train'],
            systems.get('valid'),
        )
        with folder.open(self._INPUT_FILE, 'w') as handle:
            json.dump(data, handle, indent=2, sort_keys=True)

        calcinfo = CalcInfo()
        calcinfo.local_copy_list = []
        calcinfo.remote_copy_list = []
        backend = BACKENDS[settings['backend']]
        files = output_files(settings['backend'])
        train_params = [self._INPUT_FILE]
        if 'restart_folder' in self.inputs:
            self._copy_checkpoint(calcinfo, self.inputs.restart_folder)
            train_params += ['--restart', backend['restart']]
        if 'init_model' in self.inputs:
            model = self.inputs.init_model
            calcinfo.local_copy_list.append((model.uuid, model.filename(), files['init_model']))
            train_params += ['--init-frz-model', files['init_model']]
        if settings['skip_neighbor_stat']:
            train_params.append('--skip-neighbor-stat')

        flag = backend['flag']
        codes_info = [
            self._codeinfo([flag, 'train', *train_params], self._TRAIN_LOG),
            self._codeinfo([flag, 'freeze', '-o', files['model']], self._FREEZE_LOG),
        ]
        retrieve = [self._LCURVE_FILE, self._OUTPUT_JSON, self._TRAIN_LOG, self._FREEZE_LOG, files['model']]
        if settings['compress']:
            params = ['-i', files['model'], '-o', files['compressed'], '-s', str(settings['compress_step'])]
            codes_info.append(self._codeinfo([flag, 'compress', *params], self._COMPRESS_LOG))
            retrieve += [files['compressed'], self._COMPRESS_LOG]
        if settings['retrieve_checkpoint']:
            retrieve += list(RETRIEVED_CHECKPOINTS[settings['backend']])

        calcinfo.codes_info = codes_info
        calcinfo.codes_run_mode = CodeRunMode.SERIAL
        calcinfo.retrieve_list = retrieve
        calcinfo.provenance_exclude_list = [self._SYSTEMS_DIR]  # the frames are the training_set input
        return calcinfo

    def _codeinfo(self, cmdline_params: list[str], log: str) -> CodeInfo:
        """Return a ``CodeInfo`` running ``dp <cmdline_params>`` with stdout and stderr joined in ``log``."""
        codeinfo = CodeInfo()
        codeinfo.code_uuid = self.inputs.code.uuid
        codeinfo.cmdline_params = cmdline_params
        codeinfo.stdout_name = log
        codeinfo.join_files = True
        codeinfo.withmpi = self.inputs.metadata.options.withmpi
        return codeinfo

    def _copy_checkpoint(self, calcinfo: CalcInfo, restart_folder: orm.RemoteData | orm.FolderData) -> None:
        """Copy the checkpoint and ``lcurve.out`` of ``restart_folder`` into the working directory."""
        if isinstance(restart_folder, orm.RemoteData):
            path = restart_folder.get_remote_path()
            uuid = restart_folder.computer.uuid
            calcinfo.remote_copy_list += [(uuid, f'{path}/{name}', '.') for name in CHECKPOINT_PATTERNS]
            calcinfo.remote_copy_list.append((uuid, f'{path}/{self._LCURVE_FILE}', self._LCURVE_FILE))
            return
        names = restart_folder.base.repository.list_object_names()
        wanted = [name for name in names if name == 'checkpoint' or name.startswith('model.ckpt.')]
        if self._LCURVE_FILE in names:
            wanted.append(self._LCURVE_FILE)
        calcinfo.local_copy_list += [(restart_folder.uuid, name, name) for name in wanted]
