"""Model-deviation classification and candidate selection, as in DP-GEN 0.14 (no AiiDA imports).

Frames of an exploration are classified by the maximum force deviation ``max_devi_f`` (eV/Å) of the
model ensemble (column 4 of DeePMD's ``model_devi.out``) and optionally the maximum virial deviation
``max_devi_v`` (eV per atom, column 1), exactly as ``dpgen.generator.run._select_by_model_devi_standard``:

* rows with ``step < model_devi_skip`` are dropped; of rows sharing a step only the last one is kept;
* **candidate** (tested first): ``f_lo <= f < f_hi`` or ``v_lo <= v < v_hi``;
* **failed**: ``f >= f_hi`` or ``v >= v_hi``;
* **accurate**: ``f < f_lo`` and ``v < v_lo`` (the virial levels default to 1e10, i.e. unused).

The number of candidates labelled per system and iteration (``_make_fp_vasp_inner``) is
``min(task_max, n_candidates)``, set to 0 when below ``fp_task_min``, where ``task_max`` is
``fp_task_max`` scaled down linearly to 0 as the accurate ratio goes from ``fp_accurate_soft_threshold``
to ``fp_accurate_threshold`` (see :func:`task_max_for_accuracy`). DP-GEN draws them with the global,
unseeded ``random.shuffle``; here a NumPy ``Generator`` with a recorded seed draws them, so a selection
is reproducible.
"""

from __future__ import annotations

import enum
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from aiida_lisei.common.validation import is_number

__all__ = (
    'DEFAULT_V_TRUST',
    'PAPER_TRUST_TABLE',
    'Classification',
    'FrameClass',
    'Selection',
    'TrustLevels',
    'TrustTable',
    'TrustTableEntry',
    'classify_frames',
    'draw_candidates',
    'last_rows_per_step',
    'task_max_for_accuracy',
)

#: DP-GEN's default virial trust levels (eV per atom): so large that the virial never decides.
DEFAULT_V_TRUST = 1e10


class FrameClass(enum.IntEnum):
    """Class of an explored frame."""

    ACCURATE = 0
    CANDIDATE = 1
    FAILED = 2


@dataclass(frozen=True)
class TrustLevels:
    """Trust levels of the force deviation (eV/Å) and of the virial deviation (eV per atom).

    ``f_lo < f_hi`` and both positive; ``v_lo <= v_hi`` (equal levels disable the virial window, as
    DP-GEN's defaults of 1e10 do).
    """

    f_lo: float
    f_hi: float
    v_lo: float = DEFAULT_V_TRUST
    v_hi: float = DEFAULT_V_TRUST

    def __post_init__(self) -> None:
        """Check that the levels are finite, positive and in order."""
        values = (self.f_lo, self.f_hi, self.v_lo, self.v_hi)
        if not all(is_number(value) and np.isfinite(value) and value > 0 for value in values):
            raise ValueError(f'trust levels must be positive and finite, got {values}')
        if not self.f_lo < self.f_hi:
            raise ValueError(
                f'trust levels out of order: f_lo = {self.f_lo} must be < f_hi = {self.f_hi} eV/Å'
            )
        if not self.v_lo <= self.v_hi:
            raise ValueError(f'trust levels out of order: v_lo = {self.v_lo} must be <= v_hi = {self.v_hi}')

    #: The one set of key names of trust levels, from the DP-GEN importer to the selection's statistics.
    KEYS = ('f_lo', 'f_hi', 'v_lo', 'v_hi')

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> TrustLevels:
        """Return the levels of ``{f_lo, f_hi[, v_lo, v_hi]}`` (eV/Å, eV per atom; v: DP-GEN's 1e10)."""
        return cls(
            data['f_lo'], data['f_hi'], data.get('v_lo', DEFAULT_V_TRUST), data.get('v_hi', DEFAULT_V_TRUST)
        )

    def as_dict(self) -> dict[str, float]:
        """Return ``{f_lo, f_hi, v_lo, v_hi}``."""
        return asdict(self)


@dataclass(frozen=True)
class TrustTableEntry:
    """Trust levels of some systems in a closed temperature range ``[t_min, t_max]`` (K)."""

    systems: tuple[str, ...]
    t_min: float
    t_max: float
    levels: TrustLevels


