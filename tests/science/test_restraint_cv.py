"""The coordination-number CV: NumPy reference vs the PLUMED kernel, the numba and JAX routes, the bias."""

from __future__ import annotations

import functools

import jax.numpy as jnp
import numpy as np
import pytest
from ase.build import bulk

from aiida_lisei.engines.lammps_plumed import run_plumed
from aiida_lisei.engines.probe import find_plumed_kernel
from aiida_lisei.formats.plumed import read_colvar, term_action_label, write_plumed_input
from aiida_lisei.protocols.utils import ProtocolMixin
from aiida_lisei.science.fast_cv import FastCoordinationCV
from aiida_lisei.science.jax_cv import JaxCoordinationCV
from aiida_lisei.science.restraint_cv import (
    CoordinationCV,
    CoordinationTerm,
    MovingRestraint,
    RestraintWork,
    build_paper_cv,
    default_moving_restraint,
    evaluate_cv,
    minimum_image,
    restraint_bias,
    switching_function,
)
from aiida_lisei.structures.builders import AtomicModel, argyrodite, sandwich

#: JAX, numba, LAMMPS and PLUMED are imported above: not collected by `pytest --core-only`.
pytestmark = pytest.mark.engines

THERMAL_NOISE = 0.12  # Å, a thermal rattle of the built lattice
#: The fast evaluators of the CV, each held to the NumPy reference by the same tests (JAX on the CPU, fp64).
EVALUATORS = {
    'numba-cells': functools.partial(FastCoordinationCV, pair_builder='cells'),
    'numba-brute': functools.partial(FastCoordinationCV, pair_builder='brute'),
    'numba-prange': functools.partial(FastCoordinationCV, threads=3),
    'jax': functools.partial(JaxCoordinationCV, device='cpu'),
}


class _AtomicModelsProtocol(ProtocolMixin):
    _protocol_file = 'atomic_models'


@pytest.fixture(scope='module')
def demo_sandwich() -> AtomicModel:
    """The demo protocol's sandwich (230 atoms, 1x1x2 electrolyte cells, 10 anode + 4 source layers)."""
    inputs = _AtomicModelsProtocol.get_protocol_inputs('demo')
    electrolyte = argyrodite(seed=inputs['argyrodite']['seed'], **inputs['argyrodite']['parameters']).atoms
    return sandwich(electrolyte, **inputs['sandwich']['parameters'])


@pytest.fixture(scope='module')
def paper_cv(demo_sandwich: AtomicModel) -> CoordinationCV:
    return build_paper_cv(demo_sandwich.groups, demo_sandwich.layers)


def _frames(model: AtomicModel, n: int, seed: int = 1) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [model.atoms.positions + rng.normal(0.0, THERMAL_NOISE, (len(model.atoms), 3)) for _ in range(n)]


def _unordered_count(term: CoordinationTerm, positions: np.ndarray, cell: np.ndarray) -> float:
    """CN with each unordered pair counted once (the convention PLUMED does *not* use)."""
    pairs = {(min(i, j), max(i, j)) for i in term.group_a.tolist() for j in term.group_b.tolist() if i != j}
    first, second = np.array(sorted(pairs)).T
    r = np.linalg.norm(minimum_image(positions[second] - positions[first], cell), axis=1)
    return float(switching_function(r, term.r_0, term.d_max, term.nn, term.mm)[0].sum())


# --------------------------------------------------------------------------------------------------
# Groups
# --------------------------------------------------------------------------------------------------


