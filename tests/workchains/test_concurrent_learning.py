"""Tests of ``lisei.concurrent_learning``: seeds, schedule, trust levels, protocols, a real run."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from aiida import orm
from aiida.engine import run_get_node
from aiida.manage.caching import enable_caching
from ase.build import bulk
from local_codes import ONE_THREAD

from aiida_lisei.data.training_set import TrainingSetData
from aiida_lisei.science.selection import PAPER_TRUST_TABLE, TrustLevels, TrustTable
from aiida_lisei.workchains.concurrent_learning import (
    ConcurrentLearningWorkChain,
    check_schedule,
    check_training_reuse,
    reused_training_parameters,
    schedule_entry,
    temperature_key,
)
from aiida_lisei.workchains.label import LabelWorkChain

TRAINING_SET = Path(__file__).parents[1] / 'fixtures' / 'dp_training_set'


def li16(amplitude: float = 0.0, seed: int = 7) -> orm.StructureData:
    """bcc Li16 (a = 3.42 Å), optionally displaced by seeded normal noise of ``amplitude`` (Å)."""
    atoms = bulk('Li', 'bcc', a=3.42, cubic=True).repeat(2)
    atoms.positions += np.random.default_rng(seed).normal(scale=amplitude, size=atoms.positions.shape)
    return orm.StructureData(ase=atoms)


def test_schedule_repeats_last_item_and_is_checked():
    """The last schedule item repeats (DP-GEN); entries need a system, temperatures, valid MD settings."""
    schedule = check_schedule(
        [
            [{'system': 'bcc_lithium', 'temperatures': [300], 'n_steps': 100}],
            [{'system': 'bcc_lithium', 'temperatures': [600, 900], 'n_steps': 200, 'stride': 20}],
        ]
    )
    assert schedule_entry(schedule, 1)[0]['temperatures'] == [300]
    assert schedule_entry(schedule, 2) == schedule_entry(schedule, 5)
    assert temperature_key(300) == 'T300' and temperature_key(297.5) == 'T297p5'
    with pytest.raises(ValueError, match='lacks'):
        check_schedule([[{'system': 'bcc_lithium', 'n_steps': 100}]])
    with pytest.raises(ValueError, match='n_steps'):
        check_schedule([[{'system': 'bcc_lithium', 'temperatures': [300]}]])
    with pytest.raises(ValueError, match='pressure'):
        check_schedule([[{'system': 'x', 'temperatures': [300], 'n_steps': 10, 'ensemble': 'npt'}]])


def test_trust_table_from_dict():
    """Flat levels hold at every temperature; ranged levels follow the SI table; unknown keys are refused."""
    table = TrustTable.from_dict(
        {
            'bcc_lithium': {'f_lo': 0.1, 'f_hi': 0.2},
            'interface': [
                {'t_min': 200, 't_max': 500, 'f_lo': 0.10, 'f_hi': 0.25},
                {'t_min': 600, 't_max': 1000, 'f_lo': 0.25, 'f_hi': 0.50},
            ],
        }
    )
    assert table.lookup('bcc_lithium', 5000) == TrustLevels(0.1, 0.2)
    assert table.lookup('interface', 800) == PAPER_TRUST_TABLE.lookup('interface', 800)
    with pytest.raises(KeyError):
        table.lookup('interface', 550)
    with pytest.raises(ValueError, match='unknown keys'):
        TrustTable.from_dict({'x': {'f_lo': 0.1, 'f_hi': 0.2, 'e_lo': 1}})


def test_protocols(aiida_code_installed):
    """``demo``: two short iterations of the tiny models; ``paper``: the SI's trust table, 200-1000 K."""
    code = aiida_code_installed(label='stand-in', filepath_executable='/bin/true')
    training_set = TrainingSetData.from_deepmd_npy(TRAINING_SET / 'bcc_li')
    structures = {'bcc_lithium': li16()}
    assert set(ConcurrentLearningWorkChain.get_available_protocols()) == {'demo', 'demo_chgnet', 'paper'}
    demo = ConcurrentLearningWorkChain.get_builder_from_protocol(code, code, code, training_set, structures)
    assert demo.schedule.get_list() == [
        [
            {
                'system': 'bcc_lithium',
                'temperatures': [300, 600],
                'n_steps': 150,
                'stride': 10,
                'ensemble': 'nvt',
            }
        ]
    ]
    assert demo.max_iterations.value == 2 and demo.fp_task_max.value == 6 and demo.num_models.value == 4
    assert demo.train.dp_train.parameters['training']['numb_steps'] == 400
    assert 'seed' not in demo.train.dp_train and demo.label.engine.value == 'tblite'
    assert 'trust_levels' not in demo  # the SI table

    # the demo for the sandwich: CHGNet labels, the float32 network with virials, the sandwich in NPT xy
    sandwich = {**structures, 'argyrodite': li16(), 'sandwich': li16()}
    chgnet = ConcurrentLearningWorkChain.get_builder_from_protocol(
        code, code, code, training_set, sandwich, protocol='demo_chgnet'
    )
    assert chgnet.label.engine.value == 'chgnet' and chgnet.max_iterations.value == 3
    descriptor = chgnet.train.dp_train.parameters['model']['descriptor']
    assert descriptor['precision'] == 'float32' and descriptor['neuron'] == [8, 16, 32]
    assert chgnet.train.dp_train.parameters['loss']['limit_pref_v'] == 1  # virials trained
    assert chgnet.trust_levels['sandwich'] == {'f_lo': 0.25, 'f_hi': 0.5}
    sandwich_entries = [
        next(entry for entry in item if entry['system'] == 'sandwich') for item in chgnet.schedule.get_list()
    ]
    assert [entry['n_steps'] for entry in sandwich_entries] == [1000, 2000]  # longer as the model learns
    assert all(
        entry['ensemble'] == 'npt' and entry['pressure_coupling'] == 'xy' for entry in sandwich_entries
    )

    paper = ConcurrentLearningWorkChain.get_builder_from_protocol(
        code, code, code, training_set, structures, protocol='paper'
    )
    table = TrustTable.from_dict(paper.trust_levels.get_dict())
    for system in ('bcc_lithium', 'argyrodite', 'interface'):
        for temperature in (200, 500, 600, 1000):
            assert table.lookup(system, temperature) == PAPER_TRUST_TABLE.lookup(system, temperature)
    temperatures = {t for item in paper.schedule.get_list() for entry in item for t in entry['temperatures']}
    assert min(temperatures) == 200 and max(temperatures) == 1000
    assert {entry['n_steps'] for item in paper.schedule.get_list() for entry in item} == {10000, 20000}
    with pytest.raises(ValueError, match='none of the given systems'):
        ConcurrentLearningWorkChain.get_builder_from_protocol(code, code, code, training_set, {'x': li16()})


