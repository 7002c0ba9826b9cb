"""``lisei.dp_train``: train one DeePMD-kit model (``DpTrainCalculation``), restarting on recoverable errors.

An ensemble of the paper (four models) is four of these work chains with four seeds.
"""

from __future__ import annotations

import copy
from typing import Any

from aiida import orm
from aiida.common import AttributeDict
from aiida.engine import ProcessHandlerReport, process_handler, while_

from aiida_lisei.calculations.dp_train import DpTrainCalculation
from aiida_lisei.data.training_set import TrainingSetData
from aiida_lisei.workchains.restart import LiseiBaseRestartWorkChain

__all__ = ('DpTrainWorkChain', 'decay_steps')

#: DeePMD-kit's default ``training.save_freq`` (steps between checkpoints).
DEEPMD_SAVE_FREQ = 1000


def decay_steps(numb_steps: int, decay_count: int) -> int:
    """Return DeePMD's ``decay_steps`` so the learning rate decays ``decay_count`` times over the training.

    DeePMD sets the decay rate so that the rate reaches ``stop_lr`` at ``numb_steps`` whatever
    ``decay_steps`` is; ``decay_steps`` only sets how often it drops (staircase).
    """
    return max(1, numb_steps // max(1, decay_count))


class DpTrainWorkChain(LiseiBaseRestartWorkChain):
    """Train, freeze (and compress) one DeePMD model; restart from the checkpoint on walltime."""

    _process_class = DpTrainCalculation
    _protocol_file = 'dp_train'

    #: Tuning constants of the handlers.
    defaults = AttributeDict({'nan_lr_factor': 0.1, 'max_nan_restarts': 2, 'walltime_factor': 2.0})

    @classmethod
    def define(cls, spec):
        """Define the process specification."""
        super().define(spec)
        spec.expose_inputs(DpTrainCalculation, namespace='dp_train')
        spec.expose_outputs(DpTrainCalculation)
        spec.outline(
            cls.setup,
            while_(cls.should_run_process)(
                cls.run_process,
                cls.inspect_process,
            ),
            cls.results,
        )
        spec.exit_code(
            410,
            'ERROR_NAN_LOSS',
            message='The loss was still NaN after {restarts} restarts with a lower learning rate.',
        )

    @classmethod
    def get_builder_from_protocol(
        cls,
        code: orm.Code,
        training_set: TrainingSetData,
        protocol: str | None = None,
        seed: int | None = None,
        overrides: dict[str, Any] | None = None,
        options: dict[str, Any] | None = None,
        validation_set: TrainingSetData | None = None,
    ):
        """Return a builder filled from a protocol (``demo`` by default); no node is stored.

        :param code: the ``dp`` executable of a DeePMD-kit installation (TensorFlow backend).
        :param training_set: the labelled frames (elements within the protocol's ``type_map``).
        :param protocol: ``demo`` (tiny network, 400 steps) or ``paper`` (the study's network, 400k steps).
        :param seed: random seed of the model (default: the protocol's); an ensemble uses one per model.
        :param overrides: nested dict merged over the protocol; ``dp_train.parameters`` is DeePMD's input
            (``learning_rate.decay_steps`` defaults to ``numb_steps / meta_parameters.lr_decay_count``).
        :param options: merged into ``dp_train.metadata.options`` (resources, environment variables, ...).
        :param validation_set: frames for the validation columns of the learning curve.
        """
        inputs = cls.get_protocol_inputs(protocol, overrides)
        dp_inputs = inputs['dp_train']
        parameters = copy.deepcopy(dp_inputs['parameters'])
        parameters['learning_rate'].setdefault(
            'decay_steps',
            decay_steps(parameters['training']['numb_steps'], inputs['meta_parameters']['lr_decay_count']),
        )
        metadata = copy.deepcopy(dp_inputs.get('metadata', {}))
        metadata.setdefault('options', {}).update(options or {})

        builder = cls.get_builder()
        builder.dp_train.code = code
        builder.dp_train.training_set = training_set
        if validation_set is not None:
            builder.dp_train.validation_set = validation_set
        builder.dp_train.parameters = orm.Dict(parameters)
        builder.dp_train.seed = orm.Int(inputs['seed'] if seed is None else seed)
        builder.dp_train.settings = orm.Dict(dp_inputs.get('settings', {}))
        builder.dp_train.metadata = metadata
        builder.clean_workdir = orm.Bool(inputs['clean_workdir'])
        builder.max_iterations = orm.Int(inputs['max_iterations'])
        return builder

    def setup(self):
        """Collect the inputs of the ``DpTrainCalculation``."""
        super().setup()
        self.ctx.inputs = AttributeDict(self.exposed_inputs(DpTrainCalculation, 'dp_train'))
        self.ctx.inputs.metadata = AttributeDict(copy.deepcopy(dict(self.ctx.inputs.get('metadata', {}))))
        self.ctx.nan_restarts = 0

    @process_handler(priority=500, exit_codes=[DpTrainCalculation.exit_codes.ERROR_OUT_OF_WALLTIME])
    def handle_out_of_walltime(self, calculation):
        """Continue the training from the last checkpoint of the interrupted run (``dp train --restart``).

        The checkpoint (saved every ``training.save_freq`` steps) and ``lcurve.out`` are copied from the
        run's ``remote_folder``; learning rate, seed and step counter continue where they were. If the run
        stopped before its first checkpoint (and did not start from one), train again from scratch with
        ``walltime_factor`` times more walltime.
        """
        if 'restart_folder' in self.ctx.inputs or self._steps_done(calculation) >= self._save_freq():
            self.ctx.inputs.restart_folder = calculation.outputs.remote_folder
            self.ctx.inputs.pop('init_model', None)  # the checkpoint already holds the initialised network
            self.report_error_handled(calculation, 'restarting from the checkpoint in its remote folder')
            return ProcessHandlerReport(True)
        seconds = calculation.get_option('max_wallclock_seconds')
        options = self.ctx.inputs.metadata.setdefault('options', {})
        options['max_wallclock_seconds'] = int(self.defaults.walltime_factor * seconds)
        self.report_error_handled(
            calculation,
            f'no checkpoint yet: from scratch with max_wallclock_seconds {seconds} -> '
            f'{options["max_wallclock_seconds"]} s',
        )
        return ProcessHandlerReport(True)

    @staticmethod
    def _steps_done(calculation: orm.CalcJobNode) -> int:
        """Return the last step of the learning curve of ``calculation`` (0 without one)."""
        if 'learning_curve' not in calculation.outputs:
            return 0
        return int(calculation.outputs.learning_curve.get_array('step')[-1])

    def _save_freq(self) -> int:
        """Return the checkpoint interval in steps (DeePMD's default 1000 if not set)."""
        return self.ctx.inputs.parameters['training'].get('save_freq', DEEPMD_SAVE_FREQ)

    @process_handler(priority=410, exit_codes=[DpTrainCalculation.exit_codes.ERROR_NAN_LOSS])
    def handle_nan_loss(self, calculation):
        """Train again from scratch with ``start_lr`` times ``nan_lr_factor``, at most ``max_nan_restarts``.

        The checkpoint of a diverged run holds NaN weights, so no ``restart_folder`` is used; the seed is
        kept (it is part of the model's record).
        """
        if self.ctx.nan_restarts >= self.defaults.max_nan_restarts:
            self.report_error_handled(calculation, f'loss still NaN after {self.ctx.nan_restarts} restarts')
            return ProcessHandlerReport(
                True, self.exit_codes.ERROR_NAN_LOSS.format(restarts=self.ctx.nan_restarts)
            )
        parameters = self.ctx.inputs.parameters.get_dict()
        start_lr = parameters['learning_rate']['start_lr']
        parameters['learning_rate']['start_lr'] = start_lr * self.defaults.nan_lr_factor
        parameters['learning_rate']['stop_lr'] = min(
            parameters['learning_rate'].get('stop_lr', 1e-8), parameters['learning_rate']['start_lr']
        )
        self.ctx.inputs.parameters = orm.Dict(parameters)
        self.ctx.inputs.pop('restart_folder', None)
        self.ctx.nan_restarts += 1
        new_lr = parameters['learning_rate']['start_lr']
        self.report_error_handled(calculation, f'start_lr {start_lr:g} -> {new_lr:g}, training from scratch')
        return ProcessHandlerReport(True)
