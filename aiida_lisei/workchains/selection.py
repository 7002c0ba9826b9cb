"""Calcfunction that selects the candidate frames of an exploration for labelling (DP-GEN's rules, seeded)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
from aiida import orm
from aiida.engine import calcfunction

from aiida_lisei.science import selection as science
from aiida_lisei.science.selection import DEFAULT_V_TRUST, PAPER_TRUST_TABLE, TrustLevels, classify_frames

__all__ = (
    'DEFAULT_SELECTION_PARAMETERS',
    'check_selection_parameters',
    'select_candidates',
    'trust_levels_of',
)

#: Selection parameters and defaults (``None``: required, or looked up). Trust levels in eV/Å.
DEFAULT_SELECTION_PARAMETERS: dict[str, Any] = {
    'system': None,  # 'bcc_lithium', 'argyrodite' or 'interface' (key of the trust-level table)
    'temperature': None,  # K, for the trust-level table
    'f_trust_lo': None,  # eV/Å; both f levels given -> the table is not used
    'f_trust_hi': None,
    'v_trust_lo': DEFAULT_V_TRUST,
    'v_trust_hi': DEFAULT_V_TRUST,
    'fp_task_max': None,  # required: most candidates chosen
    'fp_task_min': 0,  # fewer candidates than this -> none chosen
    'model_devi_skip': 0,  # rows with step < this are ignored (steps, not frames)
    'fp_accurate_threshold': 1.0,
    'fp_accurate_soft_threshold': None,  # default: fp_accurate_threshold
}


def trust_levels_of(parameters: Mapping[str, Any]) -> TrustLevels:
    """Return the explicit trust levels, or those of the paper's table for ``system`` and ``temperature``."""
    explicit = [parameters.get(name) is not None for name in ('f_trust_lo', 'f_trust_hi')]
    if all(explicit):
        return TrustLevels(
            parameters['f_trust_lo'],
            parameters['f_trust_hi'],
            parameters.get('v_trust_lo', DEFAULT_V_TRUST),
            parameters.get('v_trust_hi', DEFAULT_V_TRUST),
        )
    if any(explicit):
        raise ValueError('give both `f_trust_lo` and `f_trust_hi`, or neither (table lookup)')
    if parameters.get('system') is None or parameters.get('temperature') is None:
        raise ValueError('`system` and `temperature` are needed to look the trust levels up')
    return PAPER_TRUST_TABLE.lookup(parameters['system'], parameters['temperature'])


def check_selection_parameters(parameters: Mapping[str, Any]) -> dict[str, Any]:
    """Return the parameters completed with defaults; raise ``ValueError`` (or ``KeyError``) if invalid."""
    unknown = set(parameters) - set(DEFAULT_SELECTION_PARAMETERS)
    if unknown:
        raise ValueError(f'unknown selection parameters {sorted(unknown)}')
    full = {**DEFAULT_SELECTION_PARAMETERS, **parameters}
    for name in ('fp_task_max', 'fp_task_min', 'model_devi_skip'):
        value = full[name]
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise ValueError(f'`{name}` must be a non-negative integer, got {value!r}')
    trust_levels_of(full)
    return full


@calcfunction
def select_candidates(
    model_devi: orm.ArrayData, trajectory: orm.TrajectoryData, parameters: orm.Dict, seed: orm.Int
) -> dict[str, orm.Data]:
    """Classify the frames of one exploration and choose at most ``fp_task_max`` candidates with ``seed``.

    :param model_devi: the exploration's ``model_devi`` (arrays ``step``, ``max_devi_f``, ``max_devi_v``).
    :param trajectory: the exploration's ``trajectory``; frames are matched to rows by step.
    :param parameters: see :data:`DEFAULT_SELECTION_PARAMETERS`.
    :param seed: seed of the NumPy generator that draws the candidates.
    :return: ``statistics`` (``Dict``: counts and fractions of accurate/candidate/failed frames, accurate
        ratio, effective task max, trust levels, chosen steps) and, when any is chosen, ``candidates``
        (``TrajectoryData`` of the chosen frames, sorted by step, with their ``stepids`` and ``atom_ids``).
    """
    params = check_selection_parameters(parameters.get_dict())
    levels = trust_levels_of(params)
    steps = model_devi.get_array('step')
    classification = classify_frames(
        steps,
        model_devi.get_array('max_devi_f'),
        levels,
        max_devi_v=model_devi.get_array('max_devi_v'),
        skip=params['model_devi_skip'],
    )
    selection = science.select_candidates(
        [classification],
        fp_task_max=params['fp_task_max'],
        seed=seed.value,
        fp_task_min=params['fp_task_min'],
        fp_accurate_threshold=params['fp_accurate_threshold'],
        fp_accurate_soft_threshold=params['fp_accurate_soft_threshold'],
    )
    chosen_steps = [int(steps[row]) for _, row in selection.chosen]
    statistics = {
        'counts': selection.counts,
        'fractions': selection.fractions,
        'accurate_ratio': selection.accurate_ratio,
        'task_max': selection.task_max,
        'n_selected': len(chosen_steps),
        'selected_steps': chosen_steps,
        'trust_levels': {'f_lo': levels.f_lo, 'f_hi': levels.f_hi, 'v_lo': levels.v_lo, 'v_hi': levels.v_hi},
        'seed': seed.value,
    }
    outputs: dict[str, orm.Data] = {'statistics': orm.Dict(statistics)}
    if chosen_steps:
        outputs['candidates'] = _frames_at_steps(trajectory, chosen_steps)
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
