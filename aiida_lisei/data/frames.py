"""Labelled DeePMD frames as plain NumPy: systems, merge, split, selection, dpdata and ASE converters.

No AiiDA imports: parsers' pure helpers, calcfunctions and tests use these directly; the
``lisei.training_set`` node (:mod:`aiida_lisei.data.training_set`) stores them.

Units follow DeePMD/dpdata: coordinates and cells in Å, energies in eV, forces in eV/Å,
virials in eV with DeePMD's sign: ``virial = -stress * volume = -dE/dstrain``.
"""

from __future__ import annotations

import math
import re
import uuid
import zlib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

import numpy as np

from .level_of_theory import canonical_level_of_theory, check_same_level, level_of_theory_key

if TYPE_CHECKING:
    import dpdata
    from ase import Atoms

__all__ = (
    'ARRAY_FIELDS',
    'LABEL_PATTERN',
    'SIDECAR_FILENAME',
    'STUDY_TYPE_MAP',
    'FrameSystem',
    'TagValue',
    'TrainingFrames',
    'TrainingSetError',
    'ase_virial',
    'assemble_frames',
    'default_type_map',
    'merge_frames',
    'remap_frames',
    'resolve_frame_tags',
    'select_frames',
    'select_records',
    'split_frames',
    'system_from_ase',
    'system_from_dpdata',
    'system_to_dpdata',
    'take_frames',
    'validate_frame_tags',
)

#: File written next to ``type.raw`` in every deepmd/npy system directory (DeePMD ignores it).
SIDECAR_FILENAME = 'lisei_frames.json'

#: Array fields of a system, in storage order; ``virials`` is optional.
ARRAY_FIELDS: tuple[str, ...] = ('atom_types', 'coords', 'cells', 'energies', 'forces', 'virials')

LABEL_PATTERN = re.compile(r'^[A-Za-z0-9][A-Za-z0-9_.+-]*$')
_RESERVED_TAGS = ('system', 'labelled_by')

TagValue = str | int | float | bool


#: Element order of every model of the study: one type map, so all training sets merge.
STUDY_TYPE_MAP: tuple[str, ...] = ('Li', 'P', 'S', 'Cl')


def resolve_frame_tags(tags: Mapping[str, Any] | None, keys: Iterable[str]) -> dict[str, dict[str, Any]]:
    """Return the tags of every frame ``key``: the scalar entries of ``tags``, updated with ``tags[key]``.

    ``tags`` mixes batch tags (scalar values, e.g. ``{'temperature': 300, 'source': 'aimd'}``) and
    per-frame tags (a dict under the frame's key, e.g. ``{'frame_0003': {'temperature': 600}}``).
    """
    tags = dict(tags or {})
    common = {name: value for name, value in tags.items() if not isinstance(value, Mapping)}
    return {key: {**common, **tags.get(key, {})} for key in keys}


def validate_frame_tags(tags: Mapping[str, Any], keys: Iterable[str]) -> str | None:
    """Return an error message if a per-frame entry of ``tags`` names no frame or holds a non-scalar."""
    keys = set(keys)
    for name, value in tags.items():
        if isinstance(value, Mapping):
            if name not in keys:
                return f'`tags` has per-frame tags for `{name}`, which is not a key of `structures`'
            if any(isinstance(item, Mapping | list) for item in value.values()):
                return f'`tags.{name}`: per-frame tags must be scalars'
        elif isinstance(value, list):
            return f'`tags.{name}`: tags must be scalars (or a dict of scalars under a frame key)'
    return None


def default_type_map(symbols: Iterable[str]) -> list[str]:
    """Return the study's type map followed by any other element of ``symbols`` in order of appearance."""
    return [*STUDY_TYPE_MAP, *(symbol for symbol in dict.fromkeys(symbols) if symbol not in STUDY_TYPE_MAP)]


class TrainingSetError(ValueError):
    """Invalid, incomplete or inconsistent training frames."""


