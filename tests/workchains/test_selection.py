"""Tests of the ``select_candidates`` calcfunction on the outputs of a real exploration (fixture nvt_800k)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from aiida import orm

from aiida_lisei.formats.lammps import parse_dump, parse_model_devi
from aiida_lisei.science.selection import TrustLevels, classify_frames
from aiida_lisei.workchains.selection import check_selection_parameters, select_candidates

CASE = Path(__file__).parents[1] / 'fixtures' / 'parsers' / 'exploration' / 'nvt_800k'


@pytest.fixture(scope='module')
def exploration(aiida_profile) -> tuple[orm.ArrayData, orm.TrajectoryData]:
    """``model_devi`` and ``trajectory`` nodes as the exploration parser makes them from the fixture."""
    columns = parse_model_devi((CASE / 'model_devi.out').read_text())
    model_devi = orm.ArrayData()
    for name, values in columns.items():
        model_devi.set_array(name, values)
    frames = parse_dump((CASE / 'traj.dump').read_text())
    trajectory = orm.TrajectoryData()
    trajectory.set_trajectory(
        symbols=['Li'] * 16,
        positions=frames.positions,
        stepids=frames.steps,
        cells=frames.cells,
        pbc=(True,) * 3,
    )
    trajectory.set_array('atom_ids', frames.ids)
    return model_devi.store(), trajectory.store()


PARAMETERS = {'f_lo': 1.0, 'f_hi': 1.5, 'fp_task_max': 5}


def select(exploration, parameters, seed, key='T800'):
    """Run ``select_candidates`` on the one exploration under ``key``."""
    model_devi, trajectory = exploration
    explorations = {key: {'model_devi': model_devi, 'trajectory': trajectory}}
    return select_candidates(orm.Dict(parameters), orm.Int(seed), **explorations)


def test_same_seed_same_frames(exploration):
    """Two runs with the same inputs and seed choose the same frames; the statistics add up."""
    model_devi, trajectory = exploration
    first = select(exploration, PARAMETERS, 7)
    again = select(exploration, PARAMETERS, 7)
    other = select(exploration, PARAMETERS, 8)

    pooled = first['statistics'].get_dict()
    assert pooled == again['statistics'].get_dict()
    statistics = pooled['explorations']['T800']
    assert statistics['selected_steps'] != other['statistics']['explorations']['T800']['selected_steps']
    assert statistics['trust_levels'] == {'f_lo': 1.0, 'f_hi': 1.5, 'v_lo': 1e10, 'v_hi': 1e10}
    expected = classify_frames(
        model_devi.get_array('step'), model_devi.get_array('max_devi_f'), TrustLevels(1.0, 1.5),
        model_devi.get_array('max_devi_v'),
    ).counts  # fmt: skip
    assert statistics['counts'] == expected == pooled['counts'] and expected['candidate'] > 5
    assert statistics['n_selected'] == 5 == len(statistics['selected_steps']) == pooled['n_selected']
    assert sum(statistics['fractions'].values()) == pytest.approx(1.0)

    candidates = first['candidates']['T800']
    creator = first['statistics'].creator
    assert creator.base.links.get_incoming().get_node_by_label('T800__model_devi').uuid == model_devi.uuid
    assert (
        candidates.get_stepids().tolist()
        == statistics['selected_steps']
        == sorted(statistics['selected_steps'])
    )
    assert np.array_equal(candidates.get_positions(), again['candidates']['T800'].get_positions())
    rows = [trajectory.get_stepids().tolist().index(step) for step in statistics['selected_steps']]
    assert np.array_equal(candidates.get_positions(), trajectory.get_positions()[rows])
    assert np.array_equal(candidates.get_cells(), trajectory.get_cells()[rows])
    assert candidates.get_array('atom_ids').tolist() == list(range(1, 17))
    devi = dict(zip(model_devi.get_array('step').tolist(), model_devi.get_array('max_devi_f'), strict=True))
    assert all(1.0 <= devi[step] < 1.5 for step in statistics['selected_steps'])


def test_paper_levels_looked_up(exploration):
    """Without explicit levels the SI's table gives [0.15, 0.30] eV/Å for bulk Li at 800 K."""
    parameters = {'system': 'bcc_lithium', 'temperature': 800, 'fp_task_max': 100}
    statistics = select(exploration, parameters, 7)['statistics']['explorations']['T800']
    assert statistics['trust_levels'] == {'f_lo': 0.15, 'f_hi': 0.30, 'v_lo': 1e10, 'v_hi': 1e10}
    assert statistics['counts'] == {'accurate': 6, 'candidate': 4, 'failed': 31}
    assert statistics['selected_steps'] == [30, 35, 65, 70]  # every candidate: fewer than fp_task_max


