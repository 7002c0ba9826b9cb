"""The four atomic models of the study, built with ASE and NumPy only (no AiiDA imports).

* :func:`bcc_lithium` — bulk bcc Li, 2x2x2 conventional cells (16 atoms).
* :func:`argyrodite` — ordered Li6PS5Cl, 52 atoms (Li24P4S20Cl4), F-43m framework with one Li of
  each 48h pair kept, chosen by minimising the Madelung energy of formal charges.
* :func:`interface` — Li(001)/Li6PS5Cl(001) slab, 185 atoms (Li129P8S40Cl8).
* :func:`sandwich` — Li|Li6PS5Cl|Li, 4833 atoms with the SI's defaults.

Every builder returns an :class:`AtomicModel`: the atoms, one region label per atom, one layer
index per atom (counted from the electrolyte, 1 = the Li layer touching it, 0 = not layered) and
an ``info`` dictionary (JSON-serialisable) with the numbers a user should see. Lengths are in Å,
energies in eV.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from ase import Atoms
from ase.spacegroup import crystal
from scipy.spatial import cKDTree

from aiida_lisei.science.ewald import ewald_energy_matrix
from aiida_lisei.structures.parameters import (
    ELECTROLYTE_SPECIES,
    MIN_INTERATOMIC_DISTANCE,
    ParameterError,
    validate_argyrodite_parameters,
    validate_bcc_lithium_parameters,
    validate_interface_parameters,
    validate_sandwich_parameters,
    validate_seed,
)

__all__ = (
    'ANODE_LI',
    'BULK_LI',
    'GROUP_LABELS',
    'SOURCE_LI',
    'AtomicModel',
    'LiOrdering',
    'argyrodite',
    'argyrodite_candidate_sites',
    'bcc_lithium',
    'electrolyte_group',
    'interface',
    'min_interatomic_distance',
    'order_li_pairs',
    'sandwich',
)

ANODE_LI = 'anode_Li'
SOURCE_LI = 'source_Li'
BULK_LI = 'bulk_Li'
#: Region labels; equal to ``aiida_lisei.data.structure.REGION_GROUPS`` (checked by the tests).
GROUP_LABELS: tuple[str, ...] = (
    ANODE_LI,
    *(f'electrolyte_{species}' for species in ELECTROLYTE_SPECIES),
    SOURCE_LI,
    BULK_LI,
)

#: Energies closer than this (eV) count as equal when choosing the lowest Li ordering.
ENERGY_TIE_TOLERANCE = 1e-6


def electrolyte_group(species: str) -> str:
    """Region label of an electrolyte atom of ``species``."""
    if species not in ELECTROLYTE_SPECIES:
        raise ValueError(f'species {species!r} is not one of {list(ELECTROLYTE_SPECIES)}')
    return f'electrolyte_{species}'


@dataclass
class AtomicModel:
    """Atoms with one region label and one layer index per atom, plus a summary ``info``."""

    atoms: Atoms
    groups: list[str]
    layers: list[int]
    info: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not len(self.atoms) == len(self.groups) == len(self.layers):
            raise ValueError('atoms, groups and layers must have the same length')


# --------------------------------------------------------------------------------------------------
# Geometry helpers
# --------------------------------------------------------------------------------------------------


def _orthorhombic_box(cell: np.ndarray) -> np.ndarray:
    """Edge lengths (Å) of an orthorhombic ``cell``; raise if it is not orthorhombic."""
    cell = np.asarray(cell, dtype=float)
    if np.abs(cell - np.diag(np.diag(cell))).max() > 1e-6 or np.any(np.diag(cell) <= 0):
        raise ValueError('the cell must be orthorhombic with the lattice vectors along x, y, z')
    return np.diag(cell).copy()


def _wrap(positions: np.ndarray, box: np.ndarray) -> np.ndarray:
    wrapped = np.mod(positions, box)
    wrapped[wrapped >= box] = 0.0
    return wrapped


def _min_distance_between(atoms: Atoms, first: np.ndarray, second: np.ndarray, shift_z: float = 0.0) -> float:
    """Smallest distance (Å) between atoms ``first`` and ``second`` (raised by ``shift_z``), periodic in x, y.

    The cell must be orthorhombic; with ``shift_z = Lz`` it measures across the periodic boundary in z.
    """
    box = _orthorhombic_box(atoms.cell[:])
    positions = _wrap(atoms.positions, box)
    second_positions = positions[second] + [0.0, 0.0, shift_z]
    lowest = min(positions[first, 2].min(), second_positions[:, 2].min())
    highest = max(positions[first, 2].max(), second_positions[:, 2].max())
    offset = [0.0, 0.0, lowest]
    slab_box = [box[0], box[1], 2.0 * (highest - lowest) + 1.0]  # no image within reach along z
    tree = cKDTree(positions[first] - offset, boxsize=slab_box)
    return float(tree.query(second_positions - offset, k=1)[0].min())


def min_interatomic_distance(atoms: Atoms) -> float:
    """Smallest distance (Å) between two atoms of ``atoms`` with periodic images (orthorhombic cell)."""
    box = _orthorhombic_box(atoms.cell[:])
    positions = _wrap(atoms.positions, box)
    distances = cKDTree(positions, boxsize=box).query(positions, k=2)[0][:, 1]
    return float(distances.min())


# --------------------------------------------------------------------------------------------------
# Bulk bcc Li
# --------------------------------------------------------------------------------------------------


def bcc_lithium(**params: Any) -> AtomicModel:
    """Bulk bcc Li: ``repeat``³ conventional cells (default 2x2x2 = 16 atoms, a = 3.42 Å), group ``bulk_Li``.

    :param params: ``lattice_constant`` (Å), ``repeat``; see ``DEFAULTS['bcc_lithium']``.
    """
    p = validate_bcc_lithium_parameters(params)
    a, n = p['lattice_constant'], p['repeat']
    atoms = crystal('Li', [(0, 0, 0)], spacegroup=229, cellpar=[a, a, a, 90, 90, 90]).repeat(n)
    info = {
        'model': 'bcc_lithium',
        'natoms': len(atoms),
        'lattice_constant': a,
        'repeat': n,
        'cell_lengths': [float(x) for x in atoms.cell.lengths()],
        'group_counts': {BULK_LI: len(atoms)},
        'min_interatomic_distance': min_interatomic_distance(atoms),
    }
    return AtomicModel(atoms, [BULK_LI] * len(atoms), [0] * len(atoms), info)


# --------------------------------------------------------------------------------------------------
# Ordered Li6PS5Cl
# --------------------------------------------------------------------------------------------------


def argyrodite_candidate_sites(
    lattice_constant: float, s16e_x: float, li48h_x: float, li48h_z: float
) -> tuple[Atoms, np.ndarray]:
    """All 76 sites of the Li6PS5Cl conventional cell (F-43m, SG 216) and the 24 close 48h pairs.

    Framework (28 atoms, fully occupied): P 4b (½,½,½); S 16e (x,x,x) with ``s16e_x`` (PS4
    tetrahedra, P-S = √3 (x - ½) a); Cl 4a (0,0,0); free S 4c (¼,¼,¼). Li 48h (x,x,z): 48 sites,
    each with exactly one partner at the split distance √2 (½ - 2x) a (2.03 Å for the defaults).

    :return: the 76 sites in the order P, S(16e), S(4c), Cl, Li(48h), and the (24, 2) indices
        (into those 76) of the Li pairs, each pair sorted and the pairs sorted by first index.
    """
    a = lattice_constant
    sites = crystal(
        ['P', 'S', 'S', 'Cl', 'Li'],
        basis=[
            (0.5, 0.5, 0.5),
            (s16e_x,) * 3,
            (0.25, 0.25, 0.25),
            (0.0, 0.0, 0.0),
            (li48h_x, li48h_x, li48h_z),
        ],
        spacegroup=216,
        cellpar=[a, a, a, 90, 90, 90],
    )
    symbols = np.array(sites.get_chemical_symbols())
    li = np.flatnonzero(symbols == 'Li')
    if len(sites) != 76 or len(li) != 48:
        raise ValueError(f'expected 76 sites with 48 Li, got {len(sites)} with {len(li)} Li')
    box = _orthorhombic_box(sites.cell[:])
    li_positions = _wrap(sites.positions[li], box)
    partner = cKDTree(li_positions, boxsize=box).query(li_positions, k=2)[1][:, 1]
    if not np.array_equal(partner[partner], np.arange(len(li))):
        raise ValueError('the 48h sites do not form mutual nearest-neighbour pairs')
    pairs = np.unique(np.sort(np.stack([np.arange(len(li)), partner], axis=1), axis=1), axis=0)
    return sites, li[pairs]


@dataclass
class LiOrdering:
    """Result of :func:`order_li_pairs`: the chosen member of every pair and the energies (eV)."""

    choice: np.ndarray  # (n_pairs,) 0 or 1: which member of each pair is occupied
    energy: float  # Ewald energy of the chosen configuration
    start_energies: np.ndarray  # final energy of every start
    start_choices: np.ndarray  # (n_starts, n_pairs) final configuration of every start


def _descend(
    choice: np.ndarray, matrix: np.ndarray, fixed_potential: np.ndarray, pairs: np.ndarray, q: float
):
    """Steepest descent over single pair flips from ``choice``; returns the local minimum (in place)."""
    diagonal = np.diag(matrix)
    rows = np.arange(len(pairs))
    while True:
        occupied, empty = pairs[rows, choice], pairs[rows, 1 - choice]
        potential = fixed_potential + q * matrix[:, occupied].sum(axis=1)
        # Moving charge q from a to b: ΔE = q (φ_b - φ_a) + q² (½ M_aa + ½ M_bb - M_ab).
        delta = q * (potential[empty] - potential[occupied]) + q**2 * (
            0.5 * (diagonal[occupied] + diagonal[empty]) - matrix[occupied, empty]
        )
        best = int(np.argmin(delta))
        if delta[best] >= -1e-10:
            return choice
        choice[best] = 1 - choice[best]


def order_li_pairs(
    matrix: np.ndarray, charges: np.ndarray, pairs: np.ndarray, li_charge: float, n_starts: int, seed: int
) -> LiOrdering:
    """Occupy one site of each pair with charge ``li_charge`` so that ``½ qᵀ M q`` (eV) is lowest.

    Seeded steepest descent over single pair flips from ``n_starts`` random configurations.
    The lowest final energy wins; configurations within :data:`ENERGY_TIE_TOLERANCE` of it are
    ties, broken by the lexicographically smallest ``choice`` vector (deterministic).

    :param matrix: (N, N) Ewald matrix (eV/e²) of all sites.
    :param charges: (N,) charges (e) of the fixed sites; 0 on every pair site.
    :param pairs: (n_pairs, 2) site indices of the pairs.
    """
    rng = np.random.default_rng(seed)
    fixed_potential = matrix @ charges
    fixed_energy = 0.5 * charges @ fixed_potential
    rows = np.arange(len(pairs))

    def energy(choice: np.ndarray) -> float:
        occupied = pairs[rows, choice]
        sub = matrix[np.ix_(occupied, occupied)]
        return float(
            fixed_energy + li_charge * fixed_potential[occupied].sum() + 0.5 * li_charge**2 * sub.sum()
        )

    starts = rng.integers(0, 2, size=(n_starts, len(pairs)))
    finals = np.array([_descend(start.copy(), matrix, fixed_potential, pairs, li_charge) for start in starts])
    energies = np.array([energy(choice) for choice in finals])
    ties = [tuple(c) for c in finals[energies <= energies.min() + ENERGY_TIE_TOLERANCE]]
    best = np.array(min(ties))
    return LiOrdering(best, energy(best), energies, finals)


def argyrodite(seed: int = 0, **params: Any) -> AtomicModel:
    """Ordered Li6PS5Cl conventional cell: 52 atoms, Li24P4S20Cl4, a = 10.25 Å (defaults).

    The F-43m framework of :func:`argyrodite_candidate_sites` is kept; of each close 48h pair
    exactly one Li is kept. The ordering minimises the Ewald energy of formal charges (Li +1,
    P +5, S -2, Cl -1 by default) by :func:`order_li_pairs` from ``n_starts`` random starts drawn
    with ``seed`` (default 128: about 9 % of the starts reach the global minimum, checked by exhaustive
    enumeration of all 2^24 configurations, so 128 starts miss it with probability ~1e-5).
    The defaults give Li-S 2.57/2.60 Å, Li-Cl 2.62 Å, P-S 2.05 Å. Atom order: Li, P, S, Cl.

    :param seed: seed of the random starts (same seed → identical structure).
    :param params: see ``DEFAULTS['argyrodite']``.
    """
    p = validate_argyrodite_parameters(params)
    seed = validate_seed(seed)
    sites, pairs = argyrodite_candidate_sites(p['lattice_constant'], p['s16e_x'], p['li48h_x'], p['li48h_z'])
    symbols = np.array(sites.get_chemical_symbols())
    charges = np.array([p['formal_charges'][s] for s in symbols])
    charges[symbols == 'Li'] = 0.0
    matrix = ewald_energy_matrix(sites.positions, sites.cell[:])
    ordering = order_li_pairs(matrix, charges, pairs, p['formal_charges']['Li'], p['n_starts'], seed)

    li_kept = np.sort(pairs[np.arange(len(pairs)), ordering.choice])
    order = np.concatenate([li_kept, *(np.flatnonzero(symbols == s) for s in ELECTROLYTE_SPECIES[1:])])
    atoms = sites[order]
    split = float(np.linalg.norm(sites.get_distance(pairs[0, 0], pairs[0, 1], mic=True)))
    li = np.flatnonzero(np.array(atoms.get_chemical_symbols()) == 'Li')
    min_li_li = min_interatomic_distance(atoms[li])
    if min_li_li < split - 1e-6:
        raise RuntimeError(
            f'ordered Li-Li distance {min_li_li:.3f} Å is below the split distance {split:.3f} Å'
        )
    groups = [electrolyte_group(s) for s in atoms.get_chemical_symbols()]
    info = {
        'model': 'argyrodite',
        'natoms': len(atoms),
        'formula': 'Li24P4S20Cl4',
        'lattice_constant': p['lattice_constant'],
        'cell_lengths': [float(x) for x in atoms.cell.lengths()],
        'group_counts': {g: groups.count(g) for g in GROUP_LABELS if g in groups},
        'seed': seed,
        'n_starts': p['n_starts'],
        'ewald_energy': ordering.energy,
        'start_energy_min': float(ordering.start_energies.min()),
        'start_energy_max': float(ordering.start_energies.max()),
        'start_energy_spread': float(np.ptp(ordering.start_energies)),
        'n_starts_at_minimum': int(np.sum(ordering.start_energies <= ordering.energy + ENERGY_TIE_TOLERANCE)),
        'n_distinct_minima': len({round(float(e), 4) for e in ordering.start_energies}),
        'split_distance': split,
        'min_li_li_distance': min_li_li,
        'min_interatomic_distance': min_interatomic_distance(atoms),
        'li_pair_choice': [int(c) for c in ordering.choice],
    }
    return AtomicModel(atoms, groups, [0] * len(atoms), info)


# --------------------------------------------------------------------------------------------------
# Li/electrolyte slabs
# --------------------------------------------------------------------------------------------------


def _check_electrolyte(electrolyte: Atoms) -> tuple[float, float]:
    """Return the lateral and vertical cell lengths (Å) of an orthorhombic, square-based electrolyte cell."""
    unknown = sorted(set(electrolyte.get_chemical_symbols()) - set(ELECTROLYTE_SPECIES))
    if unknown:
        raise ValueError(f'electrolyte contains species {unknown}; allowed: {list(ELECTROLYTE_SPECIES)}')
    box = _orthorhombic_box(electrolyte.cell[:])
    if abs(box[0] - box[1]) > 1e-3:
        raise ValueError(f'electrolyte cell must be square in x, y; got {box[0]:.4f} x {box[1]:.4f} Å')
    return float(box[0]), float(box[2])


def _terminate_electrolyte(electrolyte: Atoms) -> tuple[Atoms, float]:
    """Shift the cell along z so its boundary lies in the middle of the widest empty z-window.

    Returns the shifted copy (fractional z in [0, 1)) and the width (Å) of that window; each
    electrolyte surface then keeps half of it as empty "skin" inside the slab's periodic thickness.
    """
    shifted = electrolyte.copy()
    cz = shifted.cell[2, 2]
    z = np.sort(np.mod(shifted.positions[:, 2], cz))
    gaps = np.diff(np.append(z, z[0] + cz))
    widest = int(np.argmax(np.round(gaps, 6)))  # first of equal windows: deterministic
    cut = z[widest] + 0.5 * gaps[widest]
    shifted.positions[:, 2] = np.mod(shifted.positions[:, 2] - cut, cz)
    return shifted, float(gaps[widest])


def _li_layers(n_layers: int, n_xy: int, spacing_xy: float, spacing_z: float, z0: float) -> list[np.ndarray]:
    """Positions (Å) of ``n_layers`` bcc (001) layers of ``n_xy``² atoms, the lowest at ``z0 + spacing_z/2``.

    Layers alternate between cube corners and body centres (ABAB stacking, the bottom layer on corners).
    """
    grid = np.stack(np.meshgrid(np.arange(n_xy), np.arange(n_xy), indexing='ij'), axis=-1).reshape(-1, 2)
    layers = []
    for k in range(n_layers):
        xy = (grid + 0.5 * (k % 2)) * spacing_xy
        z = np.full((len(xy), 1), z0 + (k + 0.5) * spacing_z)
        layers.append(np.hstack([xy, z]))
    return layers


def _region_extent(atoms: Atoms, mask: np.ndarray) -> list[float]:
    z = atoms.positions[mask, 2]
    return [float(z.min()), float(z.max())]


def _stack(electrolyte: Atoms, p: Mapping[str, Any], source_layers: int, model: str) -> AtomicModel:
    """Anode Li slab, electrolyte slab and (if ``source_layers``) source Li slab stacked along z.

    See :func:`sandwich` for the geometry convention. Raises :class:`ParameterError` naming
    ``interface_gap`` (or ``vacuum``) if two atoms of different slabs come closer than
    :data:`MIN_INTERATOMIC_DISTANCE`, and naming ``li_lattice_constant`` if the lateral strain
    of Li exceeds 5 %.
    """
    a_el, c_el = _check_electrolyte(electrolyte)
    a_li, n_el_xy, n_el_z = p['li_lattice_constant'], p['electrolyte_repeat_xy'], p['electrolyte_repeat_z']
    gap, vacuum, anode_layers = p['interface_gap'], p['vacuum'], p['anode_layers']
    lateral = n_el_xy * a_el
    n_li = max(1, round(lateral / a_li))
    strain = lateral / (n_li * a_li) - 1.0
    if abs(strain) > 0.05:
        raise ParameterError(
            f'li_lattice_constant {a_li} Å strains Li by {100 * strain:+.2f} % onto the {lateral:.3f} Å '
            f'electrolyte cell; the lateral strain must be within ±5 %'
        )
    d_li = a_li / 2.0
    cell_el, skin = _terminate_electrolyte(electrolyte)

    z_el = anode_layers * d_li + gap
    z_src = z_el + n_el_z * c_el + (gap if source_layers else 0.0)
    cell_z = z_src + source_layers * d_li + vacuum

    anode = _li_layers(anode_layers, n_li, lateral / n_li, d_li, 0.0)
    source = _li_layers(source_layers, n_li, lateral / n_li, d_li, z_src)
    slab = cell_el.repeat((n_el_xy, n_el_xy, n_el_z))
    slab.positions[:, 2] += z_el

    n_layer = n_li * n_li
    positions = (
        np.vstack([*anode, slab.positions, *source]) if source_layers else np.vstack([*anode, slab.positions])
    )
    symbols = (
        ['Li'] * (anode_layers * n_layer) + slab.get_chemical_symbols() + ['Li'] * (source_layers * n_layer)
    )
    groups = (
        [ANODE_LI] * (anode_layers * n_layer)
        + [electrolyte_group(s) for s in slab.get_chemical_symbols()]
        + [SOURCE_LI] * (source_layers * n_layer)
    )
    layers = (
        [anode_layers - k for k in range(anode_layers) for _ in range(n_layer)]
        + [0] * len(slab)
        + [k + 1 for k in range(source_layers) for _ in range(n_layer)]
    )
    atoms = Atoms(symbols, positions=positions, cell=[lateral, lateral, cell_z], pbc=True)

    labels = np.array(groups)
    is_anode, is_source = labels == ANODE_LI, labels == SOURCE_LI
    is_el = ~(is_anode | is_source)
    electrolyte, anode_li, source_li = (np.flatnonzero(mask) for mask in (is_el, is_anode, is_source))
    interface_distances = [_min_distance_between(atoms, electrolyte, anode_li)]
    if source_layers:
        interface_distances.append(_min_distance_between(atoms, electrolyte, source_li))
    if min(interface_distances) < MIN_INTERATOMIC_DISTANCE:
        raise ParameterError(
            f'interface_gap {gap} Å puts Li and electrolyte atoms {min(interface_distances):.3f} Å apart; '
            f'the smallest distance allowed is {MIN_INTERATOMIC_DISTANCE} Å (increase interface_gap)'
        )
    # Across the vacuum: the top slab faces the anode's periodic image one cell higher.
    top = source_li if source_layers else electrolyte
    vacuum_distance = _min_distance_between(atoms, top, anode_li, shift_z=cell_z)
    if vacuum_distance < MIN_INTERATOMIC_DISTANCE:
        raise ParameterError(
            f'vacuum {vacuum} Å puts atoms {vacuum_distance:.3f} Å apart across the periodic boundary; the '
            f'smallest distance allowed is {MIN_INTERATOMIC_DISTANCE} Å (increase vacuum)'
        )

    anode_z, el_z = _region_extent(atoms, is_anode), _region_extent(atoms, is_el)
    composition = {s: symbols.count(s) for s in ELECTROLYTE_SPECIES}
    info: dict[str, Any] = {
        'model': model,
        'natoms': len(atoms),
        'formula': ''.join(f'{s}{n}' for s, n in composition.items()),
        'composition': composition,
        'group_counts': {g: groups.count(g) for g in GROUP_LABELS if g in groups},
        'cell_lengths': [float(x) for x in atoms.cell.lengths()],
        'electrolyte_lattice_constant': a_el,
        'electrolyte_cell_z': c_el,
        'electrolyte_repeat': [n_el_xy, n_el_xy, n_el_z],
        'li_lattice_constant': a_li,
        'li_inplane_repeat': n_li,
        'li_atoms_per_layer': n_layer,
        'li_inplane_spacing': lateral / n_li,
        'li_layer_spacing': d_li,
        'lateral_strain': strain,
        'lateral_strain_percent': 100.0 * strain,
        'anode_layers': anode_layers,
        'interface_gap': gap,
        'vacuum': vacuum,
        'electrolyte_skin': 0.5 * skin,
        'anode_top_z': anode_z[1],
        'electrolyte_bottom_z': el_z[0],
        'electrolyte_top_z': el_z[1],
        'regions': {
            ANODE_LI: {'atoms_z': anode_z, 'slab_z': [0.0, anode_layers * d_li]},
            'electrolyte': {'atoms_z': el_z, 'slab_z': [z_el, z_el + n_el_z * c_el]},
        },
        'min_interatomic_distance': min_interatomic_distance(atoms),
        'min_interface_distance': min(interface_distances),
        'min_distance_anode_electrolyte': interface_distances[0],
        'min_distance_across_vacuum': vacuum_distance,
    }
    if source_layers:
        source_z = _region_extent(atoms, is_source)
        info.update(source_layers=source_layers, source_bottom_z=source_z[0], source_top_z=source_z[1])
        info['min_distance_electrolyte_source'] = interface_distances[1]
        info['regions'][SOURCE_LI] = {'atoms_z': source_z, 'slab_z': [z_src, z_src + source_layers * d_li]}
    return AtomicModel(atoms, groups, layers, info)


def interface(electrolyte: Atoms, **params: Any) -> AtomicModel:
    """Li(001)/Li6PS5Cl(001) slab: bcc Li anode at the bottom, electrolyte on top, vacuum above.

    Defaults: 1x1x2 electrolyte cells (104 atoms: Li48 P8 S40 Cl8) on 9 bcc Li (001) layers of
    3x3 conventional cells (81 Li, group ``anode_Li``, layer 1 touching the electrolyte), i.e.
    185 atoms, Li129P8S40Cl8, 10.25 x 10.25 x 53.975 Å³ with 15 Å vacuum. Li is strained laterally
    to the electrolyte cell (3 x 3.42 → 10.25 Å: -0.10 %). Geometry convention as in :func:`sandwich`
    (no source slab; the vacuum separates the electrolyte from the anode's periodic image).

    :param electrolyte: orthorhombic, square-based Li6PS5Cl cell (e.g. :func:`argyrodite`'s atoms).
    :param params: see ``DEFAULTS['interface']``.
    """
    return _stack(electrolyte, validate_interface_parameters(params), 0, 'interface')


def sandwich(electrolyte: Atoms, **params: Any) -> AtomicModel:
    """Li|Li6PS5Cl|Li sandwich along [001] (the SI's 4833-atom model with the defaults).

    Defaults: 3x3x6 electrolyte cells (2808 atoms); below, 16 bcc Li (001) layers of 9x9 = 81 atoms
    (1296, ``anode_Li``, layers 1..16, 1 = touching the electrolyte = highest); above, 9 layers
    (729, ``source_Li``, layers 1..9, 1 = lowest); 40 Å vacuum; cell 30.75 x 30.75 x 150.42 Å³.

    Geometry convention, from the bottom of the cell (z = 0) up:

    * each slab occupies its bulk periodic thickness — ``n_layers x a_Li/2`` for Li (layers at
      the half-spacings inside it) and ``n_z x c`` for the electrolyte, whose cell is cut in the
      middle of its widest empty z-window (``info['electrolyte_skin']`` is half of that window);
    * consecutive slabs are separated by an extra ``interface_gap``;
    * ``vacuum`` lies between the top of the source slab's thickness and the cell top, so the
      empty space between the source's top layer and the anode's periodic image is
      ``vacuum + a_Li/2``.

    The SI gives Lz = 150.42 Å and 40 Å vacuum but no interface separation: the default
    ``interface_gap`` = (150.42 - 25 x 1.71 - 6 x 10.25 - 40)/2 = 3.085 Å reproduces Lz. The
    lateral cell is ``electrolyte_repeat_xy x a_el`` (30.75 Å for a_el = 10.25 Å; the SI's 30.814 Å
    implies a_el = 10.271 Å); the paper's lateral mismatch 0.16 % becomes -0.10 % with a_Li = 3.42 Å.

    :param electrolyte: orthorhombic, square-based Li6PS5Cl cell (e.g. :func:`argyrodite`'s atoms).
    :param params: see ``DEFAULTS['sandwich']``.
    """
    p = validate_sandwich_parameters(params)
    return _stack(electrolyte, p, p['source_layers'], 'sandwich')
