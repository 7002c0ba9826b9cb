"""Tests of ``lisei.nucleation_analysis``: a real end-to-end run (real ``lisei-qeq`` CalcJob) on a synthetic
trajectory of the demo sandwich with a planted Li cluster, the paper comparison, the protocol and validation.

The synthetic trajectory: the demo protocol's sandwich (1x1x2 electrolyte cells, 10 anode and 4 source Li
layers) with a 14 Å interface gap and 20 Å of vacuum (the vacuum must stay the widest empty z-window), 7
frames 0-150 ps apart by 25 ps with 0.05 Å Gaussian noise; from 125 ps on, 10 electrolyte Li and 5 source Li
form a 15-atom bcc cluster (nn 2.75 Å, the paper's) in the gap above the anode. The rows are in reverse site
order with ``atom_ids`` (as a LAMMPS dump sorted otherwise would be).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import yaml
from aiida import orm
from aiida.engine import run_get_node
from aiida.plugins import WorkflowFactory

from aiida_lisei.data.structure import GroupedStructureData
from aiida_lisei.reporting.comparisons import nucleation_comparison
from aiida_lisei.reporting.paper import PAPER_NUCLEATION
from aiida_lisei.reporting.plots import png_size
from aiida_lisei.reporting.tables import format_nucleation_summary
from aiida_lisei.structures.builders import argyrodite, sandwich
from aiida_lisei.workchains.nucleation_analysis import (
    check_analysis_parameters,
)

NucleationAnalysisWorkChain = WorkflowFactory('lisei.nucleation_analysis')

PROTOCOLS = Path(__file__).parents[2] / 'aiida_lisei' / 'protocols'
TIMES = np.arange(7) * 25.0  # ps
ONSET = 5  # frame of the planted cluster (125 ps)
CLUSTER_NN = 2.75  # Å
CLUSTER_HEIGHT = 7.0  # Å above the anode's top layer


@pytest.fixture(scope='module')
def synthetic():
    """The demo sandwich with a wide gap (GroupedStructureData), its trajectory, the cluster atoms, centre."""
    atomic_models = yaml.safe_load((PROTOCOLS / 'atomic_models.yaml').read_text())
    electrolyte = argyrodite(seed=atomic_models['default_inputs']['argyrodite']['seed']).atoms
    params = {
        **atomic_models['protocols']['demo']['sandwich']['parameters'],
        'interface_gap': 14.0,
        'vacuum': 20.0,
    }
    model = sandwich(electrolyte, **params)
    atoms, groups = model.atoms, np.array(model.groups)
    rng = np.random.default_rng(11)
    donors = np.concatenate(
        [
            rng.choice(np.flatnonzero(groups == 'electrolyte_Li'), 10, replace=False),
            rng.choice(np.flatnonzero(groups == 'source_Li'), 5, replace=False),
        ]
    )
    shells = np.array(
        [[0, 0, 0]]
        + [[x, y, z] for x in (-0.5, 0.5) for y in (-0.5, 0.5) for z in (-0.5, 0.5)]
        + [list(v) for v in np.vstack([np.eye(3), -np.eye(3)])]
    )
    lateral = atoms.cell[0, 0]
    centre = np.array([0.5 * lateral, 0.5 * lateral, model.info['anode_top_z'] + CLUSTER_HEIGHT])
    frames = np.repeat(atoms.positions[None], len(TIMES), axis=0)
    frames[ONSET:, donors] = centre + CLUSTER_NN * 2 / np.sqrt(3) * shells
    frames += rng.normal(0.0, 0.05, frames.shape)

    order = np.arange(len(atoms))[::-1]  # rows in reverse site order, ids = site + 1
    trajectory = orm.TrajectoryData()
    trajectory.set_trajectory(
        symbols=[atoms.get_chemical_symbols()[i] for i in order],
        positions=frames[:, order],
        stepids=(TIMES * 1000).astype(int),
        cells=np.repeat(atoms.cell[:][None], len(TIMES), axis=0),
        times=TIMES,
        pbc=(True, True, True),
    )
    trajectory.set_array('atom_ids', order + 1)
    structure = GroupedStructureData(ase=atoms)
    structure.set_atom_groups(model.groups, model.layers)
    return structure, trajectory, donors, centre


@pytest.fixture
def qeq_code(venv_code) -> orm.InstalledCode:
    """This environment's ``lisei-qeq`` as a code on ``localhost``."""
    return venv_code('lisei-qeq', 'lisei.qeq')


