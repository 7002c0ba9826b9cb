"""Fixtures of the command-line tests."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from pathlib import Path

import pytest


@pytest.fixture
def run_cli_subprocess(tmp_path: Path):
    """Invoke ``python -m aiida_lisei.cli`` in a child process, ``AIIDA_PATH`` in a fresh temporary folder."""
    env = {**os.environ, 'AIIDA_PATH': str(tmp_path / 'aiida-config')}

    def run(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            [sys.executable, '-m', 'aiida_lisei.cli', *map(str, args)],
            env=env,
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
        )

    run.aiida_path = Path(env['AIIDA_PATH'])
    return run


@pytest.fixture
def unique_label() -> str:
    """A label no other test uses."""
    return f'lisei-test-{uuid.uuid4().hex[:8]}'
