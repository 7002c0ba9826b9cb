"""Tests of ``builder_from_dpgen_param``: a DP-GEN param.json as ``lisei.concurrent_learning``.

``tests/fixtures/dpgen_examples`` holds every ``param.json`` of DP-GEN's ``examples/`` that explores with
LAMMPS and labels with VASP or CP2K (see its README): each one imports, or is refused naming only
features we do not have.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
from aiida import orm
from ase import Atoms
from ase.build import bulk
from ase.calculators.singlepoint import SinglePointCalculator
from ase.io import write

from aiida_lisei.calculations.dp_train import build_input
from aiida_lisei.data.training_set import TrainingSetData
from aiida_lisei.science.selection import TrustTable
from aiida_lisei.workchains.dpgen_import import (
    JOB_ALIASES,
    JOB_RULES,
    PARAM_ALIASES,
    PARAM_RULES,
    DpgenImportError,
    builder_from_dpgen_param,
    rules_markdown,
)

FIXTURES = Path(__file__).parents[1] / 'fixtures'
TRAINING_SET = FIXTURES / 'dp_training_set'
EXAMPLES = FIXTURES / 'dpgen_examples'
DOCS = Path(__file__).parents[2] / 'docs' / 'dpgen.md'
SYSTEMS = ('bcc_lithium', 'argyrodite', 'interface')


def dpgen_param(tmp_path: Path) -> dict:
    """A realistic param.json: the SI's per-system trust levels (600-1000 K), a dict with string keys."""
    for name in SYSTEMS:  # stand-in start configurations (the importer only reads the first file of each)
        (tmp_path / 'confs' / name).mkdir(parents=True)
        write(
            tmp_path / 'confs' / name / 'POSCAR',
            bulk('Li', 'bcc', a=3.42, cubic=True).repeat(2),
            format='vasp',
        )
    return {
        'type_map': ['Li', 'P', 'S', 'Cl'],
        'mass_map': [6.94, 30.974, 32.06, 35.45],
        'init_data_prefix': str(TRAINING_SET),
        'init_data_sys': ['bcc_li', 'li2s'],
        'sys_configs_prefix': str(tmp_path / 'confs'),
        'sys_configs': [[f'{name}/POSCAR'] for name in SYSTEMS],
        'numb_models': 4,
        'default_training_param': {
            'model': {
                'type_map': ['Li', 'P', 'S', 'Cl'],
                'descriptor': {
                    'type': 'se_e2_a',
                    'sel': [60, 20, 26, 36],
                    'rcut_smth': 0.5,
                    'rcut': 6.0,
                    'neuron': [25, 50, 100],
                    'axis_neuron': 16,
                    'seed': 1,
                },
                'fitting_net': {'neuron': [240, 240, 240], 'resnet_dt': True, 'seed': 1},
            },
            'learning_rate': {'type': 'exp', 'start_lr': 0.001, 'stop_lr': 5e-8, 'decay_steps': 2000},
            'loss': {'start_pref_e': 0.02, 'limit_pref_e': 1, 'start_pref_f': 1000, 'limit_pref_f': 1},
            'training': {
                'numb_steps': 400000,
                'seed': 1,
                'disp_freq': 1000,
                'save_freq': 2000,
                'training_data': {'systems': [], 'batch_size': 'auto'},
            },
        },
        'model_devi_dt': 0.001,
        'model_devi_skip': 0,
        'model_devi_f_trust_lo': {'0': 0.15, '1': 0.15, '2': 0.25},
        'model_devi_f_trust_hi': {'0': 0.30, '1': 0.30, '2': 0.50},
        'model_devi_clean_traj': True,
        'model_devi_jobs': [
            {'sys_idx': [0, 1], 'temps': [600, 800], 'nsteps': 10000, 'trj_freq': 20, 'ensemble': 'nvt'},
            {
                'sys_idx': [0, 1, 2],
                'temps': [600, 800, 1000],
                'nsteps': 20000,
                'trj_freq': 20,
                'ensemble': 'nvt',
            },
            {
                'sys_idx': [2],
                'temps': [800],
                'press': [1.0],
                'nsteps': 20000,
                'trj_freq': 20,
                'ensemble': 'npt',
            },
        ],
        'fp_style': 'tblite',
        'fp_task_max': 300,
        'fp_task_min': 5,
        'fp_accurate_threshold': 0.99,
        'fp_accurate_soft_threshold': 0.95,
    }


@pytest.fixture
def codes(aiida_code_installed) -> dict[str, orm.InstalledCode]:
    """Stand-in codes for dp, lmp and the labelling engine."""
    code = aiida_code_installed(label='stand-in', filepath_executable='/bin/true')
    return {'dp': code, 'lmp': code, 'fp': code}


