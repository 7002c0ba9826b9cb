"""Tests of ``lisei.model_validation``: frame draws, paper comparison, protocols, validation, a real run."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
from aiida import orm
from aiida.engine import run_get_node
from ase.build import bulk
from local_codes import ONE_THREAD

from aiida_lisei.common.seeds import derive_seed
from aiida_lisei.data.deep_potential import DeepPotentialData, ensemble_models
from aiida_lisei.reporting.comparisons import validation_comparison
from aiida_lisei.reporting.paper import PAPER_SETUP
from aiida_lisei.reporting.plots import PNG_SIGNATURE, png_size
from aiida_lisei.workchains.model_validation import (
    ModelValidationWorkChain,
    count_drawable_frames,
    draw_frame_indices,
    draw_frames,
    drawable_indices,
)

TESTS = Path(__file__).parents[1]
MODELS = TESTS / 'fixtures' / 'models'
DOCS = TESTS.parent / 'docs' / 'model_validation.md'


def li16() -> orm.StructureData:
    """bcc Li16 (a = 3.42 Å), the structure the fixture models were trained on."""
    return orm.StructureData(ase=bulk('Li', 'bcc', a=3.42, cubic=True).repeat(2))


def fixture_model(index: int = 1, level_of_theory_key: str | None = None) -> DeepPotentialData:
    """One of the tiny fixture models (tests/fixtures/models/README.md) as a ``DeepPotentialData``."""
    return DeepPotentialData(
        MODELS / f'model_{index}.pb',
        type_map=['Li', 'P', 'S', 'Cl'],
        descriptor_type='se_e2_a',
        rcut=4.0,
        rcut_smth=0.5,
        sel=[24, 4, 4, 4],
        neurons={'embedding': [4, 8], 'fitting': [16, 16]},
        seed=1000 * index + 7,
        deepmd_version='3.2.0',
        training_steps=200,
        level_of_theory_key=level_of_theory_key,
    )


# -- pure helpers ---------------------------------------------------------------------------------------


def test_drawable_frames_skip_equilibration_and_step_zero():
    """Frames strictly after the fraction of the last step; step 0 never; the count matches a real run."""
    steps = np.arange(0, 201, 20)  # 0, 20, ..., 200
    np.testing.assert_array_equal(steps[drawable_indices(steps, 0.0)], steps[1:])
    np.testing.assert_array_equal(steps[drawable_indices(steps, 0.1)], np.arange(40, 201, 20))
    np.testing.assert_array_equal(steps[drawable_indices(steps, 0.5)], np.arange(120, 201, 20))
    assert count_drawable_frames(200, 20, 0.1) == 9
    assert count_drawable_frames(200000, 100, 0.1) == 1800  # the paper protocol: 2000 frames, 200 skipped
    assert count_drawable_frames(210, 20, 0.0) == 10  # no dump at step 210


def test_draw_frame_indices_is_seeded_and_without_replacement():
    """Same seed, same frames; another seed, other frames; sorted, distinct, after the equilibration."""
    steps = np.arange(0, 1001, 10)
    first = draw_frame_indices(steps, 20, 0.2, seed=5)
    np.testing.assert_array_equal(first, draw_frame_indices(steps, 20, 0.2, seed=5))
    assert not np.array_equal(first, draw_frame_indices(steps, 20, 0.2, seed=6))
    assert len(set(first)) == 20 and np.all(np.diff(first) > 0) and steps[first].min() > 200
    assert sorted(draw_frame_indices(steps, 80, 0.2, seed=1)) == list(drawable_indices(steps, 0.2))
    with pytest.raises(ValueError, match='only 80 frames'):
        draw_frame_indices(steps, 81, 0.2, seed=1)


def test_paper_comparison_flags_any_difference_as_demo():
    """The paper's setup gives mode 'paper'; any other engine, size or run gives 'demo' with the reasons."""
    errors = {'rmse_e_per_atom': 0.00545, 'rmse_f': 0.1878, 'mae_e_per_atom': 0.004, 'mae_f': 0.1}
    paper = validation_comparison(errors, {**PAPER_SETUP, 'engine': 'VASP', 'pressure': 1})
    assert paper['mode'] == 'paper' and paper['differences'] == []
    assert paper['rmse_e_per_atom'] == pytest.approx({'ours': 5.45, 'paper': 5.45, 'ratio': 1.0})
    assert paper['rmse_f'] == pytest.approx({'ours': 187.8, 'paper': 93.9, 'ratio': 2.0})
    assert paper['mae_f'] == pytest.approx({'ours': 100.0})
    assert '[paper setup]' in paper['summary']

    demo = validation_comparison(
        errors, {**PAPER_SETUP, 'engine': 'tblite', 'method': 'GFN1-xTB', 'md_time': 0.4}
    )
    assert demo['mode'] == 'demo'
    assert [line.split(':')[0] for line in demo['differences']] == ['engine', 'method', 'md_time']
    assert 'DEMO' in demo['summary'] and demo['setup']['paper'] == PAPER_SETUP
    assert validation_comparison(errors, {**PAPER_SETUP, 'natoms': None})['mode'] == 'demo'


