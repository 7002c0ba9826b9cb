"""Bad inputs refused before submission, with messages that name the input and say what to do (issue 14).

Cheap: the shared checks of ``common/validation.py`` on their own, then the port and namespace validators of
the processes (``spec().inputs.validate``: what AiiDA runs before any node is stored). No engine runs.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from aiida import orm
from ase.build import bulk

from aiida_lisei.common.validation import (
    check_code_plugin,
    check_finite_geometry,
    check_stride_within_run,
    finite_number,
    fraction,
    safe_label,
)
from aiida_lisei.formats.lammps import check_exploration_parameters
from aiida_lisei.science.restraint_cv import check_minimum_image, check_restraint_parameters
from aiida_lisei.science.selection import TrustLevels

CUBIC = np.diag([5.0, 5.0, 5.0])


# -- the shared checks -----------------------------------------------------------------------------------


@pytest.mark.parametrize('value', [math.nan, math.inf, 'nan', None, True])
def test_finite_number(value):
    with pytest.raises(ValueError, match=r'`x` must be a finite number'):
        finite_number(value, '`x`')
    assert finite_number(-2.5, '`x`') == -2.5


@pytest.mark.parametrize('value', [1.5, -0.1, math.nan, '0.5'])
def test_fraction(value):
    with pytest.raises(ValueError, match=r'`accuracy` must be a fraction in \[0, 1\]'):
        fraction(value, '`accuracy`')
    assert fraction(1, '`accuracy`') == 1
    with pytest.raises(ValueError, match=r'\(0, 1\]'):
        fraction(0, '`accuracy`', zero=False)


@pytest.mark.parametrize('label', ['../bcc li', 'bcc/li', 'bcc li', '..', '', '.hidden', 'a..b', 3])
def test_unsafe_labels(label):
    """A label that could escape a folder or break a shell is refused, with a safe spelling suggested."""
    with pytest.raises(ValueError, match=r'`system_label` must be a plain name .* got') as info:
        safe_label(label, '`system_label`')
    if label == '../bcc li':
        assert "'bcc_li'" in str(info.value)
    assert safe_label('bcc_li-2.x', '`system_label`') == 'bcc_li-2.x'


def test_finite_geometry():
    positions = np.zeros((2, 3))
    check_finite_geometry(CUBIC, positions, '`structure`')
    positions[1, 2] = np.nan
    with pytest.raises(ValueError, match=r'`structure`: positions of sites \[1\] are NaN .* give finite'):
        check_finite_geometry(CUBIC, positions, '`structure`')
    flat = np.array([[5.0, 0, 0], [0, 5.0, 0], [5.0, 5.0, 0]])
    with pytest.raises(ValueError, match=r'zero volume .* give three independent cell vectors'):
        check_finite_geometry(flat, np.zeros((2, 3)), '`structure`')
    with pytest.raises(ValueError, match='the cell holds NaN'):
        check_finite_geometry(np.full((3, 3), np.inf), np.zeros((2, 3)), '`structure`')
    check_finite_geometry(np.zeros((3, 3)), np.zeros((2, 3)), 'molecule', periodic=False)


def test_stride_and_cutoff():
    check_stride_within_run(10, 10, '`stride`')
    with pytest.raises(ValueError, match=r'`stride` = 20 is longer than the run \(`n_steps` = 10\).*lower'):
        check_stride_within_run(20, 10, '`stride`')
    check_minimum_image(2.4, CUBIC)
    with pytest.raises(ValueError, match=r'd_max = 2.6 Å exceeds half the narrowest cell width \(2.500 Å\)'):
        check_minimum_image(2.6, CUBIC)


def test_code_plugin():
    check_code_plugin('lisei.tblite', '`tblite.code`', ('lisei.tblite',))
    with pytest.raises(ValueError, match=r'`tblite.code` is required: give a code of plugin lisei.tblite'):
        check_code_plugin(None, '`tblite.code`', ('lisei.tblite',))
    with pytest.raises(
        ValueError, match=r'`tblite.code` is a code of plugin `lisei.dp_train`, not `lisei.tblite`'
    ):
        check_code_plugin('lisei.dp_train', '`tblite.code`', ('lisei.tblite',))


# -- the checks of the science and format layers ---------------------------------------------------------


@pytest.mark.parametrize('f_hi', ['nan', math.nan, math.inf, None])
def test_trust_levels_not_a_number(f_hi):
    """``f_hi: 'nan'`` gave numpy's ``ufunc 'isfinite' not supported``; now the levels are named."""
    with pytest.raises(ValueError, match='trust levels must be positive and finite'):
        TrustLevels.from_dict({'f_lo': 0.1, 'f_hi': f_hi})


