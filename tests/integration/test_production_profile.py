"""The production profile: PostgreSQL storage + RabbitMQ broker, with processes submitted to a daemon."""

from __future__ import annotations

import pytest
from aiida import orm
from aiida.manage import get_manager
from aiida.plugins import WorkflowFactory

pytestmark = pytest.mark.production


def test_profile_is_production(aiida_profile) -> None:
    """The session profile really is ``core.psql_dos`` + ``core.rabbitmq``, and both services answer."""
    assert aiida_profile.storage_backend == 'core.psql_dos'
    assert aiida_profile.process_control_backend == 'core.rabbitmq'

    manager = get_manager()
    storage = manager.get_profile_storage()
    assert type(storage).__name__ == 'PsqlDosBackend'
    assert orm.Int(42).store().pk in {node.pk for node in orm.QueryBuilder().append(orm.Int).all(flat=True)}
    broker = manager.get_broker()
    assert type(broker).__name__ == 'RabbitmqBroker'
    assert broker.get_communicator() is not None  # connects to RabbitMQ


def test_probe_through_daemon(submit_and_await, probe_code_local) -> None:
    """A CalcJob of ours (``lisei.probe``, local computer) submitted to the daemon returns its report."""
    node = submit_and_await(probe_code_local.get_builder(), timeout=120)

    assert node.is_finished_ok, (node.exit_status, node.exit_message)
    report = node.outputs.engines.get_dict()
    assert 'engines' in report
    assert 'missing' in report
    assert node.get_job_id()  # core.direct: the pid of the job, stored on the node


def test_atomic_models_through_daemon(submit_and_await) -> None:
    """``lisei.atomic_models`` (demo protocol) runs on the daemon; the sandwich has its atom groups."""
    AtomicModelsWorkChain = WorkflowFactory('lisei.atomic_models')  # noqa: N806
    builder = AtomicModelsWorkChain.get_builder_from_protocol(protocol='demo')

    node = submit_and_await(builder, timeout=300)

    assert node.is_finished_ok, (node.exit_status, node.exit_message)
    for name in ('bcc_lithium', 'argyrodite', 'interface', 'sandwich', 'summary'):
        assert name in node.outputs, name
    sandwich = node.outputs.sandwich
    counts = sandwich.group_counts
    for group in ('anode_Li', 'electrolyte_Li', 'source_Li'):
        assert counts.get(group, 0) > 0, (group, counts)
    assert isinstance(node.outputs.summary, orm.Dict)
    # every output was created by the daemon inside this workflow: provenance is complete
    assert sandwich.creator is not None
    assert sandwich.creator.caller is not None
    assert sandwich.creator.caller.uuid == node.uuid
