"""Tests of the ``lisei.restraint_md`` work chain: segments stitch into one run's series, plots, protocols."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from aiida import orm
from aiida.engine import run_get_node

from aiida_lisei.reporting.plots import PNG_SIGNATURE
from aiida_lisei.science.guards import DEFAULT_GUARD_THRESHOLDS
from aiida_lisei.science.restraint_cv import (
    DEFAULT_S0_DELTA,
    PAPER_KAPPA,
    PAPER_R0,
    RESTRAINT_DEFAULTS,
    check_restraint_parameters,
    cv_from_parameters,
    evaluate_cv,
    resolve_restraint_parameters,
)
from aiida_lisei.workchains.restraint_md import RestraintMdWorkChain, stitch_columns

FIXTURES = Path(__file__).parents[1] / 'fixtures'


def test_resolve_restraint_parameters():
    """Start at the initial CV, end delta higher, over the whole run; explicit values win."""

    def resolve(request, initial_cv, n_steps):
        return resolve_restraint_parameters(
            check_restraint_parameters(request, resolved=False), initial_cv, n_steps
        )

    resolved = resolve({'kappa': 500.0}, 1.25, 3000)
    assert resolved == {
        **RESTRAINT_DEFAULTS,
        'kappa': 500.0,
        'at_start': 1.25,
        'at_end': 1.25 + DEFAULT_S0_DELTA,
        'step_end': 3000,
    }
    explicit = resolve({'at_start': 0.0, 'at_end': 2.0, 'delta': 9.0, 'step_end': 10}, 1.0, 99)
    assert (explicit['at_start'], explicit['at_end'], explicit['step_end']) == (0.0, 2.0, 10)
    with pytest.raises(ValueError, match='unknown'):
        resolve({'kapa': 1}, 0.0, 1)
    with pytest.raises(ValueError, match='check_restraint_parameters'):
        resolve_restraint_parameters({'kappa': 500.0}, 0.0, 1)  # an unchecked request


def test_stitch_columns_later_segment_wins():
    """Overlapping rows (a segment restarted from an older restart file) come from the later segment."""
    first = {'time': np.array([0.0, 1.0, 2.0, 3.0]), 'cv': np.array([0.0, 1.0, 2.0, 3.0])}
    second = {'time': np.array([2.0, 3.0, 4.0]), 'cv': np.array([20.0, 30.0, 40.0])}
    stitched = stitch_columns([first, second], 'time')
    assert stitched['time'].tolist() == [0.0, 1.0, 2.0, 3.0, 4.0]
    assert stitched['cv'].tolist() == [0.0, 1.0, 20.0, 30.0, 40.0]
    assert stitch_columns([], 'time') == {}


def test_protocols(aiida_code_installed, small_sandwich, tiny_model):
    """``demo``: 3 ps in three segments with d_max 4.5 Å; ``paper``: 150 ps, the SI's MD and kappa."""
    code = aiida_code_installed(label='stand-in', filepath_executable='/bin/true')
    model = tiny_model
    assert set(RestraintMdWorkChain.get_available_protocols()) == {'demo', 'paper'}
    demo = RestraintMdWorkChain.get_builder_from_protocol(code, small_sandwich, model)
    assert demo.md.parameters['n_steps'] == 3000 and demo.segment_steps.value == 1000
    assert demo.restraint['d_max'] == 4.5 and demo.restraint['kappa'] == 500.0
    paper = RestraintMdWorkChain.get_builder_from_protocol(code, small_sandwich, model, protocol='paper')
    parameters = paper.md.parameters.get_dict()
    assert (
        parameters['n_steps'],
        parameters['ensemble'],
        parameters['temperature'],
        parameters['pressure'],
    ) == (
        150000,
        'npt',
        300.0,
        1.0,
    )
    assert paper.restraint['d_max'] == 10.0 and paper.restraint['normalisation'] == 'group_a'


def test_protocols_carry_every_restraint_parameter():
    """The protocols carry every key of the one table of defaults, R0 per term included (the paper's), and
    every guard threshold at its documented default."""
    for protocol in ('demo', 'paper'):
        inputs = RestraintMdWorkChain.get_protocol_inputs(protocol)
        restraint = inputs['restraint']
        assert set(restraint) == set(RESTRAINT_DEFAULTS), protocol
        assert inputs['md']['guards'] == DEFAULT_GUARD_THRESHOLDS, protocol
        assert restraint['r_0'] == PAPER_R0 and restraint['kappa'] == PAPER_KAPPA


