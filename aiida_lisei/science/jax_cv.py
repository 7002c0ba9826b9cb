"""The coordination CV in JAX: value, gradient, strain derivative on the device JAX finds (no AiiDA imports).

:class:`JaxCoordinationCV` gives the numbers of :func:`~aiida_lisei.science.restraint_cv.evaluate_cv` (fp64,
1e-10 relative) on a GPU when JAX has one, else on the CPU: the route of ``lisei-lmp-plumed --route jax`` for
GPU nodes, where a DeePMD step costs ~40 ms at 4833 atoms and the CPU's numba CV would add 35-45 %. The
Verlet list lives on the device: the candidate pairs (every ``i in A, j in B, i != j`` of every term, a pair
of ``A ∩ B`` once with multiplicity 2, as :class:`~aiida_lisei.science.fast_cv.FastCoordinationCV` stores
it) are sent once; a rebuild keeps those within ``d_max + skin`` (minimum image), in fixed-size blocks (the
memory of a build stays bounded whatever the cell); it is redone on the numba route's criterion
(:func:`~aiida_lisei.science.fast_cv.verlet_list_outdated`), with the two largest displacements computed on
the device. The per-term constants are the numba route's (:class:`~aiida_lisei.science.fast_cv.PairTables`).

Precision: fp64 only. JAX's 64-bit mode is switched on around each call (``jax.enable_x64(True)``, a
context manager: other JAX code in the process keeps its own setting). No fp32 mode is offered: in fp64 the
list-based CV cost 0.98 ms a step on an H200 at 4833 atoms in a torch prototype (the issue's measurement),
~2.5 % of the DP step, already under the 5 % target; fp32 gained 1.4x there for a CV off by 2e-7 relative,
a fifth of the 1e-6 budget: not worth a second code path.
"""

from __future__ import annotations

import functools
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from aiida_lisei.science.fast_cv import PairTables, check_verlet_skin, cv_result, verlet_list_outdated
from aiida_lisei.science.restraint_cv import CoordinationCV, CVResult, cell_matrices, check_positions

__all__ = ('BUILD_BLOCK', 'JaxCoordinationCV', 'candidate_pairs', 'describe_device')

#: Candidate pairs per block of a list build (2^20: ~25 MB of pair vectors, ~700 MB with the 27 images of a
#: triclinic cell).
BUILD_BLOCK = 1 << 20
_IMAGES = np.array([[i, j, k] for i in (-1, 0, 1) for j in (-1, 0, 1) for k in (-1, 0, 1)], dtype=float)


def candidate_pairs(cv: CoordinationCV) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """``(first, second, multiplicity, term)`` of every ordered pair ``(i in A, j in B, i != j)`` per term.

    A pair with both atoms in ``A ∩ B`` is listed once (``i < j``) with multiplicity 2 (PLUMED counts it
    from both sides).
    """
    lists = []
    for t, term in enumerate(cv.terms):
        a, b = term.group_a, term.group_b
        first, second = np.repeat(a, b.size), np.tile(b, a.size)
        both = np.isin(first, b) & np.isin(second, a)
        keep = (first != second) & ~(both & (second < first))
        lists.append((first[keep], second[keep], np.where(both[keep], 2.0, 1.0), np.full(keep.sum(), t)))
    dtypes = (np.int32, np.int32, np.float64, np.int32)
    return tuple(np.concatenate(x).astype(d) for x, d in zip(zip(*lists, strict=True), dtypes, strict=True))


def _mic(d: jax.Array, h: jax.Array, hinv: jax.Array, ortho: bool) -> jax.Array:
    """Minimum image of the vectors ``d`` (Mx3, Å), as ``restraint_cv.minimum_image``."""
    if ortho:
        return d - jnp.diag(h) * jnp.floor(d * jnp.diag(hinv) + 0.5)
    frac = d @ hinv
    x = (frac - jnp.floor(frac + 0.5)) @ h
    candidates = x[:, None, :] + (jnp.asarray(_IMAGES) @ h)[None, :, :]
    best = jnp.argmin(jnp.sum(candidates * candidates, axis=-1), axis=1)
    return jnp.take_along_axis(candidates, best[:, None, None], axis=1)[:, 0, :]