def test_paper_cv_groups(demo_sandwich: AtomicModel, paper_cv: CoordinationCV):
    """Group A: electrolyte Li. Group B: electrolyte Li + anode layers 1..8 (Li-Li), electrolyte S/P/Cl."""
    groups, layers = np.array(demo_sandwich.groups), np.array(demo_sandwich.layers)
    li = np.flatnonzero(groups == 'electrolyte_Li')
    per_layer = demo_sandwich.info['li_atoms_per_layer']
    terms = {t.label: t for t in paper_cv.terms}
    assert list(terms) == ['Li-Li', 'Li-S', 'Li-P', 'Li-Cl']
    assert [t.weight for t in paper_cv.terms] == [1.0, -1.0, -1.0, -1.0]
    assert [t.r_0 for t in paper_cv.terms] == [3.2, 3.0, 4.0, 4.0]
    assert all(t.d_max == 10.0 and (t.nn, t.mm) == (6, 12) for t in paper_cv.terms)
    for term in paper_cv.terms:
        np.testing.assert_array_equal(term.group_a, li)
    assert li.size == 48 and paper_cv.normalisation == 48.0
    lili_b = terms['Li-Li'].group_b
    assert lili_b.size == li.size + 8 * per_layer == 120
    anode_part = np.setdiff1d(lili_b, li)
    assert set(groups[anode_part]) == {'anode_Li'}
    assert sorted(set(layers[anode_part])) == list(range(1, 9))
    for label, species in (('Li-S', 'S'), ('Li-P', 'P'), ('Li-Cl', 'Cl')):
        np.testing.assert_array_equal(
            terms[label].group_b, np.flatnonzero(groups == f'electrolyte_{species}')
        )
    assert [terms[k].group_b.size for k in ('Li-S', 'Li-P', 'Li-Cl')] == [40, 8, 8]
    # Ordered pairs, i != j (PLUMED's convention): the 48 Li of A ∩ B are not paired with themselves.
    assert terms['Li-Li'].n_pairs == 48 * 120 - 48


def test_paper_cv_options(demo_sandwich: AtomicModel):
    groups, layers = demo_sandwich.groups, demo_sandwich.layers
    assert build_paper_cv(groups, layers, normalisation='none').normalisation == 1.0
    assert build_paper_cv(groups, layers, normalisation=7.5).normalisation == 7.5
    cv = build_paper_cv(groups, layers, anode_layers=3, d_max=12.0, r_0={'Li-S': 3.1})
    assert cv.terms[0].group_b.size == 48 + 3 * 9
    assert cv.terms[1].r_0 == 3.1 and cv.d_max == 12.0
    with pytest.raises(ValueError, match=r'anode layers \[11, 12\] missing'):
        build_paper_cv(groups, layers, anode_layers=12)
    with pytest.raises(ValueError, match='normalisation'):
        build_paper_cv(groups, layers, normalisation='per_pair')
    with pytest.raises(ValueError, match='unknown r_0'):
        build_paper_cv(groups, layers, r_0={'Li-O': 2.0})
    with pytest.raises(ValueError, match='no electrolyte_Li'):
        build_paper_cv(['anode_Li'] * 4, [1, 2, 3, 4])
    with pytest.raises(ValueError, match='d_max'):
        build_paper_cv(groups, layers, d_max=3.0)


# --------------------------------------------------------------------------------------------------
# The PLUMED kernel
# --------------------------------------------------------------------------------------------------


@pytest.fixture(scope='module')
def plumed_kernel():
    kernel = find_plumed_kernel()
    if kernel is None:
        pytest.skip('no PLUMED kernel: run `make plumed-kernel` or set PLUMED_KERNEL')
    pytest.importorskip('plumed')
    return kernel


