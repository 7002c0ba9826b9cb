"""The fast evaluator of the coordination CV: a numba kernel on a Verlet list of pairs (no AiiDA imports).

:class:`FastCoordinationCV` gives the numbers of :func:`~aiida_lisei.science.restraint_cv.evaluate_cv` (the
NumPy reference, equal to the PLUMED kernel's value, forces and virial to 1e-10) at 4-6 % of a DeePMD step
at 4833 atoms: the pairs within ``d_max + skin`` come from one compiled cell-list pass over the CV's atoms
(:func:`_cell_list_pairs`) and are rebuilt only when atoms moved far enough; the kernel (:func:`_kernel`)
applies the minimum image itself and returns the CNs, the gradient and the strain derivative in one pass.
The definition of the CV (terms, groups, switching functions, normalisation) lives in
:mod:`aiida_lisei.science.restraint_cv`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numba
import numpy as np

from aiida_lisei.science.restraint_cv import (
    CoordinationCV,
    CVResult,
    cell_matrices,
    check_positions,
    rational,
)

__all__ = ('FastCoordinationCV', 'PairTables', 'check_verlet_skin', 'cv_result', 'verlet_list_outdated')


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


@numba.njit(cache=True, inline='always')
def _accumulate(lo, hi, pos, first, second, mult, term_of_pair, coeff, r0, dmax2, nn, mm, sig_max, stretch,
                h, hinv, ortho, cn, grad, strain):  # fmt: skip
    """Add pairs ``lo..hi-1`` to the raw CNs ``cn``, the gradient ``grad`` (Nx3, 1/Å) of ``Σ_t coeff_t·CN_t``
    and its strain derivative ``strain`` (6: xx, xy, xz, yy, yz, zz).

    For ``mm = 2·nn`` with ``nn`` even (the paper's 6/12) the switching function is evaluated from
    ``r²`` (no square root, one division); otherwise from ``r`` as in :func:`switching_function`.
    """
    n_terms = coeff.size
    inv_r0sq = 1.0 / (r0 * r0)
    fast = np.empty(n_terms, np.bool_)
    for t in range(n_terms):
        fast[t] = mm[t] == 2 * nn[t] and nn[t] % 2 == 0
    s00 = s01 = s02 = s11 = s12 = s22 = 0.0
    # Orthorhombic minimum image inlined with the box hoisted (as in _mic; 2x faster than calling it).
    lx, ly, lz = h[0, 0], h[1, 1], h[2, 2]
    ix, iy, iz = hinv[0, 0], hinv[1, 1], hinv[2, 2]
    for p in range(lo, hi):
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
    strain[0] += s00
    strain[1] += s01
    strain[2] += s02
    strain[3] += s11
    strain[4] += s12
    strain[5] += s22


@numba.njit(cache=True, inline='always')
def _strain_matrix(s: np.ndarray) -> np.ndarray:
    """Symmetric 3x3 matrix of the 6 components (xx, xy, xz, yy, yz, zz) of :func:`_accumulate`."""
    return np.array([[s[0], s[1], s[2]], [s[1], s[3], s[4]], [s[2], s[4], s[5]]])


@numba.njit(cache=True, error_model='numpy')
def _kernel(
    pos, first, second, mult, term_of_pair, coeff, r0, dmax2, nn, mm, sig_max, stretch, h, hinv, ortho
):
    """Raw CN per term, gradient (Nx3, 1/Å) and strain derivative of ``Σ_t coeff_t·CN_t`` (listed pairs)."""
    cn = np.zeros(coeff.size)
    grad = np.zeros((pos.shape[0], 3))
    strain = np.zeros(6)
    _accumulate(0, first.size, pos, first, second, mult, term_of_pair, coeff, r0, dmax2, nn, mm, sig_max,
                stretch, h, hinv, ortho, cn, grad, strain)  # fmt: skip
    return cn, grad, _strain_matrix(strain)


@numba.njit(cache=True, error_model='numpy', parallel=True)
def _kernel_parallel(
    pos, first, second, mult, term_of_pair, coeff, r0, dmax2, nn, mm, sig_max, stretch, h, hinv, ortho, chunks
):
    """:func:`_kernel` with the pairs split into ``chunks`` contiguous blocks run by numba's threads
    (``prange``), each into its own CNs, gradient and strain, summed at the end (the same numbers up to
    the order of the sums)."""
    n_terms, n = coeff.size, first.size
    cn = np.zeros((chunks, n_terms))
    grad = np.zeros((chunks, pos.shape[0], 3))
    strain = np.zeros((chunks, 6))
    for c in numba.prange(chunks):
        lo, hi = c * n // chunks, (c + 1) * n // chunks
        _accumulate(lo, hi, pos, first, second, mult, term_of_pair, coeff, r0, dmax2, nn, mm, sig_max,
                    stretch, h, hinv, ortho, cn[c], grad[c], strain[c])  # fmt: skip
    return cn.sum(axis=0), grad.sum(axis=0), _strain_matrix(strain.sum(axis=0))


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


@dataclass(frozen=True)
class PairTables:
    """Per-term constants of a CV's pair kernels (the numba and the JAX routes share them).

    ``r0`` (Å), ``dmax2`` (Å²), ``nn``, ``mm``, ``sig_max`` (the raw switching function at ``d_max``),
    ``stretch`` (``1 / (1 - sig_max)``), ``coeff`` (``weight / normalisation``), ``cut2`` (list cut-off²,
    ``(d_max + skin)²``, Å²) per term; ``cv_atoms`` (sorted indices of the atoms of any group) with
    ``a_mask`` and ``b_mask`` (per CV atom, bit ``t`` set: in group A, resp. B, of term ``t``).
    """

    r0: np.ndarray
    dmax2: np.ndarray
    nn: np.ndarray
    mm: np.ndarray
    sig_max: np.ndarray
    stretch: np.ndarray
    coeff: np.ndarray
    cut2: np.ndarray
    cv_atoms: np.ndarray
    a_mask: np.ndarray
    b_mask: np.ndarray

    @classmethod
    def of(cls, cv: CoordinationCV, skin: float) -> PairTables:
        """The tables of ``cv`` with a Verlet ``skin`` (Å)."""
        terms = cv.terms
        if len(terms) > 62:
            raise ValueError(f'the fast CV handles at most 62 terms, got {len(terms)}')
        sig_max = np.array([rational(np.array(t.d_max / t.r_0), t.nn, t.mm)[0] for t in terms], dtype=float)
        cv_atoms = np.unique(np.concatenate([np.concatenate([t.group_a, t.group_b]) for t in terms]))
        bits = np.left_shift(1, np.arange(len(terms), dtype=np.int64))
        return cls(
            r0=np.array([t.r_0 for t in terms]),
            dmax2=np.array([t.d_max**2 for t in terms]),
            nn=np.array([t.nn for t in terms], dtype=np.int64),
            mm=np.array([t.mm for t in terms], dtype=np.int64),
            sig_max=sig_max,
            stretch=1.0 / (1.0 - sig_max),
            coeff=np.array([t.weight / cv.normalisation for t in terms]),
            cut2=np.array([(t.d_max + skin) ** 2 for t in terms]),
            cv_atoms=cv_atoms,
            a_mask=sum(bit * np.isin(cv_atoms, t.group_a) for bit, t in zip(bits, terms, strict=True)),
            b_mask=sum(bit * np.isin(cv_atoms, t.group_b) for bit, t in zip(bits, terms, strict=True)),
        )


def verlet_list_outdated(
    moved: float, cell: np.ndarray, ref_cell: np.ndarray, d_max: float, skin: float
) -> bool:
    """Whether a Verlet list of the pairs within ``d_max + skin`` (Å) may miss a pair within ``d_max``.

    A listed pair distance ``d0 < d_max + skin`` changes by at most ``moved + (d_max + skin)·‖H0⁻¹H - 1‖``,
    with ``moved`` the sum of the two largest minimum-image displacements (Å) of the CV's atoms since the
    build and ``H0``, ``H`` the cells (rows = lattice vectors, Å) then and now: rebuild when that exceeds
    ``skin``. The one criterion of :class:`FastCoordinationCV` and
    :class:`~aiida_lisei.science.jax_cv.JaxCoordinationCV`.
    """
    if np.array_equal(cell, ref_cell):
        strain = 0.0
    else:
        strain = np.linalg.norm(np.linalg.solve(ref_cell, cell) - np.eye(3), ord=2)
    return moved + (d_max + skin) * strain > skin


def check_verlet_skin(cv: CoordinationCV, n_atoms: int, skin: float) -> None:
    """Raise ``ValueError`` if ``cv`` does not fit ``n_atoms`` atoms or the ``skin`` (Å) is not positive."""
    if cv.max_index >= n_atoms:
        raise ValueError(f'the CV uses atom index {cv.max_index} but n_atoms is {n_atoms}')
    if not skin > 0.0:
        raise ValueError(f'skin must be positive (Å), got {skin}')


class FastCoordinationCV:
    """The CV of :func:`~aiida_lisei.science.restraint_cv.evaluate_cv` from a numba kernel on a Verlet list.

    The list holds the pairs within ``d_max + skin`` (minimum image) and is rebuilt when the two
    largest displacements of the CV's atoms since the last build sum to more than ``skin`` (periodic
    wrapping does not count as motion), with the cell's strain added, i.e. as soon as an unlisted pair
    could have come within ``d_max`` (:func:`verlet_list_outdated`). The kernel applies the minimum image
    itself, so re-wrapped positions (LAMMPS) need no rebuild.

    :param cv: the CV definition.
    :param n_atoms: number of atoms in every ``positions`` array passed later.
    :param skin: Verlet skin (Å).
    :param pair_builder: ``'cells'`` (one compiled cell-list pass over the CV's atoms, O(N)),
        ``'brute'`` (numba loop over all A x B pairs, a reference) or ``'auto'`` (``'cells'``).
        Both give the same list.
    :param threads: ``1`` (default): the serial kernel, numba's threading layer is never started (its
        OpenMP threads slow a CPU DeePMD in the same process); ``n > 1``: the pairs in ``n`` blocks over
        numba's threads (``prange``; its pool has ``NUMBA_NUM_THREADS`` threads, by default one per core),
        for CPU-only nodes. Same numbers up to the order of the sums (1e-13 relative).
    """

    def __init__(
        self,
        cv: CoordinationCV,
        n_atoms: int,
        skin: float = 1.0,
        *,
        pair_builder: str = 'auto',
        threads: int = 1,
    ) -> None:
        if pair_builder not in ('auto', 'cells', 'brute'):
            raise ValueError(f"pair_builder must be 'auto', 'cells' or 'brute', got {pair_builder!r}")
        if int(threads) != threads or threads < 1:
            raise ValueError(f'threads must be a positive integer, got {threads}')
        self.pair_builder = 'cells' if pair_builder == 'auto' else pair_builder
        check_verlet_skin(cv, n_atoms, skin)
        self.cv, self.n_atoms, self.skin, self.threads = cv, int(n_atoms), float(skin), int(threads)
        self.n_builds = 0
        self.tables = PairTables.of(cv, self.skin)
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
        moved = _two_largest_moves(pos, self.tables.cv_atoms, self._ref_pos, h, hinv, ortho)
        return verlet_list_outdated(moved, h, self._ref_cell, self.cv.d_max, self.skin)

    def _build(self, pos: np.ndarray, h: np.ndarray, hinv: np.ndarray, ortho: bool) -> None:
        tab = self.tables
        if self.pair_builder == 'cells':
            capacity = int(1.2 * self.n_pairs) + 1024
            cutoff = self.cv.d_max + self.skin
            args = (pos, tab.cv_atoms, tab.a_mask, tab.b_mask, tab.cut2, cutoff, h, hinv, ortho)
            n, *pairs = _cell_list_pairs(*args, capacity)
            if n > capacity:
                n, *pairs = _cell_list_pairs(*args, n)
            self._pairs = tuple(x[:n] for x in pairs)
        else:
            self._pairs = self._build_brute(pos, h, hinv, ortho)
        self._ref_pos, self._ref_cell = pos[tab.cv_atoms], h.copy()
        self.n_builds += 1

    def _build_brute(self, pos: np.ndarray, h: np.ndarray, hinv: np.ndarray, ortho: bool) -> tuple:
        """``(first, second, multiplicity, term)`` from the numba loop over all A x B pairs of each term."""
        lists = []
        for t, term in enumerate(self.cv.terms):
            in_both = np.zeros(self.n_atoms, dtype=np.bool_)
            in_both[np.intersect1d(term.group_a, term.group_b)] = True
            first, second, mult = _build_pairs(
                pos, term.group_a, term.group_b, in_both, self.tables.cut2[t], h, hinv, ortho
            )
            lists.append((first, second, mult, np.full(first.size, t)))
        dtypes = (np.int32, np.int32, np.float32, np.int8)  # as _cell_list_pairs
        return tuple(
            np.concatenate(x).astype(d) for x, d in zip(zip(*lists, strict=True), dtypes, strict=True)
        )

    def __call__(self, positions: np.ndarray, cell: np.ndarray) -> CVResult:
        """CV, raw CNs and gradient (1/Å) at ``positions`` (Nx3, Å) in ``cell`` (rows = vectors, Å)."""
        pos = check_positions(self.cv, positions)
        if len(pos) != self.n_atoms:
            raise ValueError(f'expected {self.n_atoms} positions, got {len(pos)}')
        h, hinv, ortho = cell_matrices(cell)
        if self._needs_rebuild(pos, h, hinv, ortho):
            self._build(pos, h, hinv, ortho)
        tab = self.tables
        constants = (tab.coeff, tab.r0, tab.dmax2, tab.nn, tab.mm, tab.sig_max, tab.stretch)
        args = (pos, *self._pairs, *constants, h, hinv, ortho)
        if self.threads == 1:
            cn, gradient, strain = _kernel(*args)
        else:
            cn, gradient, strain = _kernel_parallel(*args, self.threads)
        return cv_result(self.cv, tab.coeff, cn, gradient, strain)


def cv_result(
    cv: CoordinationCV, coeff: np.ndarray, cn: np.ndarray, gradient: np.ndarray, strain: np.ndarray
) -> CVResult:
    """The :class:`CVResult` of a kernel's raw CNs, gradient (Nx3, 1/Å) and strain derivative (3x3)."""
    value = float(np.dot(coeff, cn))
    components = {term.label: float(c) for term, c in zip(cv.terms, cn, strict=True)}
    return CVResult(value, components, gradient, strain)