def test_explicit_levels_skip_and_no_candidate(exploration):
    """Explicit levels replace the table; with no candidate there is no ``candidates`` output."""
    parameters = {'f_lo': 50.0, 'f_hi': 60.0, 'fp_task_max': 5, 'model_devi_skip': 100}
    results = select(exploration, parameters, 1)
    pooled = results['statistics'].get_dict()
    statistics = pooled['explorations']['T800']
    assert 'candidates' not in results
    assert statistics['counts'] == {'accurate': 21, 'candidate': 0, 'failed': 0}  # steps 100..200, stride 5
    assert pooled['task_max'] == 0 and statistics['selected_steps'] == []


def test_explorations_of_a_system_are_pooled(exploration):
    """fp_task_max caps the pool of a system's explorations, each classified with its own trust levels.

    The same frames explored 'at 300 K' (the SI's [0.10, 0.25] eV/Å) and 'at 800 K' ([0.15, 0.30]) form one
    pool: counts add up, at most fp_task_max frames are drawn in all, and the draw is seeded.
    """
    model_devi, trajectory = exploration
    explorations = {key: {'model_devi': model_devi, 'trajectory': trajectory} for key in ('T300', 'T800')}
    parameters = {
        'system': 'bcc_lithium',
        'fp_task_max': 5,
        'explorations': {'T300': {'temperature': 300}, 'T800': {'temperature': 800}},
    }
    results = select_candidates(orm.Dict(parameters), orm.Int(3), **explorations)
    pooled = results['statistics'].get_dict()
    per_key = pooled['explorations']
    assert per_key['T300']['trust_levels']['f_lo'] == 0.10 and per_key['T800']['trust_levels']['f_lo'] == 0.15
    assert per_key['T800']['counts'] == {'accurate': 6, 'candidate': 4, 'failed': 31}
    n_candidates = per_key['T300']['counts']['candidate'] + per_key['T800']['counts']['candidate']
    assert pooled['counts']['candidate'] == n_candidates > 5
    assert pooled['n_selected'] == 5 == per_key['T300']['n_selected'] + per_key['T800']['n_selected']
    for key, candidates in results['candidates'].items():
        assert candidates.get_stepids().tolist() == per_key[key]['selected_steps']
    again = select_candidates(orm.Dict(parameters), orm.Int(3), **explorations)['statistics'].get_dict()
    assert again == pooled


@pytest.mark.parametrize(
    ('parameters', 'error', 'match'),
    [
        ({'system': 'interface', 'temperature': 550, 'fp_task_max': 5}, KeyError, '200-500 K, 600-1000 K'),
        ({'f_lo': 0.3, 'f_hi': 0.2, 'fp_task_max': 5}, ValueError, 'trust levels out of order'),
        ({'f_lo': 0.1, 'fp_task_max': 5}, ValueError, 'both'),
        ({'system': 'bcc_lithium', 'temperature': 300}, ValueError, 'fp_task_max'),
        ({'system': 'bcc_lithium', 'temperature': 300, 'fp_task_max': 1, 'seed': 3}, ValueError, 'unknown'),
        (
            {'system': 'bcc_lithium', 'fp_task_max': 1, 'explorations': {'T1': {'n': 1}}},
            ValueError,
            'unknown',
        ),
        (
            {'system': 'interface', 'fp_task_max': 1, 'explorations': {'T1': {'temperature': 550}}},
            KeyError,
            'K',
        ),
    ],
)
def test_invalid_parameters(parameters, error, match):
    """Bad selection parameters are refused with a clear message."""
    with pytest.raises(error, match=match):
        check_selection_parameters(parameters)