def test_md_models_put_the_tested_model_first():
    """The tested model drives the MD (first key); without an ensemble it is passed twice."""
    model, other = fixture_model(1), fixture_model(2)
    assert ensemble_models(model, {}) == {'model_0000': model, 'model_0001': model}
    assert ensemble_models(model, {'b': other, 'a': model}) == {
        'model_0000': model,
        'model_0001': model,
        'model_0002': other,
    }


# -- protocols and validation ---------------------------------------------------------------------------


@pytest.fixture
def stand_in(aiida_code_installed) -> orm.InstalledCode:
    """A code that is never run (protocol and validation tests)."""
    return aiida_code_installed(label='stand-in', filepath_executable='/bin/true')


def test_protocols(stand_in):
    """``demo``: a short NPT run, 10 frames, tblite; ``paper``: 200 ps, 300 K, 1 bar, 100 frames, VASP."""
    assert set(ModelValidationWorkChain.get_available_protocols()) == {'demo', 'demo_chgnet', 'paper'}
    model, structure = fixture_model(), li16()
    demo = ModelValidationWorkChain.get_builder_from_protocol(stand_in, stand_in, stand_in, model, structure)
    md = demo.md.parameters.get_dict()
    assert (md['ensemble'], md['temperature'], md['pressure'], md['n_steps']) == ('npt', 300.0, 1.0, 400)
    assert demo.n_frames.value == 10 and demo.label.engine.value == 'tblite'
    assert demo.label.tblite.parameters['method'] == 'GFN1-xTB' and demo.seed.value == 2024
    assert demo.equilibration_fraction.value == pytest.approx(0.1)

    inputs = ModelValidationWorkChain.get_protocol_inputs('paper')
    md = inputs['md']['parameters']
    assert md['n_steps'] * md['timestep'] / 1000 == PAPER_SETUP['md_time']
    assert (md['ensemble'], md['temperature'], md['pressure']) == ('npt', 300.0, 1.0)
    assert inputs['n_frames'] == PAPER_SETUP['n_frames'] and inputs['system_label'] == 'interface'
    assert inputs['label']['engine'] == 'vasp' and inputs['label']['engine_protocol'] == 'paper'

    with pytest.raises(ValueError, match='only 9 frames'):
        ModelValidationWorkChain.get_builder_from_protocol(
            stand_in, stand_in, stand_in, model, structure, overrides={'md': {'parameters': {'n_steps': 200}}}
        )