def test_refinement_inputs_continue_the_protocol(aiida_code_installed):
    """The restraint run's refinement on the fly labels and trains as the learning did: the same engine and
    network, the protocol's fp_task_max, the system's lower trust level."""
    code = aiida_code_installed(label='stand-in', filepath_executable='/bin/true')
    training_set = TrainingSetData.from_deepmd_npy(TRAINING_SET / 'bcc_li')
    inputs = ConcurrentLearningWorkChain.get_refinement_inputs(
        code, code, training_set, 'sandwich', li16(), protocol='demo_chgnet'
    )
    learning = ConcurrentLearningWorkChain.get_builder_from_protocol(
        code, code, code, training_set, {'sandwich': li16()}, protocol='demo_chgnet'
    )
    assert inputs['training_set'] is training_set
    assert inputs['selection'].get_dict() == {'fp_task_max': 16, 'f_lo': 0.25, 'system': 'sandwich'}
    assert inputs['label']['engine'].value == 'chgnet' == learning.label.engine.value
    train = inputs['train']['dp_train']
    assert train['parameters'].get_dict() == learning.train.dp_train.parameters.get_dict()
    assert 'training_set' not in train and 'seed' not in train
    assert inputs['fine_tune'].value is False
    default = ConcurrentLearningWorkChain.get_refinement_inputs(code, code, training_set, 'x', li16())
    assert default['selection']['f_lo'] == 0.10  # no trust level for the system: the restraint's default
    # fine-tuning continues the models as the learning's training reuse does, where it has one
    tuned = ConcurrentLearningWorkChain.get_refinement_inputs(
        code, code, training_set, 'sandwich', li16(), protocol='demo_chgnet', fine_tune=True
    )
    assert tuned['fine_tune'].value is True
    tuned_parameters = tuned['train']['dp_train']['parameters'].get_dict()
    assert tuned_parameters == learning.train.dp_train.parameters.get_dict()  # the protocol has no reuse
    reuse = {'from_iteration': 2, 'numb_steps': 500, 'start_lr': 5e-4}
    reused = ConcurrentLearningWorkChain.get_refinement_inputs(
        code,
        code,
        training_set,
        'sandwich',
        li16(),
        protocol='demo_chgnet',
        overrides={'training_reuse': reuse},
        fine_tune=True,
    )
    reused_parameters = reused['train']['dp_train']['parameters'].get_dict()
    assert reused_parameters['training']['numb_steps'] == 500
    assert reused_parameters['learning_rate']['start_lr'] == 5e-4
    assert reused_parameters['learning_rate']['decay_steps'] == 25  # 2000 steps / 20 drops -> 500 / 20


