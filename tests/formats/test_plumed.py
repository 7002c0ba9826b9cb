"""plumed.dat writer/reader and the COLVAR format (one parser for the PLUMED and the fast route)."""

from __future__ import annotations

import numpy as np
import pytest

from aiida_lisei.engines.lammps_plumed import run_plumed
from aiida_lisei.engines.probe import find_plumed_kernel
from aiida_lisei.formats.plumed import (
    colvar_fields,
    colvar_header,
    colvar_line,
    format_atom_list,
    parse_atom_list,
    read_colvar,
    read_plumed_input,
    write_colvar,
    write_plumed_input,
)
from aiida_lisei.science.restraint_cv import (
    CoordinationCV,
    CoordinationTerm,
    MovingRestraint,
    build_paper_cv,
    evaluate_cv,
)


@pytest.fixture
def cv() -> CoordinationCV:
    """A paper-like CV on 40 atoms: Li 0-9 and 20-24 in A, overlapping Li-Li group B, S and Cl."""
    li = np.array([*range(10), *range(20, 25)])
    return CoordinationCV(
        (
            CoordinationTerm('Li-Li', 1.0, li, np.array([*range(10), *range(15, 25)]), 3.2, 10.0),
            CoordinationTerm('Li-S', -1.0, li, np.arange(25, 35), 3.0, 10.0),
            CoordinationTerm('Li-Cl', -1.0, li, np.array([35, 37, 39]), 4.0, 9.5, nn=8, mm=14),
        ),
        normalisation=15.0,
    )


@pytest.fixture
def restraint() -> MovingRestraint:
    return MovingRestraint(
        kappa=500.0, at_start=-3.141592653589793, at_end=2.5, step_start=0, step_end=150000
    )


def test_written_input(cv, restraint):
    text = write_plumed_input(cv, restraint, stride=50, colvar_file='COLVAR.restraint')
    lines = [line for line in text.splitlines() if not line.startswith('#')]
    assert lines[0] == 'UNITS LENGTH=A ENERGY=eV'
    assert lines[1] == (
        'cn_Li_Li: COORDINATION GROUPA=1-10,21-25 GROUPB=1-10,16-25 '
        'SWITCH={RATIONAL R_0=3.2 NN=6 MM=12 D_MAX=10.0}'
    )
    assert lines[3].endswith('GROUPB=36,38,40 SWITCH={RATIONAL R_0=4.0 NN=8 MM=14 D_MAX=9.5}')
    assert lines[4] == (
        'cv: COMBINE ARG=cn_Li_Li,cn_Li_S,cn_Li_Cl '
        'COEFFICIENTS=0.06666666666666667,-0.06666666666666667,-0.06666666666666667 PERIODIC=NO'
    )
    assert lines[5] == (
        'restraint: MOVINGRESTRAINT ARG=cv STEP0=0 AT0=-3.141592653589793 KAPPA0=500.0 '
        'STEP1=150000 AT1=2.5 KAPPA1=500.0'
    )
    assert lines[6] == (
        'PRINT ARG=cv,cn_Li_Li,cn_Li_S,cn_Li_Cl,restraint.cv_cntr,restraint.bias,restraint.work '
        'STRIDE=50 FILE=COLVAR.restraint FMT=%.12g'
    )
    assert 'NLIST' not in text
    with_list = write_plumed_input(cv, restraint, stride=50, nl_stride=20)
    assert with_list.count('NLIST NL_CUTOFF=12.0 NL_STRIDE=20') == 3
    assert colvar_fields(cv) == [
        'time',
        *lines[6].split()[1][4:].split(','),
    ]


@pytest.mark.parametrize('nl_stride', [None, 10])
def test_round_trip(cv, restraint, nl_stride):
    text = write_plumed_input(cv, restraint, stride=7, colvar_file='CV.dat', nl_stride=nl_stride)
    cv_back, restraint_back, stride, colvar_file = read_plumed_input(text)
    assert cv_back == cv
    assert restraint_back == restraint
    assert (stride, colvar_file) == (7, 'CV.dat')
    assert (
        write_plumed_input(cv_back, restraint_back, stride=7, colvar_file='CV.dat', nl_stride=nl_stride)
        == text
    )


def test_round_trip_paper_cv_on_a_sandwich_ordering():
    """Non-contiguous groups, a normalisation that is not a power of two, the raw sum."""
    rng = np.random.default_rng(0)
    groups = rng.choice(
        ['electrolyte_Li', 'electrolyte_S', 'electrolyte_P', 'electrolyte_Cl', 'source_Li'], 500
    )
    groups = np.concatenate([np.array(['anode_Li'] * 90), groups])
    layers = np.concatenate([np.repeat(np.arange(10, 0, -1), 9), np.zeros(500, int)])
    for normalisation in ('group_a', 'none', 3.7):
        cv = build_paper_cv(groups.tolist(), layers.tolist(), normalisation=normalisation)
        restraint = MovingRestraint(2.0, 0.1, 0.3, 10, 20)
        back, _, _, _ = read_plumed_input(write_plumed_input(cv, restraint, stride=1))
        assert back == cv


