"""Tests of the model-deviation classification and the seeded candidate selection (pure NumPy)."""

from __future__ import annotations

import numpy as np
import pytest

from aiida_lisei.science.selection import (
    PAPER_TRUST_TABLE,
    FrameClass,
    TrustLevels,
    classify_frames,
    draw_candidates,
    last_rows_per_step,
    task_max_for_accuracy,
)

LEVELS = TrustLevels(0.10, 0.25)


def test_trust_levels_validated():
    """Levels must be positive and ordered; equal virial levels (DP-GEN's 1e10 default) are allowed."""
    with pytest.raises(ValueError, match='trust levels out of order'):
        TrustLevels(0.3, 0.2)
    with pytest.raises(ValueError, match='trust levels out of order'):
        TrustLevels(0.2, 0.2)
    with pytest.raises(ValueError, match='trust levels out of order'):
        TrustLevels(0.1, 0.2, v_lo=0.5, v_hi=0.4)
    with pytest.raises(ValueError, match='positive'):
        TrustLevels(-0.1, 0.2)
    with pytest.raises(ValueError, match='positive'):
        TrustLevels(0.1, float('nan'))
    assert TrustLevels(0.1, 0.2).v_lo == TrustLevels(0.1, 0.2).v_hi == 1e10


@pytest.mark.parametrize(
    ('system', 'temperature', 'expected'),
    [
        ('bcc_lithium', 200, (0.10, 0.25)),
        ('argyrodite', 500, (0.10, 0.25)),
        ('interface', 300, (0.10, 0.25)),
        ('bcc_lithium', 600, (0.15, 0.30)),
        ('argyrodite', 1000, (0.15, 0.30)),
        ('interface', 800, (0.25, 0.50)),
    ],
)
def test_paper_trust_table(system, temperature, expected):
    """The SI's levels per system and temperature range (inclusive ends)."""
    levels = PAPER_TRUST_TABLE.lookup(system, temperature)
    assert (levels.f_lo, levels.f_hi) == expected


@pytest.mark.parametrize(
    ('system', 'temperature', 'match'),
    [
        ('interface', 550, '200-500 K, 600-1000 K'),
        ('bcc_lithium', 1200, 'give the trust levels'),
        ('sandwich', 300, 'knows'),
    ],
)
def test_paper_trust_table_out_of_range(system, temperature, match):
    """Outside the table the lookup says which ranges exist."""
    with pytest.raises(KeyError, match=match):
        PAPER_TRUST_TABLE.lookup(system, temperature)


def test_classes_on_the_levels():
    """``f == lo`` is a candidate, ``f == hi`` failed, just below lo accurate (DP-GEN's half-open window)."""
    f = [0.0999999, 0.10, 0.2, 0.2499999, 0.25, 3.0]
    result = classify_frames(np.arange(6), f, LEVELS)
    assert result.classes.tolist() == [0, 1, 1, 1, 2, 2]
    assert result.counts == {'accurate': 1, 'candidate': 3, 'failed': 2}


def test_virial_levels():
    """A virial deviation in its window makes a candidate, above it a failure, whatever the force says."""
    levels = TrustLevels(0.10, 0.25, v_lo=0.01, v_hi=0.02)
    f = [0.05, 0.05, 0.05, 0.30, 0.15]
    v = [0.001, 0.01, 0.02, 0.015, 0.5]
    result = classify_frames(np.arange(5), f, levels, max_devi_v=v)
    assert result.classes.tolist() == [FrameClass.ACCURATE, FrameClass.CANDIDATE, FrameClass.FAILED, 1, 1]


def test_duplicated_steps_keep_the_last_row():
    """Repeated steps keep their last row, ordered by its position in the file."""
    steps = np.array([0, 10, 10, 20, 10, 30])
    assert last_rows_per_step(steps).tolist() == [0, 3, 4, 5]
    f = [0.0, 0.5, 0.5, 0.0, 0.15, 0.0]
    result = classify_frames(steps, f, LEVELS)
    assert result.rows.tolist() == [0, 3, 4, 5]
    assert result.steps.tolist() == [0, 20, 10, 30]
    assert result.counts == {'accurate': 3, 'candidate': 1, 'failed': 0}


