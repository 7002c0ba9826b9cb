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

import importlib.util
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
    """Minimum image of one vector (Å); see :func:`minimum_image`."""
    if ortho:
        x = dx - h[0, 0] * math.floor(dx * hinv[0, 0] + 0.5)
        y = dy - h[1, 1] * math.floor(dy * hinv[1, 1] + 0.5)
        z = dz - h[2, 2] * math.floor(dz * hinv[2, 2] + 0.5)
        return x, y, z
    fx = dx * hinv[0, 0] + dy * hinv[1, 0] + dz * hinv[2, 0]
    fy = dx * hinv[0, 1] + dy * hinv[1, 1] + dz * hinv[2, 1]
    fz = dx * hinv[0, 2] + dy * hinv[1, 2] + dz * hinv[2, 2]
    fx -= math.floor(fx + 0.5)
    fy -= math.floor(fy + 0.5)
    fz -= math.floor(fz + 0.5)
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
    """Raw CN per term, gradient (Nx3, 1/Å) and strain derivative of ``Σ_t coeff_t·CN_t`` (listed pairs)."""
    cn = np.zeros(coeff.size)
    grad = np.zeros((pos.shape[0], 3))
    strain = np.zeros((3, 3))
    for p in range(first.size):
        i = first[p]
        j = second[p]
        t = term_of_pair[p]
        dx, dy, dz = _mic(pos[j, 0] - pos[i, 0], pos[j, 1] - pos[i, 1], pos[j, 2] - pos[i, 2], h, hinv, ortho)
        r2 = dx * dx + dy * dy + dz * dz
        if r2 >= dmax2[t]:
            continue
        r = np.sqrt(r2)
        x = r / r0[t]
        n = nn[t]
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
        w = mult[p]
        cn[t] += w * (val - sig_max[t]) * stretch[t]
        g = coeff[t] * w * dval * stretch[t] / (r0[t] * r)
        grad[j, 0] += g * dx
        grad[j, 1] += g * dy
        grad[j, 2] += g * dz
        grad[i, 0] -= g * dx
        grad[i, 1] -= g * dy
        grad[i, 2] -= g * dz
        strain[0, 0] += g * dx * dx
        strain[0, 1] += g * dx * dy
        strain[0, 2] += g * dx * dz
        strain[1, 1] += g * dy * dy
        strain[1, 2] += g * dy * dz
        strain[2, 2] += g * dz * dz
    strain[1, 0] = strain[0, 1]
    strain[2, 0] = strain[0, 2]
    strain[2, 1] = strain[1, 2]
    return cn, grad, strain


@numba.njit(cache=True)
def _max_displacement2(pos, ref, h, hinv, ortho):
    """Largest squared minimum-image displacement (Å²) of ``pos`` from ``ref``."""
    best = 0.0
    for i in range(pos.shape[0]):
        dx, dy, dz = _mic(pos[i, 0] - ref[i, 0], pos[i, 1] - ref[i, 1], pos[i, 2] - ref[i, 2], h, hinv, ortho)
        r2 = dx * dx + dy * dy + dz * dz
        if r2 > best:
            best = r2
    return best