def test_training_reuse_parameters():
    """DP-GEN's training reuse replaces steps, learning rate and prefactors, scales decay_steps, and is
    checked: from_iteration >= 2, known keys, positive values."""
    parameters = {
        'learning_rate': {'start_lr': 1e-3, 'stop_lr': 1e-5, 'decay_steps': 100},
        'loss': {'start_pref_e': 0.02, 'start_pref_f': 1000},
        'training': {'numb_steps': 2000},
    }
    reuse = {'from_iteration': 2, 'numb_steps': 500, 'start_lr': 1e-4, 'start_pref_f': 100}
    reused = reused_training_parameters(parameters, check_training_reuse(reuse))
    assert reused['training']['numb_steps'] == 500 and reused['learning_rate']['start_lr'] == 1e-4
    assert reused['learning_rate']['decay_steps'] == 25  # still 20 drops over the run
    assert reused['loss'] == {'start_pref_e': 0.02, 'start_pref_f': 100}
    assert parameters['training']['numb_steps'] == 2000  # the input is not changed
    for bad, message in (
        ({'numb_steps': 10}, 'from_iteration must be an integer >= 2'),
        ({'from_iteration': 1}, 'from_iteration must be an integer >= 2'),
        ({'from_iteration': 2, 'start_lr': 0}, 'start_lr must be a positive number'),
        ({'from_iteration': 2, 'start_pref_e': -1}, 'start_pref_e must be >= 0'),
        ({'from_iteration': 2, 'old_ratio': 0.9}, 'unknown training_reuse keys'),
    ):
        with pytest.raises(ValueError, match=message):
            check_training_reuse(bad)


def calcjobs_below(node: orm.WorkflowNode) -> list[orm.CalcJobNode]:
    """Return every CalcJob called (at any depth, through CALL links) by ``node``."""
    calcjobs = []
    for child in node.called:
        if isinstance(child, orm.CalcJobNode):
            calcjobs.append(child)
        elif isinstance(child, orm.WorkflowNode):
            calcjobs.extend(calcjobs_below(child))
    return calcjobs


def selected_steps(node: orm.WorkflowNode) -> dict:
    """Return ``{iteration: {system: {temperature: selected steps}}}`` of a finished run."""
    return {
        name: {
            system: {t: stats['selected_steps'] for t, stats in data['temperatures'].items()}
            for system, data in summary['systems'].items()
        }
        for name, summary in node.outputs.iterations.items()
    }


