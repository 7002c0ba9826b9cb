"""Shared fixtures: a throw-away SQLite + ZeroMQ profile for the unit tests.

The production-profile tests (PostgreSQL + RabbitMQ + daemon, SSH + Slurm) live in
``tests/integration`` and bring their own profile (see its conftest); they run in a
separate pytest invocation (``make test`` runs both).
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import pytest
from aiida import orm

pytest_plugins = ['aiida.tools.pytest_fixtures']


@pytest.fixture(scope='session', autouse=True)
def aiida_profile(aiida_config, aiida_profile_factory):
    """Embedded profile (SQLite + ZeroMQ broker): ``run`` and ``submit`` both work, no services."""
    with aiida_profile_factory(aiida_config, broker_backend='core.zeromq') as profile:
        yield profile


#: Folder of this environment's console scripts (lisei-probe, lisei-tblite, dp, lmp, mock-vasp).
VENV_BIN = Path(sys.executable).parent


@pytest.fixture
def venv_code(aiida_code_installed):
    """Return a factory: this environment's console script ``name`` as an installed code on localhost."""

    def factory(name: str, plugin: str, prepend_text: str = '') -> orm.InstalledCode:
        executable = VENV_BIN / name
        if not executable.is_file():
            pytest.skip(f'{executable} not found: install the package (pip install -e .)')
        return aiida_code_installed(
            label=name,
            filepath_executable=str(executable),
            default_calc_job_plugin=plugin,
            prepend_text=prepend_text,
        )

    return factory


#: CP2K of Debian's `cp2k` package (2023.1).
CP2K = Path('/usr/bin/cp2k.psmp')


@pytest.fixture
def cp2k_code(aiida_computer_local, aiida_code_installed) -> orm.InstalledCode:
    """CP2K 2023.1 on a local computer, polled without delay, OpenMPI allowed to run as root."""
    if not CP2K.is_file() or shutil.which('mpirun') is None:
        pytest.skip('CP2K or mpirun not installed')
    computer = aiida_computer_local()
    computer.set_minimum_job_poll_interval(0.0)
    computer.configure(safe_interval=0.0)
    return aiida_code_installed(
        computer=computer,
        filepath_executable=str(CP2K),
        default_calc_job_plugin='cp2k',
        prepend_text='export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 OMP_NUM_THREADS=1',
    )
