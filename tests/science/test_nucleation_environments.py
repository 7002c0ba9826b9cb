"""Li environment classification, metallic cluster detection and g(r) on ideal and noisy crystals."""

from __future__ import annotations

import numpy as np
import pytest
from ase import Atoms
from ase.spacegroup import crystal

from aiida_lisei.science.clusters import ClusterParameters, cluster_centre, find_clusters, first_onset
from aiida_lisei.science.environments import (
    EnvironmentParameters,
    LiClass,
    class_counts,
    classify_li,
    coordination,
    neighbour_pairs,
)
from aiida_lisei.science.rdf import BCC_LI_NN_DISTANCE, first_peak_position, radial_distribution
from aiida_lisei.structures.builders import argyrodite, bcc_lithium

LI2S_A = 5.72  # Å, antifluorite Li2S
LICL_A = 5.13  # Å, rock-salt LiCl
BCC_A = 3.42  # Å, bcc Li


def li2s(repeat: int = 1) -> Atoms:
    """Antifluorite Li2S (Fm-3m): S on 4a, Li on 8c; Li-S 2.48 Å, Li-Li 2.86 Å."""
    return crystal(
        ['Li', 'S'], [(0.25, 0.25, 0.25), (0, 0, 0)], spacegroup=225, cellpar=[LI2S_A] * 3 + [90] * 3
    ).repeat(repeat)


def li3p(repeat: tuple[int, int, int] = (2, 2, 1)) -> Atoms:
    """Hexagonal Li3P (P6_3/mmc, Na3As type): Li-P 2.47-2.77 Å."""
    return crystal(
        ['Li', 'Li', 'P'],
        [(0, 0, 0.25), (1 / 3, 2 / 3, 0.583), (1 / 3, 2 / 3, 0.25)],
        spacegroup=194,
        cellpar=[4.273, 4.273, 7.594, 90, 90, 120],
    ).repeat(repeat)


def licl(repeat: int = 1) -> Atoms:
    """Rock-salt LiCl: Li-Cl 2.57 Å."""
    return crystal(
        ['Li', 'Cl'], [(0, 0, 0), (0.5, 0.5, 0.5)], spacegroup=225, cellpar=[LICL_A] * 3 + [90] * 3
    ).repeat(repeat)


def classes_of(atoms: Atoms, noise: float = 0.0, seed: int = 0, params: EnvironmentParameters | None = None):
    params = params or EnvironmentParameters()
    positions = atoms.positions + np.random.default_rng(seed).normal(0.0, noise, atoms.positions.shape)
    species = np.array(atoms.get_chemical_symbols())
    coord = coordination(species, neighbour_pairs(positions, atoms.cell[:], params.max_cutoff), params)
    return classify_li(species, coord, params), coord


def mic(delta: np.ndarray, box: np.ndarray) -> np.ndarray:
    return delta - box * np.round(delta / box)


def planted_cluster(
    radius: float = 6.0, gap: float = 3.1, lattice: float = BCC_A, noise: float = 0.0, seed: int = 0
):
    """Li2S 4x4x4 (22.88 Å) with a sphere carved out and a bcc Li cluster planted in it.

    S within ``radius + gap`` of the centre is removed, then every matrix Li left with fewer than 3 S
    neighbours (a Li2S Li has 4); bcc Li sites within ``radius`` are added. Returns the atoms and the
    indices of the planted Li.
    """
    host = li2s(4)
    box = host.cell.lengths()
    centre = 0.5 * box + 0.3  # off the lattice points of both crystals
    species = np.array(host.get_chemical_symbols())
    far = np.linalg.norm(mic(host.positions - centre, box), axis=1) > radius + gap
    keep_s = (species == 'S') & far
    s_pos = host.positions[keep_s]
    li_pos = host.positions[species == 'Li']
    n_s = np.array([np.count_nonzero(np.linalg.norm(mic(s_pos - p, box), axis=1) < 3.0) for p in li_pos])
    li_pos = li_pos[n_s >= 3]
    grid = np.arange(-4, 5)
    corners = np.stack(np.meshgrid(grid, grid, grid, indexing='ij'), axis=-1).reshape(-1, 3) * lattice
    sites = np.vstack([corners, corners + 0.5 * lattice])
    sites = sites[np.linalg.norm(sites, axis=1) <= radius] + centre
    positions = np.vstack([s_pos, li_pos, sites])
    symbols = ['S'] * len(s_pos) + ['Li'] * (len(li_pos) + len(sites))
    atoms = Atoms(symbols, positions=positions, cell=host.cell[:], pbc=True)
    atoms.positions += np.random.default_rng(seed).normal(0.0, noise, positions.shape)
    planted = np.arange(len(positions) - len(sites), len(positions))
    return atoms, planted


