"""Extraction of a periodic SEI slab from a frame: window, cell, overlaps across the cut, charge report."""

from __future__ import annotations

import numpy as np
import pytest
from ase.spacegroup import crystal

from aiida_lisei.science.regions import Regions
from aiida_lisei.science.sei import (
    DEFAULT_GAP,
    FORMAL_CHARGES,
    charge_report,
    extract_slab,
    sei_window,
)


def li2s_column(n_z: int = 4):
    """Antifluorite Li2S (a = 5.72 Å), 1x1xn_z cells, in a cell with 20 Å of vacuum above."""
    atoms = crystal(
        ['Li', 'S'], [(0.25, 0.25, 0.25), (0, 0, 0)], spacegroup=225, cellpar=[5.72] * 3 + [90] * 3
    )
    atoms = atoms.repeat((1, 1, n_z))
    atoms.cell[2, 2] += 20.0
    atoms.positions[:, 2] += 2.0
    return atoms


def test_window_cell_ids_and_charge():
    """A window of two Li2S cells: 24 atoms, c = thickness + gap, ids kept, charge balanced."""
    atoms = li2s_column()
    ids = np.arange(1, len(atoms) + 1)
    z_low = 2.0 + 5.72 - 0.1  # just below the second cell's bottom plane
    slab = extract_slab(
        atoms.positions, atoms.cell[:], atoms.get_chemical_symbols(), ids, z_low, z_low + 2 * 5.72
    )
    assert slab.thickness == pytest.approx(2 * 5.72)
    assert slab.cell[2, 2] == pytest.approx(2 * 5.72 + DEFAULT_GAP)
    np.testing.assert_allclose(slab.cell[:2], atoms.cell[:2])
    # the top plane of S at z_low + 2a - 0.1 + 0.1 = z_high is outside ([z_low, z_high)): 2 cells of 12 atoms
    assert len(slab.symbols) == 24
    assert slab.report['composition'] == {'Li': 16, 'S': 8}
    assert slab.report['net_formal_charge'] == 0 and slab.report['charge_balanced']
    assert not len(slab.removed_ids)
    # ids trace back to the frame: same symbols and the same z shifted by the window's bottom
    for atom_id, position, symbol in zip(slab.atom_ids, slab.positions, slab.symbols, strict=True):
        assert atoms[atom_id - 1].symbol == symbol
        assert position[2] == pytest.approx(atoms.positions[atom_id - 1, 2] - z_low + 0.5 * DEFAULT_GAP)
    assert (slab.positions[:, 2] > 0).all() and (slab.positions[:, 2] < slab.cell[2, 2]).all()


def test_window_through_the_periodic_boundary():
    """``z_high < z_low`` wraps through the boundary: atoms at the top and the bottom of the cell."""
    atoms = li2s_column(1)
    atoms.positions[:, 2] -= 2.0 + 3.0  # S planes at z = -3, -0.14, 2.72 (wrapped: 26.72, 29.86, 2.72)
    ids = np.arange(1, len(atoms) + 1)
    cell_z = atoms.cell[2, 2]
    slab = extract_slab(atoms.positions, atoms.cell[:], atoms.get_chemical_symbols(), ids, cell_z - 3.5, 3.0)
    assert slab.thickness == pytest.approx(6.5)
    assert len(slab.symbols) == len(atoms)


def test_overlaps_across_the_new_boundary_are_removed():
    """Two atoms that sit at opposite faces are brought together by the new periodicity: one is removed."""
    cell = np.diag([6.0, 6.0, 30.0])
    positions = np.array([[0.0, 0.0, 10.2], [0.2, 0.0, 15.9], [3.0, 3.0, 12.0], [3.0, 0.0, 13.5]])
    symbols = ['Li', 'Li', 'S', 'Cl']
    slab = extract_slab(positions, cell, symbols, [5, 6, 7, 8], 10.0, 16.0, gap=0.0, min_distance=1.5)
    assert list(slab.removed_ids) == [6]  # the atom nearer to a face goes
    assert list(slab.atom_ids) == [5, 7, 8]
    assert slab.report['net_formal_charge'] == 1 - 2 - 1
    # with a gap as large as min_distance the pair is no longer too close
    kept = extract_slab(positions, cell, symbols, [5, 6, 7, 8], 10.0, 16.0, gap=1.5, min_distance=1.5)
    assert not len(kept.removed_ids)


@pytest.mark.parametrize(
    ('bounds', 'message'),
    [((15.0, 20.0), 'holds no atom'), ((10.0, 10.0), 'zero thickness')],
)
def test_empty_window_rejected(bounds, message):
    """An empty or zero-thickness window is refused with a message saying what to change."""
    atoms = li2s_column(1)
    with pytest.raises(ValueError, match=message):
        extract_slab(atoms.positions, atoms.cell[:], atoms.get_chemical_symbols(), range(1, 13), *bounds)


def test_overlapping_atoms_in_the_frame_rejected():
    """Atoms already overlapping in the frame are not repaired: the frame is refused."""
    cell = np.diag([6.0, 6.0, 30.0])
    positions = np.array([[0.0, 0.0, 12.0], [0.5, 0.0, 12.0], [3.0, 3.0, 13.0]])
    with pytest.raises(ValueError, match='overlapping atoms in the frame'):
        extract_slab(positions, cell, ['Li', 'Li', 'S'], [1, 2, 3], 10.0, 16.0)


def test_charge_report_rejects_unknown_elements():
    assert charge_report(['Li'] * 6 + ['P'] + ['S'] * 5 + ['Cl'])['net_formal_charge'] == 0
    assert FORMAL_CHARGES['P'] == 5
    with pytest.raises(ValueError, match='no formal charge'):
        charge_report(['Li', 'Na'])


def _regions(anode_sei: float, sei_el: float, origin: float, direction: int) -> Regions:
    empty = np.zeros(0)
    boundaries = {
        'anode_sei': anode_sei,
        'sei_electrolyte': sei_el,
        'electrolyte_source_sei': np.nan,
        'source_sei_source': np.nan,
    }
    return Regions(empty, empty, boundaries, origin, direction, 50.0, empty, empty, empty)


def test_sei_window_follows_the_direction_of_the_heights():
    """Anode below: window from the anode/SEI boundary up; anode above: from the SEI/electrolyte one up."""
    assert sei_window(_regions(10.0, 20.0, 5.0, 1)) == pytest.approx((15.0, 25.0))
    assert sei_window(_regions(10.0, 20.0, 45.0, -1)) == pytest.approx((25.0, 35.0))
    with pytest.raises(ValueError, match='no SEI'):
        sei_window(_regions(10.0, 10.0, 5.0, 1))
    with pytest.raises(ValueError, match='no anode'):
        sei_window(_regions(np.nan, 10.0, 5.0, 1))
