"""The coordination-number CV of the moving-restraint MD and its bias (no AiiDA imports).

The CV of the paper (§2.2, SI §4, Table S1) is a weighted sum of PLUMED ``COORDINATION`` values

.. math:: s = \\frac{1}{n} \\sum_t w_t \\, \\mathrm{CN}_t, \\qquad
          \\mathrm{CN}_t = \\sum_{i \\in A_t} \\sum_{j \\in B_t, j \\ne i} \\sigma_t(r_{ij})

with ``w = +1`` for Li-Li and ``-1`` for Li-S, Li-P and Li-Cl, and ``n`` an explicit normalisation
(default: the number of Li in group A). ``sigma`` is PLUMED's ``RATIONAL`` switching function
``(1 - (r/R0)^NN) / (1 - (r/R0)^MM)``, cut at ``D_MAX`` and stretched so that it reaches 0 there
(PLUMED's default): ``sigma = (raw(r) - raw(D_MAX)) / (raw(0) - raw(D_MAX))`` for ``r < D_MAX``.

Overlapping groups follow PLUMED's convention (checked against the PLUMED kernel in the tests):
the sum runs over *ordered* pairs ``(i in A, j in B)`` with ``i != j``, so a pair with both atoms
in ``A ∩ B`` is counted twice, once from each side.

Distances use the minimum image of the periodic cell (rows of ``cell`` are lattice vectors, Å).

* :func:`evaluate_cv` — NumPy reference (CV, per-term CNs, gradient).
* :class:`FastCoordinationCV` — the same numbers from a numba kernel on a Verlet list.
* :func:`restraint_bias` and :class:`RestraintWork` — PLUMED's ``MOVINGRESTRAINT``.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numba
import numpy as np

__all__ = (
    'DEFAULT_S0_DELTA',
    'PAPER_KAPPA',
    'PAPER_R0',
    'PAPER_STEPS',
    'PAPER_WEIGHTS',
    'CVResult',
    'CoordinationCV',
    'CoordinationTerm',
    'FastCoordinationCV',
    'MovingRestraint',
    'RestraintWork',
    'build_paper_cv',
    'default_moving_restraint',
    'evaluate_cv',
    'minimum_image',
    'restraint_bias',
    'switching_function',
)

#: R0 (Å) of the rational switching function per pair (SI Table S1; NN = 6, MM = 12).
PAPER_R0: dict[str, float] = {'Li-Li': 3.2, 'Li-S': 3.0, 'Li-P': 4.0, 'Li-Cl': 4.0}
#: Sign of each coordination number in the CV (Li-Li coordination up, Li-anion coordination down).
PAPER_WEIGHTS: dict[str, float] = {'Li-Li': 1.0, 'Li-S': -1.0, 'Li-P': -1.0, 'Li-Cl': -1.0}
#: κ of the SI (eV); with the default normalisation, in eV per (CV unit)².
PAPER_KAPPA = 500.0
#: MD steps of the paper's run (150 ps at 1 fs).
PAPER_STEPS = 150_000
#: Default travel of s0 (normalised CV units; not given by the paper): about the CV change when 4 %
#: of the electrolyte Li move from the argyrodite environment (per-Li CV -2.83 at D_MAX = 10 Å) to a
#: bcc-Li-like one (per-atom Li-Li coordination 9.51): 0.04 x (9.51 + 2.83) ≈ 0.5. See docs/restraint.md.
DEFAULT_S0_DELTA = 0.5
#: Electrolyte region label of the partner species of each anion term.
_ANION_GROUPS = {'Li-S': 'electrolyte_S', 'Li-P': 'electrolyte_P', 'Li-Cl': 'electrolyte_Cl'}
_LABEL = re.compile(r'^[A-Za-z0-9]+(-[A-Za-z0-9]+)*$')
#: Below this |r/R0 - 1| the general rational function uses its limit (as PLUMED does).
_RATIONAL_EPS = 1.0e-10


# --------------------------------------------------------------------------------------------------
# Definitions
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class CoordinationTerm:
    """One PLUMED ``COORDINATION`` between groups A and B (0-based atom indices, lengths in Å)."""

    label: str
    weight: float
    group_a: np.ndarray
    group_b: np.ndarray
    r_0: float
    d_max: float
    nn: int = 6
    mm: int = 12

    def __post_init__(self) -> None:
        if not _LABEL.match(self.label):
            raise ValueError(f'term label {self.label!r} must be letters/digits joined by "-" (e.g. "Li-S")')
        for name in ('group_a', 'group_b'):
            group = np.asarray(getattr(self, name))
            if group.ndim != 1 or group.size == 0:
                raise ValueError(f'{self.label}: {name} must be a non-empty 1-D index array')
            if not np.issubdtype(group.dtype, np.integer):
                raise ValueError(f'{self.label}: {name} must hold integer atom indices')
            if group.min() < 0:
                raise ValueError(f'{self.label}: {name} holds negative indices')
            if np.unique(group).size != group.size:
                raise ValueError(f'{self.label}: {name} holds duplicate indices')
            object.__setattr__(self, name, np.array(group, dtype=np.int64))
        if not (np.isfinite(self.weight) and self.weight != 0.0):
            raise ValueError(f'{self.label}: weight must be finite and non-zero')
        if not self.r_0 > 0.0:
            raise ValueError(f'{self.label}: r_0 must be positive (Å)')
        if not self.d_max > self.r_0:
            raise ValueError(f'{self.label}: d_max ({self.d_max} Å) must exceed r_0 ({self.r_0} Å)')
        if not (isinstance(self.nn, int | np.integer) and isinstance(self.mm, int | np.integer)):
            raise ValueError(f'{self.label}: nn and mm must be integers')
        if not 0 < self.nn < self.mm:
            raise ValueError(f'{self.label}: need 0 < nn < mm, got nn={self.nn}, mm={self.mm}')

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, CoordinationTerm):
            return NotImplemented
        return (
            (self.label, self.weight, self.r_0, self.d_max, self.nn, self.mm)
            == (other.label, other.weight, other.r_0, other.d_max, other.nn, other.mm)
            and np.array_equal(self.group_a, other.group_a)
            and np.array_equal(self.group_b, other.group_b)
        )

    __hash__ = None  # type: ignore[assignment]

    @property
    def n_pairs(self) -> int:
        """Number of ordered pairs ``(i in A, j in B, i != j)`` summed over (PLUMED's convention)."""
        overlap = np.intersect1d(self.group_a, self.group_b).size
        return self.group_a.size * self.group_b.size - overlap


@dataclass(frozen=True)
class CoordinationCV:
    """``CV = Σ weight·CN / normalisation`` over the terms (1.0 = the raw weighted pair sum)."""

    terms: tuple[CoordinationTerm, ...]
    normalisation: float = 1.0

    def __post_init__(self) -> None:
        object.__setattr__(self, 'terms', tuple(self.terms))
        if not self.terms:
            raise ValueError('a CV needs at least one coordination term')
        labels = [t.label for t in self.terms]
        if len(set(labels)) != len(labels):
            raise ValueError(f'term labels must be unique, got {labels}')
        if not (np.isfinite(self.normalisation) and self.normalisation > 0.0):
            raise ValueError(f'normalisation must be a positive number, got {self.normalisation}')

    @property
    def max_index(self) -> int:
        """Largest 0-based atom index used by any term."""
        return int(max(max(t.group_a.max(), t.group_b.max()) for t in self.terms))

    @property
    def d_max(self) -> float:
        """Largest cut-off (Å) of the terms."""
        return max(t.d_max for t in self.terms)


@dataclass(frozen=True)
class MovingRestraint:
    """PLUMED ``MOVINGRESTRAINT`` with one segment: bias ``½ κ (s - s0(step))²``.

    ``kappa`` in eV per CV unit²; ``s0`` equals ``at_start`` up to ``step_start``, moves linearly
    in the MD step to ``at_end`` at ``step_end`` and stays there.
    """

    kappa: float
    at_start: float
    at_end: float
    step_start: int
    step_end: int

    def __post_init__(self) -> None:
        if not (np.isfinite(self.kappa) and self.kappa >= 0.0):
            raise ValueError(f'kappa must be a non-negative number (eV), got {self.kappa}')
        if not (np.isfinite(self.at_start) and np.isfinite(self.at_end)):
            raise ValueError('at_start and at_end must be finite')
        if int(self.step_start) != self.step_start or int(self.step_end) != self.step_end:
            raise ValueError('step_start and step_end must be integers')
        if not 0 <= self.step_start <= self.step_end:
            raise ValueError(f'need 0 <= step_start <= step_end, got {self.step_start}, {self.step_end}')

    def s0(self, step: int) -> float:
        """Centre of the restraint at MD ``step`` (PLUMED's interpolation, bit for bit)."""
        if step <= self.step_start:
            return float(self.at_start)
        if step >= self.step_end:
            return float(self.at_end)
        c2 = (step - self.step_start) / float(self.step_end - self.step_start)
        c1 = 1.0 - c2
        return c1 * self.at_start + c2 * (self.at_start + (self.at_end - self.at_start))


@dataclass
class CVResult:
    """Value of the CV, raw CN of each term (by label), ``∂CV/∂positions`` (Nx3, 1/Å).

    ``strain_derivative`` is ``∂CV/∂ε`` (3x3, dimensionless) under a homogeneous strain of cell and
    positions, ``Σ_pairs d ⊗ ∂CV/∂d`` over minimum-image pair vectors ``d``. The bias virial in
    LAMMPS's convention (``W = Σ r ⊗ F``, eV) is ``-dbias/ds · strain_derivative``.
    """

    value: float
    components: dict[str, float]
    gradient: np.ndarray
    strain_derivative: np.ndarray | None = None


def restraint_bias(restraint: MovingRestraint, value: float, step: int) -> tuple[float, float, float]:
    """Return ``(bias (eV), dbias/ds (eV per CV unit), s0)`` of ``restraint`` at ``value``, MD ``step``.

    Forces on atoms are ``-dbias/ds · ∇s`` (eV/Å with ``∇s`` from :class:`CVResult`, 1/Å).
    """
    s0 = restraint.s0(step)
    delta = value - s0
    return 0.5 * restraint.kappa * delta * delta, restraint.kappa * delta, s0


@dataclass
class RestraintWork:
    """Accumulates PLUMED's ``work`` component of ``MOVINGRESTRAINT`` (eV), one call per MD step.

    ``work += ½ (f_old + f) (s0 - s0_old)`` with ``f = -κ (s - s0)``; it starts at 0 on the first
    call at or before ``step_start`` (as PLUMED does).
    """

    restraint: MovingRestraint
    work: float = 0.0
    _old_force: float = field(default=0.0, repr=False)
    _old_s0: float | None = field(default=None, repr=False)

    def update(self, value: float, step: int) -> float:
        """Add the work of the step that ends at ``step`` with CV ``value``; return the total (eV)."""
        _, dbias, s0 = restraint_bias(self.restraint, value, step)
        force = -dbias
        if step <= self.restraint.step_start:
            self._old_s0 = s0
        if self._old_s0 is not None:
            self.work += 0.5 * (self._old_force + force) * (s0 - self._old_s0)
        self._old_force, self._old_s0 = force, s0
        return self.work


def default_moving_restraint(
    at_start: float,
    *,
    delta: float = DEFAULT_S0_DELTA,
    kappa: float = PAPER_KAPPA,
    step_start: int = 0,
    step_end: int = PAPER_STEPS,
) -> MovingRestraint:
    """The documented default schedule: s0 from ``at_start`` (the CV of the starting frame, computed
    with exactly the run's definition) to ``at_start + delta`` over ``step_start..step_end``.

    The paper gives neither end of s0; ``delta`` is an explicit input (normalised CV units).
    """
    return MovingRestraint(
        float(kappa), float(at_start), float(at_start) + float(delta), step_start, step_end
    )


# --------------------------------------------------------------------------------------------------
# The paper's CV
# --------------------------------------------------------------------------------------------------


def build_paper_cv(
    groups: Sequence[str],
    layers: Sequence[int],
    *,
    d_max: float = 10.0,
    normalisation: str | float = 'group_a',
    anode_layers: int = 8,
    r_0: Mapping[str, float] | None = None,
) -> CoordinationCV:
    """The paper's CV ``CN(Li-Li) - CN(Li-S) - CN(Li-P) - CN(Li-Cl)`` on a grouped structure.

    Group A of every term: the electrolyte Li. Group B: for Li-Li the electrolyte Li plus the
    ``anode_Li`` atoms of layers ``1..anode_layers`` (1 = touching the electrolyte); for the anions
    the electrolyte S, P, Cl. ``source_Li`` and ``bulk_Li`` atoms take no part.

    :param groups: region label per atom (``aiida_lisei.data.structure.REGION_GROUPS``).
    :param layers: layer index per atom (0 = not layered).
    :param d_max: cut-off (Å) of every switching function; part of the CV's definition.
    :param normalisation: ``'group_a'`` (divide by the number of electrolyte Li, the stable default),
        ``'none'`` (raw pair sum) or a positive number.
    :param anode_layers: number of anode layers counted in group B of Li-Li (paper: 8).
    :param r_0: R0 (Å) per term label, overriding :data:`PAPER_R0`.
    """
    groups_arr = np.asarray(groups)
    layers_arr = np.asarray(layers, dtype=np.int64)
    if groups_arr.shape != layers_arr.shape or groups_arr.ndim != 1:
        raise ValueError('groups and layers must be 1-D sequences of the same length')
    radii = dict(PAPER_R0)
    if r_0 is not None:
        unknown = sorted(set(r_0) - set(PAPER_R0))
        if unknown:
            raise ValueError(f'unknown r_0 terms {unknown}; allowed: {sorted(PAPER_R0)}')
        radii.update({k: float(v) for k, v in r_0.items()})
    if int(anode_layers) != anode_layers or anode_layers < 0:
        raise ValueError(f'anode_layers must be a non-negative integer, got {anode_layers}')

    li_a = np.flatnonzero(groups_arr == 'electrolyte_Li')
    if li_a.size == 0:
        raise ValueError('the structure has no electrolyte_Li atoms: group A of the CV is empty')
    is_anode = groups_arr == 'anode_Li'
    if anode_layers:
        present = set(layers_arr[is_anode].tolist())
        missing = sorted(set(range(1, anode_layers + 1)) - present)
        if missing:
            raise ValueError(f'anode layers {missing} missing: cannot count the top {anode_layers} layers')
    anode = np.flatnonzero(is_anode & (layers_arr >= 1) & (layers_arr <= anode_layers))
    partners = {'Li-Li': np.sort(np.concatenate([li_a, anode]))}
    for label, group in _ANION_GROUPS.items():
        partners[label] = np.flatnonzero(groups_arr == group)
        if partners[label].size == 0:
            raise ValueError(f'the structure has no {group} atoms: group B of {label} is empty')

    if isinstance(normalisation, str):
        if normalisation == 'group_a':
            norm = float(li_a.size)
        elif normalisation == 'none':
            norm = 1.0
        else:
            raise ValueError(f"normalisation must be 'group_a', 'none' or a number, got {normalisation!r}")
    else:
        norm = float(normalisation)
    terms = tuple(
        CoordinationTerm(label, PAPER_WEIGHTS[label], li_a, partners[label], radii[label], float(d_max))
        for label in PAPER_R0
    )
    return CoordinationCV(terms, norm)


# --------------------------------------------------------------------------------------------------
# NumPy reference
# --------------------------------------------------------------------------------------------------


def switching_function(r: np.ndarray, r_0: float, d_max: float, nn: int = 6, mm: int = 12) -> tuple:
    """PLUMED's stretched ``RATIONAL`` switching function: ``(sigma, dsigma/dr)`` at distances ``r`` (Å)."""
    r = np.asarray(r, dtype=float)
    raw, draw = _rational(r / r_0, nn, mm)
    raw_max, _ = _rational(np.array(d_max / r_0), nn, mm)
    stretch = 1.0 / (1.0 - raw_max)
    inside = r < d_max
    sigma = np.where(inside, (raw - raw_max) * stretch, 0.0)
    dsigma = np.where(inside, draw * stretch / r_0, 0.0)
    return sigma, dsigma


def _rational(x: np.ndarray, nn: int, mm: int) -> tuple[np.ndarray, np.ndarray]:
    """``(1 - x^nn)/(1 - x^mm)`` and its derivative in ``x``."""
    if mm == 2 * nn:
        xn1 = x ** (nn - 1)
        den = 1.0 + xn1 * x
        return 1.0 / den, -nn * xn1 / (den * den)
    near = np.abs(x - 1.0) < _RATIONAL_EPS
    xs = np.where(near, 0.5, x)
    num, den = 1.0 - xs**nn, 1.0 - xs**mm
    val = num / den
    dval = (-nn * xs ** (nn - 1) * den + mm * xs ** (mm - 1) * num) / (den * den)
    val = np.where(near, nn / mm, val)
    dval = np.where(near, 0.5 * nn * (nn - mm) / mm, dval)
    return val, dval


def _cell_arrays(cell: np.ndarray) -> tuple[np.ndarray, np.ndarray, bool]:
    """``(H, H⁻¹, orthorhombic)`` of a 3x3 cell (rows = lattice vectors, Å)."""
    h = np.asarray(cell, dtype=float)
    if h.shape != (3, 3):
        raise ValueError(f'cell must be 3x3 (rows = lattice vectors), got shape {h.shape}')
    if abs(np.linalg.det(h)) < 1e-12:
        raise ValueError('cell is singular: the CV needs a fully periodic cell')
    orthorhombic = bool(np.all(np.abs(h - np.diag(np.diag(h))) < 1e-12))
    return h, np.linalg.inv(h), orthorhombic


def minimum_image(d: np.ndarray, cell: np.ndarray) -> np.ndarray:
    """Minimum-image copies of the vectors ``d`` (…x3, Å) in ``cell`` (rows = lattice vectors).

    Orthorhombic cells: rounding of fractional components. Other cells: rounding, then the shortest
    of the 27 neighbouring images (exact for reduced cells, as PLUMED's general-cell search).
    """
    h, hinv, orthorhombic = _cell_arrays(cell)
    frac = d @ hinv
    frac -= np.round(frac)
    out = frac @ h
    if orthorhombic:
        return out
    shifts = np.array([[i, j, k] for i in (-1, 0, 1) for j in (-1, 0, 1) for k in (-1, 0, 1)], float) @ h
    candidates = out[..., None, :] + shifts
    best = np.argmin(np.einsum('...ij,...ij->...i', candidates, candidates), axis=-1)
    return np.take_along_axis(candidates, best[..., None, None], axis=-2)[..., 0, :]


def evaluate_cv(cv: CoordinationCV, positions: np.ndarray, cell: np.ndarray) -> CVResult:
    """NumPy reference: the CV, the raw CN of each term and ``∂CV/∂positions`` (1/Å).

    :param positions: Nx3 Cartesian positions (Å), wrapped or not.
    :param cell: 3x3 cell, rows = lattice vectors (Å).
    """
    pos = _check_positions(cv, positions)
    gradient = np.zeros_like(pos)
    strain = np.zeros((3, 3))
    components: dict[str, float] = {}
    value = 0.0
    for term in cv.terms:
        coeff = term.weight / cv.normalisation
        b = term.group_b
        chunk = max(1, 2_000_000 // b.size)
        total = 0.0
        for start in range(0, term.group_a.size, chunk):
            a = term.group_a[start : start + chunk]
            d = minimum_image(pos[b][None, :, :] - pos[a][:, None, :], cell)  # x_j - x_i
            r = np.sqrt(np.einsum('ijk,ijk->ij', d, d))
            same = a[:, None] == b[None, :]
            r = np.where(same, 2.0 * term.d_max, r)  # i == j: outside the cut-off
            sigma, dsigma = switching_function(r, term.r_0, term.d_max, term.nn, term.mm)
            total += float(sigma.sum())
            g = np.where(same, 0.0, dsigma / np.where(same, 1.0, r))[..., None] * d  # ∂sigma/∂x_j
            np.add.at(gradient, b, coeff * g.sum(axis=0))
            np.add.at(gradient, a, -coeff * g.sum(axis=1))
            strain += coeff * np.einsum('ija,ijb->ab', d, g)
        components[term.label] = total
        value += coeff * total
    return CVResult(value, components, gradient, strain)


def _check_positions(cv: CoordinationCV, positions: np.ndarray) -> np.ndarray:
    pos = np.ascontiguousarray(positions, dtype=np.float64)
    if pos.ndim != 2 or pos.shape[1] != 3:
        raise ValueError(f'positions must be Nx3, got shape {pos.shape}')
    if cv.max_index >= len(pos):
        raise ValueError(f'the CV uses atom index {cv.max_index} but only {len(pos)} positions were given')
    return pos


# --------------------------------------------------------------------------------------------------
# Fast route: numba kernel on a Verlet list
# --------------------------------------------------------------------------------------------------


@numba.njit(cache=True, inline='always')
def _mic(dx: float, dy: float, dz: float, h: np.ndarray, hinv: np.ndarray, ortho: bool) -> tuple:
    """Minimum image of one vector (Å); see :func:`minimum_image`.

    ``np.floor`` (a float) rather than ``math.floor`` (an int in numba); the same values.
    """
    if ortho:
        x = dx - h[0, 0] * np.floor(dx * hinv[0, 0] + 0.5)
        y = dy - h[1, 1] * np.floor(dy * hinv[1, 1] + 0.5)
        z = dz - h[2, 2] * np.floor(dz * hinv[2, 2] + 0.5)
        return x, y, z
    fx = dx * hinv[0, 0] + dy * hinv[1, 0] + dz * hinv[2, 0]
    fy = dx * hinv[0, 1] + dy * hinv[1, 1] + dz * hinv[2, 1]
    fz = dx * hinv[0, 2] + dy * hinv[1, 2] + dz * hinv[2, 2]
    fx -= np.floor(fx + 0.5)
    fy -= np.floor(fy + 0.5)
    fz -= np.floor(fz + 0.5)
    x = fx * h[0, 0] + fy * h[1, 0] + fz * h[2, 0]
    y = fx * h[0, 1] + fy * h[1, 1] + fz * h[2, 1]
    z = fx * h[0, 2] + fy * h[1, 2] + fz * h[2, 2]
    bx, by, bz = x, y, z
    best = x * x + y * y + z * z
    for i in range(-1, 2):
        for j in range(-1, 2):
            for k in range(-1, 2):
                cx = x + i * h[0, 0] + j * h[1, 0] + k * h[2, 0]
                cy = y + i * h[0, 1] + j * h[1, 1] + k * h[2, 1]
                cz = z + i * h[0, 2] + j * h[1, 2] + k * h[2, 2]
                r2 = cx * cx + cy * cy + cz * cz
                if r2 < best:
                    best, bx, by, bz = r2, cx, cy, cz
    return bx, by, bz


@numba.njit(cache=True, inline='always')
def _ipow(x: float, n: int) -> float:
    """``x**n`` for a small positive integer ``n`` by repeated multiplication."""
    result = x
    for _ in range(n - 1):
        result *= x
    return result


@numba.njit(cache=True)
def _build_pairs(pos, group_a, group_b, in_both, cutoff2, h, hinv, ortho):
    """Pairs ``(i in A, j in B, i != j)`` with minimum-image distance² < ``cutoff2``.

    A pair with both atoms in ``A ∩ B`` is stored once (``i < j``) with multiplicity 2.
    """
    cap = 1024
    first = np.empty(cap, np.int64)
    second = np.empty(cap, np.int64)
    mult = np.empty(cap, np.float64)
    n = 0
    for ia in range(group_a.size):
        i = group_a[ia]
        for jb in range(group_b.size):
            j = group_b[jb]
            if i == j:
                continue
            both = in_both[i] and in_both[j]
            if both and j < i:
                continue
            dx, dy, dz = _mic(
                pos[j, 0] - pos[i, 0], pos[j, 1] - pos[i, 1], pos[j, 2] - pos[i, 2], h, hinv, ortho
            )
            if dx * dx + dy * dy + dz * dz < cutoff2:
                if n == cap:
                    cap *= 2
                    first = np.concatenate((first, np.empty(cap - n, np.int64)))
                    second = np.concatenate((second, np.empty(cap - n, np.int64)))
                    mult = np.concatenate((mult, np.empty(cap - n, np.float64)))
                first[n] = i
                second[n] = j
                mult[n] = 2.0 if both else 1.0
                n += 1
    return first[:n].copy(), second[:n].copy(), mult[:n].copy()


@numba.njit(cache=True, error_model='numpy')
def _kernel(
    pos, first, second, mult, term_of_pair, coeff, r0, dmax2, nn, mm, sig_max, stretch, h, hinv, ortho
):
    """Raw CN per term, gradient (Nx3, 1/Å) and strain derivative of ``Σ_t coeff_t·CN_t`` (listed pairs).

    For ``mm = 2·nn`` with ``nn`` even (the paper's 6/12) the switching function is evaluated from
    ``r²`` (no square root, one division); otherwise from ``r`` as in :func:`switching_function`.
    """
    n_terms = coeff.size
    cn = np.zeros(n_terms)
    grad = np.zeros((pos.shape[0], 3))
    inv_r0sq = 1.0 / (r0 * r0)
    fast = np.empty(n_terms, np.bool_)
    for t in range(n_terms):
        fast[t] = mm[t] == 2 * nn[t] and nn[t] % 2 == 0
    s00 = s01 = s02 = s11 = s12 = s22 = 0.0
    # Orthorhombic minimum image inlined with the box hoisted (as in _mic; 2x faster than calling it).
    lx, ly, lz = h[0, 0], h[1, 1], h[2, 2]
    ix, iy, iz = hinv[0, 0], hinv[1, 1], hinv[2, 2]
    for p in range(first.size):
        i = first[p]
        j = second[p]
        t = term_of_pair[p]
        dx, dy, dz = pos[j, 0] - pos[i, 0], pos[j, 1] - pos[i, 1], pos[j, 2] - pos[i, 2]
        if ortho:
            dx -= lx * np.floor(dx * ix + 0.5)
            dy -= ly * np.floor(dy * iy + 0.5)
            dz -= lz * np.floor(dz * iz + 0.5)
        else:
            dx, dy, dz = _mic(dx, dy, dz, h, hinv, ortho)
        r2 = dx * dx + dy * dy + dz * dz
        if r2 >= dmax2[t]:
            continue
        n = nn[t]
        w = mult[p] * stretch[t]
        if fast[t]:
            # sigma = 1/(1 + x^n), x^n = (r²/r0²)^(n/2); (dsigma/dr)/r = -n x^n / (r² (1 + x^n)²)
            xn = _ipow(r2 * inv_r0sq[t], n // 2)
            den = 1.0 + xn
            q = 1.0 / (den * den * r2)
            val = den * r2 * q
            g_over_r = -n * xn * q
        else:
            r = np.sqrt(r2)
            x = r / r0[t]
            m = mm[t]
            if m == 2 * n:
                xn1 = _ipow(x, n - 1)
                den = 1.0 + xn1 * x
                val = 1.0 / den
                dval = -n * xn1 / (den * den)
            elif abs(x - 1.0) < 1.0e-10:
                val = n / m
                dval = 0.5 * n * (n - m) / m
            else:
                xn1 = _ipow(x, n - 1)
                xm1 = _ipow(x, m - 1)
                num = 1.0 - xn1 * x
                den = 1.0 - xm1 * x
                val = num / den
                dval = (-n * xn1 * den + m * xm1 * num) / (den * den)
            g_over_r = dval / (r0[t] * r)
        cn[t] += w * (val - sig_max[t])
        g = coeff[t] * w * g_over_r
        gx, gy, gz = g * dx, g * dy, g * dz
        grad[j, 0] += gx
        grad[j, 1] += gy
        grad[j, 2] += gz
        grad[i, 0] -= gx
        grad[i, 1] -= gy
        grad[i, 2] -= gz
        s00 += gx * dx
        s01 += gx * dy
        s02 += gx * dz
        s11 += gy * dy
        s12 += gy * dz
        s22 += gz * dz
    strain = np.array([[s00, s01, s02], [s01, s11, s12], [s02, s12, s22]])
    return cn, grad, strain


#: Bins per list cut-off along each axis of the cell list of :func:`_cell_list_pairs`.
_BINS_PER_CUTOFF = 2  # measured at 4833 atoms: 2 beats 3-6 (fewer, fuller bins)


@numba.njit(cache=True)
def _cell_list_pairs(pos, atoms, a_mask, b_mask, cut2, cutoff, h, hinv, ortho, capacity):
    """Pairs of every term within its cut-off (``cut2``, Å²), from one cell list over ``atoms``.

    ``atoms`` are the CV's atoms (sorted indices); ``a_mask`` and ``b_mask`` hold per atom of
    ``atoms`` one bit per term (bit ``t`` set: in group A, resp. B, of term ``t``). Per term the pairs
    ``(i in A, j in B, i != j)`` whose minimum-image distance (:func:`_mic`, as in the kernel) is
    below the term's cut-off; a pair with both atoms in ``A ∩ B`` is stored once (``i < j``) with
    multiplicity 2, as :func:`_build_pairs` does.

    Returns the number of pairs ``m`` and arrays ``(first, second, multiplicity, term)`` of length
    ``capacity`` whose first ``m`` entries are the pairs if ``m <= capacity`` (else call again with
    ``capacity = m``: arrays grown inside the loop make numba's reference counting slow it ~5x).
    Compact dtypes (int32, int32, float32, int8: 13 bytes a pair instead of 32, ~3.4 MB at 4833 atoms):
    the kernel streams the whole list every MD step, between DeePMD evaluations (no speed change
    measured in isolation, with warm or flushed caches; less memory for the list).

    The bins are a periodic grid in fractional coordinates, at least ``cutoff / k`` wide
    (perpendicular width, ``k`` = :data:`_BINS_PER_CUTOFF`). The stencil spans ±k bins, or all
    bins of an axis with fewer than ``2k + 1``,
    as distinct offsets of smallest periodic size, so each unordered pair of atoms is met once whatever
    the cell; bins that cannot hold a partner within ``cutoff`` are skipped (gaps summed in
    quadrature for orthorhombic cells, their largest otherwise).
    """
    n_terms = cut2.size
    n = atoms.size
    k = _BINS_PER_CUTOFF
    n_bins = np.empty(3, np.int64)
    lo = np.empty(3, np.int64)
    hi = np.empty(3, np.int64)
    bin_width = np.empty(3)
    margin = cutoff * (1.0 + 1.0e-9)
    for x in range(3):
        width = 1.0 / math.sqrt(hinv[0, x] ** 2 + hinv[1, x] ** 2 + hinv[2, x] ** 2)
        n_bins[x] = max(1, math.floor(k * width / margin))
        bin_width[x] = width / n_bins[x]
        if n_bins[x] >= 2 * k + 1:
            lo[x], hi[x] = -k, k
        else:  # every bin, each at its smallest periodic offset
            lo[x], hi[x] = -((n_bins[x] - 1) // 2), n_bins[x] // 2
    # Stencil: offsets whose bins may hold a partner within the cut-off.
    stencil = np.empty(((hi[0] - lo[0] + 1) * (hi[1] - lo[1] + 1) * (hi[2] - lo[2] + 1), 3), np.int64)
    n_stencil = 0
    for ox in range(lo[0], hi[0] + 1):
        for oy in range(lo[1], hi[1] + 1):
            for oz in range(lo[2], hi[2] + 1):
                gx = max(abs(ox) - 1, 0) * bin_width[0]
                gy = max(abs(oy) - 1, 0) * bin_width[1]
                gz = max(abs(oz) - 1, 0) * bin_width[2]
                gap2 = gx * gx + gy * gy + gz * gz if ortho else max(gx, gy, gz) ** 2
                if gap2 < margin * margin:
                    stencil[n_stencil, 0], stencil[n_stencil, 1], stencil[n_stencil, 2] = ox, oy, oz
                    n_stencil += 1
    # Counting sort of the atoms into bins; positions, indices and masks copied in bin order.
    n_yz = n_bins[1] * n_bins[2]
    bin_xyz = np.empty((n, 3), np.int64)
    start = np.zeros(n_bins[0] * n_yz + 1, np.int64)
    for a in range(n):
        i = atoms[a]
        for x in range(3):
            f = pos[i, 0] * hinv[0, x] + pos[i, 1] * hinv[1, x] + pos[i, 2] * hinv[2, x]
            bin_xyz[a, x] = min(max(math.floor((f - math.floor(f)) * n_bins[x]), 0), n_bins[x] - 1)
        start[bin_xyz[a, 0] * n_yz + bin_xyz[a, 1] * n_bins[2] + bin_xyz[a, 2] + 1] += 1
    for b in range(start.size - 1):
        start[b + 1] += start[b]
    fill = start[:-1].copy()
    index = np.empty(n, np.int64)
    spos = np.empty((n, 3))  # positions as given, for the minimum image of _mic
    wpos = np.empty((n, 3))  # wrapped into the cell, for the image shift of the bins (shifted route)
    sa = np.empty(n, np.int64)
    sb = np.empty(n, np.int64)
    sbin = np.empty((n, 3), np.int64)
    for a in range(n):
        b = bin_xyz[a, 0] * n_yz + bin_xyz[a, 1] * n_bins[2] + bin_xyz[a, 2]
        s = fill[b]
        fill[b] += 1
        i = atoms[a]
        index[s], sa[s], sb[s] = i, a_mask[a], b_mask[a]
        for x in range(3):
            spos[s, x] = pos[i, x]
            sbin[s, x] = bin_xyz[a, x]
        f0 = pos[i, 0] * hinv[0, 0] + pos[i, 1] * hinv[1, 0] + pos[i, 2] * hinv[2, 0]
        f1 = pos[i, 0] * hinv[0, 1] + pos[i, 1] * hinv[1, 1] + pos[i, 2] * hinv[2, 1]
        f2 = pos[i, 0] * hinv[0, 2] + pos[i, 1] * hinv[1, 2] + pos[i, 2] * hinv[2, 2]
        f0, f1, f2 = f0 - math.floor(f0), f1 - math.floor(f1), f2 - math.floor(f2)
        for x in range(3):
            wpos[s, x] = f0 * h[0, x] + f1 * h[1, x] + f2 * h[2, x]
    # Periodic wrap of bin + offset, per axis, as tables (no integer division in the loop).
    wrap_x = np.arange(lo[0], n_bins[0] + hi[0]) % n_bins[0]
    wrap_y = np.arange(lo[1], n_bins[1] + hi[1]) % n_bins[1]
    wrap_z = np.arange(lo[2], n_bins[2] + hi[2]) % n_bins[2]
    # Orthorhombic cell at least 2k + 1 bins (> 2 cut-offs) wide along each axis: the stencil offset
    # that reaches a partner within the cut-off is its minimum image, so the image shift follows
    # from the bin offset (no rounding per pair). Shift per axis and bin + offset, in Å:
    shifted = ortho and n_bins.min() >= 2 * k + 1
    shift_x = np.floor_divide(np.arange(lo[0], n_bins[0] + hi[0]), n_bins[0]) * h[0, 0]
    shift_y = np.floor_divide(np.arange(lo[1], n_bins[1] + hi[1]), n_bins[1]) * h[1, 1]
    shift_z = np.floor_divide(np.arange(lo[2], n_bins[2] + hi[2]), n_bins[2]) * h[2, 2]
    max_cut2 = cut2.max()
    cap = capacity
    first = np.empty(cap, np.int32)
    second = np.empty(cap, np.int32)
    mult = np.empty(cap, np.float32)
    term = np.empty(cap, np.int8)
    m = 0
    for s in range(n):
        if sa[s] == 0:
            continue  # pairs start from an atom of some group A
        i = index[s]
        bx, by, bz = sbin[s, 0] - lo[0], sbin[s, 1] - lo[1], sbin[s, 2] - lo[2]
        for q in range(n_stencil):
            vx, vy, vz = bx + stencil[q, 0], by + stencil[q, 1], bz + stencil[q, 2]
            other = wrap_x[vx] * n_yz + wrap_y[vy] * n_bins[2] + wrap_z[vz]
            sx = wpos[s, 0] - shift_x[vx]
            sy = wpos[s, 1] - shift_y[vy]
            sz = wpos[s, 2] - shift_z[vz]
            for u in range(start[other], start[other + 1]):
                if sa[u] != 0 and u <= s:
                    continue  # itself, or a pair of two A atoms met from the other one
                forward = sa[s] & sb[u]
                backward = sa[u] & sb[s]
                if forward == 0 and backward == 0:
                    continue
                if shifted:
                    dx, dy, dz = wpos[u, 0] - sx, wpos[u, 1] - sy, wpos[u, 2] - sz
                else:
                    dx, dy, dz = _mic(
                        spos[u, 0] - spos[s, 0],
                        spos[u, 1] - spos[s, 1],
                        spos[u, 2] - spos[s, 2],
                        h,
                        hinv,
                        ortho,
                    )
                r2 = dx * dx + dy * dy + dz * dz
                if r2 >= max_cut2:
                    continue
                j = index[u]
                for t in range(n_terms):
                    bit = 1 << t
                    fw = (forward & bit) != 0
                    bw = (backward & bit) != 0
                    if not (fw or bw) or r2 >= cut2[t]:
                        continue
                    if m >= cap:
                        m += 1  # count only: the caller retries with a larger capacity
                        continue
                    term[m] = t
                    if fw and bw:
                        first[m], second[m], mult[m] = min(i, j), max(i, j), 2.0
                    elif fw:
                        first[m], second[m], mult[m] = i, j, 1.0
                    else:
                        first[m], second[m], mult[m] = j, i, 1.0
                    m += 1
    return m, first, second, mult, term


@numba.njit(cache=True)
def _two_largest_moves(pos, atoms, ref, h, hinv, ortho):
    """Sum of the two largest minimum-image displacements (Å) of ``atoms`` from ``ref`` (rows = atoms).

    A pair distance changes by at most the sum of its two atoms' displacements, so this sum, not twice
    the largest displacement, bounds the change of every listed pair (fewer rebuilds when a few hot
    atoms lead).
    """
    first = second = 0.0
    for a in range(atoms.size):
        i = atoms[a]
        dx, dy, dz = _mic(pos[i, 0] - ref[a, 0], pos[i, 1] - ref[a, 1], pos[i, 2] - ref[a, 2], h, hinv, ortho)
        r2 = dx * dx + dy * dy + dz * dz
        if r2 > second:
            if r2 > first:
                first, second = r2, first
            else:
                second = r2
    return math.sqrt(first) + math.sqrt(second)


class FastCoordinationCV:
    """The CV of :func:`evaluate_cv` from a numba kernel on a Verlet list of pairs.

    The list holds the pairs within ``d_max + skin`` (minimum image) and is rebuilt when the two
    largest displacements of the CV's atoms since the last build sum to more than ``skin`` (periodic
    wrapping does not count as motion), with the cell's strain added, i.e. as soon as an unlisted pair
    could have come within ``d_max``. The kernel applies the minimum image itself, so re-wrapped
    positions (LAMMPS) need no rebuild.

    :param cv: the CV definition.
    :param n_atoms: number of atoms in every ``positions`` array passed later.
    :param skin: Verlet skin (Å).
    :param pair_builder: ``'cells'`` (one compiled cell-list pass over the CV's atoms, O(N)),
        ``'brute'`` (numba loop over all A x B pairs, a reference) or ``'auto'`` (``'cells'``).
        Both give the same list.
    """

    def __init__(
        self, cv: CoordinationCV, n_atoms: int, skin: float = 1.0, *, pair_builder: str = 'auto'
    ) -> None:
        if pair_builder not in ('auto', 'cells', 'brute'):
            raise ValueError(f"pair_builder must be 'auto', 'cells' or 'brute', got {pair_builder!r}")
        self.pair_builder = 'cells' if pair_builder == 'auto' else pair_builder
        if cv.max_index >= n_atoms:
            raise ValueError(f'the CV uses atom index {cv.max_index} but n_atoms is {n_atoms}')
        if not skin > 0.0:
            raise ValueError(f'skin must be positive (Å), got {skin}')
        self.cv, self.n_atoms, self.skin = cv, int(n_atoms), float(skin)
        self.n_builds = 0
        terms = cv.terms
        self._r0 = np.array([t.r_0 for t in terms])
        self._dmax2 = np.array([t.d_max**2 for t in terms])
        self._nn = np.array([t.nn for t in terms], dtype=np.int64)
        self._mm = np.array([t.mm for t in terms], dtype=np.int64)
        sig_max = np.array([_rational(np.array(t.d_max / t.r_0), t.nn, t.mm)[0] for t in terms], dtype=float)
        self._sig_max = sig_max
        self._stretch = 1.0 / (1.0 - sig_max)
        self._coeff = np.array([t.weight / cv.normalisation for t in terms])
        self._cut2 = np.array([(t.d_max + self.skin) ** 2 for t in terms])
        self._cv_atoms = np.unique(np.concatenate([np.concatenate([t.group_a, t.group_b]) for t in terms]))
        if len(terms) > 62:
            raise ValueError(f'the fast CV handles at most 62 terms, got {len(terms)}')
        # Per CV atom, bit t set: the atom is in group A (resp. B) of term t.
        bits = np.left_shift(1, np.arange(len(terms), dtype=np.int64))
        self._a_mask = sum(
            bit * np.isin(self._cv_atoms, t.group_a) for bit, t in zip(bits, terms, strict=True)
        )
        self._b_mask = sum(
            bit * np.isin(self._cv_atoms, t.group_b) for bit, t in zip(bits, terms, strict=True)
        )
        self._ref_pos: np.ndarray | None = None  # positions of the CV's atoms at the last build
        self._ref_cell: np.ndarray | None = None
        self._pairs: tuple[np.ndarray, ...] = ()

    @property
    def n_pairs(self) -> int:
        """Number of stored pairs in the current Verlet list."""
        return int(self._pairs[0].size) if self._pairs else 0

    def _needs_rebuild(self, pos: np.ndarray, h: np.ndarray, hinv: np.ndarray, ortho: bool) -> bool:
        if self._ref_pos is None:
            return True
        # A listed pair distance d0 (< d_max + skin) changes by ≤ moved_i + moved_j + (d_max + skin)·‖H0⁻¹ΔH‖.
        if np.array_equal(h, self._ref_cell):
            strain = 0.0
        else:
            strain = np.linalg.norm(np.linalg.solve(self._ref_cell, h) - np.eye(3), ord=2)
        moved = _two_largest_moves(pos, self._cv_atoms, self._ref_pos, h, hinv, ortho)
        return moved + (self.cv.d_max + self.skin) * strain > self.skin

    def _build(self, pos: np.ndarray, h: np.ndarray, hinv: np.ndarray, ortho: bool) -> None:
        if self.pair_builder == 'cells':
            capacity = int(1.2 * self.n_pairs) + 1024
            cutoff = self.cv.d_max + self.skin
            args = (pos, self._cv_atoms, self._a_mask, self._b_mask, self._cut2, cutoff, h, hinv, ortho)
            n, *pairs = _cell_list_pairs(*args, capacity)
            if n > capacity:
                n, *pairs = _cell_list_pairs(*args, n)
            self._pairs = tuple(x[:n] for x in pairs)
        else:
            self._pairs = self._build_brute(pos, h, hinv, ortho)
        self._ref_pos, self._ref_cell = pos[self._cv_atoms], h.copy()
        self.n_builds += 1

    def _build_brute(self, pos: np.ndarray, h: np.ndarray, hinv: np.ndarray, ortho: bool) -> tuple:
        """``(first, second, multiplicity, term)`` from the numba loop over all A x B pairs of each term."""
        lists = []
        for t, term in enumerate(self.cv.terms):
            in_both = np.zeros(self.n_atoms, dtype=np.bool_)
            in_both[np.intersect1d(term.group_a, term.group_b)] = True
            first, second, mult = _build_pairs(
                pos, term.group_a, term.group_b, in_both, self._cut2[t], h, hinv, ortho
            )
            lists.append((first, second, mult, np.full(first.size, t)))
        dtypes = (np.int32, np.int32, np.float32, np.int8)  # as _cell_list_pairs
        return tuple(
            np.concatenate(x).astype(d) for x, d in zip(zip(*lists, strict=True), dtypes, strict=True)
        )

    def __call__(self, positions: np.ndarray, cell: np.ndarray) -> CVResult:
        """CV, raw CNs and gradient (1/Å) at ``positions`` (Nx3, Å) in ``cell`` (rows = vectors, Å)."""
        pos = _check_positions(self.cv, positions)
        if len(pos) != self.n_atoms:
            raise ValueError(f'expected {self.n_atoms} positions, got {len(pos)}')
        h, hinv, ortho = _cell_arrays(cell)
        if self._needs_rebuild(pos, h, hinv, ortho):
            self._build(pos, h, hinv, ortho)
        first, second, mult, term_of_pair = self._pairs
        cn, gradient, strain = _kernel(
            pos, first, second, mult, term_of_pair, self._coeff, self._r0, self._dmax2, self._nn, self._mm,
            self._sig_max, self._stretch, h, hinv, ortho,
        )  # fmt: skip
        value = float(np.dot(self._coeff, cn))
        components = {term.label: float(c) for term, c in zip(self.cv.terms, cn, strict=True)}
        return CVResult(value, components, gradient, strain)