@functools.partial(jax.jit, static_argnames='ortho')
def _block_mask(pos, first, second, mult, term, cut2, h, hinv, ortho):
    """Whether each candidate pair of a block is within its term's list cut-off (``cut2``, Å²)."""
    d = _mic(pos[second] - pos[first], h, hinv, ortho)
    return (jnp.sum(d * d, axis=1) < cut2[term]) & (mult > 0.0)


@functools.partial(jax.jit, static_argnames='capacity')
def _compact(mask, first, second, mult, term, capacity):
    """The selected pairs, padded to ``capacity`` with multiplicity-0 copies of the first candidate."""
    index = jnp.nonzero(mask, size=capacity, fill_value=0)[0]
    count = jnp.sum(mask)
    valid = jnp.arange(capacity) < count
    return count, first[index], second[index], jnp.where(valid, mult[index], 0.0), term[index]


@functools.partial(jax.jit, static_argnames=('ortho', 'n_terms', 'general'))
def _evaluate(pos, first, second, mult, term, tables, h, hinv, ortho, n_terms, general):
    """Raw CN per term, gradient (Nx3, 1/Å) and strain derivative of ``Σ_t coeff_t·CN_t`` over the listed
    pairs (as the numba kernel; ``general``: some term has ``mm != 2·nn``)."""
    coeff, r0, dmax2, nn, mm, sig_max, stretch = tables
    d = _mic(pos[second] - pos[first], h, hinv, ortho)
    r2 = jnp.sum(d * d, axis=1)
    n, m, rt = nn[term], mm[term], r0[term]
    # mm = 2 nn: sigma = 1/(1 + x^n), x^n = (r²/r0²)^(n/2); (dsigma/dr)/r = -n x^n / (r² (1 + x^n)²)
    xn = (r2 / (rt * rt)) ** (0.5 * n)
    den = 1.0 + xn
    val = 1.0 / den
    g_over_r = -n * xn / (r2 * den * den)
    if general:  # (1 - x^n)/(1 - x^m) and its limit at x = 1, as rational()
        r = jnp.sqrt(r2)
        x = r / rt
        near = jnp.abs(x - 1.0) < 1.0e-10
        xs = jnp.where(near, 0.5, x)
        num, dd = 1.0 - xs**n, 1.0 - xs**m
        dval = (-n * xs ** (n - 1) * dd + m * xs ** (m - 1) * num) / (dd * dd)
        twice = m == 2 * n
        val = jnp.where(twice, val, jnp.where(near, n / m, num / dd))
        dval = jnp.where(near, 0.5 * n * (n - m) / m, dval)
        g_over_r = jnp.where(twice, g_over_r, dval / (rt * r))
    w = jnp.where(r2 < dmax2[term], mult * stretch[term], 0.0)
    cn = jax.ops.segment_sum(w * (val - sig_max[term]), term, num_segments=n_terms)
    pair_grad = (coeff[term] * w * g_over_r)[:, None] * d  # ∂CV/∂d per pair
    grad = jnp.zeros_like(pos).at[second].add(pair_grad).at[first].add(-pair_grad)
    return cn, grad, pair_grad.T @ d


@functools.partial(jax.jit, static_argnames='ortho')
def _two_largest_moves(pos, atoms, ref, h, hinv, ortho):
    """Sum of the two largest minimum-image displacements (Å) of ``atoms`` from ``ref``."""
    d = _mic(pos[atoms] - ref, h, hinv, ortho)
    return jnp.sum(jax.lax.top_k(jnp.sqrt(jnp.sum(d * d, axis=1)), min(2, atoms.size))[0])