# ----------------------------------------------------------------------------------------------------------
# Per-frame provenance helpers
# ----------------------------------------------------------------------------------------------------------


def _per_frame(value: Any, nframes: int, name: str, label: str) -> list:
    """Return ``value`` as a list with one entry per frame (anything but a list/tuple/array is repeated)."""
    if not isinstance(value, list | tuple | np.ndarray):
        return [value] * nframes
    values = list(value)
    if len(values) != nframes:
        raise TrainingSetError(f'system {label!r}: got {len(values)} `{name}` entries for {nframes} frames')
    return values


def _uuid_or_none(value: Any, label: str) -> str | None:
    """Return the UUID string of a node or UUID, or ``None``."""
    if value is None:
        return None
    value = getattr(value, 'uuid', value)
    try:
        return str(uuid.UUID(str(value)))
    except ValueError as exception:
        raise TrainingSetError(f'system {label!r}: `labelled_by` {value!r} is not a UUID') from exception


def _tag_value(value: Any, key: str, label: str) -> TagValue:
    """Return ``value`` as a JSON scalar (numpy scalars are converted); reject NaN/inf and containers."""
    if hasattr(value, 'item') and not isinstance(value, str):
        value = value.item()
    if isinstance(value, bool | int | str) or (isinstance(value, float) and math.isfinite(value)):
        return value
    raise TrainingSetError(
        f'system {label!r}: tag {key!r} = {value!r} is not a str, int, bool or finite float'
    )


def _clean_tags(tags: Mapping[str, Any] | None, label: str) -> dict[str, TagValue]:
    """Validate one frame's tags: string keys, scalar values, no reserved key."""
    tags = {} if tags is None else tags
    if not isinstance(tags, Mapping):
        raise TrainingSetError(f'system {label!r}: tags must be a dict per frame, got {type(tags).__name__}')
    reserved = [key for key in tags if key in _RESERVED_TAGS]
    if reserved:
        raise TrainingSetError(f'system {label!r}: tag names {reserved} are reserved')
    return {str(key): _tag_value(value, key, label) for key, value in sorted(tags.items())}


def _matches(value: Any, wanted: Any) -> bool:
    """Equality, or membership when ``wanted`` is a list, tuple, set or range."""
    if isinstance(wanted, list | tuple | set | frozenset | range):
        return value in wanted
    return value == wanted


def select_records(
    records: Iterable[tuple[str, list, list]], criteria: Mapping[str, Any]
) -> list[tuple[str, int]]:
    """Return ``(system, frame index)`` of frames matching all criteria in ``(label, labelled_by, tags)``."""
    selected = []
    for label, labellers, tags in records:
        for index, (labeller, frame_tags) in enumerate(zip(labellers, tags, strict=True)):
            frame = {**frame_tags, 'system': label, 'labelled_by': labeller}
            if all(key in frame and _matches(frame[key], wanted) for key, wanted in criteria.items()):
                selected.append((label, index))
    return selected


# ----------------------------------------------------------------------------------------------------------
# Pure data model
# ----------------------------------------------------------------------------------------------------------


