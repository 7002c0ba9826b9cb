"""Tests of ``ExplorationCalculation`` (``lisei.exploration``): inputs, written files, real LAMMPS runs."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
from aiida import orm
from aiida.common.folders import Folder
from aiida.engine import run_get_node
from aiida.engine.utils import instantiate_process
from aiida.manage import get_manager
from aiida.plugins import CalculationFactory
from ase.build import bulk
from local_codes import ONE_THREAD

from aiida_lisei.formats.lammps import check_exploration_parameters, generate_exploration_script, parse_log

ExplorationCalculation = CalculationFactory('lisei.exploration')

LMP = Path(sys.executable).parent / 'lmp'
MODELS = sorted((Path(__file__).parents[1] / 'fixtures' / 'models').glob('model_*.pb'))


@pytest.fixture
def lmp_code(aiida_code_installed) -> orm.InstalledCode:
    """This environment's ``lmp`` (with the DeePMD plugin) as a code on localhost, one thread."""
    if not LMP.is_file():
        pytest.skip(f'{LMP} not found')
    return aiida_code_installed(
        label='lmp',
        filepath_executable=str(LMP),
        default_calc_job_plugin='lisei.exploration',
        prepend_text=ONE_THREAD,
    )


@pytest.fixture
def models() -> dict[str, orm.SinglefileData]:
    """The four tiny test models (type map Li P S Cl) as ``SinglefileData``."""
    return {f'm{index}': orm.SinglefileData(path) for index, path in enumerate(MODELS, start=1)}


@pytest.fixture
def bcc_li() -> orm.StructureData:
    """bcc Li, 16 atoms, a = 3.42 Å."""
    return orm.StructureData(ase=bulk('Li', 'bcc', a=3.42, cubic=True).repeat(2))


def builder_for(code, structure, models, parameters, seed=12345):
    """Return a builder of an exploration."""
    builder = code.get_builder()
    builder.structure = structure
    builder.models = models
    builder.parameters = orm.Dict(parameters)
    builder.seed = orm.Int(seed)
    return builder


def test_check_parameters():
    """Defaults are filled in; bad values and combinations are refused with a clear message."""
    full = check_exploration_parameters({'temperature': 300, 'n_steps': 10})
    assert full['ensemble'] == 'nvt' and full['timestep'] == 1.0 and full['stride'] == 10
    for bad, match in [
        ({'temperature': 300}, 'n_steps'),
        ({'temperature': 300, 'n_steps': 10, 'ensemble': 'npt'}, 'pressure'),
        ({'temperature': 300, 'n_steps': 10, 'pressure': 1.0}, "'npt'"),
        ({'temperature': -1, 'n_steps': 10}, 'temperature'),
        ({'temperature': 300, 'n_steps': 10, 'stride': 0}, 'stride'),
        ({'temperature': 300, 'n_steps': 10, 'thermostat': 1}, 'unknown'),
    ]:
        with pytest.raises(ValueError, match=match):
            check_exploration_parameters(bad)


def test_input_script_npt():
    """NPT: Nosé-Hoover thermostat and barostat (bar, dampings fs -> ps); timeout in h:mm:ss."""
    script = generate_exploration_script(
        {'temperature': 600, 'n_steps': 100, 'ensemble': 'npt', 'pressure': 1.0, 'timestep': 0.5},
        ['a.pb', 'b.pb'],
        ['Li', 'P', 'S', 'Cl'],
        seed=3,
        timeout_seconds=3725,
    )
    assert 'fix md all npt temp 600 600 0.1 iso 1.0 1.0 1.0\n' in script
    assert 'timestep 0.0005\n' in script
    assert 'timer timeout 1:02:05 every 10\n' in script
    assert script.endswith('run 100\n')


def test_prepare_for_submission(lmp_code, bcc_li, models, tmp_path):
    """Input script, data file in the type-map order, models copied as model_<i>.pb, outputs retrieved."""
    builder = builder_for(
        lmp_code, bcc_li, models, {'temperature': 300, 'n_steps': 50, 'stride': 10}, seed=99
    )
    builder.metadata.options.max_wallclock_seconds = 100
    process = instantiate_process(get_manager().get_runner(), ExplorationCalculation, **builder)
    calc_info = process.prepare_for_submission(Folder(str(tmp_path)))

    assert sorted(path.name for path in tmp_path.iterdir()) == ['input.lammps', 'structure.data']
    script = (tmp_path / 'input.lammps').read_text()
    models_line = (
        'pair_style deepmd model_0.pb model_1.pb model_2.pb model_3.pb out_file model_devi.out out_freq 10'
    )
    for line in [
        'units metal',
        'read_data structure.data',
        models_line,
        'pair_coeff * * Li P S Cl',
        'velocity all create 300 99 dist gaussian mom yes',
        'dump traj all custom 10 traj.dump id type x y z',
        'dump_modify traj sort id format float %.12g',
        'fix md all nvt temp 300 300 0.1',
        'timer timeout 0:01:30 every 10',
        'run 50',
    ]:
        assert line in script.splitlines(), line
    data = (tmp_path / 'structure.data').read_text()
    assert '16 atoms' in data and '4 atom types' in data and '# Li' in data and '# Cl' in data
    assert [(name, target) for _, name, target in calc_info.local_copy_list] == [
        (path.name, f'model_{index}.pb') for index, path in enumerate(MODELS)
    ]
    (code_info,) = calc_info.codes_info
    assert code_info.cmdline_params == ['-in', 'input.lammps', '-log', 'log.lammps', '-nocite']
    assert sorted(calc_info.retrieve_list) == ['aiida.out', 'log.lammps', 'model_devi.out', 'traj.dump']