def test_plain_plumed_input_without_normalisation_comment():
    text = """
    # written by hand
    UNITS LENGTH=A ENERGY=eV TIME=ps
    cn_Li_S: COORDINATION GROUPA=1-3 GROUPB=4,5 SWITCH={RATIONAL R_0=3.0 D_MAX=8.0}  # NN, MM defaults
    COMBINE LABEL=cv ARG=cn_Li_S COEFFICIENTS=-0.25 PERIODIC=NO
    restraint: MOVINGRESTRAINT ARG=cv STEP0=0 AT0=-1 KAPPA0=10 STEP1=100
    PRINT ARG=cv STRIDE=10 FILE=COLVAR
    """
    cv, restraint, stride, colvar_file = read_plumed_input(text)
    (term,) = cv.terms
    assert (term.label, term.weight, term.nn, term.mm, term.r_0, term.d_max) == (
        'Li-S',
        -0.25,
        6,
        12,
        3.0,
        8.0,
    )
    assert cv.normalisation == 1.0
    np.testing.assert_array_equal(term.group_a, [0, 1, 2])
    np.testing.assert_array_equal(term.group_b, [3, 4])
    assert restraint == MovingRestraint(10.0, -1.0, -1.0, 0, 100)
    assert (stride, colvar_file) == (10, 'COLVAR')


_GOOD = """UNITS LENGTH=A ENERGY=eV
cn_Li_S: COORDINATION GROUPA=1-3 GROUPB=4,5 SWITCH={RATIONAL R_0=3.0 NN=6 MM=12 D_MAX=8.0}
cv: COMBINE ARG=cn_Li_S COEFFICIENTS=-1 PERIODIC=NO
restraint: MOVINGRESTRAINT ARG=cv STEP0=0 AT0=-1 KAPPA0=10 STEP1=100 AT1=1 KAPPA1=10
PRINT ARG=cv STRIDE=10 FILE=COLVAR
"""


@pytest.mark.parametrize(
    ('old', 'new', 'message'),
    [
        ('UNITS LENGTH=A ENERGY=eV', 'UNITS LENGTH=nm ENERGY=eV', 'only UNITS LENGTH=A'),
        ('UNITS LENGTH=A ENERGY=eV', '', 'lacks UNITS'),
        ('{RATIONAL R_0=3.0', '{EXP R_0=3.0', 'only RATIONAL'),
        ('D_MAX=8.0}', 'D_MAX=8.0 D_0=0.5}', 'D_0'),
        ('D_MAX=8.0}', 'D_MAX=8.0 NOSTRETCH}', 'NOSTRETCH'),
        ('GROUPB=4,5', 'GROUPB=4,5 NOPBC', 'NOPBC'),
        ('GROUPB=4,5', 'GROUPB=@mdatoms', 'atom list'),
        ('KAPPA1=10', 'KAPPA1=20', 'KAPPA1 differs'),
        ('AT1=1', 'AT1=1 STEP2=200 AT2=3', 'STEP2'),
        ('cn_Li_S: COORDINATION', 'cn: COORDINATION', 'cn_<A>_<B>'),
        ('ARG=cn_Li_S COEFF', 'ARG=cn_Li_P COEFF', 'not COORDINATION actions'),
        ('PERIODIC=NO', 'PERIODIC=-pi,pi', 'PERIODIC=NO'),
        ('PRINT ARG=cv', 'METAD ARG=cv PACE=10\nPRINT ARG=cv', "'METAD' is not understood"),
        ('MOVINGRESTRAINT ARG=cv', 'MOVINGRESTRAINT ARG=cn_Li_S', 'not on the COMBINE'),
        ('STRIDE=10', 'STRIDE=x', 'not an integer'),
        ('AT0=-1', 'AT0=nan', 'not finite'),
        ('cv: COMBINE ARG=cn_Li_S', 'cv: COMBINE ...\n ARG=cn_Li_S', 'continuation'),
    ],
)
def test_reader_rejects_what_it_does_not_understand(old, new, message):
    assert old in _GOOD
    read_plumed_input(_GOOD)  # the unmodified input is fine
    with pytest.raises(ValueError, match=message):
        read_plumed_input(_GOOD.replace(old, new))


def test_writer_validation(cv, restraint):
    with pytest.raises(ValueError, match='stride'):
        write_plumed_input(cv, restraint, stride=0)
    with pytest.raises(ValueError, match='nl_cutoff'):
        write_plumed_input(cv, restraint, stride=1, nl_stride=10, nl_cutoff=9.0)
    with pytest.raises(ValueError, match='needs `nl_stride`'):
        write_plumed_input(cv, restraint, stride=1, nl_cutoff=12.0)
    with pytest.raises(ValueError, match='nl_stride'):
        write_plumed_input(cv, restraint, stride=1, nl_stride=0)


