"""Regions of built sandwiches, origin fractions, charges and the trajectory summary on a synthetic case."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import yaml
from ase.spacegroup import crystal

from aiida_lisei.science.clusters import origin_fractions
from aiida_lisei.science.nucleation import (
    NucleationParameters,
    analyse_frame,
    charge_statistics,
    order_by_ids,
    summarise_trajectory,
)
from aiida_lisei.science.regions import REGIONS, Region, initial_origin
from aiida_lisei.structures.builders import AtomicModel, argyrodite, interface, sandwich

PROTOCOL = Path(__file__).parents[2] / 'aiida_lisei' / 'protocols' / 'atomic_models.yaml'


@pytest.fixture(scope='module')
def electrolyte():
    seed = yaml.safe_load(PROTOCOL.read_text())['default_inputs']['argyrodite']['seed']
    return argyrodite(seed=seed).atoms


@pytest.fixture(scope='module')
def demo_sandwich(electrolyte) -> AtomicModel:
    """The demo protocol's sandwich (1x1x2 cells, 10 + 4 Li layers, 12 Å vacuum, 230 atoms)."""
    params = yaml.safe_load(PROTOCOL.read_text())['protocols']['demo']['sandwich']['parameters']
    return sandwich(electrolyte, **params)


def _regions(model: AtomicModel, positions: np.ndarray):
    species = np.array(model.atoms.get_chemical_symbols())
    return analyse_frame(positions, model.atoms.cell[:], species, initial_origin(model.groups)).regions


@pytest.mark.parametrize('noise', [0.0, 0.1])
@pytest.mark.parametrize('transform', ['none', 'shifted', 'flipped'])
def test_regions_of_built_sandwich(demo_sandwich, noise, transform):
    """Anode atoms in the anode, source atoms in the source, the electrolyte in the electrolyte.

    The builder cuts PS4 units at the electrolyte surfaces (orphan S count as sulfide), so up to one
    surface layer of the electrolyte may read as SEI at t = 0; P and Cl are always electrolyte.
    Shifting the slab through the periodic boundary or flipping it along z changes nothing.
    """
    model = demo_sandwich
    atoms = model.atoms
    lz = atoms.cell[2, 2]
    positions = atoms.positions + np.random.default_rng(7).normal(0.0, noise, atoms.positions.shape)
    if transform == 'shifted':
        positions[:, 2] = np.mod(positions[:, 2] + 0.6 * lz, lz)
    elif transform == 'flipped':
        positions[:, 2] = lz - positions[:, 2]
    regions = _regions(model, positions)
    groups = np.array(model.groups)
    species = np.array(atoms.get_chemical_symbols())
    assert np.all(regions.codes[groups == 'anode_Li'] == Region.ANODE)
    assert np.all(regions.codes[groups == 'source_Li'] == Region.SOURCE)
    electrolyte = np.char.startswith(groups, 'electrolyte_')
    codes = regions.codes[electrolyte]
    assert np.all((codes != Region.ANODE) & (codes != Region.SOURCE))
    assert np.count_nonzero(codes == Region.ELECTROLYTE) >= 0.8 * len(codes)
    assert np.all(regions.codes[np.isin(species, ['P', 'Cl'])] == Region.ELECTROLYTE)
    assert 0.0 < regions.sei_thickness < 6.0
    # The anode/SEI boundary lies between the anode's top layer and the electrolyte's bottom atom.
    anode_top = regions.heights[groups == 'anode_Li'].max()
    electrolyte_bottom = regions.heights[electrolyte].min()
    assert anode_top < regions.boundaries['anode_sei'] < electrolyte_bottom
    boundary_z = regions.to_cell_z(regions.boundaries['anode_sei'])
    expected = 0.5 * (model.info['anode_top_z'] + model.info['electrolyte_bottom_z'])
    if transform == 'shifted':
        expected = np.mod(expected + 0.6 * lz, lz)
    elif transform == 'flipped':
        expected = lz - expected
    assert boundary_z == pytest.approx(expected, abs=2.5)


def test_regions_without_source(electrolyte):
    """The paper's 185-atom interface (no source): no source region, the anode where it was."""
    model = interface(electrolyte)
    regions = _regions(model, model.atoms.positions)
    groups = np.array(model.groups)
    assert np.isnan(regions.boundaries['source_sei_source'])
    assert not np.any(regions.codes == Region.SOURCE)
    assert np.all(regions.codes[groups == 'anode_Li'] == Region.ANODE)
    assert np.count_nonzero(regions.codes == Region.ELECTROLYTE) >= 0.8 * np.count_nonzero(
        groups != 'anode_Li'
    )