class FastCoordinationCV:
    """The CV of :func:`evaluate_cv` from a numba kernel on a Verlet list of pairs.

    The list holds the pairs within ``d_max + skin`` (minimum image) and is rebuilt when an atom
    moved more than ``skin/2`` since the last build (periodic wrapping does not count as motion),
    or when the cell changed enough to bring an unlisted pair within ``d_max``. The kernel applies
    the minimum image itself, so re-wrapped positions (LAMMPS) need no rebuild.

    :param cv: the CV definition.
    :param n_atoms: number of atoms in every ``positions`` array passed later.
    :param skin: Verlet skin (Å).
    :param pair_builder: ``'vesin'`` (cell list, O(N)), ``'brute'`` (numba loop over all A x B
        pairs) or ``'auto'`` (vesin when installed). Both give the same list.
    """

    def __init__(
        self, cv: CoordinationCV, n_atoms: int, skin: float = 1.0, *, pair_builder: str = 'auto'
    ) -> None:
        if pair_builder not in ('auto', 'vesin', 'brute'):
            raise ValueError(f"pair_builder must be 'auto', 'vesin' or 'brute', got {pair_builder!r}")
        if pair_builder == 'auto':
            pair_builder = 'vesin' if importlib.util.find_spec('vesin') else 'brute'
        self.pair_builder = pair_builder
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
        self._cv_atoms = np.unique(np.concatenate([np.concatenate([t.group_a, t.group_b]) for t in terms]))
        self._in_a = [np.isin(np.arange(self.n_atoms), t.group_a) for t in terms]
        self._in_b = [np.isin(np.arange(self.n_atoms), t.group_b) for t in terms]
        self._ref_pos: np.ndarray | None = None
        self._ref_cell: np.ndarray | None = None
        self._pairs: tuple[np.ndarray, ...] = ()

    @property
    def n_pairs(self) -> int:
        """Number of stored pairs in the current Verlet list."""
        return int(self._pairs[0].size) if self._pairs else 0

    def _needs_rebuild(self, pos: np.ndarray, h: np.ndarray, hinv: np.ndarray, ortho: bool) -> bool:
        if self._ref_pos is None:
            return True
        moved = np.sqrt(_max_displacement2(pos, self._ref_pos, h, hinv, ortho))
        # A listed pair distance d0 (< d_max + skin) changes by ≤ 2·moved + (d_max + skin)·‖H0⁻¹ΔH‖.
        strain = np.linalg.norm(np.linalg.solve(self._ref_cell, h) - np.eye(3), ord=2)
        return 2.0 * moved + (self.cv.d_max + self.skin) * strain > self.skin

    def _build(self, pos: np.ndarray, h: np.ndarray, hinv: np.ndarray, ortho: bool) -> None:
        build = self._build_vesin if self.pair_builder == 'vesin' else self._build_brute
        firsts, seconds, mults, terms = [], [], [], []
        for t, (first, second, mult) in enumerate(build(pos, h, hinv, ortho)):
            order = np.argsort(first, kind='stable')  # memory locality in the kernel
            firsts.append(first[order])
            seconds.append(second[order])
            mults.append(mult[order])
            terms.append(np.full(first.size, t, dtype=np.int64))
        self._pairs = tuple(np.concatenate(x) for x in (firsts, seconds, mults, terms))
        self._ref_pos, self._ref_cell = pos.copy(), h.copy()
        self.n_builds += 1

    def _build_brute(self, pos: np.ndarray, h: np.ndarray, hinv: np.ndarray, ortho: bool) -> list[tuple]:
        """Per term ``(first, second, multiplicity)`` from the numba loop over all A x B pairs."""
        lists = []
        for term in self.cv.terms:
            in_both = np.zeros(self.n_atoms, dtype=np.bool_)
            in_both[np.intersect1d(term.group_a, term.group_b)] = True
            cutoff2 = (term.d_max + self.skin) ** 2
            lists.append(_build_pairs(pos, term.group_a, term.group_b, in_both, cutoff2, h, hinv, ortho))
        return lists

    def _build_vesin(self, pos: np.ndarray, h: np.ndarray, hinv: np.ndarray, ortho: bool) -> list[tuple]:
        """Per term ``(first, second, multiplicity)`` from one vesin half list over the CV's atoms."""
        from vesin import NeighborList

        atoms = self._cv_atoms
        frac = pos[atoms] @ hinv
        wrapped = (frac - np.floor(frac)) @ h
        cutoff = self.cv.d_max + self.skin
        p, q, d = NeighborList(cutoff=cutoff, full_list=False).compute(wrapped, h, True, quantities='ijd')
        p, q = atoms[p.astype(np.int64)], atoms[q.astype(np.int64)]
        keep = p != q
        p, q, d = p[keep], q[keep], d[keep]
        # A cell thinner than 2 x cut-off holds several images of one pair within the cut-off.
        widths = 1.0 / np.linalg.norm(hinv, axis=0)
        several_images = bool(np.any(widths < 2.0 * cutoff))
        lists = []
        for term, in_a, in_b in zip(self.cv.terms, self._in_a, self._in_b, strict=True):
            near = d < term.d_max + self.skin
            forward = in_a[p] & in_b[q] & near  # (p in A, q in B)
            backward = in_a[q] & in_b[p] & near  # (q in A, p in B)
            both = forward & backward  # both atoms in A ∩ B: one entry, counted twice
            first = np.concatenate([p[forward & ~both], q[backward & ~both], np.minimum(p, q)[both]])
            second = np.concatenate([q[forward & ~both], p[backward & ~both], np.maximum(p, q)[both]])
            mult = np.concatenate([np.ones(first.size - both.sum()), np.full(both.sum(), 2.0)])
            if several_images:
                key, index = np.unique(first * self.n_atoms + second, return_index=True)
                first, second, mult = key // self.n_atoms, key % self.n_atoms, mult[index]
            lists.append((first, second, mult))
        return lists

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
