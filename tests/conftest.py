"""Shared fixtures: a throw-away SQLite + ZeroMQ profile for the unit tests.

The production-profile tests (PostgreSQL + RabbitMQ + daemon, SSH + Slurm) live in
``tests/integration`` and bring their own profile (see its conftest); they run in a
separate pytest invocation (``make test`` runs both).
"""

from __future__ import annotations

import pytest

pytest_plugins = ['aiida.tools.pytest_fixtures']


@pytest.fixture(scope='session', autouse=True)
def aiida_profile(aiida_config, aiida_profile_factory):
    """Embedded profile (SQLite + ZeroMQ broker): ``run`` and ``submit`` both work, no services."""
    with aiida_profile_factory(aiida_config, broker_backend='core.zeromq') as profile:
        yield profile
