"""Guards on the physics of a production MD run: is what the run did still a simulation of the system?

A run that finishes is not a run that is right. Each guard measures one thing from the run's own outputs
(thermo lines, dumped frames, the restraint's work, the ensemble's model deviation) and compares it with a
documented threshold (:data:`DEFAULT_GUARD_THRESHOLDS`):

============== ====== ===========================================================================
guard          status what is measured
============== ====== ===========================================================================
lateral_cell   450    largest relative change of the cell lengths x, y from the run's start
min_distance   451    smallest distance of each species pair in the dumped frames (Å)
lost_atoms     452    atoms with no neighbour within ``isolated_distance`` (evaporated, Å)
temperature    453    mean temperature minus the target (K)
pressure       454    mean lateral pressure (Pxx + Pyy) / 2 minus the target (bar; NPT only)
energy_drift   455    slope of (conserved energy - restraint work) per atom (eV/atom/ps)
deviation      456    fraction of dumped frames whose max force deviation is >= ``deviation_f_hi``
============== ====== ===========================================================================

The status numbers are the exit codes of the "unphysical run" family (450-479, ``common/exit_codes.py``);
a CalcJob or work chain that fails a guard returns the status of the first failed guard in this order and
keeps its outputs. Plain NumPy (and vesin's neighbour list), no AiiDA.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

__all__ = (
    'DEFAULT_GUARD_THRESHOLDS',
    'GUARDS',
    'GuardDefinition',
    'GuardResult',
    'check_guard_thresholds',
    'combine_guard_summaries',
    'enforced_failure',
    'evaluate_guards',
    'first_failure',
    'guards_summary',
)


@dataclass(frozen=True)
class GuardDefinition:
    """A guard: its name, exit status and label (450-479), unit and what it measures."""

    name: str
    status: int
    label: str
    unit: str
    description: str


#: The guards in the order they are reported (and in which the first failure picks the exit status).
GUARDS: tuple[GuardDefinition, ...] = (
    GuardDefinition(
        'lateral_cell', 450, 'ERROR_GUARD_LATERAL_CELL', '', 'relative change of the cell lengths x, y'
    ),
    GuardDefinition('min_distance', 451, 'ERROR_GUARD_MIN_DISTANCE', 'Å', 'two atoms closer than allowed'),
    GuardDefinition('lost_atoms', 452, 'ERROR_GUARD_LOST_ATOMS', 'atoms', 'atoms with no neighbour'),
    GuardDefinition('temperature', 453, 'ERROR_GUARD_TEMPERATURE', 'K', 'mean temperature off target'),
    GuardDefinition('pressure', 454, 'ERROR_GUARD_PRESSURE', 'bar', 'mean lateral pressure off target'),
    GuardDefinition('energy_drift', 455, 'ERROR_GUARD_ENERGY_DRIFT', 'eV/atom/ps', 'conserved energy drifts'),
    GuardDefinition(
        'deviation', 456, 'ERROR_GUARD_MODEL_DEVIATION', '', 'frames beyond the trust level of the ensemble'
    ),
)

#: Thresholds of the guards and their defaults. Units: fraction, Å, K, bar, eV/atom/ps, eV/Å.
DEFAULT_GUARD_THRESHOLDS: dict[str, Any] = {
    'lateral_cell': 0.03,  # |L/L0 - 1| of x and y, fraction of the start
    'min_distance': 1.5,  # Å, every species pair unless named in `min_distance_pairs`
    'min_distance_pairs': {},  # e.g. {'P-S': 1.7}: pair (alphabetical 'A-B') -> Å
    'isolated_distance': 4.0,  # Å: an atom without a neighbour this close is lost
    'lost_atoms': 0,  # atoms allowed to be isolated
    'equilibration': 0.2,  # fraction of the thermo lines left out of the temperature and pressure means
    'temperature': 30.0,  # K, |mean T - target|
    'pressure': 2500.0,  # bar, |mean (Pxx + Pyy) / 2 - target| (NPT only)
    'energy_drift': 0.005,  # eV/atom/ps, |slope of (econserve - work) / N|
    'deviation_f_hi': 0.25,  # eV/Å, upper force trust level of the ensemble (SI: 0.25 at 200-500 K)
    'deviation': 0.10,  # largest fraction of dumped frames at or above deviation_f_hi
    'enabled': True,  # False: the guards are measured and reported, never fail the run (exploration)
}


def check_guard_thresholds(thresholds: Mapping[str, Any] | None) -> dict[str, Any]:
    """Return ``thresholds`` completed with :data:`DEFAULT_GUARD_THRESHOLDS` (``ValueError`` if wrong)."""
    thresholds = dict(thresholds or {})
    unknown = sorted(set(thresholds) - set(DEFAULT_GUARD_THRESHOLDS))
    if unknown:
        raise ValueError(f'unknown guard thresholds {unknown}; known: {sorted(DEFAULT_GUARD_THRESHOLDS)}')
    full = {**DEFAULT_GUARD_THRESHOLDS, **thresholds}
    for name, value in full.items():
        if name in ('min_distance_pairs', 'enabled'):
            continue
        if not isinstance(value, int | float) or isinstance(value, bool) or value < 0:
            raise ValueError(f'guard threshold `{name}` must be a non-negative number, got {value!r}')
    if not 0 <= full['deviation'] <= 1 or not 0 <= full['lateral_cell'] < 1 or not full['equilibration'] < 1:
        raise ValueError(
            'guard thresholds `deviation`, `lateral_cell`, `equilibration` are fractions in [0, 1)'
        )
    pairs = full['min_distance_pairs']
    if not isinstance(pairs, Mapping) or any(
        not isinstance(value, int | float) or value < 0 or key.count('-') != 1 for key, value in pairs.items()
    ):
        raise ValueError(f'`min_distance_pairs` must map pairs "A-B" to distances (Å), got {pairs!r}')
    full['min_distance_pairs'] = {_pair_name(*key.split('-')): float(v) for key, v in pairs.items()}
    if not isinstance(full['enabled'], bool):
        raise ValueError(f'guard switch `enabled` must be true or false, got {full["enabled"]!r}')
    return full


@dataclass(frozen=True)
class GuardResult:
    """What a guard measured: ``value`` against ``threshold`` (units of the guard), ``passed`` (``None``:
    not evaluated, with the reason in ``detail``), and the first step that broke it."""

    name: str
    value: float | None
    threshold: float
    passed: bool | None
    step: int | None
    detail: str

    def as_dict(self) -> dict[str, Any]:
        """Return the result as a JSON-serialisable dict (a non-finite value becomes ``None``)."""
        result = asdict(self)
        if result['value'] is not None and not np.isfinite(result['value']):
            result['value'] = None
        return result


def _pair_name(first: str, second: str) -> str:
    return '-'.join(sorted((first, second)))


def _lateral_cell(thermo: Mapping[str, np.ndarray], reference_cell: np.ndarray, limit: float) -> GuardResult:
    lengths0 = np.linalg.norm(np.asarray(reference_cell, dtype=float), axis=1)[:2]
    if 'lx' not in thermo or not thermo['lx'].size:
        return GuardResult('lateral_cell', None, limit, None, None, 'no cell lengths in the thermo output')
    lengths = np.stack([thermo['lx'], thermo['ly']], axis=1)
    change = lengths / lengths0 - 1.0
    worst = np.abs(change).max(axis=1)
    index = int(np.argmax(worst))
    axis = int(np.argmax(np.abs(change[index])))
    broken = np.flatnonzero(worst > limit)
    step = int(thermo['step'][broken[0]]) if broken.size else None
    detail = (
        f'{"xy"[axis]} {lengths0[axis]:.3f} -> {lengths[index, axis]:.3f} Å ({change[index, axis]:+.1%}) at '
        f'step {int(thermo["step"][index])} (limit ±{limit:.1%})'
    )
    return GuardResult('lateral_cell', float(worst[index]), limit, not broken.size, step, detail)


def _pair_distances(
    positions: np.ndarray, cells: np.ndarray, cutoff: float
) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """Return ``(i, j, d)`` of every pair within ``cutoff`` (Å) of each frame (periodic)."""
    from vesin import NeighborList

    calculator = NeighborList(cutoff=cutoff, full_list=False)
    return [
        calculator.compute(points=frame, box=cell, periodic=True, quantities='ijd')
        for frame, cell in zip(positions, cells, strict=True)
    ]


def _min_distance(
    pairs_per_frame: list[tuple[np.ndarray, np.ndarray, np.ndarray]],
    symbols: Sequence[str],
    steps: np.ndarray,
    thresholds: Mapping[str, Any],
) -> GuardResult:
    symbols = np.asarray(symbols)
    closest: dict[str, tuple[float, int]] = {}
    first_step, worst_margin, worst = None, np.inf, None
    for (i, j, distance), step in zip(pairs_per_frame, steps, strict=True):
        for first, second, value in zip(symbols[i], symbols[j], distance, strict=True):
            pair = _pair_name(first, second)
            limit = thresholds['min_distance_pairs'].get(pair, thresholds['min_distance'])
            if value < closest.get(pair, (np.inf, 0))[0]:
                closest[pair] = (float(value), int(step))
            if value - limit < worst_margin:
                worst_margin, worst = value - limit, (pair, float(value), limit, int(step))
            if value < limit and first_step is None:
                first_step = int(step)
    if worst is None:
        return GuardResult(
            'min_distance', None, thresholds['min_distance'], True, None, 'no pair closer than the limits'
        )
    pair, value, limit, step = worst
    table = ', '.join(f'{name} {d:.2f}' for name, (d, _) in sorted(closest.items()))
    detail = f'closest {pair} {value:.3f} Å at step {step} (limit {limit:.2f} Å); per pair (Å): {table}'
    return GuardResult('min_distance', value, limit, first_step is None, first_step, detail)


def _lost_atoms(
    pairs_per_frame: list[tuple[np.ndarray, np.ndarray, np.ndarray]],
    n_atoms: int,
    steps: np.ndarray,
    thresholds: Mapping[str, Any],
) -> GuardResult:
    radius, allowed = thresholds['isolated_distance'], thresholds['lost_atoms']
    counts, first_step = [], None
    for (i, j, distance), step in zip(pairs_per_frame, steps, strict=True):
        near = distance < radius
        has_neighbour = np.zeros(n_atoms, dtype=bool)
        has_neighbour[i[near]] = True
        has_neighbour[j[near]] = True
        count = int(n_atoms - has_neighbour.sum())
        counts.append(count)
        if count > allowed and first_step is None:
            first_step = int(step)
    worst = int(np.argmax(counts))
    detail = (
        f'{counts[worst]} atom(s) without a neighbour within {radius:g} Å at step {int(steps[worst])} '
        f'(allowed {allowed})'
    )
    return GuardResult(
        'lost_atoms', float(counts[worst]), float(allowed), first_step is None, first_step, detail
    )


def _mean_window(
    name: str, values: np.ndarray, steps: np.ndarray, target: float, limit: float, unit: str
) -> GuardResult:
    if not values.size:
        return GuardResult(name, None, limit, None, None, 'no thermo lines')
    mean = float(values.mean())
    off = mean - target
    passed = abs(off) <= limit
    # the first step from which the running mean stays outside the window
    running = np.cumsum(values) / np.arange(1, values.size + 1) - target
    outside = np.abs(running) > limit
    step = None
    if not passed:
        inside = np.flatnonzero(~outside)
        start = inside[-1] + 1 if inside.size else 0
        step = int(steps[min(start, steps.size - 1)])
    detail = (
        f'mean {mean:.1f} {unit} after step {int(steps[0])} vs target {target:g} {unit} ({off:+.1f}, limit '
        f'±{limit:g} {unit})'
    )
    return GuardResult(name, abs(off), limit, passed, step, detail)


def _energy_drift(
    thermo: Mapping[str, np.ndarray], work: tuple[np.ndarray, np.ndarray] | None, n_atoms: int, limit: float
) -> GuardResult:
    if 'econserve' not in thermo or thermo['econserve'].size < 3:
        return GuardResult(
            'energy_drift', None, limit, None, None, 'no conserved energy in the thermo output'
        )
    time = thermo['time']
    conserved = thermo['econserve'].astype(float).copy()
    if work is not None and work[0].size:
        conserved -= np.interp(time, work[0], work[1])
    if not np.all(np.isfinite(conserved)):
        step = int(thermo['step'][np.flatnonzero(~np.isfinite(conserved))[0]])
        return GuardResult('energy_drift', float('inf'), limit, False, step, 'conserved energy is not finite')
    slope = float(np.polyfit(time - time[0], conserved / n_atoms, 1)[0])
    passed = abs(slope) <= limit
    detail = (
        f'(econserve - work) / N drifts {slope * 1000:+.2f} meV/atom/ps over {time[-1] - time[0]:.3g} ps '
        f'(limit ±{limit * 1000:g})'
    )
    return GuardResult(
        'energy_drift', abs(slope), limit, passed, None if passed else int(thermo['step'][0]), detail
    )


def _deviation(deviation: tuple[np.ndarray, np.ndarray] | None, f_hi: float, limit: float) -> GuardResult:
    if deviation is None or not deviation[0].size:
        return GuardResult('deviation', None, limit, None, None, 'no ensemble model deviation (one model)')
    steps, max_devi_f = deviation
    above = max_devi_f >= f_hi
    fraction = float(above.mean())
    passed = fraction <= limit
    step = None
    if not passed:  # the frame at which the fraction so far first exceeds the limit
        running = np.cumsum(above) / np.arange(1, above.size + 1)
        step = int(steps[np.flatnonzero(running > limit)[0]])
    detail = (
        f'{fraction:.1%} of {above.size} frames with max force deviation >= {f_hi:g} eV/Å (median '
        f'{np.median(max_devi_f):.3g}, max {max_devi_f.max():.3g} eV/Å; limit {limit:.0%})'
    )
    return GuardResult('deviation', fraction, limit, passed, step, detail)


def evaluate_guards(
    *,
    thresholds: Mapping[str, Any] | None,
    thermo: Mapping[str, np.ndarray],
    steps: np.ndarray,
    positions: np.ndarray,
    cells: np.ndarray,
    symbols: Sequence[str],
    reference_cell: np.ndarray,
    temperature: float,
    pressure: float | None,
    work: tuple[np.ndarray, np.ndarray] | None = None,
    deviation: tuple[np.ndarray, np.ndarray] | None = None,
    conserves_energy: bool = True,
) -> list[GuardResult]:
    """Measure every guard of :data:`GUARDS` on a run's outputs and return the results in that order.

    :param thresholds: see :data:`DEFAULT_GUARD_THRESHOLDS` (completed with the defaults).
    :param thermo: thermo columns, lower case: ``step``, ``time`` (ps), ``temp`` (K), ``pxx``, ``pyy`` (bar;
        else ``press``), ``lx``, ``ly`` (Å; else the frames' cells), ``econserve`` (eV; else no drift guard).
    :param steps: MD step of each dumped frame.
    :param positions: dumped frames, shape (frames, atoms, 3), Å.
    :param cells: cell of each frame, shape (frames, 3, 3), Å.
    :param symbols: element of each atom.
    :param reference_cell: cell at the start of the run (Å): the lateral guard's reference.
    :param temperature: target temperature (K).
    :param pressure: target lateral pressure (bar); ``None`` (NVT) does not evaluate the pressure guard.
    :param work: ``(time ps, accumulated work eV)`` of the restraint, subtracted from the conserved energy.
    :param deviation: ``(step, max_devi_f eV/Å)`` of the ensemble at the dump stride.
    :param conserves_energy: ``False`` (a Berendsen barostat) does not evaluate the energy-drift guard.
    """
    limits = check_guard_thresholds(thresholds)
    thermo = {name: np.asarray(values) for name, values in thermo.items()}
    steps = np.asarray(steps, dtype=int)
    positions = np.asarray(positions, dtype=float).reshape(len(steps), len(symbols), 3)
    cells = np.asarray(cells, dtype=float).reshape(len(steps), 3, 3)
    lengths = thermo
    if 'lx' not in thermo and steps.size:  # no cell lengths in the thermo lines: those of the frames
        lengths = {
            'step': steps,
            'lx': np.linalg.norm(cells[:, 0], axis=1),
            'ly': np.linalg.norm(cells[:, 1], axis=1),
        }
    results = [_lateral_cell(lengths, reference_cell, limits['lateral_cell'])]
    finite = np.isfinite(positions).all(axis=(1, 2)) & np.isfinite(cells).all(axis=(1, 2))
    if not finite.all():  # the run broke down: no distances to measure
        step = int(steps[np.flatnonzero(~finite)[0]])
        detail = f'positions or cell not finite (NaN) from step {step}'
        results.append(GuardResult('min_distance', None, limits['min_distance'], False, step, detail))
        results.append(GuardResult('lost_atoms', None, limits['lost_atoms'], False, step, detail))
    elif steps.size:
        cutoff = max(
            limits['isolated_distance'], limits['min_distance'], *limits['min_distance_pairs'].values()
        )
        pairs = _pair_distances(positions, cells, cutoff)
        results.append(_min_distance(pairs, symbols, steps, limits))
        results.append(_lost_atoms(pairs, len(symbols), steps, limits))
    else:
        results.append(GuardResult('min_distance', None, limits['min_distance'], None, None, 'no frames'))
        results.append(GuardResult('lost_atoms', None, limits['lost_atoms'], None, None, 'no frames'))
    # the temperature and pressure means leave out the first `equilibration` fraction of the thermo lines
    steps_all = thermo.get('step', np.zeros(0, dtype=int))
    window = slice(int(limits['equilibration'] * steps_all.size), None)
    temperatures = thermo.get('temp', np.zeros(0))[window]
    results.append(
        _mean_window('temperature', temperatures, steps_all[window], temperature, limits['temperature'], 'K')
    )
    if pressure is None:
        results.append(
            GuardResult('pressure', None, limits['pressure'], None, None, 'NVT: no target pressure')
        )
    elif 'pxx' in thermo or 'press' in thermo:  # the lateral pressure, else the scalar one
        lateral = (thermo['pxx'] + thermo['pyy']) / 2 if 'pxx' in thermo else thermo['press']
        results.append(
            _mean_window('pressure', lateral[window], steps_all[window], pressure, limits['pressure'], 'bar')
        )
    else:
        results.append(GuardResult('pressure', None, limits['pressure'], None, None, 'no pressure in thermo'))
    if conserves_energy:
        results.append(_energy_drift(thermo, work, len(symbols), limits['energy_drift']))
    else:
        detail = 'Berendsen barostat: no conserved energy'
        results.append(GuardResult('energy_drift', None, limits['energy_drift'], None, None, detail))
    results.append(_deviation(deviation, limits['deviation_f_hi'], limits['deviation']))
    return results


def first_failure(results: Sequence[GuardResult]) -> tuple[GuardDefinition, GuardResult] | None:
    """Return the definition and result of the first failed guard (order of :data:`GUARDS`), or ``None``."""
    definitions = {definition.name: definition for definition in GUARDS}
    for result in results:
        if result.passed is False:
            return definitions[result.name], result
    return None


def enforced_failure(summary: Mapping[str, Any]) -> tuple[GuardDefinition, str] | None:
    """Return the first failed guard of a :func:`guards_summary` and what it measured, when the guards are
    enforced (``thresholds.enabled``); ``None`` when all passed or they are only reported."""
    if summary['passed'] or not summary['thresholds'].get('enabled', True):
        return None
    definition = next(guard for guard in GUARDS if guard.name == summary['failed'][0])
    return definition, summary['guards'][definition.name]['detail']


def guards_summary(results: Sequence[GuardResult], thresholds: Mapping[str, Any] | None) -> dict[str, Any]:
    """Return the guards as one JSON-serialisable dict: ``passed``, ``failed`` (names), ``guards`` (each
    result by name), ``thresholds`` (as used)."""
    failed = [result.name for result in results if result.passed is False]
    return {
        'passed': not failed,
        'failed': failed,
        'guards': {result.name: result.as_dict() for result in results},
        'thresholds': check_guard_thresholds(thresholds),
    }


def combine_guard_summaries(summaries: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """Return the guards of a run in segments: per guard, the result of the first segment that failed it,
    else the segment with the largest value (``segment``: its 1-based index); thresholds of the last."""
    if not summaries:
        raise ValueError('no guard summaries to combine')
    combined: dict[str, dict[str, Any]] = {}
    for definition in GUARDS:
        results = [
            {**summary['guards'][definition.name], 'segment': index}
            for index, summary in enumerate(summaries, start=1)
            if definition.name in summary['guards']
        ]
        if not results:
            continue
        failed = [result for result in results if result['passed'] is False]
        evaluated = [result for result in results if result['value'] is not None]
        if failed:
            combined[definition.name] = failed[0]
        elif evaluated:
            combined[definition.name] = max(evaluated, key=lambda result: result['value'])
        else:
            combined[definition.name] = results[-1]
    failed_names = [name for name, result in combined.items() if result['passed'] is False]
    return {
        'passed': not failed_names,
        'failed': failed_names,
        'guards': combined,
        'thresholds': dict(summaries[-1]['thresholds']),
        'n_segments': len(summaries),
    }