class JaxCoordinationCV:
    """The CV of :func:`~aiida_lisei.science.restraint_cv.evaluate_cv` in JAX (fp64) on a Verlet list kept on
    the device; same interface and numbers as :class:`~aiida_lisei.science.fast_cv.FastCoordinationCV`.

    :param cv: the CV definition.
    :param n_atoms: number of atoms in every ``positions`` array passed later.
    :param skin: Verlet skin (Å).
    :param device: ``'gpu'``, ``'cpu'`` or ``None`` (JAX's default device: a GPU if JAX has one).
    """

    def __init__(
        self, cv: CoordinationCV, n_atoms: int, skin: float = 1.0, *, device: str | None = None
    ) -> None:
        check_verlet_skin(cv, n_atoms, skin)
        self.cv, self.n_atoms, self.skin = cv, int(n_atoms), float(skin)
        self.device = jax.devices(device)[0] if device else jax.devices()[0]
        self.tables = PairTables.of(cv, self.skin)
        self.n_builds = 0
        self._general = bool(np.any(self.tables.mm != 2 * self.tables.nn))
        first, second, mult, term = candidate_pairs(cv)
        self.n_candidates = int(first.size)
        if self.n_candidates == 0:
            raise ValueError('the CV has no pairs (every group A and B is the same single atom)')
        block = min(BUILD_BLOCK, self.n_candidates)
        pad = -self.n_candidates % block  # multiplicity-0 pairs never selected
        padded = [np.concatenate([x, np.full(pad, x[0])]) for x in (first, second, term)]
        padded.insert(2, np.concatenate([mult, np.zeros(pad)]))
        with jax.enable_x64(True):
            put = functools.partial(jax.device_put, device=self.device)
            self._candidates = tuple(put(x) for x in padded)
            self._blocks = [
                tuple(x[s : s + block] for x in self._candidates) for s in range(0, len(padded[0]), block)
            ]
            tab = self.tables
            self._cut2 = put(tab.cut2)
            self._constants = tuple(
                put(np.asarray(x, dtype=float))
                for x in (tab.coeff, tab.r0, tab.dmax2, tab.nn, tab.mm, tab.sig_max, tab.stretch)
            )
            self._cv_atoms = put(tab.cv_atoms.astype(np.int32))
        self._capacity = 0
        self._count = 0
        self._pairs: tuple[jax.Array, ...] = ()
        self._ref_pos: jax.Array | None = None  # positions of the CV's atoms at the last build (device)
        self._ref_cell: np.ndarray | None = None

    @property
    def n_pairs(self) -> int:
        """Number of pairs in the current Verlet list."""
        return self._count

    def _build(self, pos: jax.Array, h: jax.Array, hinv: jax.Array, ortho: bool) -> None:
        mask = jnp.concatenate([_block_mask(pos, *b, self._cut2, h, hinv, ortho) for b in self._blocks])
        count = int(jnp.sum(mask))
        if count > self._capacity:  # room for growth: the evaluation is compiled once per capacity
            self._capacity = min(int(1.2 * count) + 1024, mask.size)
        self._count, *self._pairs = _compact(mask, *self._candidates, capacity=self._capacity)
        self._count = int(self._count)
        self._ref_pos = pos[self._cv_atoms]
        self.n_builds += 1

    def __call__(self, positions: np.ndarray, cell: np.ndarray) -> CVResult:
        """CV, raw CNs, gradient (1/Å) and strain derivative at ``positions`` (Nx3, Å) in ``cell`` (rows =
        lattice vectors, Å); arrays back on the host."""
        pos_host = check_positions(self.cv, positions)
        if len(pos_host) != self.n_atoms:
            raise ValueError(f'expected {self.n_atoms} positions, got {len(pos_host)}')
        h_host, hinv_host, ortho = cell_matrices(cell)
        with jax.enable_x64(True):
            pos, h, hinv = (jax.device_put(x, self.device) for x in (pos_host, h_host, hinv_host))
            if self._ref_pos is None or verlet_list_outdated(
                float(_two_largest_moves(pos, self._cv_atoms, self._ref_pos, h, hinv, ortho)),
                h_host,
                self._ref_cell,
                self.cv.d_max,
                self.skin,
            ):
                self._build(pos, h, hinv, ortho)
                self._ref_cell = h_host.copy()
            cn, grad, strain = _evaluate(
                pos, *self._pairs, self._constants, h, hinv, ortho, len(self.cv.terms), self._general
            )
            cn, grad, strain = (np.asarray(x) for x in jax.device_get((cn, grad, strain)))
        return cv_result(self.cv, self.tables.coeff, cn, grad, strain)


def describe_device(device: Any = None) -> str:
    """``platform:kind`` of ``device`` (default: JAX's default device), e.g. ``gpu:NVIDIA H200``."""
    device = device or jax.devices()[0]
    return f'{device.platform}:{getattr(device, "device_kind", "")}'
