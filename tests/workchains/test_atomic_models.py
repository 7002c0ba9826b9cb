"""``lisei.atomic_models``: protocols, validation before submission, provenance and caching."""

from __future__ import annotations

import pytest
from aiida import orm
from aiida.engine import run_get_node
from aiida.manage.caching import enable_caching
from aiida.plugins import WorkflowFactory

AtomicModelsWorkChain = WorkflowFactory('lisei.atomic_models')


def _node_count() -> int:
    return orm.QueryBuilder().append(orm.Node).count()


def test_protocols_are_listed():
    """Both protocols exist and ``paper`` is the default."""
    assert set(AtomicModelsWorkChain.get_available_protocols()) == {'demo', 'paper'}
    assert AtomicModelsWorkChain.get_default_protocol() == 'paper'


def test_builder_from_protocol(data_regression):
    """The builder carries complete parameter dicts (snapshot of the ``demo`` protocol)."""
    builder = AtomicModelsWorkChain.get_builder_from_protocol(protocol='demo')
    names = ('bcc_lithium', 'argyrodite', 'interface', 'sandwich')
    inputs = {name: builder[name]['parameters'].get_dict() for name in names}
    inputs['argyrodite_seed'] = builder.argyrodite.seed.value
    data_regression.check(inputs)


def test_unknown_protocol_is_refused():
    """A typo in the protocol name says which exist."""
    with pytest.raises(ValueError, match=r"unknown protocol `papr`; available: \['demo', 'paper'\]"):
        AtomicModelsWorkChain.get_builder_from_protocol(protocol='papr')


def test_bad_override_is_refused_before_anything_is_stored():
    """Zero anode layers fail in the builder, naming the parameter, and store no node."""
    before = _node_count()
    with pytest.raises(ValueError, match=r'anode_layers must be an integer in \[1, '):
        AtomicModelsWorkChain.get_builder_from_protocol(
            protocol='demo', overrides={'sandwich': {'parameters': {'anode_layers': 0}}}
        )
    assert _node_count() == before


def test_port_validator_refuses_bad_parameters_before_storing():
    """Hand-edited inputs are validated by the ports: on the builder, and when the process starts."""
    builder = AtomicModelsWorkChain.get_builder_from_protocol(protocol='demo')
    bad = orm.Dict({**builder.sandwich.parameters.get_dict(), 'vacuum': -1.0})
    with pytest.raises(ValueError, match=r'vacuum must be a number in \[0'):
        builder.sandwich.parameters = bad
    inputs = {name: dict(builder[name]) for name in ('bcc_lithium', 'argyrodite', 'interface', 'sandwich')}
    inputs['sandwich']['parameters'] = bad
    before = _node_count()
    with pytest.raises(ValueError, match=r'vacuum must be a number in \[0'):
        run_get_node(AtomicModelsWorkChain, **inputs)
    assert _node_count() == before


def test_demo_protocol_runs_and_is_cached():
    """The demo run gives four grouped structures and a summary; a rerun is served from the cache."""
    builder = AtomicModelsWorkChain.get_builder_from_protocol(protocol='demo')
    with enable_caching():
        _, first = run_get_node(builder)
        _, second = run_get_node(AtomicModelsWorkChain.get_builder_from_protocol(protocol='demo'))
    assert first.is_finished_ok, first.exit_status
    assert second.is_finished_ok, second.exit_status

    summary = first.outputs.summary.get_dict()
    assert summary['bcc_lithium']['natoms'] == 16
    assert summary['argyrodite']['group_counts'] == {
        'electrolyte_Li': 24,
        'electrolyte_P': 4,
        'electrolyte_S': 20,
        'electrolyte_Cl': 4,
    }
    assert summary['interface']['natoms'] == 185
    sandwich = first.outputs.sandwich
    assert sandwich.group_counts['anode_Li'] == 10 * 9
    assert sandwich.group_counts['source_Li'] == 4 * 9
    assert len(sandwich.select('anode_Li', layers=range(1, 9))) == 8 * 9

    # Provenance: the sandwich was made by a calcfunction from the ordered electrolyte cell.
    creator = sandwich.creator
    assert creator.process_type == 'aiida.calculations:lisei.structures.sandwich'
    assert creator.inputs.electrolyte.uuid == first.outputs.argyrodite.uuid
    # Caching: the second run created no new structure calculation.
    for name in ('bcc_lithium', 'argyrodite', 'interface', 'sandwich'):
        assert second.outputs[name].creator.base.caching.is_created_from_cache
        first_hash = first.outputs[name].creator.base.caching.get_hash()
        assert second.outputs[name].creator.base.caching.get_hash() == first_hash
