"""``lisei.cp2k.md``: CP2K input building, the trajectory files' parser, and real CP2K runs.

The runs use CP2K 2023.1 (``/usr/bin/cp2k.psmp``) with GFN1-xTB (metal settings) on rattled bcc Li16,
2 MPI ranks, a few MD steps (~1-3 s per step on 2 busy cores); skipped where CP2K is not installed.
"""

from __future__ import annotations

import numpy as np
import pytest
from aiida import orm
from aiida.engine import run_get_node
from aiida.plugins import WorkflowFactory

from aiida_lisei.formats.cp2k import BOHR_TO_ANGSTROM, HARTREE_TO_EV
from aiida_lisei.formats.cp2k_md import parse_cp2k_trajectory
from aiida_lisei.workchains.cp2k_md import check_parameters, join_runs, motion_parameters

from .test_cp2k_label import OPTIONS, li16

Cp2kMdWorkChain = WorkflowFactory('lisei.cp2k.md')
InitialDataCp2kWorkChain = WorkflowFactory('lisei.initial_data.cp2k')

MD = {'task': 'md', 'md': {'temperature': 300.0, 'timestep': 1.0, 'n_steps': 5, 'stride': 1, 'tdamp': 100.0}}

XYZ = """2
 i =        0, time =        0.000, E =        -1.0000000000
Li 0.0 0.0 0.0
Li 1.0 1.0 1.0
2
 i =        2, time =        2.000, E =        -1.5000000000
Li 0.1 0.0 0.0
Li 1.0 1.1 1.0
2
 i =        4, time =        4.000, E =        -2.0
Li 0.1
"""
CELL = """#   Step   Time [fs]       Ax [Angstrom] ...
       0       0.000        6.0 0.0 0.0 0.0 6.0 0.0 0.0 0.0 6.0 216.0
       2       2.000        6.1 0.0 0.0 0.0 6.0 0.0 0.0 0.0 6.0 219.6
"""


def test_check_parameters():
    """The tblite_md schema without a calculator section (tblite, chgnet); CP2K has no FIRE."""
    assert check_parameters(MD)['md']['n_steps'] == 5
    for calculator in ('tblite', 'chgnet'):
        with pytest.raises(ValueError, match=rf"\['{calculator}'\] settings do not apply to CP2K"):
            check_parameters({**MD, calculator: {}})
    with pytest.raises(ValueError, match='BFGS'):
        check_parameters({'task': 'relax', 'relax': {'optimizer': 'FIRE'}})


def test_motion_parameters():
    """MD: NVT Nosé-Hoover in K and fs; relax: CELL_OPT with fmax converted to Hartree/Bohr."""
    run_type, motion = motion_parameters(check_parameters(MD))
    assert run_type == 'MD'
    assert motion['MD']['STEPS'] == 5 and motion['MD']['MAX_STEPS'] == 6
    assert motion['MD']['ENSEMBLE'] == 'NVT' and motion['MD']['THERMOSTAT']['TYPE'] == 'NOSE'
    assert motion['MD']['THERMOSTAT']['NOSE'] == {'LENGTH': 3, 'TIMECON': 100.0}
    assert motion['PRINT']['TRAJECTORY']['EACH']['MD'] == 1 and 'STRESS' not in motion['PRINT']
    run_type, motion = motion_parameters(
        check_parameters({'task': 'relax', 'relax': {'cell': True, 'fmax': 0.1}})
    )
    assert run_type == 'CELL_OPT'
    assert motion['CELL_OPT']['MAX_FORCE'] == pytest.approx(0.1 * BOHR_TO_ANGSTROM / HARTREE_TO_EV)


def test_parse_trajectory_files():
    """Frames matched by step across files; a truncated last frame dropped; eV and eV/Å."""
    frames = parse_cp2k_trajectory(XYZ, XYZ, CELL)
    assert frames['steps'].tolist() == [0, 2]
    np.testing.assert_allclose(frames['energies'], [-HARTREE_TO_EV, -1.5 * HARTREE_TO_EV])
    np.testing.assert_allclose(frames['forces'][1, 0], [0.1 * HARTREE_TO_EV / BOHR_TO_ANGSTROM, 0, 0])
    assert frames['cells'][1, 0, 0] == 6.1
    assert parse_cp2k_trajectory(XYZ, None, None)['cells'] is None