@dataclass(frozen=True)
class TrustTable:
    """Trust levels per system and temperature (K); :meth:`lookup` fails clearly outside the table."""

    entries: tuple[TrustTableEntry, ...]

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> TrustTable:
        """Return the table of ``{system: levels}`` (eV/Å), the form of the work chains' inputs.

        ``levels`` is ``{f_lo, f_hi[, v_lo, v_hi]}`` for all temperatures, or a list of such dicts with
        ``t_min`` and ``t_max`` (K, closed range). Raises ``ValueError`` on unknown keys or bad levels.
        """
        entries = []
        for system, levels in data.items():
            for item in levels if isinstance(levels, list | tuple) else [levels]:
                unknown = set(item) - {'t_min', 't_max', *TrustLevels.KEYS}
                if unknown:
                    raise ValueError(f'trust levels of `{system}`: unknown keys {sorted(unknown)}')
                t_range = (item.get('t_min', 0.0), item.get('t_max', math.inf))
                entries.append(TrustTableEntry((system,), *t_range, TrustLevels.from_dict(item)))
        return cls(tuple(entries))

    def lookup(self, system: str, temperature: float) -> TrustLevels:
        """Return the trust levels of ``system`` at ``temperature`` (K).

        Raises ``KeyError`` when the system or the temperature is not covered by the table.
        """
        rows = [entry for entry in self.entries if system in entry.systems]
        if not rows:
            known = sorted({name for entry in self.entries for name in entry.systems})
            raise KeyError(f'no trust levels for system `{system}`: the table knows {known}')
        for entry in rows:
            if entry.t_min <= temperature <= entry.t_max:
                return entry.levels
        ranges = ', '.join(f'{entry.t_min:g}-{entry.t_max:g} K' for entry in rows)
        raise KeyError(
            f'no trust levels for system `{system}` at {temperature:g} K: the table covers {ranges}; '
            'give the trust levels explicitly'
        )


#: The SI's trust levels (eV/Å): [0.10, 0.25] for every system at 200-500 K; [0.15, 0.30] for bulk Li and
#: bulk Li6PS5Cl at 600-1000 K; [0.25, 0.50] for the Li/Li6PS5Cl interface at 600-1000 K.
PAPER_TRUST_TABLE = TrustTable(
    entries=(
        TrustTableEntry(('bcc_lithium', 'argyrodite', 'interface'), 200.0, 500.0, TrustLevels(0.10, 0.25)),
        TrustTableEntry(('bcc_lithium', 'argyrodite'), 600.0, 1000.0, TrustLevels(0.15, 0.30)),
        TrustTableEntry(('interface',), 600.0, 1000.0, TrustLevels(0.25, 0.50)),
    )
)


def last_rows_per_step(steps: np.ndarray) -> np.ndarray:
    """Return the row indices that keep the last row of every step, in DP-GEN's order.

    DP-GEN (``_read_model_devi_file``) keeps the last of repeated rows of a step and orders the kept
    rows by their position in the file.
    """
    steps = np.asarray(steps)
    _, reverse_indices = np.unique(steps[::-1], return_index=True)
    return np.sort(steps.size - 1 - reverse_indices)


@dataclass(frozen=True)
class Classification:
    """Classified frames of one trajectory: ``rows`` index the input arrays, ``classes`` are FrameClass."""

    rows: np.ndarray
    steps: np.ndarray
    classes: np.ndarray
    levels: TrustLevels

    def rows_of(self, frame_class: FrameClass) -> np.ndarray:
        """Row indices (into the input arrays) of the frames of one class, in file order."""
        return self.rows[self.classes == frame_class]

    @property
    def counts(self) -> dict[str, int]:
        """Number of accurate, candidate and failed frames."""
        return {member.name.lower(): int(np.sum(self.classes == member)) for member in FrameClass}