def test_paper_protocol_labels_with_the_paper_vasp_settings(stand_in, potential_family):
    """``paper``: the frames are labelled by ``lisei.vasp.label`` with the SI's PBE/PAW settings."""
    builder = ModelValidationWorkChain.get_builder_from_protocol(
        stand_in,
        stand_in,
        stand_in,
        fixture_model(),
        li16(),
        protocol='paper',
        potential_family=potential_family,
    )
    md = builder.md.parameters.get_dict()
    assert md['n_steps'] * md['timestep'] / 1000 == 200.0 and md['stride'] == 100
    assert builder.n_frames.value == 100 and builder.system_label.value == 'interface'
    assert builder.label.engine.value == 'vasp'
    incar = builder.label.vasp.vasp.parameters['incar']
    assert (incar['gga'], incar['encut'], incar['ediff']) == ('PE', 600, 1e-6)


def demo_builder(stand_in, **overrides):
    """The demo builder with stand-in codes and ``overrides``."""
    return ModelValidationWorkChain.get_builder_from_protocol(
        stand_in, stand_in, stand_in, fixture_model(), li16(), overrides=overrides
    )


@pytest.mark.parametrize(
    ('change', 'message'),
    [
        (
            lambda b: setattr(b, 'n_frames', orm.Int(19)),
            r'`n_frames` = 19 but the NPT run gives only 18 frames',
        ),
        (lambda b: setattr(b, 'n_frames', orm.Int(0)), 'must be at least 1'),
        (lambda b: setattr(b, 'equilibration_fraction', orm.Float(1.0)), r'must be in \[0, 1\)'),
        (
            lambda b: setattr(b.md, 'parameters', orm.Dict({'temperature': 300, 'n_steps': 400})),
            "must be 'npt'",
        ),
        (
            lambda b: setattr(b, 'model', fixture_model(1, 'vasp/PBE/0123456789abcdef')),
            'trained on labels at vasp',
        ),
        (
            lambda b: setattr(b, 'structure', orm.StructureData(ase=bulk('Na', 'bcc', a=4.2, cubic=True))),
            r"elements \['Na'\]",
        ),
    ],
    ids=['too-many-frames', 'no-frames', 'fraction', 'nvt', 'level-of-theory', 'elements'],
)
def test_invalid_inputs_are_refused_before_anything_runs(stand_in, change, message):
    """Each mistake gives a clear message when the builder is set or the process created, before any run."""
    builder = demo_builder(stand_in)
    with pytest.raises(ValueError, match=message):
        change(builder)  # a port validator refuses the value at once
        run_get_node(builder)  # the namespace validator refuses the inputs before the first step


def test_docs_list_every_exit_code():
    """The docs page names every exit code of the workchain (so it cannot drift from the spec)."""
    text = DOCS.read_text()
    codes = {
        label: code.status
        for label, code in ModelValidationWorkChain.spec().exit_codes.items()
        if code.status >= 400
    }
    assert codes, 'no exit codes'
    for label, status in codes.items():
        assert re.search(rf'{status}\s*\|\s*`{label}`', text), f'{status} {label} not in {DOCS.name}'


# -- real runs ------------------------------------------------------------------------------------------


def test_failed_md_gives_501(aiida_code_installed, stand_in):
    """A failed MD child (here a LAMMPS that writes nothing) stops the workchain with 501, quoting it."""
    broken = aiida_code_installed(
        label='no-lammps', filepath_executable='/bin/false', default_calc_job_plugin='lisei.exploration'
    )
    builder = demo_builder(stand_in)
    builder.md.code = broken
    _, node = run_get_node(builder)
    assert node.exit_status == ModelValidationWorkChain.exit_codes.ERROR_MD_FAILED.status == 501
    assert 'Exploration' in node.exit_message and 'exit status 302' in node.exit_message
    assert [child.process_label for child in node.called] == ['ExplorationCalculation']