def test_param_json_is_mapped(tmp_path, codes):
    """Every supported key lands where docs/dpgen.md says; per-system trust levels by label."""
    param = dpgen_param(tmp_path)
    param.update(  # DP-GEN's training reuse from its iteration 1 (our second)
        {
            'training_reuse_iter': 1,
            'training_reuse_old_ratio': 0.9,
            'training_reuse_stop_batch': 1000,
            'training_reuse_start_lr': 1e-4,
        }
    )
    path = tmp_path / 'param.json'
    path.write_text(json.dumps(param))
    structures = {name: orm.StructureData(ase=bulk('Li', 'bcc', a=3.42, cubic=True)) for name in SYSTEMS}
    with pytest.warns(UserWarning, match=r"ignored DP-GEN keys.*'mass_map', 'model_devi_clean_traj'"):
        builder = builder_from_dpgen_param(path, codes, structures=structures, seed=5)

    assert builder.training_set.system_labels == ['bcc_li', 'li2s']
    assert builder.num_models.value == 4 and builder.max_iterations.value == 3 and builder.seed.value == 5
    assert builder.fp_task_max.value == 300
    assert builder.selection.get_dict() == {
        'fp_task_min': 5,
        'model_devi_skip': 0,
        'fp_accurate_threshold': 0.99,
        'fp_accurate_soft_threshold': 0.95,
    }
    table = TrustTable.from_dict(builder.trust_levels.get_dict())
    assert (table.lookup('interface', 800).f_lo, table.lookup('interface', 800).f_hi) == (0.25, 0.50)
    assert (table.lookup('argyrodite', 600).f_lo, table.lookup('argyrodite', 600).f_hi) == (0.15, 0.30)
    schedule = builder.schedule.get_list()
    assert [[entry['system'] for entry in item] for item in schedule] == [
        ['bcc_lithium', 'argyrodite'],
        ['bcc_lithium', 'argyrodite', 'interface'],
        ['interface'],
    ]
    assert schedule[0][0] == {
        'system': 'bcc_lithium',
        'temperatures': [600, 800],
        'n_steps': 10000,
        'stride': 20,
        'ensemble': 'nvt',
    }
    assert schedule[2][0]['ensemble'] == 'npt' and schedule[2][0]['pressure'] == 1.0
    assert builder.explore.parameters['timestep'] == 1.0
    parameters = builder.train.dp_train.parameters.get_dict()
    assert parameters['model']['fitting_net'] == {'neuron': [240, 240, 240], 'resnet_dt': True}
    assert 'seed' not in parameters['training'] and 'systems' not in parameters['training']['training_data']
    assert builder.label.engine.value == 'tblite'
    assert builder.training_reuse.get_dict() == {'from_iteration': 2, 'numb_steps': 1000, 'start_lr': 1e-4}


def test_structures_are_read_from_sys_configs(tmp_path, codes):
    """Without ``structures`` the first file of each sys_configs entry is read, labelled ``sys_<index>``."""
    param = dpgen_param(tmp_path)
    param['model_devi_f_trust_lo'], param['model_devi_f_trust_hi'] = 0.1, [0.2, 0.3, 0.4]
    param.pop('mass_map'), param.pop('model_devi_clean_traj')
    builder = builder_from_dpgen_param(param, codes)
    assert sorted(builder.structures) == ['sys_000', 'sys_001', 'sys_002']
    assert len(builder.structures['sys_000'].sites) == 16
    assert builder.trust_levels['sys_002'] == {'f_lo': 0.1, 'f_hi': 0.4}


def test_unsupported_keys_are_refused_with_a_list(tmp_path, codes):
    """Every unsupported key or value is named in one error, with its reason and an alternative."""
    param = dpgen_param(tmp_path)
    param.update(
        {
            'model_devi_engine': 'gromacs',
            'model_devi_plumed': True,
            'ratio_failed': 0.1,
            'fp_style': 'gaussian',
        }
    )
    param['model_devi_jobs'][0]['template'] = {'lmp': 'in.lammps'}
    param['model_devi_jobs'][1]['press'] = [1.0, 100.0]
    param['model_devi_jobs'][1]['ensemble'] = 'npt'
    param['model_devi_jobs'][2].pop('press')
    with pytest.raises(DpgenImportError, match='unsupported DP-GEN keys or values') as info:
        builder_from_dpgen_param(param, codes)
    message = str(info.value)
    for text in (
        "model_devi_engine = 'gromacs': LAMMPS explores (accepted: 'lammps'); instead: LAMMPS",
        'model_devi_plumed = True: no PLUMED in the explorations',
        'lisei.restraint_md',
        'ratio_failed: no abort on a fraction of failed labels',
        'model_devi_jobs[0].template: no LAMMPS or PLUMED input templates',
        'model_devi_jobs[1].press: several pressures',
        'model_devi_jobs[2].press: npt needs a pressure',
        "fp_style = 'gaussian'",
    ):
        assert text in message, message
    assert len(info.value.problems) == 7