def test_cv_matches_plumed(demo_sandwich, paper_cv, plumed_kernel, tmp_path):
    """CV, each CN, bias and bias forces agree with PLUMED's COORDINATION/COMBINE/MOVINGRESTRAINT."""
    cell = demo_sandwich.atoms.cell[:]
    frames = _frames(demo_sandwich, 4)
    frames[3] = frames[3] + cell[0] * 0.7 - cell[2] * 1.3  # unwrapped positions: minimum image in both
    refs = [evaluate_cv(paper_cv, p, cell) for p in frames]
    # s0 moves from 0.5 below the first CV to 0.5 above over 3 steps: cv_cntr, bias and work all move.
    restraint = MovingRestraint(2.0, refs[0].value - 0.5, refs[0].value + 0.5, 0, 3)
    text = write_plumed_input(paper_cv, restraint, stride=1)
    bias, forces, virials = run_plumed(text, frames, [cell] * 4, workdir=tmp_path, kernel=plumed_kernel)
    colvar = read_colvar(tmp_path / 'COLVAR')

    work = RestraintWork(restraint)
    for step, ref in enumerate(refs):
        # COLVAR holds 12 significant digits; the bias and forces come back in full precision.
        assert colvar['cv'][step] == pytest.approx(ref.value, rel=1e-10)
        for label, cn in ref.components.items():
            assert colvar[term_action_label(label)][step] == pytest.approx(cn, rel=1e-10)
        e, dbias, s0 = restraint_bias(restraint, ref.value, step)
        assert bias[step] == pytest.approx(e, rel=1e-9)
        assert colvar['restraint.cv_cntr'][step] == pytest.approx(s0, rel=1e-10)
        assert colvar['restraint.bias'][step] == pytest.approx(e, rel=1e-9)
        assert colvar['restraint.work'][step] == pytest.approx(
            work.update(ref.value, step), rel=1e-9, abs=1e-10
        )
        # PLUMED's force = -dbias/ds * grad(s): compare the CV gradient.
        scale = np.abs(ref.gradient).max()
        np.testing.assert_allclose(forces[step] / -dbias, ref.gradient, rtol=0, atol=1e-9 * scale)
        # PLUMED's virial (eV) = +dbias/ds * dCV/dε; LAMMPS's bias virial is its negative.
        strain = ref.strain_derivative
        np.testing.assert_allclose(
            virials[step], dbias * strain, rtol=0, atol=1e-9 * np.abs(dbias * strain).max()
        )
    assert colvar['restraint.work'][-1] != 0.0
    np.testing.assert_allclose(colvar['time'], [0.0, 0.001, 0.002, 0.003])


def test_plumed_overlapping_group_convention(demo_sandwich, paper_cv, plumed_kernel, tmp_path):
    """GROUPA ⊂ GROUPB: PLUMED sums ordered pairs (i in A, j in B, i != j), A ∩ B pairs twice."""
    lili = paper_cv.terms[0]
    cell = demo_sandwich.atoms.cell[:]
    positions = _frames(demo_sandwich, 1, seed=5)[0]
    cv = CoordinationCV((lili,), 1.0)
    text = write_plumed_input(cv, MovingRestraint(0.0, 0.0, 0.0, 0, 0), stride=1)
    run_plumed(text, [positions], [cell], workdir=tmp_path, kernel=plumed_kernel)
    plumed_cn = read_colvar(tmp_path / 'COLVAR')['cn_Li_Li'][0]
    ordered = evaluate_cv(cv, positions, cell).components['Li-Li']
    unordered = _unordered_count(lili, positions, cell)
    assert plumed_cn == pytest.approx(ordered, rel=1e-10)
    assert abs(plumed_cn - unordered) > 0.2 * plumed_cn  # the other convention is far off


# --------------------------------------------------------------------------------------------------
# Gradients, the fast route
# --------------------------------------------------------------------------------------------------


def _finite_difference(func, positions: np.ndarray, atoms: list[int], h: float = 1e-5) -> np.ndarray:
    grad = np.zeros((len(atoms), 3))
    for k, atom in enumerate(atoms):
        for axis in range(3):
            plus, minus = positions.copy(), positions.copy()
            plus[atom, axis] += h
            minus[atom, axis] -= h
            grad[k, axis] = (func(plus) - func(minus)) / (2 * h)
    return grad


def _probe_atoms(cv: CoordinationCV) -> list[int]:
    """Atoms of group A, of Li-Li group B only (anode), and of each anion group."""
    lili = cv.terms[0]
    anode_only = np.setdiff1d(lili.group_b, lili.group_a)
    return [int(lili.group_a[0]), int(lili.group_a[-1]), int(anode_only[0])] + [
        int(t.group_b[0]) for t in cv.terms[1:]
    ]


