"""Tests of ``QEqCalculation`` and its parser (``lisei.qeq``): validation, the submission folder, a real run
of ``lisei-qeq`` through the CalcJob, and the exit codes on broken or partial results files.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from aiida import orm
from aiida.common.folders import Folder
from aiida.engine import run_get_node
from aiida.engine.utils import instantiate_process
from aiida.manage import get_manager
from aiida.plugins import CalculationFactory, ParserFactory

from aiida_lisei.data.structure import GroupedStructureData
from aiida_lisei.engines.qeq_charges import check_settings
from aiida_lisei.formats.frames_npz import read_trajectory
from aiida_lisei.science.qeq import QEqSolver
from aiida_lisei.structures.builders import argyrodite

QEqCalculation = CalculationFactory('lisei.qeq')
QEqParser = ParserFactory('lisei.qeq')

#: Bulk Li6PS5Cl is 3D-periodic: no slab correction.
BULK = {'slab': False}


@pytest.fixture(scope='module')
def electrolyte():
    """Ordered Li6PS5Cl (52 atoms) as ASE atoms."""
    return argyrodite().atoms


def grouped(atoms) -> GroupedStructureData:
    """``atoms`` as an unstored ``GroupedStructureData``, every atom in ``electrolyte_<element>``."""
    node = GroupedStructureData(ase=atoms)
    node.set_atom_groups([f'electrolyte_{symbol}' for symbol in atoms.get_chemical_symbols()])
    return node


def trajectory_of(atoms, n_frames: int, order: np.ndarray | None = None, seed: int = 1) -> orm.TrajectoryData:
    """``n_frames`` noisy copies of ``atoms`` (0.05 Å), 10 ps apart; rows permuted by ``order`` (with ids)."""
    rng = np.random.default_rng(seed)
    positions = atoms.positions + rng.normal(0.0, 0.05, (n_frames, len(atoms), 3))
    order = np.arange(len(atoms)) if order is None else order
    trajectory = orm.TrajectoryData()
    trajectory.set_trajectory(
        symbols=[atoms.get_chemical_symbols()[i] for i in order],
        positions=positions[:, order],
        stepids=np.arange(n_frames) * 1000,
        cells=np.repeat(atoms.cell[:][None], n_frames, axis=0),
        times=np.arange(n_frames) * 10.0,
        pbc=(True, True, True),
    )
    trajectory.set_array('atom_ids', order + 1)
    return trajectory


@pytest.fixture
def qeq_code(venv_code) -> orm.InstalledCode:
    """This environment's ``lisei-qeq`` as a code on ``localhost``."""
    return venv_code('lisei-qeq', 'lisei.qeq')


def test_spec() -> None:
    """One serial process; the exit codes sit in their ranges; 300s and 400 invalidate the cache."""
    options = QEqCalculation.spec().inputs['metadata']['options']
    assert options['resources'].default() == {'num_machines': 1, 'num_mpiprocs_per_machine': 1}
    assert options['parser_name'].default == 'lisei.qeq'
    codes = QEqCalculation.exit_codes
    own = [codes[name].status for name in codes if not name.startswith('ERROR_SCHEDULER')][-6:]
    assert own == [302, 310, 312, 400, 410, 420]
    assert all(
        codes[name].invalidates_cache == (codes[name].status < 410)
        for name in codes
        if codes[name].status >= 300
    )


def _mismatched(atoms):
    other = atoms.copy()
    other.symbols[0] = 'Cl' if other.symbols[0] != 'Cl' else 'Li'
    return trajectory_of(other, 2)


def _bad_ids(atoms):
    trajectory = trajectory_of(atoms, 2)
    ids = np.arange(1, len(atoms) + 1)
    ids[0] = ids[1]
    trajectory.set_array('atom_ids', ids)
    return trajectory


def _no_cells(atoms):
    trajectory = orm.TrajectoryData()
    trajectory.set_trajectory(symbols=atoms.get_chemical_symbols(), positions=atoms.positions[None])
    return trajectory