def test_skip_is_in_steps():
    """Rows with ``step < skip`` are dropped; the row at ``step == skip`` is kept."""
    result = classify_frames([0, 5, 10, 15], [0.2, 0.2, 0.2, 0.01], LEVELS, skip=10)
    assert result.steps.tolist() == [10, 15]
    assert result.counts == {'accurate': 1, 'candidate': 1, 'failed': 0}


def test_nan_deviation_raises():
    """NaN belongs to no class (DP-GEN raises as well)."""
    with pytest.raises(ValueError, match='NaN model deviation at steps \\[10\\]'):
        classify_frames([0, 10], [0.1, float('nan')], LEVELS)


@pytest.mark.parametrize(
    ('ratio', 'expected'),
    [(0.0, 100), (0.79, 100), (0.8, 100), (0.85, 75), (0.9, 50), (0.99, 5), (1.0, 0)],
)
def test_task_max_scaling(ratio, expected):
    """Linear decrease between the soft threshold (0.8) and the threshold (1.0), truncated like DP-GEN."""
    assert (
        task_max_for_accuracy(ratio, 100, fp_accurate_threshold=1.0, fp_accurate_soft_threshold=0.8)
        == expected
    )


def test_task_max_defaults():
    """With DP-GEN's defaults (threshold 1, soft = threshold) the cap holds until all frames are accurate."""
    assert task_max_for_accuracy(0.999, 7) == 7
    assert task_max_for_accuracy(1.0, 7) == 0
    assert task_max_for_accuracy(0.5, 7, fp_accurate_threshold=0.5) == 0


def _synthetic(seed: int, size: int = 200):
    rng = np.random.default_rng(seed)
    return classify_frames(np.arange(size) * 10, rng.uniform(0.0, 0.4, size), LEVELS)


def test_selection_is_seeded_and_capped():
    """The same seed chooses the same frames; another seed others; at most fp_task_max, sorted."""
    classification = _synthetic(1)
    first = draw_candidates([classification], fp_task_max=10, seed=42)
    again = draw_candidates([classification], fp_task_max=10, seed=42)
    other = draw_candidates([classification], fp_task_max=10, seed=43)
    assert first.chosen == again.chosen
    assert first.chosen != other.chosen
    assert len(first.chosen) == 10 == first.task_max
    assert first.chosen == sorted(first.chosen)
    candidates = set(classification.rows_of(FrameClass.CANDIDATE).tolist())
    assert {row for _, row in first.chosen} <= candidates
    assert sum(first.fractions.values()) == pytest.approx(1.0)


def test_selection_pools_trajectories_and_respects_task_min():
    """Counts pool over the trajectories of a system; fewer candidates than fp_task_min gives none."""
    classifications = [_synthetic(1, 50), _synthetic(2, 50)]
    selection = draw_candidates(classifications, fp_task_max=1000, seed=0)
    n_candidates = sum(c.counts['candidate'] for c in classifications)
    assert len(selection.chosen) == n_candidates
    assert {index for index, _ in selection.chosen} == {0, 1}
    assert sum(selection.counts.values()) == 100
    assert (
        draw_candidates(classifications, fp_task_max=1000, seed=0, fp_task_min=n_candidates + 1).chosen == []
    )


def test_selection_of_nothing():
    """No classified frame (all skipped): an empty selection, as DP-GEN skips the system."""
    classification = classify_frames([0, 10], [0.2, 0.2], LEVELS, skip=100)
    selection = draw_candidates([classification], fp_task_max=5, seed=0)
    assert selection.chosen == [] and selection.task_max == 0
    assert selection.fractions == {'accurate': 0.0, 'candidate': 0.0, 'failed': 0.0}
