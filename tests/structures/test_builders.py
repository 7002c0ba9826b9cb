"""The four atomic models built with ASE/NumPy: counts, cells, distances, symmetry, layers."""

from __future__ import annotations

import numpy as np
import pytest
import spglib

from aiida_lisei.science.ewald import ewald_energy, ewald_energy_matrix
from aiida_lisei.structures import builders
from aiida_lisei.structures.parameters import DEFAULTS, MIN_INTERATOMIC_DISTANCE, ParameterError


@pytest.fixture(scope='module')
def electrolyte() -> builders.AtomicModel:
    return builders.argyrodite(seed=7)


@pytest.fixture(scope='module')
def sandwich(electrolyte) -> builders.AtomicModel:
    return builders.sandwich(electrolyte.atoms)


def _spacegroup(atoms, mask=None) -> int:
    mask = np.ones(len(atoms), bool) if mask is None else mask
    cell = (atoms.cell[:], atoms.get_scaled_positions()[mask], atoms.numbers[mask])
    return int(spglib.get_symmetry_dataset(cell, symprec=1e-3).number)


def _pair_distances(atoms, first: str, second: str) -> np.ndarray:
    symbols = np.array(atoms.get_chemical_symbols())
    i, j = np.flatnonzero(symbols == first), np.flatnonzero(symbols == second)
    distances = atoms.get_all_distances(mic=True)[np.ix_(i, j)]
    return distances[distances > 1e-8]


def test_bcc_lithium():
    model = builders.bcc_lithium()
    assert len(model.atoms) == 16
    assert set(model.groups) == {builders.BULK_LI} and set(model.layers) == {0}
    assert np.allclose(model.atoms.cell.lengths(), 6.84)
    assert model.info['min_interatomic_distance'] == pytest.approx(np.sqrt(3) / 2 * 3.42)
    assert _spacegroup(model.atoms) == 229
    assert len(builders.bcc_lithium(repeat=3, lattice_constant=3.5).atoms) == 54


def test_argyrodite_composition_and_distances(electrolyte):
    atoms, info = electrolyte.atoms, electrolyte.info
    symbols = atoms.get_chemical_symbols()
    counts = {s: symbols.count(s) for s in ('Li', 'P', 'S', 'Cl')}
    assert counts == {'Li': 24, 'P': 4, 'S': 20, 'Cl': 4}  # Li6PS5Cl x 4
    assert electrolyte.groups == [f'electrolyte_{s}' for s in symbols]
    assert np.allclose(atoms.cell[:], np.eye(3) * 10.25)
    assert _pair_distances(atoms, 'P', 'S').min() == pytest.approx(2.05, abs=0.01)
    assert 2.4 < _pair_distances(atoms, 'Li', 'S').min() < 2.7
    assert 2.4 < _pair_distances(atoms, 'Li', 'Cl').min() < 2.7
    li_li = _pair_distances(atoms, 'Li', 'Li').min()
    assert li_li >= info['split_distance'] - 1e-9  # one Li of each 48h pair
    assert info['split_distance'] == pytest.approx(np.sqrt(2) * (0.5 - 2 * 0.18) * 10.25)
    assert info['min_interatomic_distance'] > 2.0


def test_argyrodite_symmetry(electrolyte):
    """The P/S/Cl framework is F-43m (216); the ordered Li lowers the symmetry of the full cell."""
    atoms = electrolyte.atoms
    framework = np.array(atoms.get_chemical_symbols()) != 'Li'
    assert _spacegroup(atoms, framework) == 216
    assert _spacegroup(atoms) < 216
    sites, pairs = builders.argyrodite_candidate_sites(10.25, 0.6155, 0.18, 0.02)
    assert _spacegroup(sites) == 216 and pairs.shape == (24, 2)


def test_argyrodite_same_seed_same_structure(electrolyte):
    again = builders.argyrodite(seed=7)
    assert np.array_equal(again.atoms.positions, electrolyte.atoms.positions)
    assert again.info == electrolyte.info
    assert builders.argyrodite(seed=8, n_starts=4).info['seed'] == 8


def test_argyrodite_ewald_energy_is_recorded_and_lowest(electrolyte):
    info, atoms = electrolyte.info, electrolyte.atoms
    charges = [DEFAULTS['argyrodite']['formal_charges'][s] for s in atoms.get_chemical_symbols()]
    assert ewald_energy(atoms.positions, atoms.cell[:], charges) == pytest.approx(
        info['ewald_energy'], abs=1e-6
    )
    assert info['ewald_energy'] == pytest.approx(info['start_energy_min'])
    assert info['n_starts'] == 128 and info['n_starts_at_minimum'] >= 1