@pytest.mark.slow
def test_real_run_and_cached_rerun(venv_code):
    """Two iterations on bcc Li16 with tiny models, real LAMMPS and tblite; a cached rerun computes nothing.

    Trust levels [1e-6, 1e3] eV/Å make every frame a candidate, so each iteration draws fp_task_max = 3
    labels from the pool of both temperatures whatever the (barely trained) models predict; step 0 is skipped
    (model_devi_skip). The second iteration reuses the first one's models (DP-GEN's training reuse).
    """
    tblite = venv_code('lisei-tblite', 'lisei.tblite')
    dp = venv_code('dp', 'lisei.dp_train', prepend_text=ONE_THREAD)
    lmp = venv_code('lmp', 'lisei.exploration', prepend_text=ONE_THREAD)
    initial = LabelWorkChain.get_builder_from_protocol(
        tblite,
        [li16(0.05, seed) for seed in range(4)],
        system_label='bcc_lithium',
        tags={'source': 'perturbation'},
    )
    initial_results, initial_node = run_get_node(initial)
    assert initial_node.is_finished_ok, initial_node.exit_message
    training_set = initial_results['training_set']

    training = {'numb_steps': 20, 'disp_freq': 10, 'save_freq': 20}
    overrides = {
        'train': {
            'overrides': {
                'dp_train': {'parameters': {'training': training}, 'settings': {'skip_neighbor_stat': True}}
            }
        },
        'schedule': [[{'system': 'bcc_lithium', 'temperatures': [300, 600], 'n_steps': 60, 'stride': 10}]],
        'trust_levels': {'bcc_lithium': {'f_lo': 1e-6, 'f_hi': 1e3}},
        'selection': {'model_devi_skip': 1},  # step 0 (the perfect lattice) has no deviation
        'fp_task_max': 3,
        'max_iterations': 2,
        'training_reuse': {'from_iteration': 2, 'numb_steps': 10, 'start_lr': 1e-4},
    }
    builder = ConcurrentLearningWorkChain.get_builder_from_protocol(
        dp, lmp, tblite, training_set, {'bcc_lithium': li16()}, overrides=overrides, seed=11
    )
    results, node = run_get_node(builder)
    assert node.is_finished_ok, node.exit_message

    assert sorted(results['models']) == [f'model_{index}' for index in range(1, 5)]
    assert len({model.seed for model in results['models'].values()}) == 4
    trainings = {link.link_label: link.node for link in node.base.links.get_outgoing().all()}
    for index in range(1, 5):  # iteration 2 starts each model from iteration 1's and trains 10 steps
        first = trainings[f'iteration_01_train_{index}'].outputs.model
        calculation = trainings[f'iteration_02_train_{index}'].called[0]
        assert calculation.inputs.init_model.uuid == first.uuid
        assert 'init_model' not in trainings[f'iteration_01_train_{index}'].called[0].inputs
        assert calculation.outputs.output_parameters['steps_done'] == 10
        assert calculation.inputs.parameters['learning_rate']['start_lr'] == 1e-4
    assert results['models']['model_1'].uuid == trainings['iteration_02_train_1'].outputs.model.uuid
    iterations = results['iterations']
    assert sorted(iterations) == ['iteration_01', 'iteration_02']
    labelled = 0
    for summary in iterations.values():
        data = summary['systems']['bcc_lithium']
        assert set(data['temperatures']) == {'300', '600'}
        assert data['candidate'] == pytest.approx(1.0)
        assert data['n_selected'] == 3 == sum(t['n_selected'] for t in data['temperatures'].values())
        labelled += data['n_labelled']
    assert labelled > 0
    assert results['training_set'].nframes == training_set.nframes + labelled
    tags = results['training_set'].get_system('bcc_lithium').tags
    assert {tag.get('iteration') for tag in tags if tag.get('source') == 'exploration'} == {1, 2}
    reports = [log.message for log in orm.Log.collection.get_logs_for(node)]
    assert any(
        'iteration 2: bcc_lithium 600 K: 0.0 % accurate, 100.0 % candidates' in line for line in reports
    )
    print('\n'.join(reports))

    with enable_caching():
        _, rerun = run_get_node(builder)
    assert rerun.is_finished_ok, rerun.exit_message
    calcjobs = calcjobs_below(rerun)
    assert len(calcjobs) == len(calcjobs_below(node)) > 0
    assert all(calc.base.caching.is_created_from_cache for calc in calcjobs)
    assert selected_steps(rerun) == selected_steps(node)