def test_origin_fractions_synthetic():
    labels = (
        ['anode_Li'] * 4 + ['electrolyte_Li'] * 4 + ['electrolyte_S'] * 2 + ['source_Li'] * 2 + ['bulk_Li']
    )
    origin = initial_origin(labels)
    assert origin.tolist() == ['anode'] * 4 + ['electrolyte'] * 6 + ['source'] * 2 + ['other']
    fractions = origin_fractions([4, 5, 6, 7, 0, 10, 12, 11], origin)
    assert fractions == {'electrolyte': 0.5, 'anode': 0.125, 'source': 0.25, 'other': 0.125}
    assert sum(origin_fractions([1, 2], origin).values()) == pytest.approx(1.0)
    assert origin_fractions([], origin) == {'electrolyte': 0.0, 'anode': 0.0, 'source': 0.0, 'other': 0.0}


def test_charge_statistics():
    charges = np.array([0.0, 0.1, 0.9, 1.0, -1.2, np.nan])
    stats = charge_statistics(
        charges, {'a': np.array([0, 1]), 'b': np.array([False, False, True, True, False, True])}
    )
    assert stats['a']['mean'] == pytest.approx(0.05) and stats['a']['std'] == pytest.approx(0.05)
    assert stats['b']['count'] == 2 and stats['b']['mean'] == pytest.approx(0.95)
    assert sum(stats['b']['histogram']) == 2 and len(stats['bin_edges']) == 61
    assert charge_statistics(charges, {'none': np.zeros(6, dtype=bool)})['none']['mean'] is None


def test_order_by_ids():
    ids = np.array([[3, 1, 2], [1, 2, 3]])
    order = order_by_ids(ids, 2, 3)
    assert order.tolist() == [[1, 2, 0], [0, 1, 2]]
    assert order_by_ids(np.array([1, 2, 3]), 2, 3) is None
    with pytest.raises(ValueError, match='same set'):
        order_by_ids(np.array([[1, 2, 3], [1, 2, 4]]), 2, 3)


# --------------------------------------------------------------------------------------------------
# Synthetic trajectory: a Li cluster appears inside a wide anode/electrolyte gap
# --------------------------------------------------------------------------------------------------

CLUSTER_NN = 2.75  # Å, as the paper's cluster
GAP = 20.0  # Å, interface gap that hosts the cluster
N_FRAMES, ONSET = 6, 3
TIMES = np.arange(N_FRAMES) * 25.0  # ps


@pytest.fixture(scope='module')
def synthetic(electrolyte):
    """A 2x2x1 sandwich with 20 Å gaps and 25 Å vacuum; from frame 3 on, 18 electrolyte Li and 9 source
    Li form a 27-atom bcc cluster (nn 2.75 Å) centred 9 Å above the anode's top layer. Thermal noise 0.05 Å.
    Charges (frames 2 and 4 only): anode/source Li 0, electrolyte Li +0.8, cluster Li +0.05, anions -1."""
    model = sandwich(
        electrolyte,
        electrolyte_repeat_xy=2,
        electrolyte_repeat_z=1,
        anode_layers=6,
        source_layers=3,
        vacuum=25.0,  # the vacuum must stay the widest empty z-window
        interface_gap=GAP,
    )
    atoms, groups = model.atoms, np.array(model.groups)
    rng = np.random.default_rng(42)
    donors = np.concatenate(
        [
            rng.choice(np.flatnonzero(groups == 'electrolyte_Li'), 18, replace=False),
            rng.choice(np.flatnonzero(groups == 'source_Li'), 9, replace=False),
        ]
    )
    a = CLUSTER_NN * 2 / np.sqrt(3)
    shells = np.array(
        [[0, 0, 0]]
        + [[x, y, z] for x in (-0.5, 0.5) for y in (-0.5, 0.5) for z in (-0.5, 0.5)]
        + [list(v) for v in np.vstack([np.eye(3), -np.eye(3)])]
        + [[x, y, 0] for x in (-1, 1) for y in (-1, 1)]
        + [[x, 0, z] for x in (-1, 1) for z in (-1, 1)]
        + [[0, y, z] for y in (-1, 1) for z in (-1, 1)]
    )
    assert len(shells) == len(donors) == 27
    lateral = atoms.cell[0, 0]
    centre = np.array([0.5 * lateral, 0.5 * lateral, model.info['anode_top_z'] + 9.0])
    frames = np.repeat(atoms.positions[None], N_FRAMES, axis=0)
    frames[ONSET:, donors] = centre + a * shells
    frames += rng.normal(0.0, 0.05, frames.shape)
    species = np.array(atoms.get_chemical_symbols())
    charges = np.full((N_FRAMES, len(atoms)), np.nan)
    base = np.where(species == 'Li', 0.0, -1.0)
    base[groups == 'electrolyte_Li'] = 0.8
    for f in (2, 4):
        charges[f] = base
        if f >= ONSET:
            charges[f, donors] = 0.05
    return model, frames, species, charges, donors, centre


