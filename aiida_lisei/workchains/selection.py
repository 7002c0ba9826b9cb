"""Calcfunction that selects the candidate frames of one system for labelling (DP-GEN's rules, seeded).

The explorations of a system in one iteration (one per temperature, say) are pooled as DP-GEN pools the
model-deviation tasks of a system: ``fp_task_max`` and the accuracy thresholds apply to the pool.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
from aiida import orm
from aiida.engine import calcfunction

from aiida_lisei.common.validation import complete_parameters
from aiida_lisei.science.selection import (
    DEFAULT_V_TRUST,
    PAPER_TRUST_TABLE,
    TrustLevels,
    TrustTable,
    classify_frames,
    draw_candidates,
)

__all__ = (
    'DEFAULT_SELECTION_PARAMETERS',
    'EXPLORATION_KEYS',
    'check_selection_parameters',
    'exploration_parameters',
    'select_candidates',
    'trust_levels_of',
)

#: Selection parameters and defaults (``None``: required, or looked up). Trust levels (eV/Å) carry the one
#: set of names of :class:`~aiida_lisei.science.selection.TrustLevels`.
DEFAULT_SELECTION_PARAMETERS: dict[str, Any] = {
    'system': None,  # 'bcc_lithium', 'argyrodite' or 'interface' (key of the trust-level table)
    'temperature': None,  # K, for the trust-level table
    'trust_levels': None,  # {system: levels | [levels with t_min, t_max]} (TrustTable.from_dict); None: SI's
    'f_lo': None,  # eV/Å; both f levels given -> the table is not used
    'f_hi': None,
    'v_lo': DEFAULT_V_TRUST,
    'v_hi': DEFAULT_V_TRUST,
    'fp_task_max': None,  # required: most candidates chosen from the pool of the system
    'fp_task_min': 0,  # fewer candidates than this -> none chosen
    'model_devi_skip': 0,  # rows with step < this are ignored (steps, not frames)
    'fp_accurate_threshold': 1.0,
    'fp_accurate_soft_threshold': None,  # default: fp_accurate_threshold
    'explorations': {},  # {key: {temperature, f_lo, ...}}: per-exploration values over the shared ones
}

#: Keys that may differ between the pooled explorations of one system (``explorations`` entries).
EXPLORATION_KEYS = ('temperature', *TrustLevels.KEYS)


def trust_levels_of(parameters: Mapping[str, Any]) -> TrustLevels:
    """Return the explicit trust levels, or those of the table (``trust_levels``, default the SI's) for
    ``system`` and ``temperature``."""
    explicit = [parameters.get(name) is not None for name in ('f_lo', 'f_hi')]
    if all(explicit):
        return TrustLevels.from_dict(parameters)
    if any(explicit):
        raise ValueError('give both `f_lo` and `f_hi`, or neither (table lookup)')
    if parameters.get('system') is None or parameters.get('temperature') is None:
        raise ValueError('`system` and `temperature` are needed to look the trust levels up')
    table = parameters.get('trust_levels')
    table = PAPER_TRUST_TABLE if table is None else TrustTable.from_dict(table)
    return table.lookup(parameters['system'], parameters['temperature'])


def exploration_parameters(parameters: Mapping[str, Any], key: str) -> dict[str, Any]:
    """Return the shared parameters updated with those of exploration ``key`` (its temperature, levels)."""
    return {**parameters, **parameters.get('explorations', {}).get(key, {})}


def check_selection_parameters(parameters: Mapping[str, Any]) -> dict[str, Any]:
    """Return the parameters completed with defaults; raise ``ValueError`` (or ``KeyError``) if invalid."""
    full = complete_parameters(parameters, DEFAULT_SELECTION_PARAMETERS, 'selection parameters')
    for name in ('fp_task_max', 'fp_task_min', 'model_devi_skip'):
        value = full[name]
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise ValueError(f'`{name}` must be a non-negative integer, got {value!r}')
    for key, values in full['explorations'].items():
        unknown = set(values) - set(EXPLORATION_KEYS)
        if unknown:
            raise ValueError(
                f'exploration `{key}`: unknown keys {sorted(unknown)}; known: {list(EXPLORATION_KEYS)}'
            )
        trust_levels_of(exploration_parameters(full, key))
    if not full['explorations']:
        trust_levels_of(full)
    return full


@calcfunction
def select_candidates(parameters: orm.Dict, seed: orm.Int, **explorations: Any) -> dict[str, Any]:
    """Classify the frames of the explorations of one system and choose at most ``fp_task_max`` in all.

    :param parameters: see :data:`DEFAULT_SELECTION_PARAMETERS`; ``explorations`` gives each exploration's
        ``temperature`` (K) or trust levels (eV/Å) where they differ from the shared ones.
    :param seed: seed of the NumPy generator that draws the candidates from the pool.
    :param explorations: ``{key: {'model_devi': ArrayData, 'trajectory': TrajectoryData}}``, the outputs of
        the explorations (key e.g. ``T300``); frames are matched to model-deviation rows by step.
    :return: ``statistics`` (``Dict``: pooled counts and fractions of accurate/candidate/failed frames,
        accurate ratio, effective task max, ``n_selected``, and per exploration its counts, fractions,
        trust levels and chosen steps) and ``candidates`` (``{key: TrajectoryData}`` of the chosen frames,
        sorted by step, with ``stepids`` and ``atom_ids``) for the explorations with a chosen frame.
    """
    if not explorations:
        raise ValueError('no exploration to select from')
    params = check_selection_parameters(parameters.get_dict())
    keys = sorted(explorations)
    levels, classifications = {}, []
    for key in keys:
        levels[key] = trust_levels_of(exploration_parameters(params, key))
        model_devi = explorations[key]['model_devi']
        classifications.append(
            classify_frames(
                model_devi.get_array('step'),
                model_devi.get_array('max_devi_f'),
                levels[key],
                max_devi_v=model_devi.get_array('max_devi_v'),
                skip=params['model_devi_skip'],
            )
        )
    selection = draw_candidates(
        classifications,
        fp_task_max=params['fp_task_max'],
        seed=seed.value,
        fp_task_min=params['fp_task_min'],
        fp_accurate_threshold=params['fp_accurate_threshold'],
        fp_accurate_soft_threshold=params['fp_accurate_soft_threshold'],
    )
    chosen: dict[str, list[int]] = {key: [] for key in keys}
    for index, row in selection.chosen:
        key = keys[index]
        chosen[key].append(int(explorations[key]['model_devi'].get_array('step')[row]))
    per_exploration = {}
    for key, classification in zip(keys, classifications, strict=True):
        level = levels[key]
        total = sum(classification.counts.values())
        per_exploration[key] = {
            'temperature': exploration_parameters(params, key)['temperature'],
            'counts': classification.counts,
            'fractions': {name: (n / total if total else 0.0) for name, n in classification.counts.items()},
            'n_selected': len(chosen[key]),
            'selected_steps': sorted(chosen[key]),
            'trust_levels': level.as_dict(),
        }
    statistics = {
        'counts': selection.counts,
        'fractions': selection.fractions,
        'accurate_ratio': selection.accurate_ratio,
        'task_max': selection.task_max,
        'n_selected': len(selection.chosen),
        'seed': seed.value,
        'explorations': per_exploration,
    }
    candidates = {
        key: _frames_at_steps(explorations[key]['trajectory'], per_exploration[key]['selected_steps'])
        for key in keys
        if chosen[key]
    }
    outputs: dict[str, Any] = {'statistics': orm.Dict(statistics)}
    if candidates:
        outputs['candidates'] = candidates
    return outputs


def _frames_at_steps(trajectory: orm.TrajectoryData, steps: list[int]) -> orm.TrajectoryData:
    """Return the frames of ``trajectory`` at ``steps`` as a new ``TrajectoryData``."""
    stepids = trajectory.get_stepids()
    index = {int(step): position for position, step in enumerate(stepids)}
    missing = [step for step in steps if step not in index]
    if missing:
        raise ValueError(f'the trajectory has no frame at steps {missing[:10]}')
    frames = np.array([index[step] for step in steps])
    subset = orm.TrajectoryData()
    subset.set_trajectory(
        symbols=trajectory.symbols,
        positions=trajectory.get_positions()[frames],
        stepids=stepids[frames],
        cells=trajectory.get_cells()[frames],
        times=None if trajectory.get_times() is None else trajectory.get_times()[frames],
        pbc=trajectory.pbc,
    )
    if 'atom_ids' in trajectory.get_arraynames():
        subset.set_array('atom_ids', trajectory.get_array('atom_ids'))
    return subset
