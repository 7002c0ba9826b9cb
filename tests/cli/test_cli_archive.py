"""Sharing: a finished run goes into an archive, a collaborator imports it into a fresh profile with
``aiida-lisei import``; there the report regenerates and a rerun is served from the imported nodes."""

from __future__ import annotations

import json
import os
import re
import subprocess
from pathlib import Path

from aiida.engine import run_get_node
from aiida.tools.archive import create_archive
from local_codes import VENV_BIN

from aiida_lisei.workchains.atomic_models import AtomicModelsWorkChain

#: Rerun of the imported work chain's inputs with caching on; prints which calcfunctions came from the cache.
RERUN = """
import json, sys
from aiida import orm
from aiida.engine import run_get_node
from aiida.manage.caching import enable_caching
original = orm.load_node(sys.argv[1])
builder = original.get_builder_restart()
with enable_caching():
    _, node = run_get_node(builder)
called = [child for child in node.called_descendants if isinstance(child, orm.CalculationNode)]
print(json.dumps({'ok': node.is_finished_ok, 'n': len(called),
                  'cached': sum(c.base.caching.is_created_from_cache for c in called),
                  'sources': sorted({c.base.caching.get_cache_source() or '' for c in called})}))
"""


def _without_pks(page: str) -> str:
    """The page with its PK numbers masked (they differ between profiles; the UUIDs do not)."""
    return re.sub(r'(PK[ =]|pk|&lt;)\d+', r'\1#', page)


def test_archive_round_trip_into_a_fresh_profile(run_cli, tmp_path):
    """Export -> fresh profile (verdi presto) -> aiida-lisei import -> same report, rerun from the cache."""
    _, node = run_get_node(AtomicModelsWorkChain.get_builder_from_protocol(protocol='demo'))
    assert node.is_finished_ok
    here = tmp_path / 'here.html'
    assert run_cli('report', node.pk, '-o', here).exit_code == 0
    archive = tmp_path / 'study.aiida'
    create_archive([node], filename=archive)

    env = {**os.environ, 'AIIDA_PATH': str(tmp_path / 'collaborator')}

    def run(*command: str | Path) -> str:
        result = subprocess.run(
            [str(part) for part in command], env=env, capture_output=True, text=True, timeout=300, check=False
        )
        assert result.returncode == 0, f'{command}\n{result.stdout}\n{result.stderr}'
        return result.stdout

    run(VENV_BIN / 'verdi', 'presto', '--profile-name', 'collaborator')
    imported = run(VENV_BIN / 'aiida-lisei', 'import', archive)
    assert 'nodes rehashed' in imported
    there = tmp_path / 'there.html'
    run(VENV_BIN / 'aiida-lisei', 'report', node.uuid, '-o', there)
    assert _without_pks(there.read_text()) == _without_pks(here.read_text())

    script = tmp_path / 'rerun.py'
    script.write_text(RERUN)
    rerun = json.loads(run(VENV_BIN / 'verdi', 'run', script, node.uuid).strip().splitlines()[-1])
    assert rerun['ok'] and rerun['n'] >= 4
    assert rerun['cached'] == rerun['n'], rerun  # every calculation served by an imported node
    assert '' not in rerun['sources']
