"""``aiida-lisei dpgen import``: DP-GEN's own example files, in place, as a DP-GEN user runs them."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from aiida import orm
from ase.build import molecule
from ase.calculators.singlepoint import SinglePointCalculator
from ase.io import write
from local_codes import VENV_BIN

from aiida_lisei.cli.computers import scheduler_options
from aiida_lisei.data.training_set import TrainingSetData
from aiida_lisei.formats.dpgen import machine_computers

EXAMPLES = Path(__file__).parents[1] / 'fixtures' / 'dpgen_examples'
CP2K_EXAMPLE = EXAMPLES / 'run__dp2.x-lammps-cp2k__methane__param-ch4.json'


def methane_project(root: Path, example: Path = CP2K_EXAMPLE) -> Path:
    """Write a DP-GEN methane example's param.json with its data (CH4 start configurations, initial frames)
    under ``root``; absolute paths are rewritten as a user who copied the project would. Return the file."""
    param = json.loads(example.read_text())
    old_prefix = param['init_data_prefix']
    if Path(old_prefix).is_absolute():
        param['init_data_prefix'] = str(root / 'data')
        patterns = [pattern.replace(old_prefix, str(root / 'data')) for [pattern] in param['sys_configs']]
        param['sys_configs'] = [[pattern] for pattern in patterns]
    else:
        patterns = [str(root / param['sys_configs_prefix'] / pattern) for [pattern] in param['sys_configs']]
    atoms = molecule('CH4', vacuum=4.0, pbc=True)
    for pattern in patterns:
        poscar = Path(pattern.replace('*', '0'))
        poscar.parent.mkdir(parents=True, exist_ok=True)
        write(poscar, atoms, format='vasp')
    frame = atoms.copy()
    frame.calc = SinglePointCalculator(frame, energy=-24.0, forces=np.zeros((5, 3)), stress=np.zeros(6))
    level = {'engine': 'cp2k', 'method': 'stand-in', 'settings': {}}
    [system] = param['init_data_sys']
    folder = root / param['init_data_prefix'] / system
    data = TrainingSetData.from_ase([frame], level, folder.name, type_map=param['type_map'])
    data.to_deepmd_npy(folder.parent)
    path = root / 'param.json'
    path.write_text(json.dumps(param, indent=2))
    return path


@pytest.fixture
def code_labels(aiida_code_installed) -> list[str]:
    """``--dp-code``, ``--lmp-code``, ``--fp-code`` options naming stand-in codes."""
    labels = []
    for name, plugin in (('dp', 'lisei.dp_train'), ('lmp', 'lisei.exploration'), ('fp', 'cp2k')):
        code = aiida_code_installed(
            label=f'{name}-stand-in', filepath_executable='/bin/true', default_calc_job_plugin=plugin
        )
        labels += [f'--{name}-code', code.full_label]
    return labels


def test_import_shows_what_will_run(run_cli, tmp_path, code_labels):
    """A DP-GEN CP2K example imports in one command: systems, temperatures, trust levels, steps, engine."""
    path = methane_project(tmp_path)
    result = run_cli('dpgen', 'import', path, *code_labels)
    assert result.exit_code == 0, result.output
    for text in (
        'sys_000: CH4 (5 atoms)',
        'iterations: at most 2, stop when every system is 99 % accurate; seed 1',
        '1: sys_000 at 100 K, 300 steps (frame every 10), nvt',
        '2: sys_001 at 100 K, 3000 steps (frame every 10), nvt',
        'sys_001: f_lo 0.05, f_hi 0.15',
        'training: 4 models x 2000 steps',
        'labelling: cp2k, at most 20 frames per system and iteration',
        "ignored DP-GEN keys (set by our protocols and engines): ['external_input_path', 'init_batch_size'",
        'Not submitted',
    ):
        assert text in result.output, result.output

    submitted = run_cli('dpgen', 'import', path, *code_labels, '--submit')
    assert submitted.exit_code == 1  # the test profile runs no daemon: the submission says so
    assert 'not submitted: Cannot submit because the daemon is not running' in submitted.output


def test_import_refuses_in_one_message(run_cli, tmp_path):
    """The enhanced-sampling example is refused once, every unsupported key with its alternative."""
    result = run_cli('dpgen', 'import', EXAMPLES / 'run__dp-lammps-enhance_sampling__param.json')
    assert result.exit_code == 1
    assert result.output.count('cannot be imported') == 1
    for text in (
        'unsupported DP-GEN keys or values (5)',
        'model_devi_plumed = True: no PLUMED in the explorations',
        'training_init_model = True: the first iteration trains from scratch',
        'model_devi_jobs[0-2].template: no LAMMPS or PLUMED input templates; instead: schedule entries',
        'fp_pp_path/fp_pp_files',  # VASP without a POTCAR family is in the same message
    ):
        assert text in result.output, result.output
    assert '_comment' not in result.output and 'stop_batch:' not in result.output.replace(
        'reuse_stop_batch', ''
    )


def test_import_vasp_needs_a_potcar_family(run_cli):
    """A VASP example without --potential-family says what to pass (no TypeError)."""
    result = run_cli('dpgen', 'import', EXAMPLES / 'run__dp2.x-lammps-vasp__param_CH4_deepmd-kit-2.0.1.json')
    assert result.exit_code == 1
    assert "upload the folder './'" in result.output
    assert '--potential-family NAME' in result.output


def test_import_vasp_with_a_potcar_family(
    run_cli, tmp_path, code_labels, aiida_code_installed, potential_family
):
    """A VASP example imports with --potential-family; --potcar names an element's POTCAR in the family."""
    path = methane_project(tmp_path, EXAMPLES / 'run__dp2.x-lammps-vasp__param_CH4_deepmd-kit-2.0.1.json')
    vasp = aiida_code_installed(
        label='vasp-stand-in', filepath_executable='/bin/true', default_calc_job_plugin='vasp.vasp'
    )
    options = [*code_labels[:4], '--fp-code', vasp.full_label, '--potential-family', potential_family]
    result = run_cli('dpgen', 'import', path, *options, '--potcar', 'C=C_s')
    assert result.exit_code == 0, result.output
    assert (
        f'labelling: vasp, at most 20 frames per system and iteration, with {vasp.full_label}'
        in result.output
    )
    assert f'POTCARs of family {potential_family}: H H, C C_s' in result.output
    assert 'training: 4 models x 2000 steps' in result.output  # DeePMD-kit 2.0's numb_steps and batch_size