def test_order_li_pairs_picks_the_lowest_start():
    sites, pairs = builders.argyrodite_candidate_sites(10.25, 0.6155, 0.18, 0.02)
    charges = np.array(
        [{'Li': 0.0, 'P': 5.0, 'S': -2.0, 'Cl': -1.0}[s] for s in sites.get_chemical_symbols()]
    )
    matrix = ewald_energy_matrix(sites.positions, sites.cell[:])
    result = builders.order_li_pairs(matrix, charges, pairs, 1.0, n_starts=16, seed=3)
    assert result.energy == pytest.approx(result.start_energies.min())
    winners = result.start_choices[result.start_energies <= result.energy + builders.ENERGY_TIE_TOLERANCE]
    assert tuple(result.choice) == min(tuple(c) for c in winners)
    # Every start ends in a local minimum: no single pair flip lowers the energy.
    q = charges.copy()
    q[pairs[np.arange(24), result.choice]] = 1.0
    for k in range(24):
        flipped = q.copy()
        flipped[pairs[k]] = flipped[pairs[k][::-1]]
        assert 0.5 * flipped @ matrix @ flipped >= result.energy - 1e-8


def test_default_ordering_is_the_global_minimum(electrolyte):
    """Exhaustive enumeration of all 2^24 one-per-pair configurations (two halves of 2^12)."""
    sites, pairs = builders.argyrodite_candidate_sites(10.25, 0.6155, 0.18, 0.02)
    charges = np.array(
        [{'Li': 0.0, 'P': 5.0, 'S': -2.0, 'Cl': -1.0}[s] for s in sites.get_chemical_symbols()]
    )
    matrix = ewald_energy_matrix(sites.positions, sites.cell[:])
    bits = (np.arange(4096)[:, None] >> np.arange(12)) & 1

    def half(rows):
        occupied = np.where(bits == 0, pairs[rows, 0], pairs[rows, 1])  # (4096, 12)
        onehot = np.zeros((4096, len(sites)))
        np.put_along_axis(onehot, occupied, 1.0, axis=1)
        return onehot

    a, b = half(slice(0, 12)), half(slice(12, 24))
    fixed = matrix @ charges
    own_a = a @ fixed + 0.5 * np.einsum('ij,jk,ik->i', a, matrix, a)
    own_b = b @ fixed + 0.5 * np.einsum('ij,jk,ik->i', b, matrix, b)
    minimum = 0.5 * charges @ fixed + (own_a[:, None] + own_b[None, :] + a @ matrix @ b.T).min()
    assert electrolyte.info['ewald_energy'] == pytest.approx(minimum, abs=1e-6)


def test_interface(electrolyte):
    model = builders.interface(electrolyte.atoms)
    atoms, info, groups, layers = model.atoms, model.info, np.array(model.groups), np.array(model.layers)
    assert len(atoms) == 185
    assert info['composition'] == {'Li': 129, 'P': 8, 'S': 40, 'Cl': 8}
    assert info['group_counts'] == {
        'anode_Li': 81,
        'electrolyte_Li': 48,
        'electrolyte_P': 8,
        'electrolyte_S': 40,
        'electrolyte_Cl': 8,
    }
    assert np.allclose(atoms.cell.lengths()[:2], 10.25)
    assert info['lateral_strain'] == pytest.approx(10.25 / (3 * 3.42) - 1)
    anode = groups == 'anode_Li'
    assert sorted(set(layers[anode])) == list(range(1, 10)) and set(layers[~anode]) == {0}
    assert all(np.sum(layers == n) == 9 for n in range(1, 10))
    # Anode at the bottom, electrolyte on top, layer 1 touches the electrolyte.
    z = atoms.positions[:, 2]
    assert z[anode].max() < z[~anode].min()
    assert np.allclose(z[layers == 1], z[anode].max())
    assert atoms.cell[2, 2] - z.max() > DEFAULTS['interface']['vacuum']
    assert info['min_interface_distance'] > MIN_INTERATOMIC_DISTANCE
    assert info['min_interatomic_distance'] == pytest.approx(2.05, abs=0.01)