@dataclass
class FrameSystem:
    """Labelled frames of one system (one fixed atom list).

    ``atom_types`` (natoms,) indices into the set's type map; ``coords`` (nframes, natoms, 3) Å;
    ``cells`` (nframes, 3, 3) Å, rows are cell vectors; ``energies`` (nframes,) eV; ``forces``
    (nframes, natoms, 3) eV/Å; ``virials`` (nframes, 3, 3) eV or ``None``; ``labelled_by`` one UUID
    (or ``None``) per frame or one for all; ``tags`` one dict per frame or one for all.
    Arrays are copied to float64 (int64 for types) and checked for shape and finiteness.
    """

    label: str
    atom_types: np.ndarray
    coords: np.ndarray
    cells: np.ndarray
    energies: np.ndarray | None
    forces: np.ndarray | None
    virials: np.ndarray | None = None
    labelled_by: Any = None
    tags: Any = None

    def __post_init__(self) -> None:
        if not isinstance(self.label, str) or not LABEL_PATTERN.match(self.label):
            raise TrainingSetError(f'system label {self.label!r} must match {LABEL_PATTERN.pattern}')
        self.atom_types = self._check_types(self.atom_types)
        for name in ('energies', 'forces'):
            if getattr(self, name) is None:
                raise TrainingSetError(f'system {self.label!r}: missing {name}')
        nframes = np.shape(self.coords)[0] if np.ndim(self.coords) else 0
        if nframes == 0:
            raise TrainingSetError(f'system {self.label!r}: no frames')
        natoms = len(self.atom_types)
        shapes = {
            'coords': (nframes, natoms, 3),
            'cells': (nframes, 3, 3),
            'energies': (nframes,),
            'forces': (nframes, natoms, 3),
            'virials': (nframes, 3, 3),
        }
        for name, shape in shapes.items():
            if getattr(self, name) is not None:
                setattr(self, name, self._check_array(name, getattr(self, name), shape))
        self.labelled_by = [
            _uuid_or_none(value, self.label)
            for value in _per_frame(self.labelled_by, nframes, 'labelled_by', self.label)
        ]
        self.tags = [
            _clean_tags(tags, self.label) for tags in _per_frame(self.tags, nframes, 'tags', self.label)
        ]

    def _check_types(self, atom_types: Any) -> np.ndarray:
        """Return ``atom_types`` as a 1-d int64 array of non-negative indices."""
        types = np.array(atom_types)
        if (
            types.ndim != 1
            or types.size == 0
            or not np.issubdtype(types.dtype, np.integer)
            or types.min() < 0
        ):
            raise TrainingSetError(
                f'system {self.label!r}: atom_types must be a non-empty 1-d array of non-negative integers, '
                f'got shape {types.shape} dtype {types.dtype}'
            )
        return types.astype(np.int64)

    def _check_array(self, name: str, value: Any, shape: tuple[int, ...]) -> np.ndarray:
        """Return ``value`` as a float64 copy after checking its shape and finiteness."""
        array = np.array(value, dtype=np.float64)
        if array.shape != shape:
            raise TrainingSetError(f'system {self.label!r}: {name} has shape {array.shape}, expected {shape}')
        bad_frames = np.unique(np.nonzero(~np.isfinite(array))[0])
        if bad_frames.size:
            raise TrainingSetError(
                f'system {self.label!r}: {name} has NaN/inf in frame(s) {bad_frames[:10].tolist()}'
            )
        return array

    @property
    def nframes(self) -> int:
        """Number of frames."""
        return len(self.energies)

    @property
    def natoms(self) -> int:
        """Number of atoms per frame."""
        return len(self.atom_types)

    @property
    def has_virials(self) -> bool:
        """Whether every frame has a virial (a system has virials for all frames or none)."""
        return self.virials is not None

    def formula(self, type_map: Sequence[str]) -> str:
        """Chemical formula in type-map order, e.g. ``Li24P4S20Cl4`` (absent elements omitted)."""
        counts = np.bincount(self.atom_types, minlength=len(type_map))
        return ''.join(f'{element}{count}' for element, count in zip(type_map, counts, strict=False) if count)

    def take(self, indices: Sequence[int] | np.ndarray) -> FrameSystem:
        """Return a new system with the frames at ``indices`` (in that order)."""
        idx = np.asarray(indices, dtype=int)
        return FrameSystem(
            self.label,
            self.atom_types,
            self.coords[idx],
            self.cells[idx],
            self.energies[idx],
            self.forces[idx],
            None if self.virials is None else self.virials[idx],
            [self.labelled_by[i] for i in idx],
            [self.tags[i] for i in idx],
        )