def run_restraint(code, structure, model, n_steps, segment_steps=None):
    """Run the work chain on ``structure`` (NVT 300 K, tiny model) and return its node."""
    overrides = {
        'md': {
            'parameters': {
                'ensemble': 'nvt',
                'n_steps': n_steps,
                'thermo_stride': 10,
                'dump_stride': 10,
                'restart_stride': 10,
            },
            'guards': {'enabled': False},  # the tiny Li-only model is not physical on the sandwich
        },
        'restraint': {'d_max': 5.0, 'anode_layers': 2, 'colvar_stride': 5},
        'segment_steps': segment_steps or n_steps,
    }
    builder = RestraintMdWorkChain.get_builder_from_protocol(
        code, structure, model, overrides=overrides, seed=77
    )
    _, node = run_get_node(builder)
    assert node.is_finished_ok, (node.exit_status, node.exit_message)
    return node


@pytest.mark.slow
def test_three_segments_equal_one_run(restraint_code, small_sandwich, tiny_model):
    """60 steps in three segments of 20 give the CV series of one 60-step run (same seed); plots."""
    single = run_restraint(restraint_code, small_sandwich, tiny_model, 60)
    split = run_restraint(restraint_code, small_sandwich, tiny_model, 60, segment_steps=20)

    segments = [child for child in split.called if child.process_label == 'RestraintMdCalculation']
    assert len(segments) == 3 and all(segment.is_finished_ok for segment in segments)
    assert 'parent_folder' not in segments[0].inputs
    assert segments[1].inputs.parent_folder.uuid == segments[0].outputs.remote_folder.uuid
    one, three = single.outputs.colvar, split.outputs.colvar
    assert np.allclose(three.get_array('time'), np.arange(0, 61, 5) * 1e-3)
    for name in ('cv', 's0', 'bias', 'cn_Li_Li', 'cn_Li_S'):
        assert np.allclose(three.get_array(name), one.get_array(name), rtol=1e-6, atol=1e-9), name
    assert np.allclose(three.get_array('work'), one.get_array('work'), rtol=1e-5, atol=1e-8)
    assert split.outputs.trajectory.get_stepids().tolist() == list(range(0, 61, 10))
    assert np.allclose(
        split.outputs.trajectory.get_positions(), single.outputs.trajectory.get_positions(), atol=1e-6
    )

    restraint = split.outputs.restraint.get_dict()
    cv = cv_from_parameters(small_sandwich.atom_groups, small_sandwich.atom_layers, restraint)
    positions = np.array([site.position for site in small_sandwich.sites])
    initial = evaluate_cv(cv, positions, np.array(small_sandwich.cell)).value
    assert restraint['at_start'] == pytest.approx(initial, rel=1e-10)
    assert restraint['at_end'] == pytest.approx(initial + DEFAULT_S0_DELTA)
    assert restraint['step_end'] == 60
    assert sorted(split.outputs.plots) == ['bias_work', 'coordination', 'cv']
    for plot in split.outputs.plots.values():
        assert plot.get_content(mode='rb').startswith(PNG_SIGNATURE)


def test_walltime_segment_is_continued_not_restarted(restraint_code, small_sandwich, tiny_model):
    """A segment stopped by the walltime (exit 400) is continued from its restart file, not from step 0.

    ``max_wallclock_seconds`` 2 s makes LAMMPS stop each 20000-step segment after ~1 s (``timer timeout``)
    and write its restart file; two jobs are allowed, so the work chain ends with 401 after the second.
    """
    overrides = {
        'md': {
            'parameters': {'ensemble': 'nvt', 'n_steps': 20000, 'thermo_stride': 10, 'dump_stride': 100},
            'metadata': {'options': {'max_wallclock_seconds': 2}},
            'guards': {'enabled': False},
        },
        'restraint': {'d_max': 5.0, 'anode_layers': 2, 'colvar_stride': 10},
        'segment_steps': 20000,
        'max_iterations': 2,
    }
    builder = RestraintMdWorkChain.get_builder_from_protocol(
        restraint_code, small_sandwich, tiny_model, overrides=overrides, seed=77
    )
    _, node = run_get_node(builder)
    assert node.exit_status == RestraintMdWorkChain.exit_codes.ERROR_MAXIMUM_ITERATIONS_EXCEEDED.status
    first, second = [child for child in node.called if child.process_label == 'RestraintMdCalculation']
    assert first.exit_status == second.exit_status == 400  # ERROR_OUT_OF_WALLTIME, outputs kept
    stopped = first.outputs.output_parameters['restart_step']
    assert 0 < stopped < 20000 and first.outputs.restart.filename == f'restart.{stopped}'
    assert second.inputs.parent_folder.uuid == first.outputs.remote_folder.uuid
    assert second.outputs.colvar.get_array('time')[0] == pytest.approx(stopped * 1e-3)  # continued
    assert second.outputs.output_parameters['restart_step'] > stopped