@pytest.mark.parametrize('evaluator', ['numba-cells', 'jax'])
def test_gradients_match_finite_differences(demo_sandwich, paper_cv, evaluator):
    cell = demo_sandwich.atoms.cell[:]
    positions = _frames(demo_sandwich, 1, seed=3)[0]
    atoms = _probe_atoms(paper_cv)
    fast = EVALUATORS[evaluator](paper_cv, len(positions), skin=1.0)
    for route in (lambda x: evaluate_cv(paper_cv, x, cell), lambda x: fast(x, cell)):
        analytic = route(positions).gradient[atoms]
        numeric = _finite_difference(lambda x, route=route: route(x).value, positions, atoms)
        np.testing.assert_allclose(analytic, numeric, rtol=0, atol=1e-7 * np.abs(analytic).max())
        assert np.abs(analytic).max() > 1e-3  # the probed atoms do feel the CV
    # Atoms outside every group (source Li, deep anode layers) get no gradient.
    outside = np.setdiff1d(np.arange(len(positions)), np.concatenate([t.group_b for t in paper_cv.terms]))
    assert outside.size > 0
    assert np.all(evaluate_cv(paper_cv, positions, cell).gradient[outside] == 0.0)


@pytest.mark.parametrize('evaluator', ['numba-cells', 'jax'])
def test_strain_derivative_matches_finite_differences(demo_sandwich, paper_cv, evaluator):
    """dCV/dε under x -> (1 + ε) x, H -> H (1 + ε)ᵀ: the basis of the bias virial under NPT."""
    cell = demo_sandwich.atoms.cell[:]
    positions = _frames(demo_sandwich, 1, seed=13)[0]
    fast = EVALUATORS[evaluator](paper_cv, len(positions))
    h = 1e-6
    numeric = np.zeros((3, 3))
    for a in range(3):
        for b in range(3):
            values = []
            for sign in (1.0, -1.0):
                deformation = np.eye(3)
                deformation[a, b] += sign * h
                values.append(evaluate_cv(paper_cv, positions @ deformation.T, cell @ deformation.T).value)
            numeric[a, b] = (values[0] - values[1]) / (2 * h)
    for result in (evaluate_cv(paper_cv, positions, cell), fast(positions, cell)):
        np.testing.assert_allclose(
            result.strain_derivative, numeric, rtol=0, atol=1e-7 * np.abs(numeric).max()
        )
    assert np.abs(numeric).max() > 0.1


@pytest.mark.parametrize('evaluator', list(EVALUATORS))
def test_fast_cv_equals_reference_along_a_trajectory(demo_sandwich, paper_cv, evaluator):
    """Random walk beyond the skin (Verlet rebuilds), periodic re-wrapping, and a cell change (NPT).

    The demo cell is 10.25 Å wide, less than the 10.6 Å list cut-off: several images of one pair
    lie within it, and the minimum image still decides.
    """
    cell = demo_sandwich.atoms.cell[:]
    rng = np.random.default_rng(11)
    positions = demo_sandwich.atoms.positions + rng.normal(0.0, THERMAL_NOISE, (len(demo_sandwich.atoms), 3))
    fast = EVALUATORS[evaluator](paper_cv, len(positions), skin=0.6)

    def check(x: np.ndarray, h: np.ndarray) -> None:
        ref, got = evaluate_cv(paper_cv, x, h), fast(x, h)
        assert got.value == pytest.approx(ref.value, rel=1e-10)
        for label in ref.components:
            assert got.components[label] == pytest.approx(ref.components[label], rel=1e-10)
        np.testing.assert_allclose(
            got.gradient, ref.gradient, rtol=0, atol=1e-10 * np.abs(ref.gradient).max()
        )
        np.testing.assert_allclose(
            got.strain_derivative,
            ref.strain_derivative,
            rtol=0,
            atol=1e-10 * np.abs(ref.strain_derivative).max(),
        )

    start = positions.copy()
    for _ in range(12):
        positions = positions + rng.normal(0.0, 0.08, positions.shape)
        check(positions, cell)
    assert np.abs(positions - start).max() > 0.6  # some atoms moved beyond the skin ...
    assert fast.n_builds >= 2  # ... and the list was rebuilt

    # Re-wrapping into the cell (as LAMMPS does) moves atoms by lattice vectors: no rebuild needed.
    builds = fast.n_builds
    fractional = positions @ np.linalg.inv(cell)
    wrapped = (fractional - np.floor(fractional)) @ cell
    assert np.abs(wrapped - positions).max() > 1.0
    check(wrapped, cell)
    shifted = wrapped.copy()
    shifted[::3] += cell[0] - 2 * cell[1] + cell[2]
    check(shifted, cell)
    assert fast.n_builds == builds

    # A 3 % isotropic expansion at fixed fractional coordinates forces a rebuild.
    expanded = 1.03 * cell
    check(wrapped @ np.linalg.inv(cell) @ expanded, expanded)
    assert fast.n_builds == builds + 1