@pytest.mark.parametrize('kappa', [-1.0, math.nan, 'big'])
def test_negative_kappa(kappa):
    with pytest.raises(ValueError, match=r'`kappa` must be a non-negative number'):
        check_restraint_parameters({'kappa': kappa}, resolved=False)


def test_stride_longer_than_the_exploration():
    with pytest.raises(ValueError, match=r'`stride` = 100 is longer than the run'):
        check_exploration_parameters({'temperature': 300, 'n_steps': 50, 'stride': 100})


# -- the processes' validators (run by AiiDA before any node is stored) ----------------------------------


def _li16(nan: bool = False, flat: bool = False) -> orm.StructureData:
    atoms = bulk('Li', 'bcc', a=3.42, cubic=True).repeat(2)
    if nan:
        atoms.positions[3, 0] = np.nan
    if flat:
        atoms.cell[2] = atoms.cell[0] + atoms.cell[1]
    return orm.StructureData(ase=atoms)


def _validate(process: str, inputs: dict) -> str | None:
    """The message of the validators of the ports in ``inputs`` of ``process`` (``None``: accepted)."""
    from aiida.plugins import CalculationFactory, WorkflowFactory

    factory = (
        WorkflowFactory if process in ('lisei.label', 'lisei.concurrent_learning') else CalculationFactory
    )
    ports = factory(process).spec().inputs
    errors = [ports[name].validate(value) for name, value in inputs.items()]
    errors = [str(error) for error in errors if error is not None]
    return '; '.join(errors) or None


@pytest.mark.parametrize(
    ('structure', 'message'),
    [
        (lambda: _li16(nan=True), 'positions of sites \\[3\\] are NaN'),
        (lambda: _li16(flat=True), 'zero volume'),
    ],
)
@pytest.mark.parametrize('process', ['lisei.exploration', 'lisei.tblite_md'])
def test_structures_with_nan_or_no_volume(process, structure, message):
    """NaN positions and a zero-volume cell: a message naming the structure, not a serialisation error or
    ``LinAlgError``; nothing is stored."""
    count = orm.QueryBuilder().append(orm.Node).count()
    error = _validate(process, {'structure': structure()})
    assert error is not None and 'structure' in error
    assert pytest.importorskip('re').search(message, error), error
    assert orm.QueryBuilder().append(orm.Node).count() == count


def test_nan_in_a_trajectory():
    trajectory = orm.TrajectoryData()
    positions = np.zeros((2, 1, 3))
    positions[1, 0, 1] = np.nan
    trajectory.set_trajectory(
        ['Li'], positions, cells=np.repeat(CUBIC[None], 2, axis=0), pbc=(True, True, True)
    )
    error = _validate('lisei.qeq', {'trajectory': trajectory})
    assert error is not None and '`trajectory` frame 1: positions of sites [0] are NaN' in error


@pytest.mark.parametrize('process', ['lisei.tblite', 'lisei.label'])
def test_unsafe_system_label(process):
    error = _validate(process, {'system_label': orm.Str('../bcc li')})
    assert error is not None and '`system_label` must be a plain name' in error and "'bcc_li'" in error


@pytest.fixture
def codes(aiida_code_installed):
    """Codes of three plugins (the executable is never run)."""
    return {
        plugin: aiida_code_installed(
            label=plugin.replace('.', '-'), filepath_executable='/bin/true', default_calc_job_plugin=plugin
        )
        for plugin in ('lisei.tblite', 'lisei.dp_train', 'lisei.exploration')
    }