def colvar() -> orm.ArrayData:
    """A COLVAR-like CV rising along the run (arrays ``time`` ps and ``cv``)."""
    node = orm.ArrayData()
    node.set_array('time', np.linspace(0.0, 150.0, 31))
    node.set_array('cv', np.linspace(0.0, 150.0, 31) ** 2 / 1e4)
    return node


def test_end_to_end(qeq_code, synthetic) -> None:
    """QEq on every frame, the planted cluster found at 125 ps in the SEI, figures, the paper table."""
    structure, trajectory, donors, centre = synthetic
    builder = NucleationAnalysisWorkChain.get_builder_from_protocol(
        qeq_code,
        trajectory,
        structure,
        protocol='demo',
        overrides={'analysis': {'charge_times': [100.0, 125.0, 150.0]}},
        colvar=colvar(),
    )
    results, node = run_get_node(builder)
    assert node.is_finished_ok, node.exit_message
    assert {'charges', 'charge_statistics', 'summary', 'time_series', 'analysis', 'figures'} <= set(results)

    charges = results['charges'].get_array('charges')
    assert charges.shape == (7, 230)
    np.testing.assert_allclose(charges.sum(axis=1), 0.0, atol=1e-8)
    assert results['charges'].get_array('converged').all()

    series = results['time_series']
    np.testing.assert_array_equal(series.get_array('time'), TIMES)
    sizes = series.get_array('largest_cluster_size')
    assert sizes[:ONSET].tolist() == [0] * ONSET and np.all(sizes[ONSET:] >= 10)

    summary = results['summary'].get_dict()
    numbers = summary['analysis_summary']
    assert summary['mode'] == 'demo' and any('natoms' in line for line in summary['differences'])
    assert numbers['cluster_onset_time_ps'] == 125.0
    assert numbers['cluster_region_at_onset'] == 'sei'
    assert numbers['cluster_origin_at_onset']['electrolyte'] > numbers['cluster_origin_at_onset']['source']
    boundary = series.get_array('boundary_z_anode_sei')[ONSET]
    assert numbers['cluster_boundary_distance_at_onset'] == pytest.approx(centre[2] - boundary, abs=0.3)
    assert numbers['cluster_nn_distance'] == pytest.approx(CLUSTER_NN, abs=0.08)
    assert numbers['anode_nn_distance'] == pytest.approx(PAPER_NUCLEATION['anode_nn_distance'], abs=0.05)
    rows = {row['key']: row for row in summary['quantities']}
    assert rows['cluster_onset_time_ps']['agrees'] is True and rows['cluster_onset_time_ps']['demo_size']
    assert rows['cluster_origin']['ours'] == 'electrolyte' and rows['cluster_origin']['agrees']
    assert rows['cluster_nn_contraction']['agrees'] is True
    assert rows['anode_nn_distance']['demo_size'] is False
    # The cluster atoms carry their QEq charges; the anode Li are close to neutral, below the electrolyte Li.
    q = summary['analysis_summary']['mean_li_charge']
    assert abs(q['anode']) < 0.1 and q['anode'] < q['electrolyte']
    site_q = np.empty(230)
    site_q[trajectory.get_array('atom_ids') - 1] = charges[ONSET]
    assert results['analysis']['charges']['frames'][1]['cluster_Li']['mean'] == pytest.approx(
        site_q[donors].mean(), abs=0.05
    )

    statistics = results['charge_statistics'].get_dict()
    assert set(statistics['groups']) == {
        'anode_Li',
        'electrolyte_Li',
        'electrolyte_P',
        'electrolyte_S',
        'electrolyte_Cl',
        'source_Li',
    }
    for name in ('charge_histograms', 'rdf', 'cluster_growth', 'snapshot'):
        with results['figures'][name].open(mode='rb') as handle:
            width, height = png_size(handle.read())
        assert width > 300 and height > 200, name

    table = format_nucleation_summary(summary)
    print(table)
    assert 'cluster onset time' in table and 'demo-size' in table and 'DEMO' in table