def test_comments_and_old_names_are_accepted(tmp_path, codes):
    """``_`` keys are comments (anywhere); DP-GEN's job aliases and DeePMD-kit's old names are renamed."""
    param = dpgen_param(tmp_path)
    param['_comment1'] = ' 00.train '
    param['_comments'] = 'as in DP-GEN examples'
    training = param['default_training_param']['training']
    training['stop_batch'] = training.pop('numb_steps')
    training['_batch_size'] = 1
    training['batch_size'] = 2  # DeePMD-kit v1: training.batch_size
    training.pop('training_data')
    param['model_devi_jobs'] = [
        {'sys_idx': [0], 'Ts': [300], 'ens': 'nvt', 't_freq': 5, 'nsteps': 100, '_idx': '00', 'taut': 0.05}
    ]
    builder = builder_from_dpgen_param(
        param, codes, structures=[orm.StructureData(ase=bulk('Li', 'bcc', a=3.42))] * 3
    )
    parameters = builder.train.dp_train.parameters.get_dict()['training']
    assert parameters['numb_steps'] == 400000 and 'stop_batch' not in parameters
    assert parameters['training_data'] == {'batch_size': 2} and '_batch_size' not in parameters
    assert builder.schedule.get_list() == [
        [
            {
                'system': 'sys_000',
                'temperatures': [300],
                'n_steps': 100,
                'stride': 5,
                'ensemble': 'nvt',
                'thermostat_damping': 50.0,
            }
        ]
    ]


def test_vasp_without_potcar_family_says_what_to_pass(tmp_path, codes):
    """VASP labels need an uploaded POTCAR family: the refusal names it and how to make one."""
    param = dpgen_param(tmp_path)
    param.update(fp_style='vasp', fp_pp_path='/data/pp', fp_pp_files=['POTCAR'], fp_incar='INCAR')
    with pytest.raises(DpgenImportError) as info:
        builder_from_dpgen_param(param, codes)
    assert "upload the folder '/data/pp'" in str(info.value)
    assert 'potential_family=NAME (`--potential-family NAME`)' in str(info.value)


# -- DP-GEN's own documentation and examples -----------------------------------------------------------


def test_every_documented_key_has_a_rule():
    """Each key of DP-GEN's argument list (LAMMPS, VASP, CP2K) has a rule, and ``docs/dpgen.md`` lists it."""
    from dpgen.generator.arginfo import run_jdata_arginfo

    arginfo = run_jdata_arginfo()
    keys = set(arginfo.sub_fields)
    job_keys: set[str] = set()
    aliases: set[str] = set()
    for variant, choices in (
        ('mlp_engine', ['dp']),
        ('model_devi_engine', ['lammps']),
        ('fp_style', ['vasp', 'cp2k']),
    ):
        keys.add(variant)
        for choice in choices:
            fields = arginfo.sub_variants[variant].choice_dict[choice].sub_fields
            keys |= set(fields)
            aliases |= {alias for field in fields.values() for alias in field.alias}
            if 'model_devi_jobs' in fields:
                job_keys = set(fields['model_devi_jobs'].sub_fields)
    assert keys <= set(PARAM_RULES), sorted(keys - set(PARAM_RULES))
    assert job_keys <= set(JOB_RULES), sorted(job_keys - set(JOB_RULES))
    assert aliases <= set(PARAM_ALIASES)
    assert 'dpgen_keys.md' in DOCS.read_text()  # the generated table is part of the page
    documented = set(re.findall(r'`([A-Za-z_0-9]+)`', rules_markdown()))
    assert keys | job_keys | aliases | set(JOB_ALIASES) <= documented