def test_sandwich_is_the_si_model(sandwich):
    atoms, info, groups, layers = (
        sandwich.atoms,
        sandwich.info,
        np.array(sandwich.groups),
        np.array(sandwich.layers),
    )
    assert len(atoms) == 4833
    counts = info['group_counts']
    assert counts['anode_Li'] == 1296 and counts['source_Li'] == 729
    assert sum(v for k, v in counts.items() if k.startswith('electrolyte_')) == 2808
    assert [counts[f'electrolyte_{s}'] for s in ('Li', 'P', 'S', 'Cl')] == [1296, 216, 1080, 216]  # 6:1:5:1
    lengths = atoms.cell.lengths()
    assert lengths[:2] == pytest.approx([30.81, 30.81], abs=0.1)
    assert lengths[2] == pytest.approx(150.42, abs=0.1)
    assert np.allclose(atoms.cell[:], np.diag(atoms.cell.lengths()))
    for group, n_layers in (('anode_Li', 16), ('source_Li', 9)):
        in_group = groups == group
        assert sorted(set(layers[in_group])) == list(range(1, n_layers + 1))
        assert all(np.sum(in_group & (layers == n)) == 81 for n in range(1, n_layers + 1))
    assert set(layers[np.char.startswith(groups, 'electrolyte_')]) == {0}
    assert info['lateral_strain'] == pytest.approx(30.75 / (9 * 3.42) - 1)
    assert info['min_interatomic_distance'] == pytest.approx(2.05, abs=0.01)
    assert info['min_interface_distance'] > MIN_INTERATOMIC_DISTANCE
    assert info['min_distance_across_vacuum'] >= 40.0


def test_sandwich_layers_counted_from_the_electrolyte(sandwich):
    z, groups, layers = sandwich.atoms.positions[:, 2], np.array(sandwich.groups), np.array(sandwich.layers)
    anode, source = groups == 'anode_Li', groups == 'source_Li'
    electrolyte = ~(anode | source)
    anode_z = [z[anode & (layers == n)].mean() for n in range(1, 17)]
    source_z = [z[source & (layers == n)].mean() for n in range(1, 10)]
    assert np.all(np.diff(anode_z) < 0) and np.all(np.diff(source_z) > 0)  # 1 is nearest the electrolyte
    assert z[anode].max() < z[electrolyte].min() < z[electrolyte].max() < z[source].min()
    info = sandwich.info
    assert info['anode_top_z'] == pytest.approx(z[anode].max())
    assert info['electrolyte_bottom_z'] == pytest.approx(z[electrolyte].min())
    assert info['electrolyte_top_z'] == pytest.approx(z[electrolyte].max())
    assert info['source_bottom_z'] == pytest.approx(z[source].min())
    assert np.allclose(np.diff(anode_z), -1.71) and np.allclose(np.diff(source_z), 1.71)


def test_small_sandwich_has_the_same_shape(electrolyte, small_sandwich):
    model = builders.sandwich(electrolyte.atoms, **small_sandwich)
    counts = model.info['group_counts']
    assert (counts['anode_Li'], counts['source_Li'], len(model.atoms)) == (54, 27, 185)
    expected_z = 6 * 1.71 + 2 * 10.25 + 3 * 1.71 + 10.0 + 2 * DEFAULTS['sandwich']['interface_gap']
    assert model.atoms.cell[2, 2] == pytest.approx(expected_z)
    assert max(model.layers) == 6


def test_overlapping_interface_is_rejected(electrolyte, small_sandwich):
    with pytest.raises(ParameterError, match='interface_gap'):
        builders.sandwich(electrolyte.atoms, **small_sandwich, interface_gap=-2.5)
    with pytest.raises(ParameterError, match='interface_gap'):
        builders.interface(electrolyte.atoms, interface_gap=-2.5)
    tight = builders.interface(electrolyte.atoms, interface_gap=0.0)  # still no overlap
    assert tight.info['min_interface_distance'] > MIN_INTERATOMIC_DISTANCE


def test_bad_electrolyte_cells(electrolyte):
    sodium = electrolyte.atoms.copy()
    sodium[0].symbol = 'Na'
    with pytest.raises(ValueError, match='Na'):
        builders.interface(sodium)
    stretched = electrolyte.atoms.copy()
    stretched.set_cell(np.diag([10.25, 10.5, 10.25]), scale_atoms=True)
    with pytest.raises(ValueError, match='square'):
        builders.interface(stretched)
    with pytest.raises(ParameterError, match='li_lattice_constant'):
        builders.interface(electrolyte.atoms, li_lattice_constant=3.95)
