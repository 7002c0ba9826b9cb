"""The guards of ``lisei.restraint_md`` on a real failure: today's tiny models blow up the sandwich.

The tiny test models (``tests/fixtures/models``) were trained on bcc Li only; on the sandwich, with P, S
and Cl they have never seen, the run falls apart as the demo's old models did (issue 11): the cell grows,
atoms collide, the ensemble disagrees. One real LAMMPS + DeePMD + PLUMED run per test module, guards
reported but not enforced; then each guard's verdict, and the exit status each failure gives.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from aiida import orm
from aiida.engine import run_get_node

from aiida_lisei.calculations.restraint_md import RestraintMdCalculation
from aiida_lisei.reporting.tables import format_guard_table
from aiida_lisei.science.guards import GUARDS

MODELS = Path(__file__).parents[1] / 'fixtures' / 'models'
RESTRAINT = {'kappa': 500.0, 'd_max': 5.0, 'anode_layers': 2, 'at_start': 0.0, 'at_end': 0.5, 'step_end': 400}
PARAMETERS = {'n_steps': 400, 'thermo_stride': 10, 'dump_stride': 20, 'restart_stride': 0}


_RUN: dict[str, int] = {}


@pytest.fixture
def blown_up_run(restraint_code, small_sandwich):
    """One real 400-step run of the Li-only ensemble on the 88-atom sandwich, guards reported only (run
    once per session: the profile is the session's)."""
    if 'pk' in _RUN:
        return orm.load_node(_RUN['pk'])
    builder = RestraintMdCalculation.get_builder()
    builder.code = restraint_code
    builder.structure = small_sandwich
    builder.model = orm.SinglefileData(MODELS / 'model_1.pb')
    builder.deviation_models = {f'm{i}': orm.SinglefileData(MODELS / f'model_{i}.pb') for i in (2, 3, 4)}
    builder.parameters = orm.Dict(PARAMETERS)
    builder.restraint = orm.Dict(RESTRAINT)
    builder.seed = orm.Int(4321)
    # the means over the whole run: the pressure spikes at the start, then the growing box relaxes it
    builder.guards = orm.Dict({'enabled': False, 'equilibration': 0.0})
    _, node = run_get_node(builder)
    _RUN['pk'] = node.pk
    return node


def test_every_guard_fails_on_the_blown_up_sandwich(blown_up_run):
    """Reported, not enforced (``enabled: False``): the job finishes, and each guard says it failed."""
    node = blown_up_run
    guards = node.outputs.guards.get_dict()
    print(format_guard_table(guards))
    assert node.is_finished_ok, node.exit_message
    assert guards['failed'] == [guard.name for guard in GUARDS], format_guard_table(guards)
    measured = guards['guards']
    assert measured['lateral_cell']['value'] > 0.1  # the cell grows by over 10 % in 0.4 ps
    assert measured['min_distance']['value'] < 1.0  # Å
    assert measured['temperature']['value'] > 300  # K above the target
    assert measured['deviation']['value'] > 0.5  # most frames beyond 0.25 eV/Å
    deviation = node.outputs.model_deviation
    assert deviation.get_array('step').tolist() == node.outputs.trajectory.get_stepids().tolist()
    assert node.outputs.output_parameters['guards_failed'] == guards['failed']


@pytest.mark.parametrize('guard', GUARDS, ids=lambda guard: guard.name)
def test_each_failed_guard_ends_the_job_with_its_exit_code(
    guard, blown_up_run, generate_calc_job_node, generate_parser, loose_guards
):
    """The parser, on the real run's files, with only ``guard`` at its default threshold."""
    thresholds = {name: value for name, value in loose_guards.items() if name != guard.name}
    thresholds['equilibration'] = 0.0  # as the run itself: means over the whole run
    retrieved = blown_up_run.outputs.retrieved
    files = {
        name: retrieved.base.repository.get_object_content(name, 'rb')
        for name in retrieved.list_object_names()
    }
    inputs = {name: blown_up_run.inputs[name] for name in ('structure', 'parameters', 'restraint', 'seed')}
    node = generate_calc_job_node('lisei.restraint_md', {**inputs, 'guards': orm.Dict(thresholds)}, files)
    results, calcfunction = generate_parser('lisei.restraint_md').parse_from_node(
        node, store_provenance=False
    )
    assert calcfunction.exit_status == guard.status, calcfunction.exit_message
    assert f'guard `{guard.name}` failed' in calcfunction.exit_message
    assert {'trajectory', 'colvar', 'thermo', 'guards'} <= set(results)  # the outputs are kept
    assert results['guards']['failed'] == [guard.name]


def test_a_guard_failure_is_enforced_by_default(restraint_code, small_sandwich):
    """Without ``guards``, the defaults apply and are enforced: the first failure in table order."""
    builder = RestraintMdCalculation.get_builder()
    builder.code = restraint_code
    builder.structure = small_sandwich
    builder.model = orm.SinglefileData(MODELS / 'model_1.pb')
    builder.parameters = orm.Dict({**PARAMETERS, 'n_steps': 60})
    builder.restraint = orm.Dict({**RESTRAINT, 'step_end': 60})
    builder.seed = orm.Int(4321)
    _, node = run_get_node(builder)
    assert node.exit_status == 450, node.exit_message
    assert 'lateral_cell' in node.exit_message
    assert {'trajectory', 'colvar', 'thermo', 'guards', 'restart'} <= set(node.outputs)
    assert node.outputs.guards['guards']['deviation']['passed'] is None  # one model: not evaluated