@pytest.mark.slow
def test_labels_at_another_level_than_the_model_give_504(venv_code):
    """Same engine, other settings: caught after labelling (the key is known only then), before dp test."""
    lmp = venv_code('lmp', 'lisei.exploration', prepend_text=ONE_THREAD)
    tblite = venv_code('lisei-tblite', 'lisei.tblite')
    model = fixture_model(1, 'tblite/GFN1-xTB/0000000000000000')
    # 40 steps of a Li-only model without virials: its guards are reported, not enforced
    overrides = {
        'n_frames': 2,
        'md': {'parameters': {'n_steps': 40, 'stride': 10}, 'guards': {'enabled': False}},
    }
    builder = ModelValidationWorkChain.get_builder_from_protocol(
        lmp, lmp, tblite, model, li16(), overrides=overrides, seed=3
    )
    results, node = run_get_node(builder)
    assert node.exit_status == ModelValidationWorkChain.exit_codes.ERROR_LEVEL_OF_THEORY_MISMATCH.status
    assert 'tblite/GFN1-xTB/0000000000000000' in node.exit_message
    assert results['test_set'].level_of_theory_key in node.exit_message
    assert 'errors' not in results and 'dp_test' not in {
        link.link_label for link in node.base.links.get_outgoing().all()
    }


@pytest.mark.slow
def test_real_run(venv_code):
    """NPT DPMD of Li16 with a tiny model, 4 random frames labelled by tblite, dp test, comparison, PNG."""
    lmp = venv_code('lmp', 'lisei.exploration', prepend_text=ONE_THREAD)
    dp = venv_code('dp', 'lisei.dp_test', prepend_text=ONE_THREAD)
    tblite = venv_code('lisei-tblite', 'lisei.tblite')
    overrides = {
        'n_frames': 4,
        'system_label': 'bcc_lithium',
        # the tiny model trained no virials: its pressure is off by ~8 kbar (the guards say so, not enforced)
        'md': {'parameters': {'n_steps': 200, 'stride': 10}, 'guards': {'enabled': False}},
    }
    builder = ModelValidationWorkChain.get_builder_from_protocol(
        lmp, dp, tblite, fixture_model(), li16(), overrides=overrides, seed=7
    )
    results, node = run_get_node(builder)
    assert node.is_finished_ok, (node.exit_status, node.exit_message)
    assert set(results) == {
        'trajectory', 'guards', 'sampling', 'test_set', 'errors', 'parity', 'comparison', 'parity_plot'
    }  # fmt: skip
    # a model without virials: its pressure is wrong and the barostat follows it (the issue-11 diagnosis)
    assert {'pressure', 'lateral_cell'} <= set(results['guards']['failed']), results['guards']['failed']

    # the MD: NPT, driven by the model (passed twice: zero deviation), 21 frames
    md = node.base.links.get_outgoing(link_label_filter='md').one().node
    assert md.inputs.parameters['ensemble'] == 'npt'
    assert md.inputs.models.model_0000.uuid == md.inputs.models.model_0001.uuid == builder.model.uuid
    assert np.allclose(md.outputs.model_devi.get_array('max_devi_f'), 0.0)
    assert results['trajectory'].numsteps == 21

    # the draw: 4 distinct frames after step 20 (10 % of 200), seed derived from the root seed
    sampling = results['sampling'].get_dict()
    assert sampling['seed'] == derive_seed(7, 'validation', 'draw')
    assert len(set(sampling['steps'])) == 4 and min(sampling['steps']) > 20
    assert sampling['n_drawable_frames'] == 18 and sampling['first_drawable_step'] == 30
    assert sampling['equilibration_step'] == pytest.approx(20.0)
    draw = results['sampling'].creator
    assert draw.process_label == 'draw_frames' and draw.inputs.seed.value == sampling['seed']

    # same seed, same frames (a fresh calcfunction run, no caching); another seed, other frames
    again = draw_frames(results['trajectory'], orm.Int(4), orm.Float(0.1), orm.Int(sampling['seed']))
    assert again['sampling']['steps'] == sampling['steps']
    for key in sampling['keys']:
        np.testing.assert_array_equal(
            again['structures'][key].get_ase().positions, draw.outputs.structures[key].get_ase().positions
        )
    other = draw_frames(results['trajectory'], orm.Int(4), orm.Float(0.1), orm.Int(sampling['seed'] + 1))
    assert other['sampling']['steps'] != sampling['steps']

    # the labels and the errors: recomputed from the parity arrays
    test_set = results['test_set']
    assert test_set.nframes == 4 and test_set.level_of_theory['engine'] == 'tblite'
    assert sorted(tag['step'] for tag in test_set.get_system('bcc_lithium').tags) == sampling['steps']
    parity, errors = results['parity'], results['errors']
    natoms = parity.get_array('natoms')
    de = (parity.get_array('energy_predicted') - parity.get_array('energy_reference')) / natoms
    df = parity.get_array('force_predicted') - parity.get_array('force_reference')
    assert errors['rmse_e_per_atom'] == pytest.approx(np.sqrt(np.mean(de**2)))
    assert errors['rmse_f'] == pytest.approx(np.sqrt(np.mean(df**2)))
    assert errors['rmse_f'] > 0

    # the comparison: meV units, flagged demo (tblite, 16 atoms, 4 frames, 0.2 ps)
    comparison = results['comparison'].get_dict()
    assert comparison['mode'] == 'demo'
    assert {line.split(':')[0] for line in comparison['differences']} == {
        'engine', 'method', 'natoms', 'n_frames', 'md_time'
    }  # fmt: skip
    assert comparison['rmse_e_per_atom']['ours'] == pytest.approx(1000 * errors['rmse_e_per_atom'])
    assert comparison['rmse_f']['ours'] == pytest.approx(1000 * errors['rmse_f'])
    assert (comparison['rmse_e_per_atom']['paper'], comparison['rmse_f']['paper']) == (5.45, 93.9)
    assert comparison['setup']['ours']['natoms'] == 16 and comparison['setup']['ours']['n_frames'] == 4

    # the parity plot: a PNG in the repository of a node made by a calcfunction from the dp_test arrays
    plot = results['parity_plot']
    assert plot.is_stored and plot.filename == 'parity.png'
    content = plot.get_content(mode='rb')
    assert content.startswith(PNG_SIGNATURE)
    width, height = png_size(content)
    assert width > 1.5 * height > 300
    assert plot.creator.process_label == 'plot_parity'
    assert plot.creator.inputs.parity.uuid == parity.uuid

    reports = [log.message for log in orm.Log.collection.get_logs_for(node)]
    assert any('drew 4 of 18 frames after step 20 ' in line for line in reports), reports
    assert any('DEMO' in line and 'paper 5.45' in line for line in reports), reports
    assert any('differs from the paper: engine' in line for line in reports), reports


