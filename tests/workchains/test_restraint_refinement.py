"""Refinement on the fly in ``lisei.restraint_md``, end to end on the 88-atom test sandwich (real engines).

The ensemble (two tiny test models trained on bcc Li only) does not know the sandwich: its first segment
fails a guard (`min_distance` made strict; the equilibration's test fails `deviation`). One round of
refinement: the segment's candidate frames are selected (seeded), labelled with CHGNet, added to a CHGNet
training set of bcc Li16, two models are retrained, and the segment runs again from its start with them.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from aiida import orm
from aiida.engine import run_get_node
from ase.build import bulk
from local_codes import ONE_THREAD

from aiida_lisei.common.seeds import derive_seed
from aiida_lisei.workchains.dp_train import DpTrainWorkChain
from aiida_lisei.workchains.label import LabelWorkChain
from aiida_lisei.workchains.restraint_md import RestraintMdWorkChain

MODELS = Path(__file__).parents[1] / 'fixtures' / 'models'


def _pruned(builder, *names: str) -> dict:
    inputs = builder._inputs(prune=True)
    for name in names:
        inputs.pop(name, None)
    return inputs


@pytest.fixture
def deviation_only(loose_guards) -> dict:
    """Guards where only the deviation fails: one frame at or above 0.5 eV/Å (the candidates' window is
    [f_lo, deviation_f_hi))."""
    return {**loose_guards, 'deviation_f_hi': 0.5, 'deviation': 0.0, 'enabled': True}


def _segment_overrides(guards: dict, n_steps: int) -> dict:
    """Protocol overrides of one short segment (a frame every 5 steps) with these guards."""
    return {
        'md': {
            'parameters': {'n_steps': n_steps, 'thermo_stride': 10, 'dump_stride': 5, 'restart_stride': 0},
            'guards': guards,
        },
        'restraint': {'d_max': 5.0, 'anode_layers': 2, 'colvar_stride': 5},
    }


def _restraint_builder(restraint_code, small_sandwich, overrides: dict, **kwargs):
    """The restraint run of the two tiny Li-only test models (they do not know the sandwich)."""
    return RestraintMdWorkChain.get_builder_from_protocol(
        restraint_code,
        small_sandwich,
        orm.SinglefileData(MODELS / 'model_1.pb'),
        overrides=overrides,
        seed=11,
        deviation_models={'m2': orm.SinglefileData(MODELS / 'model_2.pb')},
        **kwargs,
    )


@pytest.fixture
def refinement_inputs(venv_code):
    """Return a factory: a restraint builder with one round of refinement (CHGNet labels of bcc Li16,
    two tiny models retrained for 40 steps) and the labelled training set it starts from."""
    chgnet = venv_code('lisei-chgnet', 'lisei.chgnet', prepend_text=ONE_THREAD)
    dp = venv_code('dp', 'lisei.dp_train', prepend_text=ONE_THREAD)
    rng = np.random.default_rng(3)
    frames = {}
    for index in range(3):
        atoms = bulk('Li', 'bcc', a=3.42, cubic=True).repeat(2)
        atoms.rattle(0.05, seed=int(rng.integers(1000)))
        frames[f'li16_{index}'] = orm.StructureData(ase=atoms)
    labelled, label_node = run_get_node(
        LabelWorkChain.get_builder_from_protocol(chgnet, frames, system_label='bcc_lithium', engine='chgnet')
    )
    assert label_node.is_finished_ok, label_node.exit_message
    training_set = labelled['training_set']

    def factory(builder):
        builder.refinement.max_rounds = orm.Int(1)
        builder.refinement.training_set = training_set
        builder.refinement.selection = orm.Dict({'fp_task_max': 3, 'f_lo': 0.02, 'system': 'sandwich'})
        builder.refinement.label = _pruned(
            LabelWorkChain.get_builder_from_protocol(chgnet, frames, system_label='x', engine='chgnet'),
            'structures',
            'system_label',
            'tags',
        )
        train = _pruned(
            DpTrainWorkChain.get_builder_from_protocol(
                dp, training_set, overrides={'dp_train': {'parameters': {'training': {'numb_steps': 40}}}}
            )
        )
        train['dp_train'].pop('training_set')
        train['dp_train'].pop('seed', None)
        builder.refinement.train = train
        return builder, training_set

    return factory


def test_one_round_of_refinement(restraint_code, refinement_inputs, small_sandwich, loose_guards):
    """A segment fails `min_distance` (5 Å: every frame), not `deviation`: a round starts all the same,
    on the frames whose deviation lies in the window [f_lo, deviation_f_hi)."""
    guards = {**loose_guards, 'min_distance': 5.0, 'deviation_f_hi': 0.5, 'enabled': True}
    overrides = _segment_overrides(guards, n_steps=60)
    builder, training_set = refinement_inputs(_restraint_builder(restraint_code, small_sandwich, overrides))
    results, node = run_get_node(builder)

    segments = [child for child in node.called if child.process_label == 'RestraintMdCalculation']
    first, second = segments
    assert first.exit_status == 451, first.exit_message  # the min_distance guard: refinement starts
    assert 'deviation' not in first.outputs.guards['failed']
    links = {link.link_label: link.node for link in node.base.links.get_outgoing().all()}
    selection = links['refinement_01_select']
    assert selection.inputs.seed.value == derive_seed(11, 'refine', 1)
    candidates = results['refinement']['rounds']['round_01']['n_selected']
    assert 1 <= candidates <= 3
    label = links['refinement_01_label']
    assert label.is_finished_ok and label.inputs.engine.value == 'chgnet'
    refined = results['refinement']['training_set']
    assert refined.nframes == training_set.nframes + label.outputs.training_set.nframes
    new = results['refinement']['models']
    assert sorted(new) == ['model_1', 'model_2']
    assert second.inputs.model.uuid == new['model_1'].uuid  # resumed with the retrained ensemble
    assert second.inputs.deviation_models['model_2'].uuid == new['model_2'].uuid
    assert 'parent_folder' not in second.inputs  # the first segment again, from the start
    report = '\n'.join(log.message for log in orm.Log.collection.get_logs_for(node))
    assert 'failed the guard(s) min_distance; refinement round 1' in report
    # one round only: the work chain ends with the second segment's verdict (5 Å fails it again)
    assert node.exit_status == second.exit_status == 451, node.exit_message


def test_no_refinement_where_the_ensemble_agrees(
    restraint_code, refinement_inputs, small_sandwich, loose_guards
):
    """A segment fails `min_distance` while every frame's deviation lies below the window: no round (the
    failure is not the models' uncertainty), the work chain stops with the guard's code and says why."""
    guards = {**loose_guards, 'min_distance': 5.0, 'deviation_f_hi': 100.0, 'enabled': True}
    overrides = _segment_overrides(guards, n_steps=20)
    builder, _ = refinement_inputs(_restraint_builder(restraint_code, small_sandwich, overrides))
    builder.refinement.selection = orm.Dict({'fp_task_max': 3, 'f_lo': 50.0, 'system': 'sandwich'})
    _, node = run_get_node(builder)

    assert node.exit_status == 451, node.exit_message
    segments = [child for child in node.called if child.process_label == 'RestraintMdCalculation']
    assert len(segments) == 1  # not run again
    report = '\n'.join(log.message for log in orm.Log.collection.get_logs_for(node))
    assert 'lies in the candidate window [50.0, 100.0) eV/Å (5 below it); the ensemble agrees' in report


def test_refinement_of_the_equilibration(
    restraint_code, venv_code, refinement_inputs, small_sandwich, deviation_only
):
    """The unbiased NPT equilibration fails the `deviation` guard: its candidate frames are labelled, the
    ensemble retrained, the equilibration runs again with it, and the pull starts with the new models."""
    overrides = {
        'md': {
            'parameters': {'n_steps': 20, 'thermo_stride': 10, 'dump_stride': 10, 'restart_stride': 0},
            'guards': {'enabled': False},
        },
        # the NPT run deviates less than the pull (max ~0.42 eV/Å in 60 steps): a lower upper level
        'equilibration': {
            'parameters': {'n_steps': 60, 'stride': 5},
            'guards': {**deviation_only, 'deviation_f_hi': 0.3},
        },
        'restraint': {'d_max': 5.0, 'anode_layers': 2, 'colvar_stride': 5},
    }
    lmp = venv_code('lmp', 'lisei.exploration')
    builder, training_set = refinement_inputs(
        _restraint_builder(restraint_code, small_sandwich, overrides, equilibration_code=lmp)
    )
    results, node = run_get_node(builder)

    links = {link.link_label: link.node for link in node.base.links.get_outgoing().all()}
    equilibrations = [
        link.node for link in node.base.links.get_outgoing(link_label_filter='equilibration').all()
    ]
    report = '\n'.join(log.message for log in orm.Log.collection.get_logs_for(node))
    assert len(equilibrations) == 2, report
    first, second = sorted(equilibrations, key=lambda child: child.ctime)
    assert first.exit_status == 0 and 'deviation' in first.outputs.guards['failed']
    new = results['refinement']['models']
    assert sorted(new) == ['model_1', 'model_2']
    driving, other = (second.inputs.models[name] for name in ('model_0000', 'model_0001'))
    assert (driving.uuid, other.uuid) == (new['model_1'].uuid, new['model_2'].uuid)  # the new ensemble
    assert 'the equilibration' in report and 'deviation' in report
    assert links['refinement_01_label'].is_finished_ok
    assert results['refinement']['training_set'].nframes > training_set.nframes
    segment = next(child for child in node.called if child.process_label == 'RestraintMdCalculation')
    assert segment.inputs.model.uuid == new['model_1'].uuid  # the pull with the retrained ensemble
    assert node.exit_status in (0, *range(450, 460)), node.exit_message  # one round: the rerun's verdict
    assert 'equilibration again from its start' in report


def test_fine_tuning_needs_deep_potential_models(restraint_code, refinement_inputs, small_sandwich):
    """``refinement.fine_tune`` starts each retrained model from the one it replaces: it needs the models as
    ``DeepPotentialData`` (their network and type map), and is refused before submission otherwise."""
    builder, _ = refinement_inputs(_restraint_builder(restraint_code, small_sandwich, {}))
    builder.refinement.fine_tune = True
    with pytest.raises(
        ValueError, match='fine_tune needs every model of the ensemble as a DeepPotentialData'
    ):
        run_get_node(builder)
