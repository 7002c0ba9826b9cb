"""Every exit code of every ``lisei.`` process follows the one table (``aiida_lisei.common.exit_codes``).

The table: 300-349 output files, 350-399 engine errors, 400-409 walltime (CalcJobs; all invalidate the
cache), 410-449 physics failures a handler can restart (a work chain that gives up passes them on with the
same label and number), 450-479 reserved (unphysical runs), 500-599 work-chain failures, 700-799 warnings.
"""

from __future__ import annotations

import inspect
import sys
from importlib.metadata import entry_points
from pathlib import Path

import pytest
from aiida.engine import CalcJob, Process, WorkChain
from aiida.engine.processes.workchains.restart import BaseRestartWorkChain

from aiida_lisei.common.exit_codes import EXIT_CODE_RANGES, exit_code_range

#: Labels that mean something else in a work chain than in the CalcJob that has the same label: the work
#: chain's is "the sub-process failed" (500s), the CalcJob's a failure of its own.
DIFFERENT_MEANINGS = {'ERROR_QEQ_FAILED'}


def _processes():
    for group in ('aiida.calculations', 'aiida.workflows'):
        for entry_point in sorted(entry_points(group=group), key=lambda ep: ep.name):
            if entry_point.name.startswith('lisei.'):
                cls = entry_point.load()
                if inspect.isclass(cls) and issubclass(cls, Process):
                    yield entry_point.name, cls


PROCESSES = list(_processes())


def own_exit_codes(cls) -> dict[str, object]:
    """The exit codes ``cls`` defines, not those of aiida-core's base classes."""
    if issubclass(cls, CalcJob):
        base = CalcJob
    elif issubclass(cls, BaseRestartWorkChain):
        base = BaseRestartWorkChain
    else:
        base = WorkChain
    inherited = {label for label in base.spec().exit_codes}
    return {label: code for label, code in cls.spec().exit_codes.items() if label not in inherited}


@pytest.mark.parametrize(('name', 'cls'), PROCESSES, ids=[name for name, _ in PROCESSES])
def test_exit_codes_follow_the_table(name, cls):
    """Each own code lies in a range the process kind may use; a CalcJob's cache rule is the range's."""
    problems = []
    calculation = issubclass(cls, CalcJob)
    for label, code in own_exit_codes(cls).items():
        entry = exit_code_range(code.status)
        if entry is None or not (entry.calculations if calculation else entry.workchains):
            kind = 'CalcJob' if calculation else 'work chain'
            problems.append(f'{label} = {code.status}: not a {kind} range of the table')
        elif calculation and code.invalidates_cache != entry.invalidates_cache:
            problems.append(f'{label} = {code.status}: invalidates_cache {code.invalidates_cache}')
    assert not problems, problems


def test_one_number_per_label():
    """A label means one number across the package (except the documented different meanings)."""
    numbers: dict[str, dict[int, list[str]]] = {}
    for name, cls in PROCESSES:
        for label, code in own_exit_codes(cls).items():
            numbers.setdefault(label, {}).setdefault(code.status, []).append(name)
    clashes = {label: found for label, found in numbers.items() if len(found) > 1}
    assert set(clashes) <= DIFFERENT_MEANINGS, clashes


def test_no_hand_written_invalidates_cache():
    """The cache rule is the spec class's: no exit code of the package says ``invalidates_cache`` by hand."""
    package = Path(__file__).parents[1] / 'aiida_lisei'
    sources = [path for path in package.rglob('*.py') if 'invalidates_cache=True' in path.read_text()]
    assert not sources, sources


def test_generated_reference_matches_the_table():
    """docs/exit_codes.md (generated when the docs build) lists the table and every process's codes."""
    sys.path.insert(0, str(Path(__file__).parents[1] / 'docs' / '_ext'))
    try:
        from lisei_reference import render
    finally:
        sys.path.pop(0)
    text = render()
    for entry in EXIT_CODE_RANGES:
        assert f'| {entry.low}-{entry.high} |' in text
    for name, cls in PROCESSES:
        assert f'## `{name}`' in text
        for label, code in own_exit_codes(cls).items():
            assert f'| {code.status} | `{label}` |' in text, (name, label)