def test_machine_json_is_read():
    """DP-GEN's SSH + Slurm/LSF machine example: host, user, queue, modules, engine folder of each section."""
    machine = json.loads((EXAMPLES / 'machine__DeePMD-kit-1.x__machine-lsf-slurm-cp2k.json').read_text())
    slurm, lsf = machine_computers(machine)
    assert slurm.roles == ['train', 'model_devi'] and lsf.roles == ['fp']
    assert slurm.options == {
        'hostname': '210.34.15.205',
        'username': 'ybzhuang',
        'port': 22,
        'key_filename': None,
        'transport': 'core.ssh',
        'scheduler': 'core.slurm',
        'work_dir': '/home/ybzhuang/workdir',
        'engine_dir': '/share/apps/deepmd/compress/bin',
        'partition': 'emergency',
        'account': None,
        'mpiprocs_per_machine': 1,
        'mpirun_command': 'srun -n {tot_num_mpiprocs}',
        'prepend_text': 'module load deepmd/1.2',
    }
    assert lsf.options['scheduler'] == 'core.lsf' and lsf.options['port'] == 6666
    assert lsf.options['engine_dir'] is None  # `mpirun -n 32 cp2k.popt`: found on the remote PATH only
    local = machine_computers(
        json.loads((EXAMPLES / 'machine__DeePMD-kit-1.x__machine-local.json').read_text())
    )
    assert any('model_devi.machine.remote_root' in item for computer in local for item in computer.missing)


def test_import_says_what_machine_json_lacks(run_cli, tmp_path, code_labels):
    """The SSH example's CP2K command is not a path: the import asks for --engine-dir, connecting nowhere."""
    path = methane_project(tmp_path)
    machine = EXAMPLES / 'machine__DeePMD-kit-1.x__machine-lsf-slurm-cp2k.json'
    result = run_cli('dpgen', 'import', path, machine)
    assert result.exit_code == 1
    assert 'the engine folder of fp: its command is not an absolute path; pass --engine-dir' in result.output


def test_import_with_machine_json_registers_the_computer(run_cli, tmp_path, unique_label):
    """A local DP-GEN machine.json becomes a computer with dp, lmp and cp2k through `setup remote`."""
    path = methane_project(tmp_path / 'project')
    context = {'batch_type': 'Shell', 'context_type': 'LocalContext', 'remote_root': str(tmp_path / 'work')}
    resources = {'number_node': 1, 'cpu_per_node': 2, 'queue_name': 'debug', 'envs': {'LISEI_SITE': '1'}}
    commands = {
        'train': str(VENV_BIN / 'dp'),
        'model_devi': f'mpirun -np 2 {VENV_BIN / "lmp"}',
        'fp': 'mpirun -np 2 cp2k.psmp -i input.inp',
    }
    machine = {'api_version': '1.0'}
    for role, command in commands.items():
        machine[role] = {'command': command, 'machine': context, 'resources': resources}
    machine_path = tmp_path / 'machine.json'
    machine_path.write_text(json.dumps(machine))
    result = run_cli('dpgen', 'import', path, machine_path, '--computer-label', unique_label)
    assert result.exit_code == 0, result.output
    assert f'computer {unique_label} (train, model_devi, fp): localhost, core.direct' in result.output
    computer = orm.load_computer(unique_label)
    assert computer.get_workdir() == str(tmp_path / 'work')
    assert scheduler_options(computer) == {'queue_name': 'debug'}
    assert computer.get_prepend_text() == 'export LISEI_SITE=1'
    assert orm.load_code(f'dp@{unique_label}').filepath_executable == VENV_BIN / 'dp'
    assert computer.get_mpirun_command() == ['mpirun', '-np', '{tot_num_mpiprocs}']
    assert f'with dp@{unique_label}' in result.output and f'exploration: lmp@{unique_label}' in result.output
    assert f'with cp2k@{unique_label}' in result.output
