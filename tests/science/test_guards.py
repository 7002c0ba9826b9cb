"""The guards on an MD run's physics (``science/guards.py``), each passing and failing on made-up outputs.

The real failures (a model that blows up the sandwich) are in ``tests/parsers/test_restraint_md_guards.py``.
"""

from __future__ import annotations

import numpy as np
import pytest

from aiida_lisei.science.guards import (
    DEFAULT_GUARD_THRESHOLDS,
    GUARDS,
    check_guard_thresholds,
    enforced_failure,
    evaluate_guards,
    first_failure,
    guards_summary,
)

A = 3.42  # Å, bcc Li


def _bcc_frames(n_frames: int = 3, repeat: int = 2) -> tuple[np.ndarray, np.ndarray, list[str]]:
    basis = np.array([[0, 0, 0], [0.5, 0.5, 0.5]])
    cells = np.array([[i, j, k] for i in range(repeat) for j in range(repeat) for k in range(repeat)])
    positions = ((cells[:, None, :] + basis[None]) * A).reshape(-1, 3)
    cell = np.eye(3) * A * repeat
    return (
        np.repeat(positions[None], n_frames, 0),
        np.repeat(cell[None], n_frames, 0),
        ['Li'] * len(positions),
    )


def _thermo(n: int = 50, **columns: np.ndarray) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(1)
    thermo = {
        'step': np.arange(n) * 10,
        'time': np.arange(n) * 0.01,
        'temp': 300 + rng.normal(0, 5, n),
        'pxx': rng.normal(0, 200, n),
        'pyy': rng.normal(0, 200, n),
        'lx': np.full(n, 2 * A),
        'ly': np.full(n, 2 * A),
        'econserve': -30.0 + rng.normal(0, 1e-4, n),
    }
    thermo.update(columns)
    return thermo


def _evaluate(thermo=None, positions=None, **kwargs):
    frames, cells, symbols = _bcc_frames()
    if positions is not None:
        frames = positions
    defaults = dict(
        thresholds=None,
        thermo=_thermo() if thermo is None else thermo,
        steps=np.array([0, 250, 490]),
        positions=frames,
        cells=cells,
        symbols=symbols,
        reference_cell=cells[0],
        temperature=300.0,
        pressure=1.0,
    )
    defaults.update(kwargs)
    return {result.name: result for result in evaluate_guards(**defaults)}


def test_a_sound_run_passes_every_guard():
    results = _evaluate(deviation=(np.array([0, 250, 490]), np.array([0.05, 0.08, 0.1])))
    assert [name for name in results] == [guard.name for guard in GUARDS]
    assert all(result.passed for result in results.values()), results
    assert first_failure(list(results.values())) is None


def test_lateral_cell_fails_beyond_three_percent_and_names_the_step():
    lx = np.full(50, 2 * A)
    lx[30:] *= 1.05
    result = _evaluate(thermo=_thermo(lx=lx))['lateral_cell']
    assert result.passed is False and result.step == 300
    assert result.value == pytest.approx(0.05)
    assert 'x 6.840 -> 7.182' in result.detail


def test_min_distance_per_pair_and_lost_atoms():
    frames, _, _ = _bcc_frames()
    frames = frames.copy()
    frames[2, 1] = frames[2, 0] + [1.0, 0, 0]  # two Li 1.0 Å apart in the last frame
    results = _evaluate(positions=frames)
    assert results['min_distance'].passed is False and results['min_distance'].step == 490
    assert results['min_distance'].value == pytest.approx(1.0)
    # a per-pair limit below the distance lets it pass
    relaxed = _evaluate(positions=frames, thresholds={'min_distance_pairs': {'Li-Li': 0.9}})
    assert relaxed['min_distance'].passed
    # an atom moved far from all others (a 2x2x2 cell has no room: a large one is built)
    frames, cells, symbols = _bcc_frames(repeat=4)
    frames = frames.copy()
    cells = cells.copy()
    cells[:, 2, 2] *= 3  # vacuum along z
    frames[1:, 0, 2] = cells[0, 2, 2] * 0.6
    results = _evaluate(positions=frames, cells=cells, symbols=symbols, reference_cell=cells[0])
    assert results['lost_atoms'].passed is False and results['lost_atoms'].value == 1
    assert results['lost_atoms'].step == 250