@pytest.mark.parametrize(
    ('make_trajectory', 'parameters', 'stride', 'message'),
    [
        (
            lambda a: trajectory_of(a[:-1], 2),
            {},
            1,
            'the trajectory has 51 atoms per frame but the structure has 52',
        ),
        (_mismatched, {}, 1, 'row 0 of the trajectory is a'),
        (_bad_ids, {}, 1, '`atom_ids` must be a permutation of 1..52'),
        (_no_cells, {}, 1, 'the trajectory has no cells'),
        (lambda a: trajectory_of(a, 2), {'charge': 0}, 1, 'unknown QEq settings'),
        (
            lambda a: trajectory_of(a, 2),
            {'parameter_set': None, 'species': {'Li': {'electronegativity': 1.0, 'hardness': 5.0}}},
            1,
            "no QEq parameters for species ['Cl', 'P', 'S']",
        ),
        (lambda a: trajectory_of(a, 2), {}, 0, '`stride` must be at least 1'),
    ],
)
def test_validation(qeq_code, electrolyte, make_trajectory, parameters, stride, message) -> None:
    """Inconsistent trajectories, unknown settings and missing species are refused before submission."""
    inputs = {
        'code': qeq_code,
        'trajectory': make_trajectory(electrolyte),
        'structure': grouped(electrolyte),
        'parameters': orm.Dict(parameters),
        'stride': orm.Int(stride),
    }
    error = QEqCalculation.spec().inputs.validate(inputs)
    assert error is not None
    assert message in error.message


def test_prepare_for_submission(qeq_code, electrolyte, tmp_path: Path) -> None:
    """Every 2nd frame is written with the element of every row; the settings are complete."""
    order = np.random.default_rng(0).permutation(len(electrolyte))
    trajectory = trajectory_of(electrolyte, 5, order)
    inputs = {
        'code': qeq_code,
        'trajectory': trajectory,
        'structure': grouped(electrolyte),
        'parameters': orm.Dict(BULK),
        'stride': orm.Int(2),
    }
    process = instantiate_process(get_manager().get_runner(), QEqCalculation, **inputs)
    calc_info = process.prepare_for_submission(Folder(str(tmp_path)))

    frames = read_trajectory(tmp_path / 'frames.npz')
    assert frames.frame_indices.tolist() == [0, 2, 4]
    assert frames.stepids.tolist() == [0, 2000, 4000] and frames.times.tolist() == [0.0, 20.0, 40.0]
    assert np.array_equal(frames.positions, trajectory.get_positions()[[0, 2, 4]])
    assert frames.symbols == [electrolyte.get_chemical_symbols()[i] for i in order]
    assert json.loads((tmp_path / 'settings.json').read_text()) == check_settings(BULK)
    (code_info,) = calc_info.codes_info
    assert code_info.cmdline_params == [
        '--frames',
        'frames.npz',
        '--settings',
        'settings.json',
        '--output',
        'charges.jsonl',
    ]
    assert sorted(calc_info.retrieve_list) == ['aiida.out', 'charges.jsonl']


def test_real_run(qeq_code, electrolyte) -> None:
    """``lisei-qeq`` through the CalcJob: neutral frames, a direct solve's charges, group statistics."""
    order = np.random.default_rng(3).permutation(len(electrolyte))
    trajectory = trajectory_of(electrolyte, 3, order)
    structure = grouped(electrolyte)
    results, node = run_get_node(
        QEqCalculation,
        code=qeq_code,
        trajectory=trajectory,
        structure=structure,
        parameters=orm.Dict(BULK),
        stride=orm.Int(2),
        metadata={'options': {'environment_variables': {'OMP_NUM_THREADS': '1'}}},
    )
    assert node.is_finished_ok, node.exit_message
    charges = results['charges']
    q = charges.get_array('charges')
    assert q.shape == (2, 52)
    assert charges.get_array('frame_indices').tolist() == [0, 2]
    assert charges.get_array('stepids').tolist() == [0, 2000]
    assert charges.get_array('times').tolist() == [0.0, 20.0]
    assert charges.get_array('converged').tolist() == [True, True]
    assert np.all(charges.get_array('iterations') > 0)
    np.testing.assert_allclose(q.sum(axis=1), 0.0, atol=1e-9)

    # Rows follow the trajectory: row r is site order[r]. Compare with a direct solve in site order.
    solver = QEqSolver(electrolyte.get_chemical_symbols(), slab=False)
    for row, frame in enumerate([0, 2]):
        site_positions = np.empty((52, 3))
        site_positions[order] = trajectory.get_positions()[frame]
        direct = solver.solve(site_positions, electrolyte.cell[:], q0=np.zeros(52)).charges
        np.testing.assert_allclose(q[row], direct[order], atol=1e-4)

    statistics = results['statistics'].get_dict()
    assert statistics['frame_indices'] == [0, 2] and statistics['times'] == [0.0, 20.0]
    groups = np.asarray(structure.atom_groups)[order]
    for group in ('electrolyte_Li', 'electrolyte_S'):
        entry = statistics['groups'][group]
        assert entry['count'] == int(np.count_nonzero(groups == group))
        assert entry['mean'] == pytest.approx(q[:, groups == group].mean(axis=1).tolist())
        assert entry['std'] == pytest.approx(q[:, groups == group].std(axis=1).tolist())
    assert (
        statistics['groups']['electrolyte_Li']['mean'][0]
        > 0
        > statistics['groups']['electrolyte_S']['mean'][0]
    )
    assert statistics['species']['Li']['mean'] == statistics['groups']['electrolyte_Li']['mean']
    assert statistics['total_charge'] == pytest.approx([0.0, 0.0], abs=1e-9)
    assert statistics['not_converged'] == [] and statistics['failed'] == {}


