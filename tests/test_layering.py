"""Numerics and compute-side programs import no AiiDA (design: dependencies point downward only)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).parents[1] / 'aiida_lisei'
PURE_FOLDERS = ('science', 'engines', 'formats')
PURE_MODULES = [
    *sorted(
        '.'.join(path.relative_to(PACKAGE.parent).with_suffix('').parts)
        for folder in PURE_FOLDERS
        for path in (PACKAGE / folder).glob('*.py')
    ),
    'aiida_lisei.data.frames',
    'aiida_lisei.data.level_of_theory',
    'aiida_lisei.reporting.comparisons',
    'aiida_lisei.reporting.paper',
    'aiida_lisei.reporting.plots',
    'aiida_lisei.reporting.tables',
    'aiida_lisei.structures.builders',
]


@pytest.mark.parametrize('module', PURE_MODULES)
def test_module_imports_no_aiida(module):
    """Importing the module in a fresh interpreter leaves ``aiida`` out of ``sys.modules``."""
    code = f'import sys, {module}; sys.exit(1 if "aiida" in sys.modules else 0)'
    result = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True, check=False)
    assert result.returncode == 0, f'{module} imports aiida\n{result.stderr[-2000:]}'