def test_summary_finds_the_cluster(synthetic):
    model, frames, species, charges, donors, centre = synthetic
    cell = model.atoms.cell[:]
    result = summarise_trajectory(frames, cell, species, model.groups, TIMES, charges=charges)
    json.dumps(result, allow_nan=False)  # plain JSON
    summary, series = result['summary'], result['series']
    assert series['largest_cluster_size'][:ONSET] == [0] * ONSET
    # The 15-atom core (centre + 2 shells) is always metallic; the 12 edge atoms have 2 neighbours at
    # 2.75 Å and 2 at a = 3.18 Å, just inside the 3.2 Å cut-off, so thermal noise drops some of them.
    assert all(15 <= size <= 27 for size in series['largest_cluster_size'][ONSET:])
    assert summary['cluster_onset_frame'] == ONSET and summary['cluster_onset_time_ps'] == TIMES[ONSET]
    assert summary['cluster_region_at_onset'] == 'sei'
    detected = summary['cluster_size_at_onset']
    record = result['clusters'][ONSET]
    assert detected == record['size'] == len(record['atoms'])
    assert set(record['atoms']) <= set(donors.tolist())
    # Origins: the first 18 donors came from the electrolyte, the other 9 from the source.
    from_electrolyte = len(set(record['atoms']) & set(donors[:18].tolist()))
    origin = summary['cluster_origin_at_onset']
    assert origin['electrolyte'] == pytest.approx(from_electrolyte / detected)
    assert origin['source'] == pytest.approx(1.0 - from_electrolyte / detected)
    assert origin['anode'] == 0.0 and origin['other'] == 0.0
    # Distance from the anode/SEI boundary: the centre is 9 Å above the top anode layer and the
    # boundary lies between that layer and the (empty) gap, at most 3 Å above it.
    boundary = series['boundary_z']['anode_sei'][ONSET]
    assert model.info['anode_top_z'] < boundary < model.info['anode_top_z'] + 3.0
    assert summary['cluster_boundary_distance_at_onset'] == pytest.approx(
        record['centre'][2] - boundary, abs=1e-6
    )
    assert summary['cluster_boundary_distance_at_onset'] == pytest.approx(centre[2] - boundary, abs=0.6)
    assert 5.0 < summary['cluster_min_distance_to_anode_at_onset'] < 9.0
    assert np.allclose(record['centre'], centre, atol=0.6)  # edge atoms dropped unevenly shift it
    # RDF: the cluster's nearest neighbours at 2.75 Å, the anode's at bcc 2.96 Å.
    assert summary['cluster_nn_distance'] == pytest.approx(CLUSTER_NN, abs=0.03)
    assert summary['anode_nn_distance'] == pytest.approx(2.96, abs=0.03)
    assert summary['cluster_nn_contraction'] == pytest.approx(CLUSTER_NN - 2.96, abs=0.05)
    assert result['rdf']['frames'] == list(range(ONSET, N_FRAMES))
    # Charges: means only over frames with charges; histograms at frames 2 and 4.
    assert summary['mean_li_charge']['cluster'] == pytest.approx(0.05)
    assert summary['mean_li_charge']['anode'] == pytest.approx(0.0)
    assert summary['mean_li_charge']['electrolyte'] == pytest.approx(0.8)
    assert [entry['frame'] for entry in result['charges']['frames']] == [2, 4]
    assert series['mean_li_charge']['cluster'][2] is None and series['mean_li_charge']['anode'][3] is None
    cluster_stats = result['charges']['frames'][1]['cluster_Li']
    size_4 = series['largest_cluster_size'][4]
    assert cluster_stats['count'] == size_4 and sum(cluster_stats['histogram']) == size_4
    # Li bookkeeping: every Li is in some region in every frame.
    n_li = int(np.count_nonzero(species == 'Li'))
    for f in range(N_FRAMES):
        assert sum(series['li_per_region'][name][f] for name in REGIONS) == n_li
        assert sum(series['li_classes'][name][f] for name in series['li_classes']) == n_li
    assert series['attached_metallic_li_outside_metal'] == [0] * N_FRAMES