def test_pair_builders_give_the_same_list(demo_sandwich, paper_cv):
    cell = demo_sandwich.atoms.cell[:]
    positions = _frames(demo_sandwich, 1, seed=21)[0] + 3.0 * cell[0]  # unwrapped
    lists = []
    for builder in ('cells', 'brute'):
        fast = FastCoordinationCV(paper_cv, len(positions), skin=1.0, pair_builder=builder)
        fast(positions, cell)
        first, second, mult, term = fast._pairs
        lists.append(sorted(zip(term.tolist(), first.tolist(), second.tolist(), mult.tolist(), strict=True)))
    assert lists[0] == lists[1]
    assert {m for *_, m in lists[0]} == {1.0, 2.0}  # A ∩ B pairs stored once, counted twice


def _pair_set(fast: FastCoordinationCV) -> list[tuple]:
    first, second, mult, term = fast._pairs
    return sorted(zip(term.tolist(), first.tolist(), second.tolist(), mult.tolist(), strict=True))


@pytest.mark.parametrize(
    'cell',
    [
        np.diag([11.0, 12.0, 30.0]),  # >= 5 bins per axis: image shifts from the bins
        np.diag([11.0, 6.5, 30.0]),  # one thin axis: every bin along it, minimum image per pair
        np.array([[11.0, 0.0, 0.0], [3.0, 12.0, 0.0], [-2.0, 1.5, 30.0]]),  # triclinic
    ],
    ids=['orthorhombic', 'thin', 'triclinic'],
)
def test_cell_list_equals_brute_pairs_and_reference_across_rebuilds(cell):
    """The cell-list builder lists exactly the pairs (term, i, j, multiplicity) of the brute-force
    builder at every rebuild of a random walk with re-wrapping, and the CV equals evaluate_cv."""
    rng = np.random.default_rng(5)
    n = 300
    li, s_atoms, anode = np.arange(0, 120), np.arange(120, 180), np.arange(180, 300)
    terms = (
        CoordinationTerm('Li-Li', 1.0, li, np.concatenate([li, anode]), 1.2, 3.0),
        CoordinationTerm('Li-S', -1.0, li, s_atoms, 1.1, 2.8),
        CoordinationTerm('S-An', -1.0, s_atoms[:30], anode[:60], 1.0, 2.5),  # a second group A
    )
    cv = CoordinationCV(terms, 120.0)
    fast = FastCoordinationCV(cv, n, skin=0.5, pair_builder='cells')
    # The other routes on the same Verlet criterion: the same rebuilds, the same list sizes, the same CV.
    others = {name: EVALUATORS[name](cv, n, skin=0.5) for name in ('numba-prange', 'jax')}
    positions = rng.uniform(0.0, 1.0, (n, 3)) @ cell
    builds = 0
    for step in range(10):
        positions = positions + rng.normal(0.0, 0.15, positions.shape)
        if step % 3 == 2:  # re-wrap into the cell, as LAMMPS does
            frac = positions @ np.linalg.inv(cell)
            positions = (frac - np.floor(frac)) @ cell
        got, ref = fast(positions, cell), evaluate_cv(cv, positions, cell)
        for result in (got, *(other(positions, cell) for other in others.values())):
            assert result.value == pytest.approx(ref.value, rel=1e-10, abs=1e-12)
            np.testing.assert_allclose(
                result.gradient, ref.gradient, rtol=0, atol=1e-10 * np.abs(ref.gradient).max()
            )
            np.testing.assert_allclose(
                result.strain_derivative, ref.strain_derivative, rtol=1e-10, atol=1e-12
            )
        for other in others.values():
            assert (other.n_builds, other.n_pairs) == (fast.n_builds, fast.n_pairs)
        if fast.n_builds > builds:
            builds = fast.n_builds
            brute = FastCoordinationCV(cv, n, skin=0.5, pair_builder='brute')
            brute(positions, cell)
            assert _pair_set(fast) == _pair_set(brute)
    assert builds >= 3
    assert {m for *_, m in _pair_set(fast)} == {1.0, 2.0}