@pytest.mark.parametrize(
    ('change', 'message'),
    [
        ('atoms', 'the trajectory has 229 atoms per frame but the structure has 230'),
        ('times', 'the trajectory has no `times` (ps)'),
        ('cell', 'slab analysis needs c along +z'),
        ('colvar', '`colvar` needs the arrays `time` (ps) and `cv`'),
        ('analysis', 'charge_stride 3 must be a multiple of stride 2'),
        ('unknown', "unknown analysis parameters ['frames']"),
        ('onset', 'nucleation parameters'),
        ('charge_times', '`analysis.charge_times` [175.0] (ps) lie outside the trajectory (0 to 150 ps)'),
    ],
)
def test_validation(qeq_code, synthetic, change: str, message: str) -> None:
    """Inconsistent inputs are refused before anything runs, with a message that says what to fix."""
    structure, trajectory, _, _ = synthetic
    inputs = {'trajectory': trajectory, 'structure': structure, 'qeq': {'code': qeq_code}}
    if change in ('atoms', 'times', 'cell'):
        positions, cells = trajectory.get_positions(), trajectory.get_cells()
        symbols = list(trajectory.symbols)
        kwargs = {
            'symbols': symbols,
            'positions': positions,
            'cells': cells,
            'times': trajectory.get_times(),
            'pbc': (True, True, True),
        }
        if change == 'atoms':
            kwargs.update(symbols=symbols[:-1], positions=positions[:, :-1])
        elif change == 'times':
            kwargs.pop('times')
        else:
            kwargs['cells'] = cells[:, [2, 0, 1]]  # c along x
        inputs['trajectory'] = orm.TrajectoryData()
        inputs['trajectory'].set_trajectory(**kwargs)
        if change != 'atoms':
            inputs['trajectory'].set_array('atom_ids', trajectory.get_array('atom_ids'))
    elif change == 'colvar':
        inputs['colvar'] = orm.ArrayData()
        inputs['colvar'].set_array('time', np.arange(3.0))
    else:
        analysis = {
            'analysis': {'stride': 2, 'charge_stride': 3},
            'unknown': {'frames': [1]},
            'onset': {'nucleation': {'clusters': {'onset_size': 0}}},
            'charge_times': {'charge_times': [150.0 + 12.5, 175.0]},  # 162.5: within half a frame (25 ps)
        }[change]
        inputs['analysis'] = orm.Dict(analysis)
    error = NucleationAnalysisWorkChain.spec().inputs.validate(inputs)
    assert error is not None
    assert message in error.message


def test_protocols(qeq_code, synthetic) -> None:
    """Paper protocol: Table S2, slab, charges at 100/125/150 ps on every 10th frame; demo: every frame."""
    structure, trajectory, _, _ = synthetic
    paper = NucleationAnalysisWorkChain.get_builder_from_protocol(
        qeq_code, trajectory, structure, protocol='paper', options={'max_wallclock_seconds': 60}
    )
    assert paper.analysis.get_dict() == check_analysis_parameters(
        {'stride': 1, 'charge_stride': 10, 'charge_times': [100.0, 125.0, 150.0]}
    )
    parameters = paper.qeq.parameters.get_dict()
    assert parameters['parameter_set'] == 'paper' and parameters['slab'] is True
    assert parameters['total_charge'] == 0.0
    assert paper.qeq.metadata['options']['max_wallclock_seconds'] == 60
    demo = NucleationAnalysisWorkChain.get_builder_from_protocol(qeq_code, trajectory, structure)
    assert demo.analysis['charge_stride'] == 1 and demo.analysis['charge_times'] is None
    assert demo.qeq.metadata['options']['environment_variables'] == {'OMP_NUM_THREADS': '1'}


def test_paper_comparison() -> None:
    """The paper's own numbers at the paper's setup agree everywhere; a run without a cluster says so."""
    paper_like = {
        'cluster_onset_time_ps': 125.0,
        'cluster_boundary_distance_at_onset': 9.0,
        'cluster_region_at_onset': 'sei',
        'cluster_origin_at_onset': {'electrolyte': 0.8, 'anode': 0.0, 'source': 0.2, 'other': 0.0},
        'cluster_nn_distance': 2.75,
        'anode_nn_distance': 2.96,
        'cluster_nn_contraction': -0.21,
        'mean_li_charge': {'anode': 0.02, 'sei': 0.5, 'electrolyte': 0.95, 'cluster': 0.05},
    }
    setup = {'natoms': 4833, 'duration_ps': 150.0, 'qeq_parameter_set': 'paper', 'onset_size': 10}
    result = nucleation_comparison(paper_like, setup)
    assert result['mode'] == 'paper' and result['differences'] == []
    assert all(row['agrees'] for row in result['quantities'])
    assert not any(row['demo_size'] for row in result['quantities'])

    empty = {key: None for key in paper_like} | {
        'mean_li_charge': {'anode': 0.0, 'sei': 0.3, 'electrolyte': 0.5}
    }
    small = nucleation_comparison(empty, {**setup, 'natoms': 230, 'duration_ps': 6.0})
    rows = {row['key']: row for row in small['quantities']}
    assert small['mode'] == 'demo' and len(small['differences']) == 2
    assert rows['cluster_onset_time_ps']['agrees'] is None and rows['cluster_onset_time_ps']['demo_size']
    assert rows['mean_li_charge_sei']['agrees'] is True  # 0 < 0.3 < 0.5
    assert rows['mean_li_charge_electrolyte']['agrees'] is False  # 0.5 is not "close to +1"
    assert any('No isolated metallic Li cluster of 10' in note for note in small['notes'])
    assert any('+0.50 e' in note for note in small['notes'])
    table = format_nucleation_summary(small)
    assert 'DEMO' in table and table.count('demo-size') >= 10


