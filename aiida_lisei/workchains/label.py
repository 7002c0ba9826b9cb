"""``lisei.label``: label a set of frames of one system with a chosen engine, a few processes at a time.

The frames are split into processes: batches of ``batch_size`` frames for an engine that labels many
frames in one job (the ASE calculators: tblite, CHGNet), one frame per process otherwise (CP2K, VASP).
Processes are submitted in
*waves* of at most ``max_concurrent`` and each wave is awaited before the next is submitted (a
``while_`` loop in the outline), so a workchain never has more than ``max_concurrent`` children
running. (aiida-submission-controller drives submissions from a script or daemon loop over a group;
inside a workchain, waves keep the throttle and the provenance in one place.)

A frame that its process could not label (a failed tblite SCF, or a CP2K/VASP process that failed
after its own error handlers) is left out and recorded in ``failed_frames`` with the reason and the
PK of the process; the others form ``training_set``, merged by a calcfunction. Everything is
deterministic (sorted keys, fixed batches), so a rerun with caching enabled recomputes nothing.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from aiida import orm
from aiida.common import AttributeDict
from aiida.engine import ProcessBuilder, WorkChain, calcfunction, if_, while_
from aiida.plugins.entry_point import load_entry_point_from_string

from aiida_lisei.calculations.base import check_code, validate_label
from aiida_lisei.data.frames import resolve_frame_tags, validate_frame_tags
from aiida_lisei.data.training_set import TrainingSetData, merge
from aiida_lisei.engines.calculators import CALCULATORS
from aiida_lisei.protocols import ProtocolMixin
from aiida_lisei.science.geometry import validate_frames

__all__ = ('ENGINES', 'LabelEngine', 'LabelWorkChain', 'collect_failed_frames', 'merge_labels', 'split_tags')


@dataclass(frozen=True)
class LabelEngine:
    """How ``lisei.label`` runs one labelling engine.

    :param entry_point: the process, e.g. ``aiida.workflows:lisei.cp2k.label``. A batched process takes
        ``structures`` (a namespace), a single-frame one ``structure``; both take ``system_label``
        (``Str``) and optional ``tags`` (``Dict``) and return ``labels`` (``TrainingSetData``).
    :param batched: whether one process labels many frames.
    :param partial_labels: whether ``labels`` of a failed process hold only good frames (tblite's parser
        guarantees it); otherwise only the ``labels`` of a process that finished ok are used.
    :param max_atomic_number: heaviest element the engine supports (checked before anything runs).
    :param exposed: whether its inputs are exposed in ``lisei.label``'s namespace named like the engine.
    """

    entry_point: str
    batched: bool = False
    partial_labels: bool = False
    max_atomic_number: int | None = None
    exposed: bool = False

    @property
    def process_class(self) -> type:
        """The process class (loaded from its entry point)."""
        return load_entry_point_from_string(self.entry_point)

    @property
    def excluded_inputs(self) -> tuple[str, ...]:
        """Inputs that ``lisei.label`` sets itself (not exposed)."""
        return ('structures' if self.batched else 'structure', 'system_label', 'tags')


#: Engine registry: the inputs of each engine's process appear in the namespace of its name. The ASE
#: calculators (tblite, CHGNet) label batches with ``lisei.<name>``.
ENGINES: dict[str, LabelEngine] = {
    **{
        name: LabelEngine(
            f'aiida.calculations:lisei.{name}',
            batched=True,
            partial_labels=True,
            max_atomic_number=calculator.max_atomic_number,
            exposed=True,
        )
        for name, calculator in CALCULATORS.items()
    },
    'cp2k': LabelEngine('aiida.workflows:lisei.cp2k.label', exposed=True),
    'vasp': LabelEngine('aiida.workflows:lisei.vasp.label', exposed=True),
}


@calcfunction
def split_tags(tags: orm.Dict, batches: orm.Dict) -> dict[str, orm.Dict]:
    """Return the tags of every batch: flat tags for one frame, else batch tags and per-frame tags."""
    tags = tags.get_dict()
    split = {}
    for label, keys in batches.get_dict().items():
        if len(keys) == 1:
            split[label] = orm.Dict(resolve_frame_tags(tags, keys)[keys[0]])
        else:
            split[label] = orm.Dict(
                {
                    name: value
                    for name, value in tags.items()
                    if not isinstance(value, Mapping) or name in keys
                }
            )
    return split


@calcfunction
def merge_labels(**labels: TrainingSetData) -> TrainingSetData:
    """Merge the labels of all processes, in the order of their batch labels."""
    return merge(*(labels[label] for label in sorted(labels)))


@calcfunction
def collect_failed_frames(**reports: orm.Dict) -> orm.Dict:
    """Return ``{frame key: {'reason', 'pk'}}`` sorted by key.

    ``reports`` are the ``failed_frames`` outputs of processes (key -> reason; the PK is their creator's)
    and the workchain's record of processes that failed as a whole (key -> ``{'reason', 'pk'}``).
    """
    failed = {}
    for report in reports.values():
        for key, value in report.items():
            failed[key] = value if isinstance(value, Mapping) else {'reason': value, 'pk': report.creator.pk}
    return orm.Dict(dict(sorted(failed.items())))


def _positive(value: orm.Int, _ctx: Any = None) -> str | None:
    """Return an error message unless ``value`` is at least 1."""
    return None if value.value >= 1 else f'must be at least 1, got {value.value}'


def _validate_engine(value: orm.Str, _ctx: Any = None) -> str | None:
    """Return an error message unless the engine is registered and wired."""
    engine = ENGINES.get(value.value)
    if engine is None:
        return f'unknown engine `{value.value}`; registered: {sorted(ENGINES)}'
    if not engine.exposed:
        return (
            f'engine `{value.value}` ({engine.entry_point}) is registered but not yet wired into lisei.label'
        )
    return None


def validate_inputs(inputs: dict[str, Any], ctx: Any = None) -> str | None:
    """Check that the engine's namespace is given, and the frames and tags (where they are ports)."""
    name = inputs['engine'].value if 'engine' in inputs else None
    if name not in ENGINES or not ENGINES[name].exposed:
        return None  # reported by the `engine` port
    if not inputs.get(name):
        return f'engine `{name}` needs its inputs in the `{name}` namespace (at least a code)'
    if ENGINES[name].batched:  # a CalcJob: its code is in the namespace, of the engine's own plugin
        try:
            check_code(inputs[name].get('code'), f'`{name}.code`', (ENGINES[name].entry_point.split(':')[1],))
        except ValueError as exception:
            return str(exception)
    if ctx is not None and 'structures' not in ctx:
        return None  # exposed by a parent that sets the frames itself
    structures = inputs.get('structures', {})
    frames = {key: node.get_ase() for key, node in structures.items()}
    message = validate_frames(frames, ENGINES[name].max_atomic_number)
    if message is None and 'tags' in inputs:
        message = validate_frame_tags(inputs['tags'].get_dict(), structures)
    return message


class LabelWorkChain(ProtocolMixin, WorkChain):
    """Label frames of one system with tblite, CHGNet, CP2K or VASP; keep what succeeds, record what fails."""

    _protocol_file = 'label'

    @classmethod
    def define(cls, spec):
        """Define the process specification."""
        super().define(spec)
        spec.input_namespace(
            'structures',
            valid_type=orm.StructureData,
            dynamic=True,
            help='Frames to label (Å), keyed by frame name; all with the same atom list.',
        )
        spec.input(
            'system_label',
            valid_type=orm.Str,
            validator=validate_label,
            serializer=orm.to_aiida_type,
            help='Label of the system in the training set.',
        )
        spec.input(
            'tags',
            valid_type=orm.Dict,
            required=False,
            serializer=orm.to_aiida_type,
            help='Scalar tags for every frame, and/or `{frame key: {tag: value}}` for single frames.',
        )
        spec.input(
            'engine',
            valid_type=orm.Str,
            default=lambda: orm.Str('tblite'),
            serializer=orm.to_aiida_type,
            validator=_validate_engine,
            help=f'Labelling engine, one of {sorted(ENGINES)}; its inputs go in the namespace of that name.',
        )
        spec.input(
            'max_concurrent',
            valid_type=orm.Int,
            default=lambda: orm.Int(2),
            serializer=orm.to_aiida_type,
            validator=_positive,
            help='Most labelling processes running at once (processes are submitted in waves of this size).',
        )
        spec.input(
            'batch_size',
            valid_type=orm.Int,
            default=lambda: orm.Int(10),
            serializer=orm.to_aiida_type,
            validator=_positive,
            help='Frames per job of the engines that label batches (tblite, chgnet); ignored otherwise.',
        )
        for name, engine in ENGINES.items():
            if engine.exposed:
                spec.expose_inputs(
                    engine.process_class,
                    namespace=name,
                    exclude=engine.excluded_inputs,
                    namespace_options={
                        'required': False,
                        'populate_defaults': False,
                        'help': f'Inputs of the `{name}` labelling processes (used when engine = `{name}`).',
                    },
                )
        spec.inputs.validator = validate_inputs

        spec.output(
            'training_set',
            valid_type=TrainingSetData,
            required=False,
            help='All labelled frames, one system `system_label`.',
        )
        spec.output(
            'failed_frames',
            valid_type=orm.Dict,
            required=False,
            help='Frames left out: key -> {reason, pk of the process that failed}.',
        )
        spec.exit_code(
            410,
            'ERROR_ALL_FRAMES_FAILED',
            message='None of the {nframes} frames could be labelled (see the `failed_frames` output).',
        )
        spec.outline(
            cls.setup,
            while_(cls.has_processes_to_submit)(
                cls.submit_wave,
                cls.inspect_wave,
            ),
            cls.record_failed_frames,
            if_(cls.any_frame_labelled)(
                cls.merge_labels,
            ).else_(
                cls.fail_all_frames_failed,
            ),
        )

    @classmethod
    def get_builder_from_protocol(
        cls,
        code: orm.AbstractCode,
        structures: Mapping[str, orm.StructureData] | Sequence[orm.StructureData],
        *,
        system_label: str,
        engine: str = 'tblite',
        protocol: str | None = None,
        overrides: dict[str, Any] | None = None,
        tags: dict[str, Any] | None = None,
        engine_protocol: str | None = None,
        **engine_kwargs: Any,
    ) -> ProcessBuilder:
        """Return a builder labelling ``structures`` with ``engine`` from a protocol (``demo``, ``precise``).

        :param code: the engine's code (``lisei-tblite``, ``lisei-chgnet``; ``cp2k.psmp``; VASP).
        :param structures: frames keyed by name, or a sequence (keys ``frame_0000``, ``frame_0001``, ...).
        :param system_label: label of the system in the training set.
        :param protocol: protocol of ``lisei.label`` (batching, concurrency, tblite and CHGNet settings).
        :param overrides: nested dict merged over the protocol, e.g. ``{'tblite': {'parameters': {...}}}``.
        :param tags: scalar tags for every frame and/or ``{frame key: {tag: value}}``.
        :param engine_protocol: for ``cp2k`` and ``vasp``, the protocol of their own workchain
            (e.g. ``gfn1_xtb`` or ``pbe``; ``paper``), built on the first frame: all frames of one
            system share composition and size.
        :param engine_kwargs: further arguments of that workchain's ``get_builder_from_protocol``
            (e.g. ``potential_family`` for VASP, ``options``).
        """
        if engine not in ENGINES or not ENGINES[engine].exposed:
            raise ValueError(f'unknown engine `{engine}`; available: {sorted(ENGINES)}')
        inputs = cls.get_protocol_inputs(protocol, overrides)
        if not isinstance(structures, Mapping):
            structures = {f'frame_{index:04d}': structure for index, structure in enumerate(structures)}
        builder = cls.get_builder()
        builder.structures = dict(structures)
        builder.system_label = orm.Str(system_label)
        builder.engine = orm.Str(engine)
        builder.max_concurrent = orm.Int(inputs['max_concurrent'])
        builder.batch_size = orm.Int(inputs['batch_size'])
        if tags:
            builder.tags = orm.Dict(tags)
        if engine in CALCULATORS:
            builder[engine].code = code
            builder[engine].parameters = orm.Dict(inputs[engine]['parameters'])
            builder[engine].metadata.options = inputs[engine]['metadata']['options']
        else:
            engine_builder = ENGINES[engine].process_class.get_builder_from_protocol(
                code,
                next(iter(structures.values())),
                protocol=engine_protocol,
                system_label=system_label,
                **engine_kwargs,
            )
            engine_inputs = engine_builder._inputs(prune=True)
            for key in ENGINES[engine].excluded_inputs:
                engine_inputs.pop(key, None)
            builder[engine]._update(engine_inputs)
        return builder

    @property
    def _engine(self) -> LabelEngine:
        """The registry entry of the chosen engine."""
        return ENGINES[self.inputs.engine.value]

    def setup(self):
        """Split the frames into processes, and the tags into the tags of each process."""
        keys = sorted(self.inputs.structures)
        size = self.inputs.batch_size.value if self._engine.batched else 1
        chunks = [keys[start : start + size] for start in range(0, len(keys), size)]
        self.ctx.batches = {f'batch_{index:04d}': chunk for index, chunk in enumerate(chunks, start=1)}
        self.ctx.to_submit = list(self.ctx.batches)
        self.ctx.wave, self.ctx.nwaves = 0, math.ceil(len(chunks) / self.inputs.max_concurrent.value)
        self.ctx.labels, self.ctx.failure_reports, self.ctx.process_failures = {}, {}, {}
        self.ctx.batch_tags = (
            split_tags(self.inputs.tags, orm.Dict(self.ctx.batches)) if 'tags' in self.inputs else {}
        )
        self.report(
            f'labelling {len(keys)} frames of `{self.inputs.system_label.value}` with '
            f'{self.inputs.engine.value}: {len(chunks)} processes of up to {size} frames, '
            f'at most {self.inputs.max_concurrent.value} at a time ({self.ctx.nwaves} waves)'
        )

    def has_processes_to_submit(self) -> bool:
        """Return whether some batches have not been submitted yet."""
        return bool(self.ctx.to_submit)

    def submit_wave(self):
        """Submit the next ``max_concurrent`` processes and wait for all of them."""
        count = self.inputs.max_concurrent.value
        self.ctx.current, self.ctx.to_submit = self.ctx.to_submit[:count], self.ctx.to_submit[count:]
        self.ctx.wave += 1
        for label in self.ctx.current:
            node = self.submit(self._engine.process_class, **self._process_inputs(label))
            self.to_context(**{f'process_{label}': node})
        pks = ', '.join(str(self.ctx[f'process_{label}'].pk) for label in self.ctx.current)
        nframes = sum(len(self.ctx.batches[label]) for label in self.ctx.current)
        self.report(
            f'wave {self.ctx.wave}/{self.ctx.nwaves}: submitted {len(self.ctx.current)} process(es) for '
            f'{nframes} frames <PK={pks}>; {len(self.ctx.to_submit)} still to submit'
        )

    def inspect_wave(self):
        """Keep the labels of the finished processes and note the frames they could not label."""
        labelled = failed = 0
        for label in self.ctx.current:
            node = self.ctx[f'process_{label}']
            keys = self.ctx.batches[label]
            usable = node.is_finished_ok or self._engine.partial_labels
            if usable and 'labels' in node.outputs:
                self.ctx.labels[label] = node.outputs.labels
                labelled += node.outputs.labels.nframes
            if usable and 'failed_frames' in node.outputs:
                self.ctx.failure_reports[label] = node.outputs.failed_frames
                failed += len(node.outputs.failed_frames.get_dict())
            elif label not in self.ctx.labels:
                reason = (
                    f'{node.process_label}<{node.pk}> {node.process_state.value}, exit status '
                    f'{node.exit_status}: {node.exit_message or "no message"}'
                )
                self.ctx.process_failures.update({key: {'reason': reason, 'pk': node.pk} for key in keys})
                failed += len(keys)
        done = sum(training_set.nframes for training_set in self.ctx.labels.values())
        self.report(
            f'wave {self.ctx.wave}/{self.ctx.nwaves}: {labelled} frames labelled, {failed} failed; '
            f'{done}/{len(self.inputs.structures)} frames labelled so far'
        )

    def record_failed_frames(self):
        """Attach the frames that could not be labelled, with the reason and the process PK."""
        reports = dict(self.ctx.failure_reports)
        if self.ctx.process_failures:
            reports['processes'] = orm.Dict(self.ctx.process_failures)
        if not reports:
            return
        failed_frames = collect_failed_frames(**reports)
        self.out('failed_frames', failed_frames)
        entries = list(failed_frames.items())
        for key, entry in entries[:10]:
            self.report(f'frame {key} left out (process <{entry["pk"]}>): {entry["reason"]}')
        if len(entries) > 10:
            self.report(f'... and {len(entries) - 10} more frames left out (see <PK={failed_frames.pk}>)')

    def any_frame_labelled(self) -> bool:
        """Return whether at least one frame was labelled."""
        return bool(self.ctx.labels)

    def merge_labels(self):
        """Merge the labels of all processes into the training set."""
        training_set = merge_labels(**self.ctx.labels)
        self.out('training_set', training_set)
        self.report(
            f'training set <PK={training_set.pk}>: {training_set.nframes} of {len(self.inputs.structures)} '
            f'frames, level of theory {training_set.level_of_theory_key}'
        )

    def fail_all_frames_failed(self):
        """Return the exit code for a set of which no frame could be labelled."""
        return self.exit_codes.ERROR_ALL_FRAMES_FAILED.format(nframes=len(self.inputs.structures))

    def _process_inputs(self, label: str) -> AttributeDict:
        """Return the inputs of the process that labels batch ``label``."""
        engine, keys = self._engine, self.ctx.batches[label]
        inputs = AttributeDict(self.exposed_inputs(engine.process_class, namespace=self.inputs.engine.value))
        if engine.batched:
            inputs.structures = {key: self.inputs.structures[key] for key in keys}
        else:
            inputs.structure = self.inputs.structures[keys[0]]
        inputs.system_label = self.inputs.system_label
        if label in self.ctx.batch_tags:
            inputs.tags = self.ctx.batch_tags[label]
        inputs.metadata = {**inputs.get('metadata', {}), 'call_link_label': label}
        return inputs