#: Every vendored param.json and what it gives: ``None`` imports, else the keys it is refused for.
EXPECTED = {
    'run__ch4__param.json': None,
    'run__deprecated__dp2.x-lammps-cp2k__CH4__param_CH4.json': None,
    'run__deprecated__dp2.x-lammps-vasp__Al__param_al_all_gpu.json': {'model_devi_jobs[0-8].press'},
    'run__deprecated__dp2.x-lammps-vasp__CH4__param_CH4.json': None,
    'run__deprecated__param-h2oscan-vasp.json': {
        'model_devi_jobs[0-7].press',
        'model_devi_jobs[0,2,4,6].s_t',
    },
    'run__deprecated__param-mg-vasp-ucloud.json': None,
    'run__deprecated__param-mg-vasp.json': None,
    'run__dp-lammps-enhance_sampling__param.json': {
        'training_init_model',  # its training_reuse_* keys are mapped
        'model_devi_plumed',
        'model_devi_jobs[0-2].template',
        'model_devi_jobs[0-2].rev_mat',
    },
    'run__dp2.x-lammps-cp2k__methane__param-ch4.json': None,
    'run__dp2.x-lammps-cp2k__param_CH4_deepmd-kit-2.0.1.json': {'ratio_failed'},
    'run__dp2.x-lammps-vasp-et__param_elet.json': {'use_ele_temp', 'model_devi_jobs[0].press'},
    'run__dp2.x-lammps-vasp__Al__param_al_all_gpu-deepmd-kit-2.x.json': {'model_devi_jobs[0-8].press'},
    'run__dp2.x-lammps-vasp__CH4__param_CH4_deepmd-kit-2.x.json': None,
    'run__dp2.x-lammps-vasp__param_CH4_deepmd-kit-2.0.1.json': None,
}


def _refused_key(problem: str) -> str:
    """Return the key of one refusal line (``key: reason`` or ``key = value: reason``)."""
    return re.split(r' = |: ', problem, maxsplit=1)[0]


def stand_ins(type_map: list[str], count: int) -> tuple[list[orm.StructureData], TrainingSetData]:
    """Return ``count`` start configurations and a one-frame training set of the elements of ``type_map``."""
    atoms = Atoms(type_map, positions=[[1.0 + 1.6 * index, 1.0, 1.0] for index in range(len(type_map))])
    atoms.set_cell([12.0, 12.0, 12.0])
    atoms.pbc = True
    frame = atoms.copy()
    frame.calc = SinglePointCalculator(
        frame, energy=-1.0, forces=np.zeros((len(frame), 3)), stress=np.zeros(6)
    )
    level = {'engine': 'stand-in', 'method': 'none', 'settings': {}}
    training_set = TrainingSetData.from_ase([frame], level, 'init', type_map=type_map)
    return [orm.StructureData(ase=atoms) for _ in range(count)], training_set


def test_examples_are_all_considered():
    """The expectations name exactly the vendored examples."""
    assert {path.name for path in EXAMPLES.glob('run__*.json')} == set(EXPECTED)


@pytest.mark.parametrize('name', sorted(EXPECTED))
def test_dpgen_example(name, codes, potential_family):
    """Each of DP-GEN's examples imports, or is refused for exactly the unsupported features expected."""
    from deepmd.utils.argcheck import normalize

    param = json.loads((EXAMPLES / name).read_text())
    structures, training_set = stand_ins(param['type_map'], len(param['sys_configs']))
    kwargs = {'potential_family': potential_family} if param['fp_style'] == 'vasp' else {}
    if EXPECTED[name] is not None:
        with pytest.raises(DpgenImportError) as info:
            builder_from_dpgen_param(param, codes, structures, training_set, **kwargs)
        assert {_refused_key(problem) for problem in info.value.problems} == EXPECTED[name]
        return
    with pytest.warns(UserWarning, match='ignored DP-GEN keys'):
        builder = builder_from_dpgen_param(param, codes, structures, training_set, **kwargs)
    jobs = param['model_devi_jobs']
    schedule = builder.schedule.get_list()
    assert len(schedule) == len(jobs) == builder.max_iterations.value
    assert [len(item) for item in schedule] == [len(job['sys_idx']) for job in jobs]
    assert builder.label.engine.value == param['fp_style']
    training = param['default_training_param']['training']
    parameters = builder.train.dp_train.parameters.get_dict()
    assert parameters['training']['numb_steps'] == training.get('stop_batch', training.get('numb_steps'))
    deepmd_input = build_input(parameters, 7, param['type_map'], ['sys'])
    normalize(deepmd_input)  # DeePMD-kit's own strict check of the input the CalcJob writes
    table = TrustTable.from_dict(builder.trust_levels.get_dict())
    assert table.lookup('sys_000', 300).f_hi == param['model_devi_f_trust_hi']
    if param['fp_style'] == 'vasp':
        assert builder.label.vasp.potential_mapping.get_dict() == {
            element: element for element in param['type_map']
        }