# --------------------------------------------------------------------------------------------------
# Classification
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ('atoms', 'expected'),
    [
        (li2s(), LiClass.LI2S),
        (li3p(), LiClass.LI3P),
        (licl(), LiClass.LICL),
        (bcc_lithium(repeat=3).atoms, LiClass.METALLIC),
        (argyrodite(seed=20241125).atoms, LiClass.ELECTROLYTE),
    ],
    ids=['Li2S', 'Li3P', 'LiCl', 'bcc', 'Li6PS5Cl'],
)
@pytest.mark.parametrize('noise', [0.0, 0.08])
def test_pure_phases_classified(atoms, expected, noise):
    """Every Li of each reference crystal gets its class, also with 0.08 Å Gaussian thermal noise."""
    classes, _ = classes_of(atoms.repeat(2) if noise else atoms, noise=noise)
    li = classes[classes >= 0]
    assert len(li) > 0
    assert np.all(li == expected), class_counts(classes)
    assert np.all(
        classes[np.array((atoms.repeat(2) if noise else atoms).get_chemical_symbols()) != 'Li'] == -1
    )


def test_reference_coordination_numbers():
    """The counts behind the classes: Li2S 4 S + 6 Li, LiCl 6 Cl, bcc 8 Li, Li6PS5Cl 2 PS4-S + 1 S + 1 Cl."""
    _, c = classes_of(li2s())
    li = np.flatnonzero(np.array(li2s().get_chemical_symbols()) == 'Li')
    assert np.all(c.n_sulfide[li] == 4) and np.all(c.n_li[li] == 6) and np.all(c.n_anions[li] == 4)
    _, c = classes_of(licl())
    li = np.flatnonzero(np.array(licl().get_chemical_symbols()) == 'Li')
    assert np.all(c.n_cl[li] == 6)
    _, c = classes_of(bcc_lithium(repeat=3).atoms)
    assert np.all(c.n_li == 8) and np.all(c.n_anions == 0)
    atoms = argyrodite(seed=20241125).atoms
    _, c = classes_of(atoms)
    species = np.array(atoms.get_chemical_symbols())
    li = species == 'Li'
    assert np.all(c.n_thiophosphate_s[li] == 2) and np.all(c.n_sulfide[li] == 1) and np.all(c.n_cl[li] == 1)
    assert np.count_nonzero(c.bonded_s) == 16 and np.count_nonzero(c.bonded_p) == 4  # 4 PS4, 4 free S


def test_thresholds_change_the_class():
    """The thresholds are live: with a Li-S cut-off below 2.48 Å a Li2S Li has no anion neighbour
    ('other', or 'metallic' with its 6 Li at 2.86 Å counted); demanding 9 Li neighbours un-metals bcc."""
    classes, _ = classes_of(li2s(), params=EnvironmentParameters(li_s_cutoff=2.4, li_li_cutoff=2.8))
    assert np.all(classes[classes >= 0] == LiClass.OTHER)
    classes, _ = classes_of(li2s(), params=EnvironmentParameters(li_s_cutoff=2.4))  # 6 Li at 2.86 Å
    assert np.all(classes[classes >= 0] == LiClass.METALLIC)
    classes, _ = classes_of(bcc_lithium(repeat=3).atoms, params=EnvironmentParameters(metallic_min_li=9))
    assert np.all(classes == LiClass.OTHER)
    with pytest.raises(ValueError, match='positive'):
        EnvironmentParameters(li_s_cutoff=0.0)


def test_mixed_votes_and_ties():
    """2 Cl + 1 sulfide S is LiCl-like; a 1 S + 1 Cl tie goes to Li2S; one PS4 S makes it electrolyte."""
    cell = np.eye(3) * 20.0
    base = np.array([10.0, 10.0, 10.0])
    arrangements = {
        'LiCl': (['Cl', 'Cl', 'S'], LiClass.LICL),
        'tie': (['S', 'Cl'], LiClass.LI2S),
        'ps4': (['S', 'S', 'Cl', 'S'], LiClass.ELECTROLYTE),
    }
    directions = np.array([[1, 0, 0], [-1, 0, 0], [0, 1, 0], [0, -1, 0]], dtype=float)
    for name, (anions, expected) in arrangements.items():
        positions = [base] + [base + 2.5 * directions[k] for k in range(len(anions))]
        symbols = ['Li', *anions]
        if name == 'ps4':  # a P bonded (2.05 Å) to the last S, 4.5 Å from the Li
            positions.append(positions[-1] + np.array([0.0, -2.05, 0.0]))
            symbols.append('P')
        species = np.array(symbols)
        coord = coordination(species, neighbour_pairs(np.array(positions), cell, 3.2))
        assert classify_li(species, coord)[0] == expected, name


# --------------------------------------------------------------------------------------------------
# Clusters
# --------------------------------------------------------------------------------------------------


def _detect(atoms: Atoms):
    species = np.array(atoms.get_chemical_symbols())
    params = EnvironmentParameters()
    pairs = neighbour_pairs(atoms.positions, atoms.cell[:], params.max_cutoff)
    classes = classify_li(species, coordination(species, pairs, params), params)
    return find_clusters(atoms.positions, atoms.cell[:], classes == LiClass.METALLIC, pairs=pairs)


