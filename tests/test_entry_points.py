"""Every ``lisei.`` entry point loads and ``verdi plugin list`` shows it."""

from __future__ import annotations

import subprocess
import sys
from importlib.metadata import entry_points
from pathlib import Path

import pytest

GROUPS = ('aiida.data', 'aiida.calculations', 'aiida.parsers', 'aiida.workflows')
LISEI_ENTRY_POINTS = [
    (group, ep) for group in GROUPS for ep in entry_points(group=group) if ep.name.startswith('lisei.')
]


def test_every_group_has_lisei_entry_points():
    """Data, calculations, parsers and workflows all have at least one lisei entry point."""
    assert {group for group, _ in LISEI_ENTRY_POINTS} == set(GROUPS)


@pytest.mark.parametrize(('group', 'entry_point'), LISEI_ENTRY_POINTS, ids=lambda x: getattr(x, 'name', x))
def test_entry_point_loads(group, entry_point):
    """The entry point resolves to an importable object."""
    assert entry_point.load() is not None


@pytest.mark.parametrize('group', GROUPS)
def test_verdi_plugin_list_shows_lisei(group, tmp_path):
    """``verdi plugin list <group>`` lists our entry points (needs no profile)."""
    verdi = Path(sys.executable).parent / 'verdi'
    result = subprocess.run(
        [str(verdi), 'plugin', 'list', group],
        capture_output=True,
        text=True,
        check=True,
        env={'AIIDA_PATH': str(tmp_path), 'PATH': '/usr/bin:/bin'},
    )
    expected = {ep.name for g, ep in LISEI_ENTRY_POINTS if g == group}
    assert expected <= set(result.stdout.split()), result.stdout


def _is_process_class(entry_point, base_name: str = 'Process') -> bool:
    """Whether ``entry_point`` loads a subclass of ``aiida.engine.<base_name>`` (not a process function)."""
    import inspect

    from aiida import engine

    cls = entry_point.load()
    return inspect.isclass(cls) and issubclass(cls, getattr(engine, base_name))


#: Process classes only: process functions (the structure builders) have no exit codes of their own.
PROCESS_ENTRY_POINTS = [
    (group, ep)
    for group, ep in LISEI_ENTRY_POINTS
    if group in ('aiida.calculations', 'aiida.workflows') and _is_process_class(ep)
]


@pytest.mark.parametrize(('group', 'entry_point'), PROCESS_ENTRY_POINTS, ids=lambda x: getattr(x, 'name', x))
def test_exit_codes_are_outside_the_reserved_ranges(group, entry_point):
    """Our own exit codes use 300-799: aiida-core reserves 0-299 (scheduler, input validation)."""
    from aiida.engine import CalcJob, Process

    cls = entry_point.load()
    base = CalcJob if issubclass(cls, CalcJob) else Process
    inherited = {code.status for code in base.spec().exit_codes.values()}
    own = {
        label: code.status for label, code in cls.spec().exit_codes.items() if code.status not in inherited
    }
    assert all(300 <= status < 800 for status in own.values()), own


CALCJOB_ENTRY_POINTS = [
    ep
    for group, ep in PROCESS_ENTRY_POINTS
    if group == 'aiida.calculations' and _is_process_class(ep, 'CalcJob')
]


@pytest.mark.parametrize('entry_point', CALCJOB_ENTRY_POINTS, ids=lambda ep: ep.name)
def test_missing_outputs_invalidate_the_cache(entry_point):
    """Every CalcJob exit code below 400 (outputs missing or unreadable) invalidates the cache."""
    cls = entry_point.load()
    stale = [label for label, code in cls.spec().exit_codes.items() if 300 <= code.status < 400]
    assert all(cls.spec().exit_codes[label].invalidates_cache for label in stale), stale