def test_md_that_fails_its_guards_ends_the_validation(venv_code, small_sandwich):
    """The Li-only tiny model on the sandwich (P, S, Cl unseen): the NPT DPMD falls apart, a guard fails,
    the validation stops with its code (450-456) before labelling, the trajectory and guards kept."""
    lmp = venv_code('lmp', 'lisei.exploration', prepend_text=ONE_THREAD)
    overrides = {
        'n_frames': 2,
        'md': {'parameters': {'n_steps': 200, 'stride': 20, 'pressure_coupling': 'aniso'}},
    }
    dp = venv_code(
        'dp', 'lisei.dp_test', prepend_text=ONE_THREAD
    )  # never reached: the MD stops the validation
    tblite = venv_code('lisei-tblite', 'lisei.tblite')
    builder = ModelValidationWorkChain.get_builder_from_protocol(
        lmp, dp, tblite, fixture_model(), small_sandwich, overrides=overrides, seed=5
    )
    results, node = run_get_node(builder)
    assert 450 <= node.exit_status <= 456, (node.exit_status, node.exit_message)
    guards = results['guards'].get_dict()
    assert not guards['passed'] and guards['failed'][0] in node.exit_message
    assert 'trajectory' in results and 'test_set' not in results
    assert [child.process_label for child in node.called] == ['ExplorationCalculation']