# --------------------------------------------------------------------------------------------------
# Parser exit codes on hand-made results files (2 frames expected: 3 trajectory frames, stride 2)
# --------------------------------------------------------------------------------------------------

TINY_SYMBOLS = ['Li', 'Li', 'S', 'Cl']


@pytest.fixture
def calc_job_node(generate_calc_job_node):
    """Return a factory: a stored ``lisei.qeq`` node (4 atoms, 3 frames, stride 2) with retrieved files."""

    def factory(files: dict[str, str], exit_status: int | None = None) -> orm.CalcJobNode:
        positions = np.array([[0.0, 0.0, 0.0], [2.5, 0.0, 0.0], [0.0, 2.5, 0.0], [2.5, 2.5, 2.5]])
        structure = GroupedStructureData(cell=np.diag([5.0, 5.0, 5.0]).tolist())
        for symbol, position in zip(TINY_SYMBOLS, positions, strict=True):
            structure.append_atom(position=position.tolist(), symbols=symbol)
        structure.set_atom_groups(['anode_Li', 'electrolyte_Li', 'electrolyte_S', 'electrolyte_Cl'])
        trajectory = orm.TrajectoryData()
        trajectory.set_trajectory(
            symbols=TINY_SYMBOLS,
            positions=np.repeat(positions[None], 3, axis=0),
            stepids=np.array([0, 10, 20]),
            cells=np.repeat(np.diag([5.0, 5.0, 5.0])[None], 3, axis=0),
            times=np.array([0.0, 1.0, 2.0]),
            pbc=(True, True, True),
        )
        inputs = {
            'trajectory': trajectory,
            'structure': structure,
            'stride': orm.Int(2),
            'parameters': orm.Dict({}),
        }
        return generate_calc_job_node('lisei.qeq', inputs, files, exit_status=exit_status)

    return factory


def header(natoms: int = 4) -> dict:
    return {'type': 'header', 'program': 'lisei-qeq', 'natoms': natoms, 'nframes': 2, 'settings': {}}


def frame(index: int, charges: list[float], converged: bool = True) -> dict:
    return {
        'type': 'frame',
        'index': index,
        'frame_index': 2 * index,
        'charges': charges,
        'chemical_potential': 1.0,
        'energy': -2.0,
        'iterations': 7,
        'residual': 1e-5 if converged else 0.1,
        'converged': converged,
    }


FOOTER = {'type': 'footer', 'solved': 2, 'failed': 0, 'not_converged': 0}
Q0 = [0.1, 0.5, -0.3, -0.3]
Q1 = [0.0, 0.6, -0.4, -0.2]


def jsonl(*records: dict, tail: str = '') -> dict[str, str]:
    return {'charges.jsonl': '\n'.join(json.dumps(record) for record in records) + '\n' + tail}


