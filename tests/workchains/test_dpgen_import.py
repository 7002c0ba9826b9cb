"""Tests of ``builder_from_dpgen_param``: a DP-GEN 0.14 param.json as ``lisei.concurrent_learning``."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from aiida import orm
from ase.build import bulk
from ase.io import write

from aiida_lisei.science.selection import TrustTable
from aiida_lisei.workchains.dpgen_import import builder_from_dpgen_param

TRAINING_SET = Path(__file__).parents[1] / 'fixtures' / 'dp_training_set'
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
    """Every supported key lands where docs/concurrent_learning.md says; per-system trust levels by label."""
    param = dpgen_param(tmp_path)
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
    """Every unsupported key or value is named in one error."""
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
    with pytest.raises(ValueError, match='unsupported DP-GEN keys') as info:
        builder_from_dpgen_param(param, codes)
    message = str(info.value)
    for text in (
        "model_devi_engine = 'gromacs'",
        'model_devi_plumed',
        'ratio_failed',
        'model_devi_jobs[0].template',
        'model_devi_jobs[1].press with several pressures',
        "fp_style = 'gaussian'",
    ):
        assert text in message, message
