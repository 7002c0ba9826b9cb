"""Tests of ``lisei.study``: the steps' settings and inputs are checked before submission; real runs from
given nodes (a model and the sandwich) through the restraint MD and the analysis, and a failed guard that
ends the study with its code and no analysis."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from aiida import orm
from aiida.engine import run_get_node

from aiida_lisei.cli.report import step_progress, time_left
from aiida_lisei.workchains.study import STEPS, StudyWorkChain, check_steps

#: The restraint run of the tests: 40 steps in two segments after 20 steps of NPT equilibration.
TINY_RESTRAINT = {
    'md': {'parameters': {'n_steps': 40, 'thermo_stride': 10, 'dump_stride': 10, 'restart_stride': 0}},
    'equilibration': {'parameters': {'n_steps': 20, 'stride': 10}},
    'restraint': {'d_max': 5.0, 'anode_layers': 2, 'colvar_stride': 5},
    'segment_steps': 20,
}


def small_sandwich_electrolyte() -> orm.StructureData:
    """The ordered Li6PS5Cl cell the small sandwich is made of (its bulk reference)."""
    from aiida_lisei.structures.functions import argyrodite_node

    return argyrodite_node(seed=20241125)


def only(**steps):
    """Study overrides that run only ``steps`` (name -> settings); every other step is null."""
    return {'steps': {name: steps.get(name) for name in STEPS}, 'paper_size_models': False}


def test_protocols_check_their_steps():
    """``demo`` runs every step; ``paper`` needs the initial training set (the paper's VASP AIMD)."""
    assert set(StudyWorkChain.get_available_protocols()) == {'demo', 'paper', 'rehearsal'}
    demo = StudyWorkChain.get_protocol_inputs('demo')
    assert all(demo['steps'][name] is not None for name in STEPS)
    assert StudyWorkChain.get_protocol_inputs('paper')['steps']['initial_data'] is None
    rehearsal = StudyWorkChain.get_protocol_inputs('rehearsal')['steps']  # benchmarks/paper_rehearsal.py
    running = [name for name in STEPS if rehearsal[name]]
    assert running == ['atomic_models', 'restraint_md', 'nucleation_analysis']
    assert rehearsal['atomic_models']['protocol'] == rehearsal['restraint_md']['protocol'] == 'paper'
    with pytest.raises(ValueError, match='unknown step'):
        check_steps({'relax': {'protocol': 'demo'}})
    with pytest.raises(ValueError, match='unknown key'):
        check_steps({'restraint_md': {'protocol': 'demo', 'system': 'sandwich', 'kappa': 1}})
    with pytest.raises(ValueError, match='`system`'):
        check_steps({'restraint_md': {'protocol': 'demo'}})
    with pytest.raises(ValueError, match='workflow'):
        check_steps({'initial_data': {'protocol': 'demo', 'systems': ['x'], 'workflow': 'lisei.nope'}})
    with pytest.raises(ValueError, match='refinement_rounds'):
        check_steps({'restraint_md': {'protocol': 'demo', 'system': 'sandwich', 'refinement_rounds': -1}})
    assert demo['steps']['restraint_md']['refinement_rounds'] == 2  # the demo refines on the fly
    # the validation judges the models that drove the restraint run (refined on the fly where they were)
    order = list(STEPS)
    assert order.index('concurrent_learning') < order.index('restraint_md') < order.index('model_validation')
    outline = str(StudyWorkChain.spec().get_outline().get_description())
    assert outline.index('run_restraint') < outline.index('run_validation') < outline.index('run_analysis')


def test_bad_inputs_are_refused_before_anything_is_stored(aiida_code_installed, tiny_deep_potential):
    """Missing codes, a step without its input, and the paper protocol without a training set."""
    code = aiida_code_installed(label='stand-in', filepath_executable='/bin/true')
    builder = StudyWorkChain.get_builder_from_protocol({'dp': code}, protocol='demo')
    with pytest.raises(
        ValueError,
        match=r"`codes` lacks \['electronic_structure', 'label', 'lmp', 'lmp_plumed', 'md_engine', 'qeq'\]",
    ):
        run_get_node(builder)
    paper = StudyWorkChain.get_builder_from_protocol({}, protocol='paper')
    with pytest.raises(ValueError, match='step `concurrent_learning` needs `training_set`'):
        run_get_node(paper)
    analysis_only = StudyWorkChain.get_builder_from_protocol(
        {'qeq': code}, overrides=only(nucleation_analysis={'protocol': 'demo'})
    )
    with pytest.raises(ValueError, match='needs `models`'):
        run_get_node(analysis_only)
    analysis_only.models = {'m1': tiny_deep_potential(1)}
    with pytest.raises(ValueError, match='restraint'):
        run_get_node(analysis_only)  # the analysis reads the restraint run of the study


@pytest.mark.slow
def test_from_given_models_to_the_analysis(
    restraint_code, venv_code, cp2k_code, small_sandwich, tiny_deep_potential, tmp_path, run_cli
):
    """Given the sandwich and an ensemble, the study equilibrates, pulls, analyses and computes the gaps of
    the SEI and the bulk; its outputs trace back to the steps. The Li-only test model is not physical on the
    sandwich: its guards are reported, not enforced, the analysis, told to take it, marks the summary as not
    a result, and the SEI is not relaxed with it."""
    codes = {
        'lmp_plumed': restraint_code,
        'lmp': venv_code('lmp', 'lisei.exploration'),
        'qeq': venv_code('lisei-qeq', 'lisei.qeq'),
        'electronic_structure': cp2k_code,
    }
    restraint = {**TINY_RESTRAINT, 'md': {**TINY_RESTRAINT['md'], 'guards': {'enabled': False}}}
    # the Li-only model leaves no SEI worth the name: the gaps of the electrolyte's slab at the first frame
    z = np.array([site.position[2] for site in small_sandwich.sites])
    electrolyte = np.char.startswith(np.array(small_sandwich.atom_groups), 'electrolyte')
    electrolyte_window = {
        'mode': 'z',
        'z_low': float(z[electrolyte].min() - 0.5),
        'z_high': float(z[electrolyte].max() + 0.5),
    }
    restraint['equilibration'] = {**restraint['equilibration'], 'guards': {'enabled': False}}
    builder = StudyWorkChain.get_builder_from_protocol(
        codes,
        overrides=only(
            restraint_md={'protocol': 'demo', 'system': 'sandwich', 'overrides': restraint},
            nucleation_analysis={'protocol': 'demo', 'allow_failed_guards': True},
            electronic_structure={
                'protocol': 'demo',
                'relax': False,
                'frame': 0,
                'region': electrolyte_window,
            },
        ),
        structures={'sandwich': small_sandwich, 'argyrodite': small_sandwich_electrolyte()},
        models={f'model_{index}': tiny_deep_potential(index) for index in (1, 2)},
        seed=5,
    )
    _, node = run_get_node(builder)
    assert node.is_finished_ok, node.exit_message
    labels = {link.link_label: link.node for link in node.base.links.get_outgoing().all()}
    assert {'restraint_md', 'nucleation_analysis', 'electronic_structure'} <= set(labels)
    gaps = node.outputs.gaps.get_dict()
    assert 'GFN1-xTB' in gaps['table'] and 'not comparable' in gaps['table']  # never called agreeing
    assert node.outputs.dos_figure.filename.endswith('.png')
    restraint_node = labels['restraint_md']
    assert restraint_node.inputs.md.model.uuid == builder.models['model_1'].uuid
    assert node.outputs.trajectory.uuid == restraint_node.outputs.trajectory.uuid
    assert node.outputs.summary['guards']['passed'] is False
    assert sorted(node.outputs.models) == ['model_1', 'model_2']
    report = '\n'.join(log.message for log in orm.Log.collection.get_logs_for(node))
    assert 'not run: atomic_models, initial_data, concurrent_learning, model_validation' in report

    page = check_report_and_status(node, tmp_path, run_cli)
    for figure in (
        *restraint_node.outputs.plots.values(),
        *labels['nucleation_analysis'].outputs.figures.values(),
    ):
        assert f'UUID {figure.uuid}' in page  # every figure, named by its node
    assert 'NOT A RESULT' in page  # the analysis of a run that failed its guards says so
    check_in_browser(tmp_path / 'report.html', tmp_path)


def check_report_and_status(node: orm.ProcessNode, folder: Path, run_cli) -> str:
    """``aiida-lisei report`` writes one self-contained page; ``status`` lists the steps; return the page."""
    path = folder / 'report.html'
    result = run_cli('report', node.pk, '-o', path)
    assert result.exit_code == 0, result.output
    page = path.read_text()
    assert page.count('<img ') >= 3 and 'src="http' not in page and f'UUID {node.uuid}' in page
    status = run_cli('status', node.pk).output
    assert 'StudyWorkChain' in status and 'restraint_md: RestraintMdWorkChain' in status, status
    restraint = next(
        link.node for link in node.base.links.get_outgoing().all() if link.link_label == 'restraint_md'
    )
    segments = -(-restraint.inputs.md.parameters['n_steps'] // restraint.inputs.segment_steps.value)
    fraction, counted = step_progress(restraint)  # what the status shows of the step while it runs
    assert counted == f'{round(fraction * segments)} of {segments} MD segments' and 0 < fraction <= 1
    assert time_left(120.0, 0.25) == pytest.approx(360.0) and time_left(5.0, 0.0) is None
    return page


def check_in_browser(page: Path, folder: Path) -> None:
    """Headless Chromium loads the page with no console error and renders it (screenshot not blank)."""
    import numpy as np
    from PIL import Image

    chromium = shutil.which('chromium')
    if chromium is None:
        reason = "needs Debian's chromium (`make browser`)"
        if os.environ.get('LISEI_REQUIRE_SERVICES') == '1':
            pytest.fail(reason, pytrace=False)
        pytest.skip(reason)
    screenshot = folder / 'screenshot.png'
    result = subprocess.run(
        [
            chromium,
            '--headless',
            '--no-sandbox',
            '--disable-gpu',
            '--enable-logging=stderr',
            '--v=0',
            f'--screenshot={screenshot}',
            '--window-size=1280,2400',
            page.as_uri(),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert screenshot.is_file(), result.stderr[-2000:]
    console = [line for line in result.stderr.splitlines() if 'CONSOLE' in line or 'Uncaught' in line]
    assert not console, console
    pixels = np.asarray(Image.open(screenshot).convert('L'), dtype=float)
    assert pixels.std() > 5.0  # not a blank page: text and figures


@pytest.mark.slow
def test_a_failed_guard_ends_the_study_without_analysis(
    restraint_code, venv_code, small_sandwich, tiny_deep_potential
):
    """Guards enforced: the Li-only model fails them on the sandwich; the study ends with the guard's code
    (450-456), keeps the run's outputs, and the analysis is not run."""
    codes = {
        'lmp_plumed': restraint_code,
        'lmp': venv_code('lmp', 'lisei.exploration'),
        'qeq': venv_code('lisei-qeq', 'lisei.qeq'),
    }
    builder = StudyWorkChain.get_builder_from_protocol(
        codes,
        overrides=only(
            restraint_md={'protocol': 'demo', 'system': 'sandwich', 'overrides': TINY_RESTRAINT},
            nucleation_analysis={'protocol': 'demo'},
        ),
        structures={'sandwich': small_sandwich},
        models={f'model_{index}': tiny_deep_potential(index) for index in (1, 2)},
        seed=5,
    )
    _, node = run_get_node(builder)
    assert 450 <= node.exit_status <= 456, (node.exit_status, node.exit_message)
    assert 'no analysis presents it as a result' in node.exit_message
    assert {'trajectory', 'colvar', 'guards'} <= set(node.outputs)
    assert not node.outputs.guards['passed']
    labels = {link.link_label for link in node.base.links.get_outgoing().all()}
    assert 'restraint_md' in labels and 'nucleation_analysis' not in labels