def test_fast_cv_triclinic_cell():
    """Minimum image in a skewed cell: fast, NumPy and an explicit image search agree."""
    rng = np.random.default_rng(4)
    cell = np.array([[9.0, 0.0, 0.0], [3.5, 8.5, 0.0], [-2.0, 1.5, 10.0]])
    positions = rng.uniform(0, 1, (40, 3)) @ cell
    term_a = CoordinationTerm('Li-Li', 1.0, np.arange(0, 20), np.arange(5, 40), 3.2, 4.5)
    term_b = CoordinationTerm('Li-S', -1.0, np.arange(0, 20), np.arange(30, 40), 3.0, 4.5)
    cv = CoordinationCV((term_a, term_b), 20.0)
    ref = evaluate_cv(cv, positions, cell)
    for evaluator in EVALUATORS.values():
        got = evaluator(cv, 40, skin=0.5)(positions, cell)
        assert got.value == pytest.approx(ref.value, rel=1e-12)
        np.testing.assert_allclose(got.gradient, ref.gradient, rtol=0, atol=1e-12)
    images = np.array([[i, j, k] for i in range(-2, 3) for j in range(-2, 3) for k in range(-2, 3)]) @ cell
    d = positions[term_a.group_b][None, :, None, :] - positions[term_a.group_a][:, None, None, :] + images
    r = np.linalg.norm(d, axis=-1).min(axis=-1)
    r = r[term_a.group_a[:, None] != term_a.group_b[None, :]]
    brute = switching_function(r, 3.2, 4.5)[0].sum()
    assert ref.components['Li-Li'] == pytest.approx(brute, rel=1e-12)


def test_prange_kernel_gives_the_serial_numbers(demo_sandwich, paper_cv):
    """The numba route in 1 and in 4 blocks over numba's threads: the same CV, CNs, gradient and strain."""
    positions = _frames(demo_sandwich, 1, seed=17)[0]
    cell = demo_sandwich.atoms.cell[:]
    serial = FastCoordinationCV(paper_cv, len(positions))(positions, cell)
    parallel = FastCoordinationCV(paper_cv, len(positions), threads=4)(positions, cell)
    assert parallel.value == pytest.approx(serial.value, rel=1e-13)
    assert parallel.components == pytest.approx(serial.components, rel=1e-13)
    np.testing.assert_allclose(
        parallel.gradient, serial.gradient, rtol=0, atol=1e-13 * np.abs(serial.gradient).max()
    )
    np.testing.assert_allclose(parallel.strain_derivative, serial.strain_derivative, rtol=1e-12)
    with pytest.raises(ValueError, match='threads'):
        FastCoordinationCV(paper_cv, len(positions), threads=0)


def test_jax_route_keeps_jax_global_precision(demo_sandwich, paper_cv):
    """The JAX route runs in fp64 inside ``jax.enable_x64``: other JAX code keeps its default (fp32)."""
    before = jnp.zeros(1).dtype
    result = JaxCoordinationCV(paper_cv, len(demo_sandwich.atoms), device='cpu')(
        demo_sandwich.atoms.positions, demo_sandwich.atoms.cell[:]
    )
    assert result.gradient.dtype == np.float64
    assert jnp.zeros(1).dtype == before


