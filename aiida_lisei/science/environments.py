"""Local environments of Li atoms: neighbour counts and a Li2S / Li3P / LiCl / metallic classification.

Pure NumPy + vesin (no AiiDA imports). Lengths in Å. Periodic cells of any shape (vesin's cell list).

Each Li atom is classified from hard-cut-off neighbour counts (one neighbour list per frame):

* anions are told apart by what they are bonded to: a S atom with a P atom closer than
  ``p_s_bond_cutoff`` is *thiophosphate* S (PS4³⁻ of the electrolyte), otherwise *sulfide* S (S²⁻,
  as in Li2S; the free 4c S of Li6PS5Cl is sulfide too); a P atom with such a S is *thiophosphate*
  P, otherwise *phosphide* P (P³⁻, as in Li3P); Cl is chloride everywhere;
* ``metallic``: at most ``metallic_max_anions`` anion neighbours and at least ``metallic_min_li`` Li
  neighbours;
* ``electrolyte``: at least ``electrolyte_min_thiophosphate`` thiophosphate (PS4) neighbours — a Li
  bound to an intact PS4 unit belongs to the electrolyte;
* otherwise, if the Li has anion neighbours, each anion votes: sulfide S → ``Li2S``, phosphide P →
  ``Li3P``, Cl → ``LiCl``; the most votes win, ties go to the first of (``Li2S``, ``Li3P``, ``LiCl``)
  (Li2S is the main product of Li6PS5Cl + 8 Li → 5 Li2S + Li3P + LiCl);
* ``other``: no anion neighbour and too few Li neighbours to be metallic (e.g. a Li in the vacuum).

The default cut-offs sit between the first and second neighbour shells of the reference crystals
(see :class:`EnvironmentParameters`). Li in Li6PS5Cl has 2 thiophosphate S, 1 sulfide S and 1 Cl
within them (→ ``electrolyte``), Li in Li2S 4 sulfide S, Li in Li3P 3-4 phosphide P, Li in LiCl
6 Cl, Li in bcc Li 8 Li and no anion (→ ``metallic``).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
from vesin import NeighborList

__all__ = (
    'ANION_SPECIES',
    'LI_CLASSES',
    'Coordination',
    'EnvironmentParameters',
    'LiClass',
    'NeighbourPairs',
    'class_counts',
    'classify_li',
    'coordination',
    'neighbour_pairs',
)

ANION_SPECIES: tuple[str, ...] = ('S', 'P', 'Cl')


class LiClass:
    """Integer codes of the Li environment classes (``-1`` marks atoms that are not Li)."""

    METALLIC = 0
    LI2S = 1
    LI3P = 2
    LICL = 3
    ELECTROLYTE = 4
    OTHER = 5
    NOT_LI = -1


#: Names of the classes, indexed by their code.
LI_CLASSES: tuple[str, ...] = ('metallic', 'Li2S', 'Li3P', 'LiCl', 'electrolyte', 'other')


@dataclass(frozen=True)
class EnvironmentParameters:
    """Cut-offs (Å) and thresholds of the Li environment classification.

    Defaults and why (reference distances from the ideal crystals used in the tests):

    * ``li_li_cutoff`` 3.2 Å: between the first (2.96 Å, 8 atoms) and second (3.42 Å, 6 atoms) shells
      of bcc Li (a = 3.42 Å); equal to R0 of the Li-Li coordination of the paper's CV.
    * ``li_s_cutoff`` 3.0 Å: Li-S is 2.48 Å in Li2S (a = 5.72 Å; next shell 4.74 Å) and 2.57-2.60 Å in
      Li6PS5Cl; equal to R0 of the paper's Li-S coordination.
    * ``li_p_cutoff`` 3.2 Å: Li-P is 2.47-2.77 Å in Li3P (next shell > 3.5 Å); the PS4 P of Li6PS5Cl
      is 3.77 Å from Li.
    * ``li_cl_cutoff`` 3.2 Å: Li-Cl is 2.57 Å in LiCl (a = 5.13 Å; next shell 4.44 Å), 2.62 Å in
      Li6PS5Cl.
    * ``p_s_bond_cutoff`` 2.5 Å: the P-S bond of PS4 is 2.05 Å; in Li2S/Li3P mixtures P-S > 3.5 Å.
    * ``electrolyte_min_thiophosphate`` 1: one PS4 neighbour makes a Li ``electrolyte`` (a Li of
      Li6PS5Cl has two, so it stays ``electrolyte`` when thermal motion takes one out of range).
    * ``metallic_max_anions`` 1 and ``metallic_min_li`` 4: a metallic Li has (almost) no anion
      neighbour and several Li neighbours. Every Li of the anion-bearing reference crystals has
      >= 3 anion neighbours; a (001) surface atom of bcc Li has 4 Li neighbours within 3.2 Å, the
      atoms on the rim of a 30-60 atom bcc cluster 3-8.
    """

    li_li_cutoff: float = 3.2
    li_s_cutoff: float = 3.0
    li_p_cutoff: float = 3.2
    li_cl_cutoff: float = 3.2
    p_s_bond_cutoff: float = 2.5
    metallic_max_anions: int = 1
    metallic_min_li: int = 4
    electrolyte_min_thiophosphate: int = 1

    def __post_init__(self) -> None:
        for name in ('li_li_cutoff', 'li_s_cutoff', 'li_p_cutoff', 'li_cl_cutoff', 'p_s_bond_cutoff'):
            if not getattr(self, name) > 0:
                raise ValueError(f'{name} must be positive, got {getattr(self, name)}')
        if self.metallic_max_anions < 0 or self.metallic_min_li < 0:
            raise ValueError('metallic_max_anions and metallic_min_li must be >= 0')
        if self.electrolyte_min_thiophosphate < 1:
            raise ValueError('electrolyte_min_thiophosphate must be >= 1')

    @property
    def max_cutoff(self) -> float:
        """Largest cut-off (Å): the radius of the one neighbour list a frame needs."""
        return max(
            self.li_li_cutoff, self.li_s_cutoff, self.li_p_cutoff, self.li_cl_cutoff, self.p_s_bond_cutoff
        )

    def as_dict(self) -> dict[str, Any]:
        """JSON-serialisable copy of the parameters."""
        return asdict(self)


@dataclass(frozen=True)
class NeighbourPairs:
    """Full (both directions) periodic neighbour list: atom ``i`` sees atom ``j`` at ``distance`` (Å)."""

    i: np.ndarray
    j: np.ndarray
    distance: np.ndarray
    cutoff: float


def neighbour_pairs(positions: np.ndarray, cell: np.ndarray, cutoff: float) -> NeighbourPairs:
    """All pairs closer than ``cutoff`` (Å), with periodic images, listed in both directions.

    :param positions: (N, 3) Cartesian positions (Å), wrapped or not.
    :param cell: (3, 3) lattice vectors as rows (Å).
    """
    positions = np.ascontiguousarray(positions, dtype=float)
    cell = np.ascontiguousarray(cell, dtype=float)
    if len(positions) < 2:
        empty = np.zeros(0, dtype=np.int64)
        return NeighbourPairs(empty, empty, np.zeros(0), cutoff)
    i, j, d = NeighborList(cutoff=cutoff, full_list=True).compute(positions, cell, True, 'ijd')
    return NeighbourPairs(i.astype(np.int64), j.astype(np.int64), np.asarray(d, dtype=float), cutoff)


@dataclass(frozen=True)
class Coordination:
    """Neighbour counts of every atom (zero for atoms that are not Li, except the bonding flags).

    ``n_li``, ``n_sulfide``, ``n_thiophosphate_s``, ``n_phosphide``, ``n_thiophosphate_p`` and
    ``n_cl`` count neighbours of each Li within the cut-offs; ``bonded_s`` / ``bonded_p`` flag the S
    and P atoms that belong to a PS4 unit (a P-S pair closer than ``p_s_bond_cutoff``).
    """

    n_li: np.ndarray
    n_sulfide: np.ndarray
    n_thiophosphate_s: np.ndarray
    n_phosphide: np.ndarray
    n_thiophosphate_p: np.ndarray
    n_cl: np.ndarray
    bonded_s: np.ndarray
    bonded_p: np.ndarray

    @property
    def n_anions(self) -> np.ndarray:
        """Number of anion neighbours (S, P, Cl of any kind) of each Li."""
        return self.n_sulfide + self.n_thiophosphate_s + self.n_phosphide + self.n_thiophosphate_p + self.n_cl


def _species_codes(species: np.ndarray) -> np.ndarray:
    """0 = Li, 1 = S, 2 = P, 3 = Cl, 4 = anything else."""
    species = np.asarray(species)
    codes = np.full(len(species), 4, dtype=np.int8)
    for code, name in enumerate(('Li', *ANION_SPECIES)):
        codes[species == name] = code
    return codes


def coordination(
    species: np.ndarray,
    pairs: NeighbourPairs,
    params: EnvironmentParameters | None = None,
) -> Coordination:
    """Neighbour counts of the Li atoms from a full neighbour list (``pairs.cutoff >= params.max_cutoff``).

    :param species: (N,) chemical symbols.
    :param pairs: output of :func:`neighbour_pairs` for the same atoms.
    """
    params = params or EnvironmentParameters()
    if pairs.cutoff < params.max_cutoff - 1e-12:
        raise ValueError(
            f'neighbour list cut-off {pairs.cutoff} Å is below the largest one {params.max_cutoff} Å'
        )
    codes = _species_codes(species)
    n = len(codes)
    ci, cj = codes[pairs.i], codes[pairs.j]
    d = pairs.distance

    ps_bond = (ci == 2) & (cj == 1) & (d < params.p_s_bond_cutoff)
    bonded_s = np.zeros(n, dtype=bool)
    bonded_p = np.zeros(n, dtype=bool)
    bonded_s[pairs.j[ps_bond]] = True
    bonded_p[pairs.i[ps_bond]] = True

    centre_li = ci == 0

    def count(mask: np.ndarray) -> np.ndarray:
        return np.bincount(pairs.i[centre_li & mask], minlength=n).astype(np.int64)

    bonded_j_s, bonded_j_p = bonded_s[pairs.j], bonded_p[pairs.j]
    is_s = (cj == 1) & (d < params.li_s_cutoff)
    is_p = (cj == 2) & (d < params.li_p_cutoff)
    return Coordination(
        n_li=count((cj == 0) & (d < params.li_li_cutoff)),
        n_sulfide=count(is_s & ~bonded_j_s),
        n_thiophosphate_s=count(is_s & bonded_j_s),
        n_phosphide=count(is_p & ~bonded_j_p),
        n_thiophosphate_p=count(is_p & bonded_j_p),
        n_cl=count((cj == 3) & (d < params.li_cl_cutoff)),
        bonded_s=bonded_s,
        bonded_p=bonded_p,
    )


def classify_li(
    species: np.ndarray, coord: Coordination, params: EnvironmentParameters | None = None
) -> np.ndarray:
    """Class code (:class:`LiClass`) of every atom: the rules of the module docstring; ``-1`` if not Li."""
    params = params or EnvironmentParameters()
    is_li = np.asarray(species) == 'Li'
    # Vote columns in tie-break order: argmax returns the first maximum.
    votes = np.stack([coord.n_sulfide, coord.n_phosphide, coord.n_cl], axis=1)
    vote_classes = np.array([LiClass.LI2S, LiClass.LI3P, LiClass.LICL])
    classes = vote_classes[np.argmax(votes, axis=1)]
    thiophosphate = coord.n_thiophosphate_s + coord.n_thiophosphate_p
    classes[thiophosphate >= params.electrolyte_min_thiophosphate] = LiClass.ELECTROLYTE
    n_anions = votes.sum(axis=1) + thiophosphate
    classes[n_anions == 0] = LiClass.OTHER
    metallic = (n_anions <= params.metallic_max_anions) & (coord.n_li >= params.metallic_min_li)
    classes[metallic] = LiClass.METALLIC
    classes[~is_li] = LiClass.NOT_LI
    return classes.astype(np.int8)


def class_counts(classes: np.ndarray, mask: np.ndarray | None = None) -> dict[str, int]:
    """Number of Li atoms of each class (names of :data:`LI_CLASSES`), optionally within ``mask``."""
    selected = classes if mask is None else classes[mask]
    counts = np.bincount(selected[selected >= 0], minlength=len(LI_CLASSES))
    return {name: int(c) for name, c in zip(LI_CLASSES, counts, strict=True)}
