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

* :func:`evaluate_cv` — NumPy reference (CV, per-term CNs, gradient); the same numbers, fast, from
  :class:`aiida_lisei.science.fast_cv.FastCoordinationCV`.
* :func:`restraint_bias` and :class:`RestraintWork` — PLUMED's ``MOVINGRESTRAINT``.
* :data:`RESTRAINT_DEFAULTS` — the restraint's parameters and their defaults, the one place they are
  written; :func:`check_restraint_parameters` completes and checks them, :func:`resolve_restraint_parameters`
  fills the ends of a run once (``at_start`` = the initial CV, ``at_end`` = ``at_start + delta``,
  ``step_end`` = the last step), :func:`cv_from_parameters` and :func:`moving_restraint` build the CV and
  the restraint from them.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from aiida_lisei.common.validation import complete_parameters, is_number, positive_integer

__all__ = (
    'DEFAULT_S0_DELTA',
    'PAPER_KAPPA',
    'PAPER_R0',
    'PAPER_STEPS',
    'PAPER_WEIGHTS',
    'PLUMED_NL_SKIN',
    'PLUMED_NL_STRIDE',
    'RESOLVED_KEYS',
    'RESTRAINT_DEFAULTS',
    'CVResult',
    'CoordinationCV',
    'CoordinationTerm',
    'MovingRestraint',
    'RestraintWork',
    'build_paper_cv',
    'cell_matrices',
    'cell_widths',
    'check_minimum_image',
    'check_neighbour_list',
    'check_positions',
    'check_restraint_parameters',
    'cv_from_parameters',
    'default_moving_restraint',
    'evaluate_cv',
    'minimum_image',
    'moving_restraint',
    'rational',
    'resolve_restraint_parameters',
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
#: PLUMED's neighbour list of the COORDINATION actions: the list (pairs within ``d_max + PLUMED_NL_SKIN``, Å)
#: is rebuilt every ``PLUMED_NL_STRIDE`` MD steps. A pair is missed only if it closes by more than the skin
#: between two updates (2 Å in 20 fs: ten times a Li's thermal speed at 300 K, 0.01 Å/fs); even then it
#: enters at D_MAX, where the switching function is 0. Proven exact along a real trajectory (frames just
#: before an update included) by ``tests/engines/test_lammps_plumed.py``; speed-up in docs/benchmarks.md.
PLUMED_NL_SKIN = 2.0
PLUMED_NL_STRIDE = 20
#: The restraint's parameters and their defaults: the one place they are written (the protocols carry every
#: key). Units: Å, eV, CV units, MD steps. ``None``: resolved once per run by
#: :func:`resolve_restraint_parameters` (the work chain's calcfunction), or off (the neighbour list).
RESTRAINT_DEFAULTS: dict[str, Any] = {
    'kappa': PAPER_KAPPA,  # eV per (CV unit)^2; the CV is normalised per electrolyte Li by default
    'normalisation': 'group_a',  # 'group_a' (divide by the number of electrolyte Li), 'none', or a number
    'd_max': 10.0,  # Å, cut-off of every switching function: part of the CV's definition
    'anode_layers': 8,  # anode Li layers (1 = touching the electrolyte) in group B of Li-Li (paper: 8)
    'r_0': PAPER_R0,  # Å per term label ('Li-Li', 'Li-S', 'Li-P', 'Li-Cl'), the paper's by default
    'delta': DEFAULT_S0_DELTA,  # CV units: the default at_end is at_start + delta
    'at_start': None,  # CV value of s0 at step_start (default: the CV of the starting structure)
    'at_end': None,  # CV value of s0 at step_end (default: at_start + delta)
    'step_start': 0,  # MD step where s0 starts moving
    'step_end': None,  # MD step where s0 reaches at_end (default: the last step of the whole simulation)
    'colvar_stride': 10,  # steps between COLVAR rows
    'nl_stride': PLUMED_NL_STRIDE,  # MD steps between PLUMED neighbour-list updates (None: no list)
    'nl_cutoff': None,  # Å, PLUMED neighbour-list cut-off (None: d_max + PLUMED_NL_SKIN)
}
#: The keys a run needs resolved (not ``None``): the ends of the pull.
RESOLVED_KEYS = ('at_start', 'at_end', 'step_end')
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
    delta: float = RESTRAINT_DEFAULTS['delta'],
    kappa: float = RESTRAINT_DEFAULTS['kappa'],
    step_start: int = RESTRAINT_DEFAULTS['step_start'],
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
    d_max: float = RESTRAINT_DEFAULTS['d_max'],
    normalisation: str | float = RESTRAINT_DEFAULTS['normalisation'],
    anode_layers: int = RESTRAINT_DEFAULTS['anode_layers'],
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
# The restraint's parameters: checked, resolved once, turned into the CV and the restraint
# --------------------------------------------------------------------------------------------------


def check_restraint_parameters(parameters: Mapping[str, Any], *, resolved: bool = True) -> dict[str, Any]:
    """Return ``parameters`` completed with :data:`RESTRAINT_DEFAULTS`; raise ``ValueError`` naming the key.

    :param resolved: require the ends of the pull (:data:`RESOLVED_KEYS`), as a run does; ``False`` checks
        a request whose ends :func:`resolve_restraint_parameters` fills.
    """
    full = complete_parameters(parameters, RESTRAINT_DEFAULTS, 'restraint parameters')
    if resolved:
        missing = [name for name in RESOLVED_KEYS if full[name] is None]
        if missing:
            raise ValueError(f'restraint parameters {missing} are required')
    normalisation = full['normalisation']
    if normalisation not in ('group_a', 'none') and not (is_number(normalisation) and normalisation > 0):
        raise ValueError(
            f"`normalisation` must be 'group_a', 'none' or a positive number, got {normalisation!r}"
        )
    positive_integer(full['colvar_stride'], '`colvar_stride`')
    if not is_number(full['kappa']) or not (math.isfinite(full['kappa']) and full['kappa'] >= 0):
        raise ValueError(f'`kappa` must be a non-negative number (eV per CV unit²), got {full["kappa"]!r}')
    if not is_number(full['d_max']) or not full['d_max'] > 0:
        raise ValueError(f'`d_max` must be a positive number (Å), got {full["d_max"]!r}')
    if not isinstance(full['r_0'], Mapping):
        raise ValueError(f'`r_0` must map term labels to R0 (Å), got {full["r_0"]!r}')
    if not is_number(full['delta']) or not math.isfinite(full['delta']):
        raise ValueError(f'`delta` must be a finite number (CV units), got {full["delta"]!r}')
    check_neighbour_list(full['nl_stride'], full['nl_cutoff'], full['d_max'])
    if None not in (full['at_start'], full['at_end'], full['step_end']):
        moving_restraint(full)
    return full


def check_neighbour_list(nl_stride: int | None, nl_cutoff: float | None, d_max: float) -> float | None:
    """Check PLUMED's neighbour-list settings and return the cut-off (Å) to write, ``None`` without a list.

    :param nl_stride: MD steps between list updates (a positive integer), ``None`` for no list.
    :param nl_cutoff: list cut-off (Å), above ``d_max``; ``None``: ``d_max +`` :data:`PLUMED_NL_SKIN`.
    :param d_max: the CV's largest switching cut-off (Å).
    """
    if nl_stride is None:
        if nl_cutoff is not None:
            raise ValueError('`nl_cutoff` needs `nl_stride` (the neighbour list is off without it)')
        return None
    positive_integer(nl_stride, '`nl_stride`')
    if nl_cutoff is None:
        return float(d_max) + PLUMED_NL_SKIN
    if not is_number(nl_cutoff) or not nl_cutoff > d_max:
        raise ValueError(f'`nl_cutoff` ({nl_cutoff!r} Å) must be a number above d_max ({d_max} Å)')
    return float(nl_cutoff)


def resolve_restraint_parameters(
    request: Mapping[str, Any], initial_cv: float, n_steps: int
) -> dict[str, Any]:
    """Return the run's complete restraint parameters from a checked ``request``, explicit values first.

    ``at_start`` defaults to ``initial_cv`` (the CV of the starting structure, CV units), ``at_end`` to
    ``at_start + delta``, ``step_end`` to ``n_steps`` (the last MD step of the whole run).

    :param request: the output of ``check_restraint_parameters(..., resolved=False)`` (complete: it is not
        checked again).
    """
    if set(request) != set(RESTRAINT_DEFAULTS):
        raise ValueError('resolve the output of check_restraint_parameters(..., resolved=False)')
    resolved = dict(request)
    if resolved['at_start'] is None:
        resolved['at_start'] = float(initial_cv)
    if resolved['at_end'] is None:
        resolved['at_end'] = resolved['at_start'] + float(resolved['delta'])
    if resolved['step_end'] is None:
        resolved['step_end'] = int(n_steps)
    moving_restraint(resolved)
    return resolved


def cv_from_parameters(
    groups: Sequence[str], layers: Sequence[int], parameters: Mapping[str, Any]
) -> CoordinationCV:
    """The paper's CV on a grouped structure with checked ``parameters`` (``d_max``, ``normalisation``,
    ``anode_layers``, ``r_0``; see :func:`build_paper_cv`)."""
    return build_paper_cv(
        groups,
        layers,
        d_max=parameters['d_max'],
        normalisation=parameters['normalisation'],
        anode_layers=parameters['anode_layers'],
        r_0=parameters['r_0'],
    )


def moving_restraint(parameters: Mapping[str, Any]) -> MovingRestraint:
    """The moving restraint of checked, resolved ``parameters`` (``kappa``, ends and steps)."""
    return MovingRestraint(
        parameters['kappa'],
        parameters['at_start'],
        parameters['at_end'],
        parameters['step_start'],
        parameters['step_end'],
    )


def cell_widths(cell: Any) -> np.ndarray:
    """Return the distances (Å) between opposite faces of ``cell`` (rows = lattice vectors, Å)."""
    cell = np.asarray(cell, dtype=float)
    volume = abs(np.linalg.det(cell))
    return volume / np.linalg.norm(np.cross(cell[[1, 2, 0]], cell[[2, 0, 1]]), axis=1)


def check_minimum_image(d_max: float, cell: Any) -> None:
    """Raise ``ValueError`` if the cut-off ``d_max`` (Å) exceeds half the narrowest width of ``cell``: the CV
    (minimum image, as PLUMED) would then jump when a pair changes image."""
    half_width = 0.5 * min(cell_widths(cell))
    if d_max > half_width:
        raise ValueError(
            f'd_max = {d_max:g} Å exceeds half the narrowest cell width ({half_width:.3f} Å): '
            'the CV (minimum image, as PLUMED) would jump when a pair changes image; lower d_max or use a '
            'larger cell'
        )


# --------------------------------------------------------------------------------------------------
# NumPy reference
# --------------------------------------------------------------------------------------------------


def switching_function(r: np.ndarray, r_0: float, d_max: float, nn: int = 6, mm: int = 12) -> tuple:
    """PLUMED's stretched ``RATIONAL`` switching function: ``(sigma, dsigma/dr)`` at distances ``r`` (Å)."""
    r = np.asarray(r, dtype=float)
    raw, draw = rational(r / r_0, nn, mm)
    raw_max, _ = rational(np.array(d_max / r_0), nn, mm)
    stretch = 1.0 / (1.0 - raw_max)
    inside = r < d_max
    sigma = np.where(inside, (raw - raw_max) * stretch, 0.0)
    dsigma = np.where(inside, draw * stretch / r_0, 0.0)
    return sigma, dsigma


def rational(x: np.ndarray, nn: int, mm: int) -> tuple[np.ndarray, np.ndarray]:
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


def cell_matrices(cell: np.ndarray) -> tuple[np.ndarray, np.ndarray, bool]:
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
    h, hinv, orthorhombic = cell_matrices(cell)
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
    pos = check_positions(cv, positions)
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


def check_positions(cv: CoordinationCV, positions: np.ndarray) -> np.ndarray:
    pos = np.ascontiguousarray(positions, dtype=np.float64)
    if pos.ndim != 2 or pos.shape[1] != 3:
        raise ValueError(f'positions must be Nx3, got shape {pos.shape}')
    if cv.max_index >= len(pos):
        raise ValueError(f'the CV uses atom index {cv.max_index} but only {len(pos)} positions were given')
    return pos