def test_switching_function_is_plumeds_stretched_rational():
    r = np.array([0.0, 1.0, 3.2 - 1e-13, 3.2, 5.0, 9.999, 10.0, 11.0])
    sigma, dsigma = switching_function(r, 3.2, 10.0)
    raw = 1.0 / (1.0 + (r / 3.2) ** 6)
    raw_max = 1.0 / (1.0 + (10.0 / 3.2) ** 6)
    expected = np.where(r < 10.0, (raw - raw_max) / (1.0 - raw_max), 0.0)
    np.testing.assert_allclose(sigma, expected, rtol=1e-14, atol=1e-16)
    assert sigma[0] == 1.0 and sigma[-2:].tolist() == [0.0, 0.0]
    # The general (NN, MM) branch, including its limit at r = R0, equals the MM = 2 NN closed form.
    general, dgeneral = switching_function(r, 3.2, 10.0, nn=6, mm=13)
    x = r / 3.2
    with np.errstate(divide='ignore', invalid='ignore'):
        direct = np.where(np.isclose(x, 1.0), 6 / 13, (1 - x**6) / (1 - x**13))
    direct_max = (1 - (10 / 3.2) ** 6) / (1 - (10 / 3.2) ** 13)
    expected = np.where(r < 10.0, (direct - direct_max) / (1.0 - direct_max), 0.0)
    np.testing.assert_allclose(general, expected, rtol=1e-9)
    h = 1e-6
    for nn, mm, derivative in ((6, 12, dsigma), (6, 13, dgeneral)):
        mid = np.array([1.0, 2.5, 4.0, 7.0])
        numeric = (
            switching_function(mid + h, 3.2, 10.0, nn, mm)[0]
            - switching_function(mid - h, 3.2, 10.0, nn, mm)[0]
        ) / (2 * h)
        analytic = switching_function(mid, 3.2, 10.0, nn, mm)[1]
        np.testing.assert_allclose(analytic, numeric, rtol=1e-6)
        assert derivative.shape == r.shape


# --------------------------------------------------------------------------------------------------
# The moving restraint
# --------------------------------------------------------------------------------------------------


def test_bias_forces_match_finite_differences(demo_sandwich, paper_cv):
    cell = demo_sandwich.atoms.cell[:]
    positions = _frames(demo_sandwich, 1, seed=7)[0]
    s_initial = evaluate_cv(paper_cv, positions, cell).value
    restraint = MovingRestraint(
        kappa=500.0, at_start=s_initial, at_end=s_initial + 1.0, step_start=0, step_end=1000
    )
    step = 400
    fast = FastCoordinationCV(paper_cv, len(positions))

    def energy(x: np.ndarray) -> float:
        return restraint_bias(restraint, fast(x, cell).value, step)[0]

    result = fast(positions, cell)
    bias, dbias, s0 = restraint_bias(restraint, result.value, step)
    assert s0 == pytest.approx(s_initial + 0.4, rel=1e-14)
    assert bias == pytest.approx(0.5 * 500.0 * (result.value - s0) ** 2)
    forces = -dbias * result.gradient
    atoms = _probe_atoms(paper_cv)
    numeric = -_finite_difference(energy, positions, atoms)
    np.testing.assert_allclose(forces[atoms], numeric, rtol=0, atol=1e-6 * np.abs(forces[atoms]).max())


