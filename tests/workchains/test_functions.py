"""Tests of the shared calcfunctions: seeds, dpdata-style perturbations, trajectory sampling, overrides."""

from __future__ import annotations

import numpy as np
import pytest
from aiida import orm
from ase.build import bulk

from aiida_lisei.common.seeds import derive_label_seed
from aiida_lisei.data.structure import GroupedStructureData
from aiida_lisei.workchains.functions import (
    check_perturbation_parameters,
    check_sampling_parameters,
    derive_seeds,
    merge_parameters,
    perturb_cell_and_positions,
    perturb_structure,
    sample_indices,
    sample_trajectory,
)


def li16() -> GroupedStructureData:
    """bcc Li16 (a = 3.42 Å) with its atom group."""
    structure = GroupedStructureData(ase=bulk('Li', 'bcc', a=3.42, cubic=True).repeat(2))
    structure.set_atom_groups(['bulk_Li'] * 16)
    return structure


def test_derive_seeds() -> None:
    """The calcfunction records one seed per label (the pure derivation: ``tests/common/test_seeds.py``)."""
    outputs = derive_seeds(orm.Int(7), orm.List(['li_perturbation', 'li_copy_0000']))
    assert {label: seed.value for label, seed in outputs.items()} == {
        'li_perturbation': derive_label_seed(7, 'li_perturbation'),
        'li_copy_0000': derive_label_seed(7, 'li_copy_0000'),
    }


@pytest.mark.parametrize('style', ['uniform', 'normal', 'const'])
def test_perturb_cell_and_positions_magnitudes(style: str) -> None:
    """Strain components within the fraction; displacements within (uniform) or at (const) the distance."""
    cell, positions = np.eye(3) * 10.0, np.random.default_rng(0).random((200, 3)) * 10
    new_cell, new_positions = perturb_cell_and_positions(
        cell, positions, 0.03, 0.2, style, np.random.default_rng(1)
    )
    matrix = np.linalg.solve(cell, new_cell)
    np.testing.assert_allclose(matrix, matrix.T)
    assert (
        np.abs(np.diag(matrix) - 1).max() <= 0.03 and np.abs(matrix - np.diag(np.diag(matrix))).max() <= 0.015
    )
    lengths = np.linalg.norm(new_positions - positions @ matrix, axis=1)
    if style == 'const':
        np.testing.assert_allclose(lengths, 0.2)
    elif style == 'uniform':
        assert lengths.max() <= 0.2 and lengths.mean() == pytest.approx(0.15, abs=0.02)  # 3/4 d in a ball
    else:
        assert np.sqrt((lengths**2).mean()) == pytest.approx(0.2, rel=0.15)


def test_perturb_structure_seeded() -> None:
    """n_copies copies of the input's class and groups; same seed, same copies; another seed, others."""
    structure = li16().store()
    parameters = orm.Dict({'n_copies': 3, 'cell_perturbation': 0.03, 'atom_perturbation': 0.1})
    copies = perturb_structure(structure, parameters, orm.Int(11))
    assert sorted(copies) == ['copy_0000', 'copy_0001', 'copy_0002']
    assert all(isinstance(copy, GroupedStructureData) for copy in copies.values())
    assert copies['copy_0000'].atom_groups == ['bulk_Li'] * 16
    positions = [copies[key].get_ase().positions for key in sorted(copies)]
    assert not np.allclose(positions[0], positions[1])
    again = perturb_structure(structure, parameters, orm.Int(11))
    for key, copy in copies.items():
        np.testing.assert_array_equal(again[key].get_ase().positions, copy.get_ase().positions)
        np.testing.assert_array_equal(again[key].cell, copy.cell)
    other = perturb_structure(structure, parameters, orm.Int(12))
    assert not np.allclose(other['copy_0000'].get_ase().positions, positions[0])
    lengths = np.array(copies['copy_0000'].cell).diagonal() / 6.84
    assert np.abs(lengths - 1).max() <= 0.03


def test_check_parameters() -> None:
    """Defaults and refusals of the perturbation and sampling parameters."""
    complete = check_perturbation_parameters(
        {'n_copies': 2, 'cell_perturbation': 0, 'atom_perturbation': 0.1}
    )
    assert complete == {'n_copies': 2, 'cell_perturbation': 0.0, 'atom_perturbation': 0.1, 'style': 'uniform'}
    for parameters, message in (
        ({'n_copies': 0, 'cell_perturbation': 0, 'atom_perturbation': 0}, 'n_copies'),
        ({'n_copies': 1, 'cell_perturbation': 0.6, 'atom_perturbation': 0}, 'cell_perturbation'),
        ({'n_copies': 1, 'cell_perturbation': 0}, 'missing'),
        ({'n_copies': 1, 'cell_perturbation': 0, 'atom_perturbation': 0, 'style': 'x'}, 'style'),
    ):
        with pytest.raises(ValueError, match=message):
            check_perturbation_parameters(parameters)
    assert check_sampling_parameters({}) == {'stride': 1, 'skip_first': 0}
    with pytest.raises(ValueError, match='stride'):
        check_sampling_parameters({'stride': 0})
    assert sample_indices(6, 2, 1) == [1, 3, 5]


def test_sample_trajectory() -> None:
    """Every 2nd frame after the first: keys from the step ids, positions and cells of those frames."""
    atoms = bulk('Li', 'bcc', a=3.42, cubic=True)
    positions = np.array([atoms.positions + 0.01 * index for index in range(6)])
    trajectory = orm.TrajectoryData()
    trajectory.set_trajectory(
        ['Li', 'Li'],
        positions,
        stepids=np.arange(6) * 10,
        cells=np.array([atoms.cell.array] * 6),
        pbc=[True, True, True],
    )
    frames = sample_trajectory(trajectory.store(), orm.Dict({'stride': 2, 'skip_first': 1}))
    assert sorted(frames) == ['step_000010', 'step_000030', 'step_000050']
    np.testing.assert_allclose(frames['step_000030'].get_ase().positions, positions[3])


def test_merge_parameters() -> None:
    """Only the sections the parameters have are overridden."""
    relax = orm.Dict({'task': 'relax', 'relax': {'fmax': 0.1, 'cell': True}})
    overrides = orm.Dict({'relax': {'cell': False}, 'md': {'n_steps': 4}})
    assert merge_parameters(relax, overrides).get_dict() == {
        'task': 'relax',
        'relax': {'fmax': 0.1, 'cell': False},
    }