def test_atom_lists():
    assert format_atom_list([0, 1, 2, 4, 7, 8, 3]) == '1-3,5,8-9,4'
    np.testing.assert_array_equal(parse_atom_list('1-3,5,8-9,4'), [0, 1, 2, 4, 7, 8, 3])
    rng = np.random.default_rng(2)
    indices = rng.permutation(300)[:120]
    np.testing.assert_array_equal(parse_atom_list(format_atom_list(indices)), indices)
    for bad in ('0', '5-3', '1,,2', 'a-b'):
        with pytest.raises(ValueError):
            parse_atom_list(bad)


# --------------------------------------------------------------------------------------------------
# COLVAR
# --------------------------------------------------------------------------------------------------


def test_colvar_round_trip(tmp_path, cv):
    fields = colvar_fields(cv)
    rng = np.random.default_rng(3)
    columns = {name: rng.normal(size=5) * 10.0 ** rng.integers(-3, 5) for name in fields}
    text = write_colvar(columns, tmp_path / 'COLVAR')
    assert text.startswith('#! FIELDS time cv cn_Li_Li cn_Li_S cn_Li_Cl restraint.cv_cntr ')
    for source in (tmp_path / 'COLVAR', text):
        back = read_colvar(source)
        assert list(back) == fields
        for name in fields:
            np.testing.assert_allclose(back[name], columns[name], rtol=1e-11)
    # Incremental writing (the fast route) gives the same text.
    assert (
        colvar_header(fields) + ''.join(colvar_line(row) for row in zip(*columns.values(), strict=True))
        == text
    )


def test_colvar_restart_headers_and_errors():
    restart = '#! FIELDS time cv\n#! SET min_cv -pi\n 0 1.5\n 0.1 1.25\n#! FIELDS time cv\n 0.2 1\n'
    np.testing.assert_allclose(read_colvar(restart)['cv'], [1.5, 1.25, 1.0])
    with pytest.raises(ValueError, match='changes fields'):
        read_colvar('#! FIELDS time cv\n 0 1\n#! FIELDS time cv bias\n 0 1 2\n')
    with pytest.raises(ValueError, match='2 values for 3 fields'):
        read_colvar('#! FIELDS time cv bias\n 0 1\n')
    with pytest.raises(ValueError, match='different lengths'):
        write_colvar({'time': [0, 1], 'cv': [1]})
    assert read_colvar('#! FIELDS time cv\n')['cv'].shape == (0,)
    for text in ('', '/dev/zero', 'COLVAR'):  # a string is text, never a file name
        with pytest.raises(ValueError, match='FIELDS header'):
            read_colvar(text)


@pytest.mark.engines
def test_plumed_accepts_the_written_input(tmp_path, cv, restraint):
    """The real PLUMED kernel runs our plumed.dat (with NLIST); its COLVAR reads back; values agree."""
    kernel = find_plumed_kernel()
    if kernel is None:
        pytest.skip('no PLUMED kernel: run `make plumed-kernel` or set PLUMED_KERNEL')
    pytest.importorskip('plumed')
    rng = np.random.default_rng(8)
    cell = np.diag([14.0, 15.0, 16.0])
    frames = [rng.uniform(0.0, 1.0, (40, 3)) @ cell for _ in range(3)]
    text = write_plumed_input(cv, restraint, stride=2, colvar_file='COLVAR', nl_stride=1, nl_cutoff=11.0)
    bias, forces, virial = run_plumed(text, frames, [cell] * 3, workdir=tmp_path, kernel=kernel)
    colvar = read_colvar(tmp_path / 'COLVAR')
    assert list(colvar) == colvar_fields(cv)
    np.testing.assert_allclose(colvar['time'], [0.0, 0.002])  # STRIDE=2: steps 0 and 2
    cv_back, *_ = read_plumed_input((tmp_path / 'plumed.dat').read_text())
    for row, step in enumerate((0, 2)):
        ref = evaluate_cv(cv_back, frames[step], cell)
        assert colvar['cv'][row] == pytest.approx(ref.value, rel=1e-10)
        assert colvar['cn_Li_Cl'][row] == pytest.approx(ref.components['Li-Cl'], rel=1e-10)
    assert forces.shape == (3, 40, 3) and virial.shape == (3, 3, 3) and bias.shape == (3,)
    ref = evaluate_cv(cv_back, frames[1], cell)
    dbias = 500.0 * (ref.value - restraint.s0(1))
    assert bias[1] == pytest.approx(0.5 * dbias * (ref.value - restraint.s0(1)), rel=1e-9)
    np.testing.assert_allclose(forces[1], -dbias * ref.gradient, rtol=0, atol=1e-9 * np.abs(forces[1]).max())
    np.testing.assert_allclose(
        virial[1], dbias * ref.strain_derivative, rtol=0, atol=1e-9 * np.abs(virial[1]).max()
    )