@dataclass
class TrainingFrames:
    """Systems sharing one ``type_map`` (element symbols, order matters) and one level of theory."""

    type_map: list[str]
    level_of_theory: dict[str, Any]
    systems: list[FrameSystem]

    def __post_init__(self) -> None:
        self.type_map = [str(element) for element in self.type_map]
        if not self.type_map or len(set(self.type_map)) != len(self.type_map):
            raise TrainingSetError(f'type_map {self.type_map} must be non-empty without duplicates')
        self.level_of_theory = canonical_level_of_theory(self.level_of_theory)
        self.systems = list(self.systems)
        if not self.systems:
            raise TrainingSetError('a training set needs at least one system')
        labels = [system.label for system in self.systems]
        duplicates = sorted({label for label in labels if labels.count(label) > 1})
        if duplicates:
            raise TrainingSetError(f'duplicate system labels {duplicates}')
        for system in self.systems:
            if system.atom_types.max() >= len(self.type_map):
                raise TrainingSetError(
                    f'system {system.label!r}: atom type {system.atom_types.max()} is outside '
                    f'type_map {self.type_map}'
                )

    @property
    def nframes(self) -> int:
        """Total number of frames."""
        return sum(system.nframes for system in self.systems)

    @property
    def level_of_theory_key(self) -> str:
        """Hashable key of the level of theory (see :func:`level_of_theory_key`)."""
        return level_of_theory_key(self.level_of_theory)

    def get_system(self, label: str) -> FrameSystem:
        """Return the system called ``label``."""
        for system in self.systems:
            if system.label == label:
                return system
        raise KeyError(f'no system {label!r}; systems: {[system.label for system in self.systems]}')


def select_frames(frames: TrainingFrames, **criteria: Any) -> list[tuple[str, int]]:
    """Return ``(system label, frame index)`` of the frames matching all criteria.

    Keys: ``system``, ``labelled_by`` or any tag; a list/tuple/set/range value means "one of".
    """
    return select_records(
        [(system.label, system.labelled_by, system.tags) for system in frames.systems], criteria
    )


def take_frames(frames: TrainingFrames, selection: Mapping[str, Sequence[int]]) -> TrainingFrames:
    """Return the frames ``{system label: frame indices}`` (systems with no index are dropped)."""
    unknown = sorted(set(selection) - {system.label for system in frames.systems})
    if unknown:
        raise KeyError(f'no systems {unknown} in the training set')
    systems = [
        system.take(selection[system.label])
        for system in frames.systems
        if len(selection.get(system.label, []))
    ]
    return TrainingFrames(frames.type_map, frames.level_of_theory, systems)


def _concatenate(systems: Sequence[FrameSystem]) -> FrameSystem:
    """Concatenate the frames of systems with the same label and atom list."""
    first = systems[0]
    for other in systems[1:]:
        if not np.array_equal(first.atom_types, other.atom_types):
            raise TrainingSetError(f'system {first.label!r}: cannot merge frames with different atom lists')
        if first.has_virials != other.has_virials:
            raise TrainingSetError(f'system {first.label!r}: cannot merge frames with and without virials')
    return FrameSystem(
        first.label,
        first.atom_types,
        np.concatenate([system.coords for system in systems]),
        np.concatenate([system.cells for system in systems]),
        np.concatenate([system.energies for system in systems]),
        np.concatenate([system.forces for system in systems]),
        np.concatenate([system.virials for system in systems]) if first.has_virials else None,
        [labeller for system in systems for labeller in system.labelled_by],
        [tags for system in systems for tags in system.tags],
    )


def _check_type_maps(type_maps: Sequence[Sequence[str]], sources: Sequence[str]) -> list[str]:
    """Return the common type map or raise naming the first two that differ."""
    for type_map, source in zip(type_maps[1:], sources[1:], strict=True):
        if list(type_map) != list(type_maps[0]):
            raise TrainingSetError(
                f'mixed type maps: {list(type_maps[0])} ({sources[0]}) vs {list(type_map)} ({source}); '
                'the order matters for DeePMD: remap one with remap_types(type_map) first'
            )
    return list(type_maps[0])