def test_summary_is_independent_of_row_order(synthetic):
    """Rows shuffled per frame with their ids give exactly the same result as rows in id order."""
    model, frames, species, _, _, _ = synthetic
    cell = model.atoms.cell[:]
    params = NucleationParameters.from_dict({'clusters': {'onset_size': 15}, 'rdf_max_frames': 2})
    reference = summarise_trajectory(frames[:5], cell, species, model.groups, TIMES[:5], params=params)
    rng = np.random.default_rng(0)
    ids = np.arange(len(species)) + 100
    perms = np.array([rng.permutation(len(species)) for _ in range(5)])
    shuffled = summarise_trajectory(
        np.take_along_axis(frames[:5], perms[:, :, None], axis=1),
        cell,
        species,
        model.groups,
        TIMES[:5],
        atom_ids=ids[perms],
        params=params.as_dict(),
    )
    assert shuffled == reference
    assert reference['parameters']['clusters']['onset_size'] == 15
    assert reference['rdf']['frames'] == [3, 4]


def test_summary_without_cluster(demo_sandwich):
    """A noisy pristine sandwich: no cluster, no onset, no charges; still valid JSON."""
    atoms = demo_sandwich.atoms
    frames = atoms.positions[None] + np.random.default_rng(1).normal(0.0, 0.08, (3, *atoms.positions.shape))
    species = np.array(atoms.get_chemical_symbols())
    result = summarise_trajectory(
        frames, np.repeat(atoms.cell[:][None], 3, axis=0), species, demo_sandwich.groups, [0, 1, 2]
    )
    json.dumps(result, allow_nan=False)
    summary = result['summary']
    assert summary['cluster_onset_time_ps'] is None and summary['cluster_nn_distance'] is None
    assert summary['max_cluster_size'] < 10
    assert summary['anode_nn_distance'] == pytest.approx(2.96, abs=0.03)
    assert result['charges']['frames'] == [] and summary['mean_li_charge']['anode'] is None
    assert result['series']['sei_li_classes']['metallic'] == [0, 0, 0]


def test_summary_rejects_bad_shapes(demo_sandwich):
    atoms = demo_sandwich.atoms
    species = np.array(atoms.get_chemical_symbols())
    with pytest.raises(ValueError, match='positions'):
        summarise_trajectory(atoms.positions, atoms.cell[:], species, demo_sandwich.groups, [0.0])
    with pytest.raises(ValueError, match='species'):
        summarise_trajectory(atoms.positions[None], atoms.cell[:], species[:-1], demo_sandwich.groups, [0.0])
    tilted = atoms.cell[:].copy()
    tilted[2, 0] = 1.0
    with pytest.raises(ValueError, match='along \\+z'):
        summarise_trajectory(atoms.positions[None], tilted, species, demo_sandwich.groups, [0.0])


def test_li2s_layer_on_the_anode_is_sei():
    """A Li2S slab (a = 5.72 Å, 3x3x2 cells, strain 0.35 %) on a Li anode: no electrolyte, all SEI,
    and the SEI composition series counts its Li as Li2S-like and its S as sulfide."""
    li2s_cell = crystal(
        ['Li', 'S'], [(0.25, 0.25, 0.25), (0, 0, 0)], spacegroup=225, cellpar=[5.72] * 3 + [90] * 3
    )
    model = interface(li2s_cell, electrolyte_repeat_xy=3, electrolyte_repeat_z=2, anode_layers=6, vacuum=15.0)
    atoms, groups = model.atoms, np.array(model.groups)
    species = np.array(atoms.get_chemical_symbols())
    frames = atoms.positions[None] + np.random.default_rng(2).normal(0.0, 0.05, (2, *atoms.positions.shape))
    result = summarise_trajectory(frames, atoms.cell[:], species, model.groups, [0.0, 1.0])
    series = result['series']
    n_li2s_li = int(np.count_nonzero(groups == 'electrolyte_Li'))
    n_s = int(np.count_nonzero(species == 'S'))
    for f in range(2):
        assert series['li_per_region']['anode'][f] == np.count_nonzero(groups == 'anode_Li')
        assert series['li_per_region']['electrolyte'][f] == 0
        assert series['sei_anions']['sulfide_S'][f] == n_s
        assert series['sei_anions']['thiophosphate_S'][f] == 0
        # Surface Li of the slab may lose a S neighbour but keep the majority vote: all Li2S-like.
        assert series['sei_li_classes']['Li2S'][f] == n_li2s_li
    assert result['summary']['sei_thickness_initial'] > 2 * 5.72