def test_restraint_schedule_and_validation():
    restraint = MovingRestraint(kappa=500.0, at_start=-2.0, at_end=3.0, step_start=100, step_end=600)
    assert [restraint.s0(s) for s in (0, 100, 350, 600, 10**6)] == [-2.0, -2.0, 0.5, 3.0, 3.0]
    assert restraint_bias(restraint, 1.0, 350) == (0.5 * 500.0 * 0.25, 500.0 * 0.5, 0.5)
    work = RestraintWork(restraint)
    # CV held at s = 0 while s0 moves from -2 to 3: work = ∫ -κ(s - s0) ds0 = κ (3² - 2²) / 2.
    for step in range(0, 700):
        work.update(0.0, step)
    assert work.work == pytest.approx(500.0 * (3.0**2 - 2.0**2) / 2, rel=1e-12)
    with pytest.raises(ValueError, match='kappa'):
        MovingRestraint(kappa=-1.0, at_start=0.0, at_end=1.0, step_start=0, step_end=10)
    with pytest.raises(ValueError, match='step_start <= step_end'):
        MovingRestraint(kappa=1.0, at_start=0.0, at_end=1.0, step_start=10, step_end=5)


def test_default_schedule_and_its_rationale():
    """s0 travels DEFAULT_S0_DELTA over the paper's 150 ps; the per-atom numbers behind it hold."""
    restraint = default_moving_restraint(-2.83)
    assert restraint == MovingRestraint(500.0, -2.83, -2.33, 0, 150_000)
    # Per-atom Li-Li coordination of bcc Li (a = 3.42 Å) with the paper's switching function, D_MAX = 10 Å.
    lithium = bulk('Li', 'bcc', a=3.42, cubic=True).repeat(7)
    every = np.arange(len(lithium))
    cv = CoordinationCV((CoordinationTerm('Li-Li', 1.0, every, every, 3.2, 10.0),), float(len(lithium)))
    assert evaluate_cv(cv, lithium.positions, lithium.cell[:]).value == pytest.approx(9.51, abs=0.01)


def test_normalised_default_keeps_bias_forces_moderate(demo_sandwich):
    """κ = 500 eV: a thermal fluctuation of the normalised CV gives small forces, of the raw sum huge ones."""
    groups, layers = demo_sandwich.groups, demo_sandwich.layers
    cell = demo_sandwich.atoms.cell[:]
    first, second = _frames(demo_sandwich, 2, seed=9)
    peaks = {}
    for normalisation in ('group_a', 'none'):
        cv = build_paper_cv(groups, layers, normalisation=normalisation)
        restraint = MovingRestraint(500.0, evaluate_cv(cv, first, cell).value, 0.0, 0, 0)
        result = evaluate_cv(cv, second, cell)
        _, dbias, _ = restraint_bias(restraint, result.value, 0)
        peaks[normalisation] = np.abs(dbias * result.gradient).max()
    assert peaks['group_a'] < 1.0  # eV/Å: below typical interatomic forces at 300-600 K
    # n_A² = 48² times larger (1296² in the paper's sandwich): a blow-up within steps at 1 fs.
    assert peaks['none'] > 100.0
    assert peaks['none'] / peaks['group_a'] == pytest.approx(48.0**2, rel=1e-9)


def test_definitions_validate():
    with pytest.raises(ValueError, match='duplicate'):
        CoordinationTerm('Li-S', -1.0, np.array([0, 0]), np.array([1]), 3.0, 10.0)
    with pytest.raises(ValueError, match='label'):
        CoordinationTerm('Li_S', -1.0, np.array([0]), np.array([1]), 3.0, 10.0)
    with pytest.raises(ValueError, match='nn < mm'):
        CoordinationTerm('Li-S', -1.0, np.array([0]), np.array([1]), 3.0, 10.0, nn=12, mm=6)
    term = CoordinationTerm('Li-S', -1.0, np.array([0]), np.array([1]), 3.0, 10.0)
    with pytest.raises(ValueError, match='unique'):
        CoordinationCV((term, term), 1.0)
    with pytest.raises(ValueError, match='normalisation'):
        CoordinationCV((term,), 0.0)
    with pytest.raises(ValueError, match='positions'):
        evaluate_cv(CoordinationCV((term,), 1.0), np.zeros((1, 3)), np.eye(3) * 10)
    with pytest.raises(ValueError, match='n_atoms'):
        FastCoordinationCV(CoordinationCV((term,), 1.0), 1)