def test_join_runs():
    """A continued MD: the repeated first step of the second run is dropped."""
    trajectories = []
    for steps in ([0, 1, 2], [2, 3]):
        trajectory = orm.TrajectoryData()
        trajectory.set_trajectory(
            ['Li'],
            np.zeros((len(steps), 1, 3)),
            stepids=np.array(steps),
            cells=np.tile(np.eye(3), (len(steps), 1, 1)),
        )
        trajectory.set_array('energies', np.array(steps, dtype=float))
        trajectories.append(trajectory)
    joined = join_runs(
        trajectory_0000=trajectories[0],
        trajectory_0001=trajectories[1],
        parameters_0000=orm.Dict({'nframes': 3, 'mean_temperature': 300.0}),
        parameters_0001=orm.Dict({'nframes': 2, 'mean_temperature': 310.0}),
    )
    assert joined['trajectory'].get_stepids().tolist() == [0, 1, 2, 3]
    assert joined['trajectory'].get_array('energies').tolist() == [0, 1, 2, 3]
    assert joined['output_parameters']['nframes'] == 4
    assert joined['output_parameters']['mean_temperature'] == pytest.approx(304.0)


def _run_md(code, structure, seed):
    builder = Cp2kMdWorkChain.get_builder_from_protocol(
        code, structure, MD, seed=seed, protocol='gfn1_xtb', options=OPTIONS
    )
    results, node = run_get_node(builder)
    assert node.is_finished_ok, node.exit_message
    return results, node


def test_md_li16_gfn1_xtb(cp2k_code):
    """5 NVT steps at 300 K, stride 1: 6 frames, consistent energies/forces; the seed sets the velocities."""
    structure = li16()
    results, node = _run_md(cp2k_code, structure, seed=7)
    (base,) = [child for child in node.called if child.process_label == 'Cp2kBaseWorkChain']
    calc = base.called[0]
    parameters = calc.inputs.parameters.get_dict()
    assert parameters['GLOBAL']['RUN_TYPE'] == 'MD' and parameters['GLOBAL']['SEED'] == 7
    assert parameters['MOTION']['MD']['THERMOSTAT']['TYPE'] == 'NOSE'

    trajectory = results['trajectory']
    assert trajectory.numsteps == 6 and trajectory.get_stepids().tolist() == list(range(6))
    np.testing.assert_allclose(trajectory.get_array('times'), np.arange(6.0))
    energies, forces = trajectory.get_array('energies'), trajectory.get_array('forces')
    assert energies.shape == (6,) and forces.shape == (6, 16, 3)
    assert np.all((energies > -175) & (energies < -165))  # eV, GFN1-xTB Li16
    np.testing.assert_allclose(forces.sum(axis=1), 0.0, atol=1e-4)  # eV/Å
    np.testing.assert_allclose(trajectory.get_positions()[0], structure.get_ase().positions, atol=1e-6)
    summary = results['output_parameters']
    assert summary['steps'] == 5 and summary['nframes'] == 6
    assert 200 < summary['mean_temperature'] < 400
    assert summary['final_energy'] == pytest.approx(energies[-1])
    assert len(results['structure'].sites) == 16

    same, _ = _run_md(cp2k_code, structure, seed=7)
    other, _ = _run_md(cp2k_code, structure, seed=8)
    first = trajectory.get_positions()[1]
    np.testing.assert_allclose(same['trajectory'].get_positions()[1], first, atol=1e-8)
    assert np.abs(other['trajectory'].get_positions()[1] - first).max() > 1e-4


