"""Generate the exit-code and restart-handler reference, and the DP-GEN key table, from the code itself.

Written to ``docs/exit_codes.md`` when Sphinx starts, so the page can never drift from the
process specs: every ``lisei.`` CalcJob and WorkChain with its exit codes, and every process
handler of the restart workchains with the strategy stated in its docstring.
"""

from __future__ import annotations

import inspect
from importlib.metadata import entry_points
from pathlib import Path

from aiida.engine import CalcJob, Process, WorkChain
from aiida.engine.processes.workchains.restart import BaseRestartWorkChain

from aiida_lisei.common.exit_codes import EXIT_CODE_RANGES

GROUPS = ('aiida.calculations', 'aiida.workflows')


def _first_paragraph(text: str | None) -> str:
    return ' '.join((inspect.cleandoc(text or '').split('\n\n') or [''])[0].split())


def _process_classes():
    for group in GROUPS:
        for entry_point in sorted(entry_points(group=group), key=lambda ep: ep.name):
            if not entry_point.name.startswith('lisei.'):
                continue
            cls = entry_point.load()
            if inspect.isclass(cls) and issubclass(cls, Process):
                yield group, entry_point.name, cls


def render() -> str:
    """Return the Markdown of the reference page."""
    lines = [
        '# Exit codes and restart handlers',
        '',
        'Generated from the process specifications and from the one table of ranges '
        '(`aiida_lisei.common.exit_codes`) when the docs are built; a test checks every process against '
        'the table. aiida-core owns 0-99 and the codes of its base classes (e.g. 401 and 402 of '
        '`BaseRestartWorkChain`).',
        '',
        '| range | meaning | CalcJobs | work chains | invalidates the cache |',
        '| --- | --- | --- | --- | --- |',
    ]
    lines += [
        f'| {entry.low}-{entry.high} | {entry.meaning} | {"yes" if entry.calculations else "-"} | '
        f'{"yes" if entry.workchains else "-"} | {"yes" if entry.invalidates_cache else "no"} |'
        for entry in EXIT_CODE_RANGES
    ]
    lines.append('')
    for group, name, cls in _process_classes():
        if issubclass(cls, CalcJob):
            base = CalcJob
        elif issubclass(cls, BaseRestartWorkChain):
            base = BaseRestartWorkChain
        elif issubclass(cls, WorkChain):
            base = WorkChain
        else:
            base = Process
        inherited = set(base.spec().exit_codes)
        own = sorted(
            ((label, code) for label, code in cls.spec().exit_codes.items() if label not in inherited),
            key=lambda item: item[1].status,
        )
        lines += [f'## `{name}`', '', f'{_first_paragraph(cls.__doc__)} ({group}, `{cls.__name__}`)', '']
        if own:
            lines += ['| status | label | meaning |', '| --- | --- | --- |']
            lines += [f'| {code.status} | `{label}` | {code.message} |' for label, code in own]
            lines.append('')
        handlers = [
            (getattr(member, 'priority', 0), member_name, member)
            for member_name, member in inspect.getmembers(cls)
            if getattr(member, 'decorator', None) is not None and member_name.startswith('handle_')
        ]
        if handlers:
            lines += ['Restart handlers, in the order they are tried:', '']
            for priority, member_name, member in sorted(handlers, key=lambda item: -item[0]):
                lines.append(f'- `{member_name}` (priority {priority}): {_first_paragraph(member.__doc__)}')
            lines.append('')
    return '\n'.join(lines)


def setup(app):
    """Write ``exit_codes.md`` and ``dpgen_keys.md`` (the DP-GEN import's rules) next to ``conf.py``."""
    from aiida_lisei.workchains.dpgen_import import rules_markdown

    for name, content in (('exit_codes.md', render()), ('dpgen_keys.md', rules_markdown())):
        target = Path(app.srcdir) / name
        if not target.exists() or target.read_text() != content:
            target.write_text(content)
    return {'parallel_read_safe': True, 'parallel_write_safe': True}