def merge_frames(*frame_sets: TrainingFrames) -> TrainingFrames:
    """Merge sets with the same type map and level of theory; systems with the same label are concatenated."""
    if not frame_sets:
        raise TrainingSetError('nothing to merge')
    type_map = _check_type_maps(
        [fs.type_map for fs in frame_sets], [f'set {i}' for i in range(len(frame_sets))]
    )
    level = frame_sets[0].level_of_theory
    for frame_set in frame_sets[1:]:
        level = check_same_level(level, frame_set.level_of_theory)
    groups: dict[str, list[FrameSystem]] = {}
    for frame_set in frame_sets:
        for system in frame_set.systems:
            groups.setdefault(system.label, []).append(system)
    return TrainingFrames(type_map, level, [_concatenate(group) for group in groups.values()])


def split_frames(
    frames: TrainingFrames, validation_fraction: float, seed: int
) -> tuple[TrainingFrames, TrainingFrames]:
    """Split every system at random into ``(train, validation)``; the same seed gives the same split.

    Each system gets ``round(validation_fraction * nframes)`` validation frames, drawn with a
    generator seeded by ``(seed, crc32(label))`` (independent of the order of the systems);
    frames keep their original order in both parts.
    """
    if not 0.0 < validation_fraction < 1.0:
        raise ValueError(f'validation_fraction must be in (0, 1), got {validation_fraction}')
    train, validation = {}, {}
    for system in frames.systems:
        rng = np.random.default_rng([int(seed), zlib.crc32(system.label.encode())])
        order = rng.permutation(system.nframes)
        nvalidation = math.floor(validation_fraction * system.nframes + 0.5)
        validation[system.label] = np.sort(order[:nvalidation])
        train[system.label] = np.sort(order[nvalidation:])
    for name, part in (('training', train), ('validation', validation)):
        if not any(len(indices) for indices in part.values()):
            raise TrainingSetError(
                f'validation_fraction={validation_fraction} leaves the {name} set empty '
                f'({frames.nframes} frames)'
            )
    return take_frames(frames, train), take_frames(frames, validation)


def _remap_system(system: FrameSystem, old_map: Sequence[str], new_map: Sequence[str]) -> FrameSystem:
    """Return ``system`` with atom types re-indexed from ``old_map`` to ``new_map``."""
    used = [old_map[index] for index in np.unique(system.atom_types)]
    missing = [element for element in used if element not in new_map]
    if missing:
        raise TrainingSetError(
            f'system {system.label!r}: elements {missing} are not in type_map {list(new_map)}'
        )
    lookup = np.array([list(new_map).index(el) if el in new_map else -1 for el in old_map], dtype=np.int64)
    return replace(system, atom_types=lookup[system.atom_types])


def remap_frames(frames: TrainingFrames, type_map: Sequence[str]) -> TrainingFrames:
    """Return the frames with atom types re-indexed to ``type_map`` (must contain every element used)."""
    systems = [_remap_system(system, frames.type_map, type_map) for system in frames.systems]
    return TrainingFrames(list(type_map), frames.level_of_theory, systems)


def assemble_frames(
    parts: Sequence[tuple[FrameSystem, list[str], str]],
    level_of_theory: Mapping,
    type_map: Sequence[str] | None,
) -> TrainingFrames:
    """Build frames from ``(system, own type map, source)``; remap to ``type_map`` or need one map."""
    if type_map is None:
        type_map = _check_type_maps([part[1] for part in parts], [part[2] for part in parts])
    systems = [_remap_system(system, own_map, type_map) for system, own_map, _ in parts]
    return TrainingFrames(list(type_map), dict(level_of_theory), systems)


# ----------------------------------------------------------------------------------------------------------
# Converters (dpdata, ASE)
# ----------------------------------------------------------------------------------------------------------


def _dpdata_optional(data: Mapping[str, Any], key: str) -> np.ndarray | None:
    """Return ``data[key]``, or ``None`` when absent or empty (dpdata's marker of an uncomputed property)."""
    value = data.get(key)
    return None if value is None or np.size(value) == 0 else value