def test_pytorch_models_keep_their_extension(lmp_code, bcc_li, models, tmp_path, pytorch_stand_in):
    """A PyTorch ``DeepPotentialData`` is copied as ``model_<i>.pth`` and named so in ``pair_style``
    (LAMMPS picks the backend by the extension); TensorFlow models stay ``.pb``. Submission side only: no
    PyTorch model runs in the tested set (docs/installation.md), the bytes are a stand-in."""
    pytorch = pytorch_stand_in
    parameters = {'temperature': 300, 'n_steps': 50, 'stride': 10}
    builder = builder_for(lmp_code, bcc_li, {'a': models['m1'], 'b': pytorch}, parameters)
    process = instantiate_process(get_manager().get_runner(), ExplorationCalculation, **builder)
    calc_info = process.prepare_for_submission(Folder(str(tmp_path)))
    script = (tmp_path / 'input.lammps').read_text().splitlines()
    assert 'pair_style deepmd model_0.pb model_1.pth out_file model_devi.out out_freq 10' in script
    assert [(name, target) for _, name, target in calc_info.local_copy_list] == [
        (MODELS[0].name, 'model_0.pb'),
        ('model.pth', 'model_1.pth'),
    ]


@pytest.mark.parametrize(
    ('change', 'match'),
    [
        ({'models': 'one'}, 'at least two models'),
        ({'structure': 'nacl'}, 'not in the type map'),
        ({'structure': 'slab'}, 'periodic'),
        ({'seed': 0}, 'seed'),
        ({'type_map': ['Li', 'S']}, 'different type maps'),
    ],
)
def test_invalid_inputs(lmp_code, bcc_li, models, change, match):
    """The inputs validator refuses what LAMMPS or the model deviation could not handle."""
    builder = builder_for(lmp_code, bcc_li, models, {'temperature': 300, 'n_steps': 5})
    if 'type_map' in change:
        models['m2'].base.attributes.set('type_map', change['type_map'])
    with pytest.raises(ValueError, match=match):  # the builder validates on assignment, the process on launch
        if change.get('models'):
            builder.models = {'m1': models['m1']}
        if change.get('structure') == 'nacl':
            builder.structure = orm.StructureData(ase=bulk('NaCl', 'rocksalt', a=5.6))
        if change.get('structure') == 'slab':
            atoms = bulk('Li', 'bcc', a=3.42, cubic=True)
            atoms.pbc = (True, True, False)
            builder.structure = orm.StructureData(ase=atoms)
        if 'seed' in change:
            builder.seed = orm.Int(change['seed'])
        run_get_node(builder)


def run_exploration(code, structure, models, temperature, seed):
    """Run a 50-step NVT exploration (stride 10) with LAMMPS on localhost; return its node."""
    builder = builder_for(
        code, structure, models, {'temperature': temperature, 'n_steps': 50, 'stride': 10}, seed
    )
    _, node = run_get_node(builder)
    assert node.is_finished_ok, (node.exit_status, node.exit_message)
    return node


@pytest.mark.slow
def test_real_runs_align_and_are_deterministic(lmp_code, bcc_li, models):
    """Real LAMMPS at 300 K (twice) and 800 K: frames align with model_devi rows; same seed, same numbers."""
    first = run_exploration(lmp_code, bcc_li, models, 300, seed=12345)
    again = run_exploration(lmp_code, bcc_li, models, 300, seed=12345)
    hot = run_exploration(lmp_code, bcc_li, models, 800, seed=12345)

    for node in (first, hot):
        devi = node.outputs.model_devi
        trajectory = node.outputs.trajectory
        assert devi.get_array('step').tolist() == trajectory.get_stepids().tolist() == [0, 10, 20, 30, 40, 50]
        assert trajectory.get_positions().shape == (6, 16, 3)
        assert trajectory.symbols == ['Li'] * 16
        assert trajectory.get_array('atom_ids').tolist() == list(range(1, 17))
        assert np.allclose(trajectory.get_cells()[0], np.eye(3) * 6.84)
        assert np.allclose(trajectory.get_positions()[0], bcc_li.get_ase().positions, atol=1e-9)
        assert devi.get_array('max_devi_f')[1:].min() > 0  # the ensemble disagrees
        parameters = node.outputs.output_parameters.get_dict()
        assert parameters['n_frames'] == 6 and parameters['n_steps_done'] == 50
        assert parameters['lammps_version'].startswith('22 Jul 2025')
    for name in first.outputs.model_devi.get_arraynames():
        assert np.array_equal(
            first.outputs.model_devi.get_array(name), again.outputs.model_devi.get_array(name)
        )
    assert np.array_equal(first.outputs.trajectory.get_positions(), again.outputs.trajectory.get_positions())
    assert (
        hot.outputs.output_parameters['temperature_mean']
        > first.outputs.output_parameters['temperature_mean']
    )
    assert not np.array_equal(
        first.outputs.trajectory.get_positions(), hot.outputs.trajectory.get_positions()
    )