def test_a_failed_guard_ends_the_run_with_its_code_and_keeps_the_outputs(restraint_code, small_sandwich):
    """The Li-only ensemble on the sandwich, default guards: the first segment fails (atoms too close, too
    hot, ensemble off its trust level); the work chain stops with the segment's code (no restart), with the
    stitched outputs, the guard table and the plots kept."""
    models = {f'm{i}': orm.SinglefileData(FIXTURES / 'models' / f'model_{i}.pb') for i in (2, 3)}
    overrides = {
        'md': {'parameters': {'n_steps': 120, 'thermo_stride': 10, 'dump_stride': 20, 'restart_stride': 0}},
        'restraint': {'d_max': 5.0, 'anode_layers': 2, 'colvar_stride': 10},
        'segment_steps': 60,
    }
    builder = RestraintMdWorkChain.get_builder_from_protocol(
        restraint_code,
        small_sandwich,
        orm.SinglefileData(FIXTURES / 'models' / 'model_1.pb'),
        overrides=overrides,
        seed=77,
        deviation_models=models,
    )
    _, node = run_get_node(builder)
    segments = [child for child in node.called if child.process_label == 'RestraintMdCalculation']
    assert len(segments) == 1 and 450 <= segments[0].exit_status <= 456, segments[0].exit_message
    assert node.exit_status == segments[0].exit_status, node.exit_message
    guards = node.outputs.guards.get_dict()
    assert guards['failed'][0] in node.exit_message and 'deviation' in guards['failed']
    assert {'colvar', 'thermo', 'trajectory', 'model_deviation', 'plots'} <= set(node.outputs)
    report = '\n'.join(log.message for log in orm.Log.collection.get_logs_for(node))
    assert 'guards' in report and 'FAIL' in report


def test_equilibration_starts_the_pull_from_its_last_frame(
    restraint_code, venv_code, small_sandwich, tiny_model
):
    """An unbiased NPT equilibration (lisei.exploration, x and y coupled, z fixed) runs first; its last
    frame, with the sandwich's groups, starts the pulled run and is where the restraint's s0 starts."""
    lmp = venv_code('lmp', 'lisei.exploration')
    overrides = {
        'md': {
            'parameters': {'n_steps': 20, 'thermo_stride': 10, 'dump_stride': 10, 'restart_stride': 0},
            'guards': {'enabled': False},  # the tiny Li-only model is not physical on the sandwich
        },
        'equilibration': {'parameters': {'n_steps': 30, 'stride': 10}},
        'restraint': {'d_max': 5.0, 'anode_layers': 2, 'colvar_stride': 5},
        'segment_steps': 20,
    }
    builder = RestraintMdWorkChain.get_builder_from_protocol(
        restraint_code, small_sandwich, tiny_model, overrides=overrides, seed=77, equilibration_code=lmp
    )
    # the demo scales x and y together (z fixed) in the equilibration and the pull (docs/paper_gaps.md)
    assert builder.equilibration.parameters['pressure_coupling'] == 'xy_coupled'
    assert builder.md.parameters['pressure_coupling'] == 'xy_coupled'
    assert (
        builder.equilibration.guards['lateral_cell'] == 0.10 and not builder.equilibration.guards['enabled']
    )
    _, node = run_get_node(builder)
    assert node.is_finished_ok, (node.exit_status, node.exit_message)
    equilibration = node.base.links.get_outgoing(link_label_filter='equilibration').one().node
    assert equilibration.inputs.parameters['pressure_coupling'] == 'xy_coupled'
    start = node.outputs.equilibration.structure
    trajectory = equilibration.outputs.trajectory
    cells = trajectory.get_cells()
    assert np.allclose(start.cell, cells[len(cells) - round(len(cells) / 2) :].mean(axis=0))  # the mean box
    fractional = np.linalg.solve(np.array(start.cell).T, np.array([site.position for site in start.sites]).T)
    assert np.allclose(fractional, np.linalg.solve(cells[-1].T, trajectory.get_positions()[-1].T))
    assert start.atom_groups == small_sandwich.atom_groups
    segment = next(child for child in node.called if child.process_label == 'RestraintMdCalculation')
    assert segment.inputs.structure.uuid == start.uuid
    cv = cv_from_parameters(start.atom_groups, start.atom_layers, node.outputs.restraint.get_dict())
    positions = np.array([site.position for site in start.sites])
    assert node.outputs.restraint['at_start'] == pytest.approx(
        evaluate_cv(cv, positions, np.array(start.cell)).value
    )