def system_from_dpdata(
    system: dpdata.System, label: str, labelled_by: Any = None, tags: Any = None
) -> tuple[FrameSystem, list[str]]:
    """Return a :class:`FrameSystem` and its type map (dpdata ``atom_names``) from a dpdata system."""
    data = system.data
    if data.get('nopbc', False):
        raise TrainingSetError(f'system {label!r}: non-periodic (nopbc) systems are not supported')
    frame_system = FrameSystem(
        label,
        data['atom_types'],
        data['coords'],
        data['cells'],
        _dpdata_optional(data, 'energies'),
        _dpdata_optional(data, 'forces'),
        _dpdata_optional(data, 'virials'),
        labelled_by,
        tags,
    )
    return frame_system, list(data['atom_names'])


def system_to_dpdata(system: FrameSystem, type_map: Sequence[str]) -> dpdata.LabeledSystem:
    """Return a ``dpdata.LabeledSystem`` with copies of the arrays (all float64, atom_names = type_map)."""
    import dpdata

    data = {
        'atom_names': list(type_map),
        'atom_numbs': np.bincount(system.atom_types, minlength=len(type_map)).tolist(),
        'atom_types': system.atom_types.copy(),
        'orig': np.zeros(3),
        'cells': system.cells.copy(),
        'coords': system.coords.copy(),
        'energies': system.energies.copy(),
        'forces': system.forces.copy(),
    }
    if system.has_virials:
        data['virials'] = system.virials.copy()
    return dpdata.LabeledSystem(data=data)


def ase_virial(atoms: Atoms) -> np.ndarray | None:
    """DeePMD virial (eV) ``-stress * volume`` from the ASE stress (eV/Å³), or ``None`` if unavailable."""
    from ase.calculators.calculator import PropertyNotImplementedError

    try:
        stress = atoms.get_stress(voigt=False)
    except PropertyNotImplementedError:
        return None
    return -np.asarray(stress) * atoms.get_volume()


def system_from_ase(
    atoms_list: Sequence[Atoms],
    label: str,
    type_map: Sequence[str] | None = None,
    labelled_by: Any = None,
    tags: Any = None,
    with_virials: bool = True,
) -> tuple[FrameSystem, list[str]]:
    """Return a :class:`FrameSystem` and type map from ASE atoms with attached calculators (evaluated here).

    Energies are ``get_potential_energy()`` (eV), forces ``get_forces()`` (eV/Å); virials come from
    :func:`ase_virial` and are kept only if every frame has a stress and ``with_virials``.
    ``type_map`` defaults to :func:`default_type_map` (the study's Li, P, S, Cl first).
    """
    atoms_list = list(atoms_list)
    if not atoms_list:
        raise TrainingSetError(f'system {label!r}: no frames')
    symbols = atoms_list[0].get_chemical_symbols()
    type_map = default_type_map(symbols) if type_map is None else list(type_map)
    missing = sorted(set(symbols) - set(type_map))
    if missing:
        raise TrainingSetError(f'system {label!r}: elements {missing} are not in type_map {type_map}')
    for index, atoms in enumerate(atoms_list):
        if atoms.get_chemical_symbols() != symbols:
            raise TrainingSetError(f'system {label!r}: frame {index} has a different atom list than frame 0')
        if not atoms.pbc.all():
            raise TrainingSetError(f'system {label!r}: frame {index} is not periodic in 3D')
    virials = [ase_virial(atoms) for atoms in atoms_list] if with_virials else [None]
    frame_system = FrameSystem(
        label,
        [type_map.index(symbol) for symbol in symbols],
        [atoms.get_positions() for atoms in atoms_list],
        [atoms.cell.array for atoms in atoms_list],
        [atoms.get_potential_energy() for atoms in atoms_list],
        [atoms.get_forces() for atoms in atoms_list],
        None if any(virial is None for virial in virials) else virials,
        labelled_by,
        tags,
    )
    return frame_system, type_map