def two_frames(trajectory: orm.TrajectoryData, nan: bool = False) -> orm.TrajectoryData:
    """Frames 0 and ``ONSET`` of ``trajectory`` (with its ``atom_ids``); with ``nan``, one NaN coordinate."""
    positions = trajectory.get_positions()[[0, ONSET]]
    if nan:
        positions[1, 0, 0] = np.nan
    short = orm.TrajectoryData()
    short.set_trajectory(
        symbols=list(trajectory.symbols),
        positions=positions,
        stepids=trajectory.get_stepids()[[0, ONSET]],
        cells=trajectory.get_cells()[[0, ONSET]],
        times=trajectory.get_times()[[0, ONSET]],
        pbc=(True, True, True),
    )
    short.set_array('atom_ids', trajectory.get_array('atom_ids'))
    return short


def test_unconverged_charges_are_used(qeq_code, synthetic) -> None:
    """A QEq run that stops before the tolerance (420) is used; the summary says so."""
    structure, trajectory, _, _ = synthetic
    builder = NucleationAnalysisWorkChain.get_builder_from_protocol(
        qeq_code,
        two_frames(trajectory),
        structure,
        overrides={'qeq': {'parameters': {'max_iterations': 1, 'tolerance': 1e-12}}},
    )
    results, node = run_get_node(builder)
    assert node.is_finished_ok, node.exit_message
    (qeq,) = [child for child in node.called if child.process_label == 'QEqCalculation']
    assert qeq.exit_status == 420
    summary = results['summary'].get_dict()
    assert summary['setup']['not_converged'] == 2
    assert any('2 QEq frame(s) did not converge' in note for note in summary['notes'])


def test_non_finite_positions_are_refused_before_submission(qeq_code, synthetic) -> None:
    """A frame with a NaN coordinate is refused before anything is stored, naming the frame and the sites
    (the QEq engine's own refusal, 410 -> 501, stays behind it for trajectories made outside AiiDA)."""
    structure, trajectory, _, _ = synthetic
    builder = NucleationAnalysisWorkChain.get_builder_from_protocol(
        qeq_code, two_frames(trajectory, nan=True), structure
    )
    with pytest.raises(ValueError, match=r'frame 1: positions of sites \[0\] are NaN or infinite'):
        run_get_node(builder)


def test_a_trajectory_that_failed_its_guards_is_refused(qeq_code, restraint_code, small_sandwich) -> None:
    """A real restraint run of the Li-only test model on the sandwich fails its guards (reported, not
    enforced); its trajectory is refused by the analysis, unless ``allow_failed_guards``, and then the
    summary says the numbers are not a result."""
    from aiida_lisei.calculations.restraint_md import RestraintMdCalculation

    builder = RestraintMdCalculation.get_builder()
    builder.code = restraint_code
    builder.structure = small_sandwich
    builder.model = orm.SinglefileData(Path(__file__).parents[1] / 'fixtures' / 'models' / 'model_1.pb')
    builder.parameters = orm.Dict(
        {'n_steps': 60, 'thermo_stride': 10, 'dump_stride': 20, 'restart_stride': 0}
    )
    builder.restraint = orm.Dict(
        {'kappa': 500.0, 'd_max': 5.0, 'anode_layers': 2, 'at_start': 0.0, 'at_end': 0.5, 'step_end': 60}
    )
    builder.seed = orm.Int(4321)
    builder.guards = orm.Dict({'enabled': False})
    _, md = run_get_node(builder)
    assert md.is_finished_ok and not md.outputs.guards['passed']

    analysis = NucleationAnalysisWorkChain.get_builder_from_protocol(
        qeq_code, md.outputs.trajectory, small_sandwich
    )
    with pytest.raises(ValueError, match='failed its physics guards'):
        run_get_node(analysis)
    analysis.allow_failed_guards = orm.Bool(True)
    _, node = run_get_node(analysis)
    assert node.is_finished_ok, node.exit_message
    summary = node.outputs.summary.get_dict()
    assert summary['guards']['passed'] is False and summary['guards']['failed'] == md.outputs.guards['failed']
    assert 'NOT A RESULT' in format_nucleation_summary(summary)
