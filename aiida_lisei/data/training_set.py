"""Labelled frames for DeePMD training, from several systems, with per-frame provenance.

Units follow DeePMD/dpdata: coordinates and cells in Å, energies in eV, forces in eV/Å,
virials in eV with DeePMD's sign: ``virial = -stress * volume = -dE/dstrain``, where
``stress = (1/V) dE/dstrain`` is ASE's stress (eV/Å³, negative under compression), so the
virial is positive under compression (DeePMD's convention).

Two layers:

* :class:`FrameSystem` / :class:`TrainingFrames` and the functions ``merge_frames``,
  ``split_frames``, ``take_frames``, ``remap_frames``, ``select_frames``: plain numpy,
  no AiiDA, so a ``calcfunction`` (or a test) can call them directly;
* :class:`TrainingSetData`, the ``lisei.training_set`` node: arrays as ``.npy`` files in
  the repository (``s<i>_<field>.npy``, through :class:`~aiida.orm.ArrayData`), small
  metadata and the per-frame provenance in attributes (queryable), and thin wrappers.

Per-frame provenance: ``labelled_by`` (UUID of the CalcJob/WorkChain that computed the
labels, or ``None``) and free-form scalar ``tags`` (``temperature`` in K, ``iteration``,
``source`` = 'aimd' | 'perturbation' | 'exploration', ...). The system label acts as the
tag ``system``. Attributes ``tag_sets`` (unique tag combinations, each with ``system``)
and ``labelled_by`` (unique UUIDs) make sets findable with the QueryBuilder, e.g.
``filters={'attributes.tag_sets': {'contains': [{'system': 'interface', 'temperature': 800}]}}``
(works on PostgreSQL and SQLite).

All frames of one set share one level of theory and one type map; mixing raises.
Calcfunction use (the node methods return unstored nodes)::

    @calcfunction
    def merge_training_sets(**training_sets):
        return merge(*training_sets.values())
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from aiida.orm import ArrayData

from .frames import (
    ARRAY_FIELDS,
    SIDECAR_FILENAME,
    FrameSystem,
    TagValue,
    TrainingFrames,
    TrainingSetError,
    ase_virial,
    assemble_frames,
    merge_frames,
    remap_frames,
    select_frames,
    select_records,
    split_frames,
    system_from_ase,
    system_from_dpdata,
    system_to_dpdata,
    take_frames,
)
from .level_of_theory import check_same_level

if TYPE_CHECKING:
    import dpdata
    from ase import Atoms

__all__ = (
    'SIDECAR_FILENAME',
    'FrameSystem',
    'TrainingFrames',
    'TrainingSetData',
    'TrainingSetError',
    'ase_virial',
    'merge',
    'merge_frames',
    'remap_frames',
    'select_frames',
    'split_frames',
    'system_from_ase',
    'system_from_dpdata',
    'system_to_dpdata',
    'take_frames',
)

# ----------------------------------------------------------------------------------------------------------
# AiiDA node
# ----------------------------------------------------------------------------------------------------------


def _encode(items: Sequence[Any]) -> tuple[list[Any], list[int]]:
    """Unique non-``None`` items in first-seen order and, per item, its index among them (-1 for ``None``)."""
    table: list[Any] = []
    index: dict[str, int] = {}
    codes = []
    for item in items:
        if item is None:
            codes.append(-1)
            continue
        key = json.dumps(item, sort_keys=True)
        if key not in index:
            index[key] = len(table)
            table.append(item)
        codes.append(index[key])
    return table, codes


class TrainingSetData(ArrayData):
    """DeePMD training frames of several systems, one type map, one level of theory, per-frame provenance.

    Repository: ``s<i>_<field>.npy`` for system ``i`` and every field of :data:`ARRAY_FIELDS` (float64,
    types int64). Attributes: ``type_map``, ``level_of_theory``, ``level_of_theory_key``, ``nframes``,
    ``systems`` (label, formula, natoms, nframes, has_virials, and per frame the indices
    ``frame_tags`` into ``tag_sets`` and ``frame_labelled_by`` into ``labelled_by``, -1 = unknown),
    ``tag_sets`` (unique tag dicts including ``system``) and ``labelled_by`` (unique UUIDs), both in
    first-seen order.
    """

    def __init__(self, frames: TrainingFrames | None = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        if frames is not None:
            self._set_frames(frames)

    def _set_frames(self, frames: TrainingFrames) -> None:
        """Store the arrays and the attributes of ``frames``."""
        tag_sets, tag_codes = _encode(
            [{'system': system.label, **tags} for system in frames.systems for tags in system.tags]
        )
        labellers, labeller_codes = _encode(
            [labeller for system in frames.systems for labeller in system.labelled_by]
        )
        ends = np.cumsum([system.nframes for system in frames.systems]).tolist()
        summaries = []
        for index, (system, end) in enumerate(zip(frames.systems, ends, strict=True)):
            for name in ARRAY_FIELDS:
                if getattr(system, name) is not None:
                    self.set_array(f's{index}_{name}', getattr(system, name))
            summaries.append(
                {
                    'label': system.label,
                    'formula': system.formula(frames.type_map),
                    'natoms': system.natoms,
                    'nframes': system.nframes,
                    'has_virials': system.has_virials,
                    'frame_tags': tag_codes[end - system.nframes : end],
                    'frame_labelled_by': labeller_codes[end - system.nframes : end],
                }
            )
        self.base.attributes.set_many(
            {
                'type_map': frames.type_map,
                'level_of_theory': frames.level_of_theory,
                'level_of_theory_key': frames.level_of_theory_key,
                'nframes': frames.nframes,
                'systems': summaries,
                'tag_sets': tag_sets,
                'labelled_by': labellers,
            }
        )

    # -- metadata (attributes only, no array is read) -------------------------------------------------

    @property
    def type_map(self) -> list[str]:
        """Element symbols; atom type ``i`` is ``type_map[i]``."""
        return list(self.base.attributes.get('type_map'))

    @property
    def level_of_theory(self) -> dict[str, Any]:
        """Canonical level of theory shared by all frames."""
        return dict(self.base.attributes.get('level_of_theory'))

    @property
    def level_of_theory_key(self) -> str:
        """Hashable key of the level of theory."""
        return self.base.attributes.get('level_of_theory_key')

    @property
    def nframes(self) -> int:
        """Total number of frames."""
        return self.base.attributes.get('nframes')

    @property
    def systems(self) -> list[dict[str, Any]]:
        """Per-system summary: label, formula, natoms, nframes, has_virials (per-frame indices omitted)."""
        keys = ('label', 'formula', 'natoms', 'nframes', 'has_virials')
        return [{key: summary[key] for key in keys} for summary in self.base.attributes.get('systems')]

    @property
    def system_labels(self) -> list[str]:
        """Labels of the systems, in storage order."""
        return [summary['label'] for summary in self.base.attributes.get('systems')]

    def _provenance(self) -> list[tuple[str, list[str | None], list[dict[str, TagValue]]]]:
        """Decode per-system ``(label, labelled_by per frame, tags per frame)`` from the attributes."""
        tag_sets = self.base.attributes.get('tag_sets')
        labellers = self.base.attributes.get('labelled_by')
        return [
            (
                summary['label'],
                [labellers[i] if i >= 0 else None for i in summary['frame_labelled_by']],
                [{k: v for k, v in tag_sets[i].items() if k != 'system'} for i in summary['frame_tags']],
            )
            for summary in self.base.attributes.get('systems')
        ]

    def select_frames(self, **criteria: Any) -> list[tuple[str, int]]:
        """Return ``(system label, frame index)`` pairs matching all criteria.

        E.g. ``select_frames(system='interface', temperature=800, iteration=3)``; keys are ``system``,
        ``labelled_by`` or tag names; a list/tuple/set/range value means "one of".
        """
        return select_records(self._provenance(), criteria)

    def frame_provenance(self, system: str, index: int) -> dict[str, Any]:
        """Return ``{'system', 'labelled_by', 'level_of_theory', 'tags'}`` of one frame."""
        for label, labellers, tags in self._provenance():
            if label == system:
                return {
                    'system': label,
                    'labelled_by': labellers[index],
                    'level_of_theory': self.level_of_theory,
                    'tags': tags[index],
                }
        raise KeyError(f'no system {system!r}; systems: {self.system_labels}')

    # -- arrays -------------------------------------------------------------------------------------------

    def get_system(self, label: str) -> FrameSystem:
        """Load the arrays and provenance of one system."""
        for index, (name, labellers, tags) in enumerate(self._provenance()):
            if name == label:
                arrays = {
                    field: self.get_array(f's{index}_{field}')
                    if f's{index}_{field}' in self.get_arraynames()
                    else None
                    for field in ARRAY_FIELDS
                }
                return FrameSystem(label, labelled_by=labellers, tags=tags, **arrays)
        raise KeyError(f'no system {label!r}; systems: {self.system_labels}')

    @property
    def frames(self) -> TrainingFrames:
        """All frames as a pure :class:`TrainingFrames` (arrays loaded from the repository)."""
        systems = [self.get_system(label) for label in self.system_labels]
        return TrainingFrames(self.type_map, self.level_of_theory, systems)

    # -- operations returning new unstored nodes ----------------------------------------------------------

    def merge(self, *others: TrainingSetData) -> TrainingSetData:
        """Return a new set with the frames of ``self`` and ``others`` (see :func:`merge_frames`)."""
        return merge(self, *others)

    def split(self, validation_fraction: float, seed: int) -> tuple[TrainingSetData, TrainingSetData]:
        """Return ``(train, validation)``, split per system (:func:`split_frames`); same seed, same split."""
        train, validation = split_frames(self.frames, validation_fraction, seed)
        return TrainingSetData(train), TrainingSetData(validation)

    def subset(self, selection: Iterable[tuple[str, int]]) -> TrainingSetData:
        """Return the frames given as ``(system label, frame index)`` pairs (from :meth:`select_frames`)."""
        indices: dict[str, list[int]] = {}
        for label, index in selection:
            indices.setdefault(label, []).append(index)
        return TrainingSetData(take_frames(self.frames, indices))

    def remap_types(self, type_map: Sequence[str]) -> TrainingSetData:
        """Return a copy whose atom types index ``type_map`` (must contain every element present)."""
        return TrainingSetData(remap_frames(self.frames, type_map))

    # -- constructors and exporters -----------------------------------------------------------------------

    @classmethod
    def from_ase(
        cls,
        atoms_list: Sequence[Atoms],
        level_of_theory: Mapping[str, Any],
        system_label: str,
        *,
        type_map: Sequence[str] | None = None,
        labelled_by: Any = None,
        tags: Any = None,
        with_virials: bool = True,
    ) -> TrainingSetData:
        """Build a one-system set from ASE atoms with calculators (see :func:`system_from_ase` for units)."""
        system, own_map = system_from_ase(atoms_list, system_label, type_map, labelled_by, tags, with_virials)
        return cls(TrainingFrames(own_map, dict(level_of_theory), [system]))

    @classmethod
    def from_dpdata(
        cls,
        data: dpdata.System | dpdata.MultiSystems,
        level_of_theory: Mapping[str, Any],
        *,
        system_label: str | None = None,
        labelled_by: Any = None,
        tags: Any = None,
        type_map: Sequence[str] | None = None,
    ) -> TrainingSetData:
        """Build a set from a ``dpdata.LabeledSystem`` (label ``system_label``, default its formula) or a
        ``MultiSystems`` (labels = its keys, the formulas). ``labelled_by``/``tags`` apply to every frame
        (per-frame lists only for a single system); ``type_map`` remaps, else all systems must share one.
        """
        import dpdata

        if isinstance(data, dpdata.MultiSystems):
            if system_label is not None:
                raise ValueError('system_label applies to a single LabeledSystem, not to MultiSystems')
            items = list(data.systems.items())
        else:
            items = [(system_label or data.short_name, data)]
        parts = [(*system_from_dpdata(system, label, labelled_by, tags), label) for label, system in items]
        return cls(assemble_frames(parts, level_of_theory, type_map))

    def to_dpdata(self) -> dpdata.MultiSystems:
        """Return a ``dpdata.MultiSystems`` (float64 copies, ``type_map`` order kept).

        dpdata keys systems by formula: systems with equal formula are appended into one, and labels and
        provenance are lost; use :meth:`to_deepmd_npy` to keep them.
        """
        import dpdata

        frames = self.frames
        systems = [system_to_dpdata(system, frames.type_map) for system in frames.systems]
        return dpdata.MultiSystems(*systems, type_map=list(frames.type_map))

    def to_deepmd_npy(self, directory: str | Path, set_size: int = 5000) -> list[Path]:
        """Write one deepmd/npy directory per system, ``directory/<label>``, through dpdata; return them.

        Arrays are written as float64 (dpdata's ``deepmd/npy`` default ``prec``), so the round trip is
        exact. Each directory also gets :data:`SIDECAR_FILENAME` with the label, level of theory and
        per-frame provenance, which :meth:`from_deepmd_npy` reads back.
        """
        frames = self.frames
        paths = []
        for system in frames.systems:
            path = Path(directory) / system.label
            system_to_dpdata(system, frames.type_map).to('deepmd/npy', str(path), set_size=set_size)
            sidecar = {
                'label': system.label,
                'level_of_theory': frames.level_of_theory,
                'labelled_by': system.labelled_by,
                'tags': system.tags,
            }
            (path / SIDECAR_FILENAME).write_text(json.dumps(sidecar, indent=1))
            paths.append(path)
        return paths

    @classmethod
    def from_deepmd_npy(
        cls,
        directories: str | Path | Iterable[str | Path],
        level_of_theory: Mapping[str, Any] | None = None,
        *,
        labelled_by: Any = None,
        tags: Any = None,
        type_map: Sequence[str] | None = None,
    ) -> TrainingSetData:
        """Read deepmd/npy system directories through dpdata.

        Label, level of theory and provenance come from :data:`SIDECAR_FILENAME` when present (a given
        ``level_of_theory`` must then agree), else label = directory name and ``labelled_by``/``tags``
        apply to every frame. ``type_map`` remaps all systems to it (and names the types of a directory
        without ``type_map.raw``); without it all ``type_map.raw`` files must be identical.
        """
        import dpdata

        if isinstance(directories, str | Path):
            directories = [directories]
        parts = []
        levels = [] if level_of_theory is None else [level_of_theory]
        for directory in map(Path, directories):
            sidecar_path = directory / SIDECAR_FILENAME
            sidecar = json.loads(sidecar_path.read_text()) if sidecar_path.is_file() else {}
            names = None if (directory / 'type_map.raw').is_file() else type_map
            system = dpdata.LabeledSystem(str(directory), fmt='deepmd/npy', type_map=names)
            label = sidecar.get('label', directory.name)
            provenance = (sidecar.get('labelled_by', labelled_by), sidecar.get('tags', tags))
            parts.append((*system_from_dpdata(system, label, *provenance), str(directory)))
            if 'level_of_theory' in sidecar:
                levels.append(sidecar['level_of_theory'])
        if not levels:
            raise TrainingSetError('no level of theory given and no sidecar file records one')
        level = levels[0]
        for other in levels[1:]:
            level = check_same_level(level, other)
        return cls(assemble_frames(parts, level, type_map))


def merge(*training_sets: TrainingSetData) -> TrainingSetData:
    """Return a new unstored set with all frames (calcfunction-friendly; see :func:`merge_frames`)."""
    return TrainingSetData(merge_frames(*(training_set.frames for training_set in training_sets)))