def test_berendsen_barostat_moves_the_box_without_an_energy_guard(lmp_code, bcc_li, models):
    """A real NPT run with the Berendsen barostat (the equilibration's option): LAMMPS accepts the fixes, the
    box moves, and the energy-drift guard says it is not evaluated (Berendsen conserves no energy)."""
    parameters = {
        'ensemble': 'npt',
        'temperature': 300,
        'pressure': 1.0,
        'n_steps': 100,
        'stride': 20,
        'barostat': 'berendsen',
        'barostat_damping': 100.0,
        'barostat_modulus': 120000.0,  # bar, bcc Li's bulk modulus (12 GPa)
    }
    _, node = run_get_node(builder_for(lmp_code, bcc_li, models, parameters))
    assert node.is_finished_ok, (node.exit_status, node.exit_message)
    volumes = [abs(np.linalg.det(cell)) for cell in node.outputs.trajectory.get_cells()]
    assert np.ptp(volumes) > 0.01 * volumes[0], volumes  # the barostat acts (the tiny models push hard)
    guards = node.outputs.guards['guards']
    assert guards['energy_drift']['passed'] is None
    assert 'Berendsen' in guards['energy_drift']['detail']


def test_deep_potential_models(lmp_code, bcc_li, tmp_path):
    """``DeepPotentialData`` models are accepted: their ``model.pb`` is copied, their type map used."""
    from aiida_lisei.data.deep_potential import DeepPotentialData

    models = {
        f'm{index}': DeepPotentialData(
            path,
            type_map=['Li', 'S'],
            descriptor_type='se_e2_a',
            rcut=4.0,
            sel=[24, 4],
            neurons={'embedding': [4, 8], 'fitting': [16, 16]},
            seed=index,
            deepmd_version='3.2.0',
        )
        for index, path in enumerate(MODELS[:2])
    }
    builder = builder_for(lmp_code, bcc_li, models, {'temperature': 300, 'n_steps': 5})
    process = instantiate_process(get_manager().get_runner(), ExplorationCalculation, **builder)
    calc_info = process.prepare_for_submission(Folder(str(tmp_path)))
    assert [(name, target) for _, name, target in calc_info.local_copy_list] == [
        ('model.pb', 'model_0.pb'),
        ('model.pb', 'model_1.pb'),
    ]
    assert 'pair_coeff * * Li S' in (tmp_path / 'input.lammps').read_text().splitlines()
    assert '2 atom types' in (tmp_path / 'structure.data').read_text()


def _start_energy(node) -> float:
    """Potential energy (eV) of step 0 from the retrieved LAMMPS log."""
    log = parse_log(node.outputs.retrieved.base.repository.get_object_content('log.lammps'))
    return float(log.thermo['PotEng'][0])


@pytest.mark.slow
def test_short_range_repulsion_acts_only_below_outer(lmp_code, bcc_li, models):
    """ZBL under the model (``short_range_repulsion``): two Li 1.0 Å apart are pushed apart by several eV
    more than the model alone gives; the perfect bcc crystal (nearest pair 2.96 Å) does not feel it."""
    repulsion = {'short_range_repulsion': {'inner': 1.0, 'outer': 1.5}}
    close = bcc_li.get_ase()
    direction = close.positions[1] - close.positions[0]
    close.positions[0] = close.positions[1] - direction / np.linalg.norm(direction) * 1.0
    close = orm.StructureData(ase=close)

    def energy(structure, extra):
        builder = builder_for(
            lmp_code, structure, models, {'temperature': 10, 'n_steps': 1, 'stride': 1, **extra}
        )
        _, node = run_get_node(builder)
        assert node.is_finished_ok, (node.exit_status, node.exit_message)
        assert 'zbl' in node.base.repository.get_object_content('input.lammps') or not extra
        return _start_energy(node)

    assert energy(close, repulsion) - energy(close, {}) > 1.0  # eV: ZBL of Li-Li at 1.0 Å
    assert energy(bcc_li, repulsion) == pytest.approx(energy(bcc_li, {}), abs=1e-8)