def test_label_engine_code_missing_or_of_the_wrong_kind(codes):
    from aiida_lisei.workchains.label import validate_inputs

    structures = {'a': _li16()}
    base = {'engine': orm.Str('tblite'), 'structures': structures}
    assert 'at least a code' in validate_inputs({**base, 'tblite': {}})
    message = validate_inputs({**base, 'tblite': {'parameters': orm.Dict({})}})
    assert '`tblite.code` is required' in message
    message = validate_inputs({**base, 'tblite': {'code': codes['lisei.dp_train']}})
    assert '`tblite.code` is a code of plugin `lisei.dp_train`, not `lisei.tblite`' in message
    assert validate_inputs({**base, 'tblite': {'code': codes['lisei.tblite']}}) is None


@pytest.mark.parametrize(
    ('change', 'message'),
    [
        ({'train': {'dp_train': {}}}, '`train.dp_train.code` is required'),
        ({'explore': {}}, '`explore.code` is required'),
        ({'explore': 'tblite'}, '`explore.code` is a code of plugin `lisei.tblite`'),
        ({'max_iterations': 0}, '`max_iterations` must be a positive integer, got 0'),
        ({'fp_task_max': -1}, '`fp_task_max` must be an integer >= 0, got -1'),
        ({'num_models': 1}, '`num_models` must be an integer >= 2, got 1'),
        ({'seed': -5}, '`seed` must be an integer in [1,'),
        ({'converged_accuracy': 1.5}, '`converged_accuracy` must be a fraction in (0, 1]'),
        ({'structures': 'nan'}, '`structures.li`: positions of sites [3] are NaN'),
        ({'train': 'P S Cl'}, "`structures.li` has elements ['Li'] outside the type map ['P', 'S', 'Cl']"),
    ],
)
def test_concurrent_learning_run_settings(codes, change, message):
    """Each bad setting of ``lisei.concurrent_learning`` is named before anything runs."""
    from aiida_lisei.workchains.concurrent_learning import validate_inputs

    inputs = {
        'train': {'dp_train': {'code': codes['lisei.dp_train']}},
        'explore': {'code': codes['lisei.exploration']},
        'max_iterations': orm.Int(2),
        'fp_task_max': orm.Int(6),
        'num_models': orm.Int(4),
        'seed': orm.Int(7),
        'converged_accuracy': orm.Float(0.99),
        'structures': {'li': _li16()},
    }
    assert validate_inputs(inputs) is None
    if change.get('explore') == 'tblite':
        change = {'explore': {'code': codes['lisei.tblite']}}
    elif change.get('structures') == 'nan':
        change = {'structures': {'li': _li16(nan=True)}}
    elif change.get('train') == 'P S Cl':  # a type map without Li: found before anything is trained
        parameters = orm.Dict({'model': {'type_map': ['P', 'S', 'Cl']}})
        change = {'train': {'dp_train': {'code': codes['lisei.dp_train'], 'parameters': parameters}}}
    else:
        change = {
            key: orm.to_aiida_type(value) if isinstance(value, int | float) else value
            for key, value in change.items()
        }
    error = validate_inputs({**inputs, **change})
    assert error is not None and message in error, error


@pytest.mark.parametrize(
    ('restraint', 'message'),
    [
        ({'d_max': 6.0}, 'restraint: d_max = 6 Å exceeds half the narrowest cell width (3.420 Å)'),
        ({'kappa': -500.0}, 'restraint: `kappa` must be a non-negative number'),
    ],
)
def test_restraint_work_chain_checks_the_restraint_on_the_structure(restraint, message):
    """``lisei.restraint_md`` (work chain): κ and ``d_max`` against the cell, before anything runs."""
    from aiida_lisei.workchains.restraint_md import validate_refinement

    inputs = {'md': {'structure': _li16()}, 'restraint': orm.Dict({'d_max': 3.0})}
    assert validate_refinement(inputs) is None
    error = validate_refinement({**inputs, 'restraint': orm.Dict(restraint)})
    assert error is not None and message in error, error
