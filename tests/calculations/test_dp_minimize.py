"""Tests of ``DpMinimizeCalculation`` (``lisei.dp_minimize``): written script, real LAMMPS + DeePMD runs.

The model is the tiny test model (trained on bcc Li, type map Li P S Cl); the structure a perturbed bcc Li16.
The final energy LAMMPS reports is checked against DeePMD-kit's Python evaluation of the relaxed structure.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from aiida import orm
from aiida.engine import run_get_node
from aiida.plugins import CalculationFactory
from local_codes import ONE_THREAD, VENV_BIN

from aiida_lisei.formats.lammps import check_minimize_parameters, generate_minimize_script, parse_minimization

DpMinimizeCalculation = CalculationFactory('lisei.dp_minimize')
TINY_MODEL = Path(__file__).parents[1] / 'fixtures' / 'models' / 'model_1.pb'


@pytest.fixture
def lmp_minimize(aiida_computer_local, aiida_code_installed) -> orm.InstalledCode:
    """``lmp`` with the DeePMD plugin as a ``lisei.dp_minimize`` code, one thread, polled without delay."""
    computer = aiida_computer_local()
    computer.set_minimum_job_poll_interval(0.0)
    computer.configure(safe_interval=0.0)
    return aiida_code_installed(
        computer=computer,
        filepath_executable=str(VENV_BIN / 'lmp'),
        default_calc_job_plugin='lisei.dp_minimize',
        prepend_text=ONE_THREAD,
    )


def deepmd_energy(structure: orm.StructureData) -> float:
    """Energy (eV) of ``structure`` by DeePMD-kit's Python inference of the tiny model."""
    from deepmd.infer import DeepPot

    atoms = structure.get_ase()
    potential = DeepPot(str(TINY_MODEL))
    types = [potential.get_type_map().index(symbol) for symbol in atoms.get_chemical_symbols()]
    energy, _, _ = potential.eval(atoms.positions[None], atoms.cell[:].reshape(1, 9), types)
    return float(np.ravel(energy)[0])


def test_script_and_parameters():
    """The script relaxes the box only when asked; bad parameters are refused by name."""
    plain = generate_minimize_script({}, 'model.pb', ['Li', 'P', 'S', 'Cl'])
    assert 'minimize 0.0 0.001 2000 20000' in plain and 'box/relax' not in plain
    boxed = generate_minimize_script({'relax_box': True, 'pressure': 1.0}, 'model.pb', ['Li'])
    assert 'fix box all box/relax iso 1.0 vmax 0.001' in boxed
    with pytest.raises(ValueError, match='`relax_box` needs'):
        check_minimize_parameters({'relax_box': True, 'min_style': 'fire'})
    with pytest.raises(ValueError, match='`ftol` must be a positive number'):
        check_minimize_parameters({'ftol': 0})
    assert parse_minimization('no stats here') is None


@pytest.mark.slow  # ~10 s each when the machine is idle, 40-60 s under load
@pytest.mark.parametrize('relax_box', [False, True])
def test_relaxation_runs(lmp_minimize, tiny_model, li16, relax_box):
    """A perturbed Li16 relaxes: the energy falls, the forces vanish, LAMMPS' energy is DeePMD's."""
    structure = li16(amplitude=0.15, seed=3)
    builder = lmp_minimize.get_builder()
    builder.structure = structure
    builder.model = tiny_model
    builder.parameters = {'ftol': 1e-4, 'relax_box': relax_box}
    builder.metadata.options.max_wallclock_seconds = 300
    results, node = run_get_node(builder)
    assert node.exit_status == 0, node.exit_message
    out = results['output_parameters']
    assert out['converged'] and out['energy_final'] < out['energy_initial']
    assert out['force_max_final'] < 1e-3
    relaxed = results['structure']
    assert len(relaxed.sites) == 16
    assert deepmd_energy(relaxed) == pytest.approx(out['energy_final'], abs=1e-4)
    displacement = np.abs(np.array(relaxed.get_ase().positions) - structure.get_ase().positions).max()
    assert displacement > 0.01
    volume_change = relaxed.get_cell_volume() / structure.get_cell_volume() - 1
    if relax_box:
        assert abs(volume_change) > 1e-4 and abs(out['pressure_final']) < 100.0
    else:
        assert volume_change == pytest.approx(0.0, abs=1e-9)


@pytest.mark.slow  # one LAMMPS start: 35 s measured with the 2 cores shared
def test_iteration_budget_exit_code(lmp_minimize, tiny_model, li16):
    """Two iterations are not enough: 410, with the partly relaxed structure attached."""
    builder = lmp_minimize.get_builder()
    builder.structure = li16(amplitude=0.15, seed=3)
    builder.model = tiny_model
    builder.parameters = {'ftol': 1e-6, 'maxiter': 2}
    results, node = run_get_node(builder)
    assert node.exit_status == DpMinimizeCalculation.exit_codes.ERROR_MAX_ITERATIONS.status
    assert 'structure' in results and results['output_parameters']['stopping_criterion'] == 'max iterations'


def test_inputs_validated(lmp_minimize, tiny_model):
    """Elements outside the model's type map and non-periodic cells are refused before submission."""
    from ase.build import bulk

    builder = lmp_minimize.get_builder()
    builder.structure = orm.StructureData(ase=bulk('Na', 'bcc', a=4.2, cubic=True))
    builder.model = tiny_model
    with pytest.raises(ValueError, match=r"elements \['Na'\]"):
        run_get_node(builder)
