"""Codes on a local ``core.direct`` computer of their own, for module-scoped fixtures that run engines."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest
from aiida import orm

#: Folder of this environment's console scripts (lisei-probe, lisei-tblite, dp, lmp, mock-vasp).
VENV_BIN = Path(sys.executable).parent

#: One thread per engine (2 cores), TensorFlow quiet.
ONE_THREAD = (
    'export OMP_NUM_THREADS=1 DP_INTRA_OP_PARALLELISM_THREADS=1 DP_INTER_OP_PARALLELISM_THREADS=1 '
    'TF_CPP_MIN_LOG_LEVEL=2'
)


def require_executable(executable: Path, install: str) -> None:
    """Skip unless ``executable`` exists; under ``LISEI_REQUIRE_SERVICES=1`` (``make test``) fail instead,
    so that a fresh clone's CI cannot pass by skipping. ``install`` says how to get it."""
    if executable.is_file():
        return
    message = f'{executable} not found: {install}'
    if os.environ.get('LISEI_REQUIRE_SERVICES') == '1':
        pytest.fail(message)
    pytest.skip(message)


def local_code(
    tmp_path_factory, executable: Path, install: str = 'pip install -e .', prepend_text: str = ''
) -> orm.InstalledCode:
    """``executable`` on a new local core.direct computer, one thread, with ``prepend_text`` after that."""
    require_executable(executable, install)
    computer = orm.Computer(
        label=f'{executable.parent.parent.name}-{executable.name}-local-{id(tmp_path_factory)}',
        hostname='localhost',
        transport_type='core.local',
        scheduler_type='core.direct',
        workdir=str(tmp_path_factory.mktemp(f'{executable.name}_work')),
    ).store()
    computer.configure(safe_interval=0)
    return orm.InstalledCode(
        computer=computer,
        filepath_executable=str(executable),
        prepend_text='\n'.join(line for line in (ONE_THREAD, prepend_text) if line),
    ).store()