def classify_frames(
    steps: Sequence[float] | np.ndarray,
    max_devi_f: Sequence[float] | np.ndarray,
    levels: TrustLevels,
    max_devi_v: Sequence[float] | np.ndarray | None = None,
    skip: int = 0,
) -> Classification:
    """Classify the frames of one trajectory by model deviation, exactly as DP-GEN.

    :param steps: MD step of every row of ``model_devi.out`` (column 0).
    :param max_devi_f: maximum force deviation of every row (eV/Å, column 4).
    :param levels: the trust levels.
    :param max_devi_v: maximum virial deviation of every row (column 1); ``None`` counts as 0.
    :param skip: rows with ``step < skip`` are dropped (DP-GEN's ``model_devi_skip``, in steps).
    :raises ValueError: on a NaN deviation (DP-GEN raises there too: such a frame is in no class).
    """
    steps = np.asarray(steps, dtype=float).ravel()
    devi_f = np.asarray(max_devi_f, dtype=float).ravel()
    devi_v = np.zeros_like(devi_f) if max_devi_v is None else np.asarray(max_devi_v, dtype=float).ravel()
    if not steps.size == devi_f.size == devi_v.size:
        raise ValueError(f'got {steps.size} steps, {devi_f.size} force and {devi_v.size} virial deviations')
    rows = last_rows_per_step(steps)
    rows = rows[steps[rows] >= skip]
    f, v = devi_f[rows], devi_v[rows]
    if np.isnan(f).any() or np.isnan(v).any():
        bad = steps[rows][np.isnan(f) | np.isnan(v)]
        raise ValueError(f'NaN model deviation at steps {bad[:10].astype(int).tolist()}: the run blew up')
    candidate = ((levels.v_lo <= v) & (v < levels.v_hi)) | ((levels.f_lo <= f) & (f < levels.f_hi))
    failed = ~candidate & ((v >= levels.v_hi) | (f >= levels.f_hi))
    classes = np.full(rows.size, FrameClass.ACCURATE, dtype=int)
    classes[candidate] = FrameClass.CANDIDATE
    classes[failed] = FrameClass.FAILED
    return Classification(rows=rows, steps=steps[rows].astype(int), classes=classes, levels=levels)


def task_max_for_accuracy(
    accurate_ratio: float,
    fp_task_max: int,
    fp_accurate_threshold: float = 1.0,
    fp_accurate_soft_threshold: float | None = None,
) -> int:
    """Return DP-GEN's effective ``fp_task_max`` for a system with the given accurate ratio.

    ``fp_task_max`` below ``fp_accurate_soft_threshold`` (default: ``fp_accurate_threshold``), 0 at or
    above ``fp_accurate_threshold`` (default 1), and in between
    ``int(fp_task_max * (ratio - threshold) / (soft - threshold))`` (truncated, as DP-GEN).
    """
    soft = fp_accurate_threshold if fp_accurate_soft_threshold is None else fp_accurate_soft_threshold
    if accurate_ratio < soft:
        return int(fp_task_max)
    if accurate_ratio < fp_accurate_threshold:
        return int(fp_task_max * (accurate_ratio - fp_accurate_threshold) / (soft - fp_accurate_threshold))
    return 0


@dataclass(frozen=True)
class Selection:
    """Candidates chosen from the trajectories of one system in one iteration.

    ``chosen`` holds ``(trajectory index, row index)`` pairs sorted as DP-GEN sorts its chosen tasks.
    """

    counts: dict[str, int]
    accurate_ratio: float
    task_max: int
    chosen: list[tuple[int, int]] = field(default_factory=list)

    @property
    def fractions(self) -> dict[str, float]:
        """Fraction of the classified frames in each class (0 when nothing was classified)."""
        total = sum(self.counts.values())
        return {name: (count / total if total else 0.0) for name, count in self.counts.items()}


def draw_candidates(
    classifications: Iterable[Classification],
    fp_task_max: int,
    seed: int,
    fp_task_min: int = 0,
    fp_accurate_threshold: float = 1.0,
    fp_accurate_soft_threshold: float | None = None,
) -> Selection:
    """Choose at most the effective ``fp_task_max`` candidates of one system, with a seeded generator.

    Counts are pooled over all ``classifications`` (the trajectories of one system), as DP-GEN pools the
    tasks of a system. With no classified frame the selection is empty (DP-GEN skips the system).
    """
    classifications = list(classifications)
    counts = {member.name.lower(): 0 for member in FrameClass}
    pool: list[tuple[int, int]] = []
    for index, classification in enumerate(classifications):
        for name, count in classification.counts.items():
            counts[name] += count
        pool.extend((index, int(row)) for row in classification.rows_of(FrameClass.CANDIDATE))
    total = sum(counts.values())
    if total == 0:
        return Selection(counts=counts, accurate_ratio=0.0, task_max=0)
    accurate_ratio = counts['accurate'] / total
    task_max = task_max_for_accuracy(
        accurate_ratio, fp_task_max, fp_accurate_threshold, fp_accurate_soft_threshold
    )
    number = min(task_max, len(pool))
    if number < fp_task_min:
        number = 0
    order = np.random.default_rng(seed).permutation(len(pool))[:number]
    return Selection(
        counts=counts, accurate_ratio=accurate_ratio, task_max=task_max, chosen=sorted(pool[i] for i in order)
    )