def test_temperature_and_pressure_windows():
    hot = _evaluate(thermo=_thermo(temp=np.full(50, 345.0)))['temperature']
    assert hot.passed is False and hot.value == pytest.approx(45.0)
    squeezed = _evaluate(thermo=_thermo(pxx=np.full(50, 9000.0), pyy=np.full(50, 8000.0)))['pressure']
    assert squeezed.passed is False and squeezed.value == pytest.approx(8499.0)
    nvt = _evaluate(thermo=_thermo(pxx=np.full(50, 9000.0)), pressure=None)['pressure']
    assert nvt.passed is None and 'NVT' in nvt.detail


def test_energy_drift_subtracts_the_restraint_work():
    thermo = _thermo()
    work = (thermo['time'], 2.0 * thermo['time'])  # the restraint pumps 2 eV/ps into the system
    thermo['econserve'] = thermo['econserve'] + 2.0 * thermo['time']
    assert _evaluate(thermo=thermo, work=work)['energy_drift'].passed
    drifting = _evaluate(thermo=thermo)['energy_drift']  # without the work: 2 eV/ps over 16 atoms
    assert drifting.passed is False and drifting.value == pytest.approx(2.0 / 16, rel=1e-3)


def test_deviation_fraction_of_frames_above_the_trust_level():
    steps = np.arange(10) * 100
    deviation = (steps, np.array([0.1] * 8 + [0.3, 0.4]))
    result = _evaluate(deviation=deviation)['deviation']
    assert result.passed is False and result.value == pytest.approx(0.2) and result.step == 800
    assert _evaluate(deviation=deviation, thresholds={'deviation': 0.2})['deviation'].passed
    assert _evaluate()['deviation'].passed is None


def test_first_failure_follows_the_table_and_summary_is_serialisable():
    import json

    thermo = _thermo(temp=np.full(50, 400.0), lx=np.full(50, 3 * A))
    results = list(_evaluate(thermo=thermo).values())
    definition, _ = first_failure(results)
    assert (definition.status, definition.name) == (450, 'lateral_cell')
    summary = guards_summary(results, None)
    assert summary['failed'] == ['lateral_cell', 'temperature'] and not summary['passed']
    json.dumps(summary)


def test_enforced_failure_only_when_enabled():
    """The first failed guard and what it measured, unless the guards are only reported (or all passed)."""
    failing = list(_evaluate(thermo=_thermo(temp=np.full(50, 400.0))).values())
    definition, detail = enforced_failure(guards_summary(failing, None))
    assert definition.label == 'ERROR_GUARD_TEMPERATURE' and '400' in detail
    assert enforced_failure(guards_summary(failing, {'enabled': False})) is None
    assert enforced_failure(guards_summary(list(_evaluate().values()), None)) is None


def test_thresholds_are_checked():
    assert check_guard_thresholds(None) == {**DEFAULT_GUARD_THRESHOLDS, 'min_distance_pairs': {}}
    with pytest.raises(ValueError, match='unknown guard thresholds'):
        check_guard_thresholds({'lateral': 0.1})
    with pytest.raises(ValueError, match='non-negative'):
        check_guard_thresholds({'temperature': -1})
    with pytest.raises(ValueError, match='fractions'):
        check_guard_thresholds({'deviation': 1.5})
    assert check_guard_thresholds({'min_distance_pairs': {'S-P': 1.7}})['min_distance_pairs'] == {'P-S': 1.7}
    assert [guard.status for guard in GUARDS] == list(range(450, 457))


def test_segments_combine_into_one_table():
    from aiida_lisei.science.guards import combine_guard_summaries

    sound = guards_summary(list(_evaluate().values()), None)
    hot = guards_summary(list(_evaluate(thermo=_thermo(temp=np.full(50, 345.0))).values()), None)
    combined = combine_guard_summaries([sound, hot, sound])
    assert combined['failed'] == ['temperature'] and combined['n_segments'] == 3
    assert combined['guards']['temperature']['segment'] == 2
    assert combined['guards']['lateral_cell']['passed'] is True
    assert combined['guards']['deviation']['passed'] is None
    with pytest.raises(ValueError):
        combine_guard_summaries([])


def test_non_finite_frames_fail_the_distance_guards():
    frames, _, _ = _bcc_frames()
    frames = frames.copy()
    frames[1:, 3] = np.nan
    results = _evaluate(positions=frames)
    for name in ('min_distance', 'lost_atoms'):
        assert results[name].passed is False and results[name].step == 250, results[name]