def test_md_continues_after_walltime(cp2k_code):
    """CP2K stops at its GLOBAL/WALLTIME; the MD goes on from the restart file up to ``n_steps``, joined."""
    parameters = {**MD, 'md': {**MD['md'], 'n_steps': 20}}
    # GLOBAL/WALLTIME 8 s: ~3 s start-up, then 1-6 xTB steps per job (idle to loaded 2 cores)
    options = {**OPTIONS, 'max_wallclock_seconds': 9}
    builder = Cp2kMdWorkChain.get_builder_from_protocol(
        cp2k_code, li16(), parameters, seed=7, protocol='gfn1_xtb', options=options
    )
    builder.max_iterations = orm.Int(20)
    results, node = run_get_node(builder)
    calcs = sorted(node.called_descendants, key=lambda child: child.ctime)
    calcs = [calc for calc in calcs if isinstance(calc, orm.CalcJobNode)]
    steps = [
        calc.outputs.output_trajectory.get_stepids().tolist() if 'output_trajectory' in calc.outputs else None
        for calc in calcs
    ]
    assert node.is_finished_ok, (node.exit_message, steps)
    assert len(calcs) > 1 and calcs[0].exit_status == 400
    assert (
        'EXT_RESTART' in calcs[-1].inputs.parameters.get_dict() and 'parent_calc_folder' in calcs[-1].inputs
    )
    trajectory = results['trajectory']
    assert trajectory.get_stepids().tolist() == list(range(21))
    assert results['output_parameters']['nframes'] == 21
    assert np.all(np.diff(trajectory.get_array('times')) == pytest.approx(1.0))


def test_initial_data_cp2k_builder(cp2k_code):
    """``paper_cp2k``: PBE FORCE_EVAL with every element's KIND, 20 ps at 1 fs, labels with CP2K PBE."""
    builder = InitialDataCp2kWorkChain.get_builder_from_protocol(
        cp2k_code, cp2k_code, {'li16': li16()}, protocol='paper_cp2k'
    )
    md = builder.md.parameters.get_dict()
    assert 'tblite' not in md and md['md']['n_steps'] == 20000 and md['md']['timestep'] == 1.0
    kinds = builder.md.cp2k.parameters['FORCE_EVAL']['SUBSYS']['KIND']
    assert sorted(kind['_'] for kind in kinds) == ['Cl', 'Li', 'P', 'S']
    assert builder.md.cp2k.parameters['FORCE_EVAL']['DFT']['XC']['XC_FUNCTIONAL']['_'] == 'PBE'
    assert builder.label.engine.value == 'cp2k' and 'code' not in builder.label.tblite
    assert builder.label.cp2k.cp2k.parameters['FORCE_EVAL']['DFT']['MGRID']['CUTOFF'] == 400


def test_initial_data_cp2k_li16(cp2k_code):
    """``lisei.initial_data.cp2k`` on Li16 with GFN1-xTB: relax, 1 copy, 4 MD steps, 3 frames labelled."""
    engine = {'cp2k_protocol': 'gfn1_xtb_metal', 'metadata': {'options': {'max_wallclock_seconds': 600}}}
    overrides = {
        'relax_must_converge': False,
        'perturbation': {'n_copies': 1},
        'sampling': {'stride': 2},
        'relax': {**engine, 'parameters': {'relax': {'fmax': 0.5, 'max_steps': 3, 'stride': 1}}},
        'md': {**engine, 'parameters': {'md': {'n_steps': 4, 'stride': 1}}},
        'label': {'cp2k_protocol': 'gfn1_xtb'},
    }
    builder = InitialDataCp2kWorkChain.get_builder_from_protocol(
        cp2k_code, cp2k_code, {'li16': li16()}, protocol='paper_cp2k', overrides=overrides
    )
    results, node = run_get_node(builder)
    assert node.is_finished_ok, node.exit_message
    assert results['summary'].get_dict() == {'li16': {'nframes': 3, 'natoms': 16, 'formula': 'Li16'}}
    system = results['training_sets']['li16'].get_system('li16')
    assert [tags['md_step'] for tags in system.tags] == [0, 2, 4]
    md = [
        child for child in node.called if child.process_label == 'Cp2kMdWorkChain' and 'seed' in child.inputs
    ]
    assert len(md) == 1 and md[0].is_finished_ok