def test_parser_complete(calc_job_node) -> None:
    """A complete file: arrays, statistics per group and element, exit 0; a cut last line is ignored."""
    node = calc_job_node(jsonl(header(), frame(0, Q0), frame(1, Q1), FOOTER, tail='{"type": "fra'))
    results, calcfunction = QEqParser.parse_from_node(node)
    assert calcfunction.is_finished_ok, calcfunction.exit_message
    charges = results['charges']
    assert charges.get_array('charges').tolist() == [Q0, Q1]
    assert charges.get_array('frame_indices').tolist() == [0, 2]
    assert charges.get_array('stepids').tolist() == [0, 20]
    assert charges.get_array('times').tolist() == [0.0, 2.0]
    statistics = results['statistics'].get_dict()
    assert statistics['groups']['anode_Li']['mean'] == [0.1, 0.0]
    assert statistics['species']['Li']['mean'] == [pytest.approx(0.3), pytest.approx(0.3)]
    assert statistics['total_charge'] == [pytest.approx(0.0), pytest.approx(0.0)]


@pytest.mark.parametrize(
    ('files', 'exit_status', 'expected', 'outputs'),
    [
        ({}, None, 302, set()),
        ({}, 120, 120, set()),  # the scheduler's diagnosis is kept when nothing was retrieved
        ({'charges.jsonl': 'not json\n{}\n'}, None, 310, set()),
        (jsonl(header(natoms=5), FOOTER), None, 310, set()),
        (jsonl(header(), frame(0, Q0[:3])), None, 310, set()),
        (jsonl(header(), {'type': 'nonsense'}, FOOTER), None, 310, set()),
        (jsonl(header()), None, 312, set()),
        (jsonl(header(), frame(0, Q0)), None, 312, {'charges', 'statistics'}),
        (jsonl(header(), frame(0, Q0)), 120, 400, {'charges', 'statistics'}),
        (
            jsonl(
                header(),
                frame(0, Q0),
                {'type': 'failure', 'index': 1, 'reason': 'non-finite positions'},
                FOOTER,
            ),
            None,
            410,
            {'charges', 'statistics'},
        ),
        (
            jsonl(header(), frame(0, Q0), frame(1, Q1, converged=False), FOOTER),
            None,
            420,
            {'charges', 'statistics'},
        ),
    ],
)
def test_parser_exit_codes(calc_job_node, files, exit_status, expected, outputs) -> None:
    """Missing (302), unreadable (310), incomplete (312/400), failed (410) and unconverged (420) results."""
    node = calc_job_node(files, exit_status)
    results, calcfunction = QEqParser.parse_from_node(node)
    assert calcfunction.exit_status == expected, calcfunction.exit_message
    assert set(results) == outputs


def test_parser_partial_outputs(calc_job_node) -> None:
    """Outputs of a failed or unconverged frame: NaN charges and -1 iterations, or the flag False."""
    node = calc_job_node(
        jsonl(
            header(), frame(0, Q0, converged=False), {'type': 'failure', 'index': 1, 'reason': 'boom'}, FOOTER
        )
    )
    results, calcfunction = QEqParser.parse_from_node(node)
    assert calcfunction.exit_status == 410
    assert 'boom' in calcfunction.exit_message
    charges = results['charges']
    assert np.isnan(charges.get_array('charges')[1]).all()
    assert charges.get_array('iterations').tolist() == [7, -1]
    assert charges.get_array('converged').tolist() == [False, False]
    statistics = results['statistics'].get_dict()
    assert statistics['failed'] == {'1': 'boom'} and statistics['not_converged'] == [0]
    assert statistics['groups']['electrolyte_S']['mean'] == [-0.3, None]


def test_trajectory_check_reads_the_sites_once(electrolyte, monkeypatch) -> None:
    """Mapping rows to sites reads ``structure.sites`` once, not once per atom: every read rebuilds all the
    sites from the stored attributes, so per-atom reads took minutes on the 4833-atom sandwich (found by
    benchmarks/paper_rehearsal.py; 0.28 s there after the fix)."""
    from aiida_lisei.calculations.qeq import check_trajectory

    structure = grouped(electrolyte).store()
    order = np.random.default_rng(3).permutation(len(electrolyte))
    trajectory = trajectory_of(electrolyte, 2, order)
    reads = []
    read_sites = orm.StructureData.sites.fget
    counted = property(lambda self: reads.append(1) or read_sites(self))
    monkeypatch.setattr(orm.StructureData, 'sites', counted)
    assert check_trajectory(trajectory, structure) is None
    assert len(reads) <= 2, f'structure.sites read {len(reads)} times for {len(electrolyte)} atoms'