@pytest.mark.parametrize('noise', [0.0, 0.1])
def test_planted_bcc_cluster_is_found(noise):
    """A 30-60 atom bcc Li cluster in Li2S is found: only planted atoms, at least 80 % of them."""
    atoms, planted = planted_cluster(noise=noise, seed=3)
    assert 30 <= len(planted) <= 60
    clusters = _detect(atoms)
    found = clusters.largest_isolated()
    assert set(found) <= set(planted)
    assert len(found) >= 0.8 * len(planted)
    assert np.count_nonzero(clusters.labels >= 0) == len(found)  # nothing metallic in the matrix
    centre = cluster_centre(atoms.positions[found], atoms.cell[:])
    assert np.allclose(centre, 0.5 * atoms.cell.lengths() + 0.3, atol=0.6)


@pytest.mark.parametrize('noise', [0.0, 0.1])
def test_no_cluster_in_pure_li2s(noise):
    atoms = li2s(4)
    atoms.positions += np.random.default_rng(5).normal(0.0, noise, atoms.positions.shape)
    clusters = _detect(atoms)
    assert len(clusters.sizes) == 0 and len(clusters.largest_isolated()) == 0
    assert len(clusters.attached_members()) == 0  # no component at all: nothing attached either


def test_excluded_region_makes_clusters_attached():
    """Bulk metal is one big component: flagged attached when any of its atoms is excluded."""
    atoms = bcc_lithium(repeat=4).atoms
    metallic = np.ones(len(atoms), dtype=bool)
    excluded = np.zeros(len(atoms), dtype=bool)
    excluded[0] = True
    clusters = find_clusters(atoms.positions, atoms.cell[:], metallic, excluded)
    assert clusters.sizes.tolist() == [len(atoms)] and clusters.attached.tolist() == [True]
    assert len(clusters.largest_isolated()) == 0 and len(clusters.attached_members()) == len(atoms)
    # Same answer without a neighbour list to reuse, and isolated when nothing is excluded.
    free = find_clusters(atoms.positions, atoms.cell[:], metallic, None, ClusterParameters(link_cutoff=3.0))
    assert len(free.largest_isolated()) == len(atoms)
    # Below the nearest-neighbour distance nothing links.
    single = find_clusters(atoms.positions, atoms.cell[:], metallic, None, ClusterParameters(link_cutoff=2.9))
    assert np.all(single.sizes == 1)


def test_first_onset():
    sizes = [0, 3, 12, 4, 11, 15, 20]
    assert first_onset(sizes) == 2
    assert first_onset(sizes, ClusterParameters(onset_frames=2)) == 4
    assert first_onset(sizes, {'onset_size': 25}) == -1


# --------------------------------------------------------------------------------------------------
# RDF
# --------------------------------------------------------------------------------------------------


def test_bcc_first_peak():
    """bcc Li, a = 3.42 Å: first g(r) peak at √3/2 a = 2.962 Å (±0.02 Å); g → 1 and n(r) = 8 after it."""
    atoms = bcc_lithium(repeat=4).atoms
    rdf = radial_distribution(atoms.positions, atoms.cell[:])
    assert pytest.approx(2.9618, abs=1e-4) == BCC_LI_NN_DISTANCE
    assert rdf.first_peak() == pytest.approx(2.96, abs=0.02)
    assert rdf.first_peak() == pytest.approx(BCC_LI_NN_DISTANCE, abs=0.005)
    assert rdf.n[np.searchsorted(rdf.r, 3.2)] == pytest.approx(8.0)
    assert rdf.n[np.searchsorted(rdf.r, 3.6)] == pytest.approx(14.0)


def test_bcc_first_peak_thermal_and_pooled():
    """With 0.08 Å noise, pooled over 5 frames, the peak stays within 0.03 Å of 2.962 Å."""
    atoms = bcc_lithium(repeat=4).atoms
    rng = np.random.default_rng(11)
    frames = atoms.positions[None] + rng.normal(0.0, 0.08, (5, *atoms.positions.shape))
    rdf = radial_distribution(frames, atoms.cell[:])
    assert rdf.n_frames == 5
    assert rdf.first_peak() == pytest.approx(BCC_LI_NN_DISTANCE, abs=0.03)


@pytest.mark.parametrize('nn', [2.75, 2.96])
def test_cluster_rdf_peak(nn):
    """g(r) of a detected planted cluster peaks at its nearest-neighbour distance (2.75 Å: compressed)."""
    atoms, _ = planted_cluster(lattice=nn * 2 / np.sqrt(3), radius=6.0 * nn / 2.96)
    found = _detect(atoms).largest_isolated()
    rdf = radial_distribution(atoms.positions, atoms.cell[:], found)
    assert rdf.first_peak() == pytest.approx(nn, abs=0.02)


def test_first_peak_position_edge_cases():
    r = np.arange(0.0, 6.0, 0.01) + 0.005
    assert np.isnan(first_peak_position(r, np.zeros_like(r)))
    g = np.exp(-((r - 2.5) ** 2) / 0.01) + 3.0 * np.exp(-((r - 4.0) ** 2) / 0.01)
    assert first_peak_position(r, g) == pytest.approx(2.5, abs=0.005)  # first, not highest
    assert first_peak_position(r, g, min_height=0.5) == pytest.approx(4.0, abs=0.005)
