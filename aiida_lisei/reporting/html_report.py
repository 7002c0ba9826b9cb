"""One self-contained HTML page of a finished process (a study or any step): what ran with which settings,
the tables beside the paper, the guards, every PNG figure embedded, and the PK/UUID of every number's node.

Functions read finished nodes through their public attributes (``outputs``, ``called``, ``inputs``) and
return strings; they create no nodes. ``aiida-lisei report`` writes the page.
"""

from __future__ import annotations

import base64
import html
import json
from typing import Any

from aiida_lisei.reporting.plots import PNG_SIGNATURE
from aiida_lisei.reporting.tables import (
    format_guard_report,
    format_iterations_table,
    format_nucleation_summary,
    format_validation_comparison,
)

__all__ = ('process_report_html',)

STYLE = """
body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 75em; color: #222; }
h1 { font-size: 1.5em; } h2 { font-size: 1.2em; border-bottom: 1px solid #ccc; margin-top: 2em; }
pre { background: #f6f6f6; padding: 0.8em; overflow-x: auto; font-size: 0.85em; }
figure { display: inline-block; margin: 0.5em; } img { max-width: 36em; border: 1px solid #ddd; }
figcaption, .meta { font-size: 0.8em; color: #555; } .failed { color: #b00; font-weight: bold; }
"""


def _escape(text: Any) -> str:
    return html.escape(str(text))


def _identity(node: Any) -> str:
    return f'PK {node.pk}, UUID {node.uuid}'


def _status(node: Any) -> str:
    if node.is_finished_ok:
        return 'finished [0]'
    state = node.process_state.value if node.process_state else 'unknown'
    return f'{state} [{node.exit_status}] {node.exit_message or ""}'.strip()


def _is_png(node: Any) -> bool:
    """Whether ``node`` is a single file named ``*.png`` (a figure node)."""
    filename = getattr(node, 'filename', None)
    return isinstance(filename, str) and filename.endswith('.png') and hasattr(node, 'get_content')


def _figures(node: Any, prefix: str = '') -> list[tuple[str, Any]]:
    """Return ``(name, node)`` of every PNG ``SinglefileData`` among ``node``'s outputs (namespaces too)."""
    found = []
    for name in sorted(node.outputs):
        value = node.outputs[name]
        if _is_png(value):
            found.append((f'{prefix}{name}', value))
        elif not hasattr(value, 'pk'):  # an output namespace
            found.extend(
                (f'{prefix}{name}.{key}', value[key]) for key in sorted(value) if _is_png(value[key])
            )
    return found


def _figure_html(name: str, node: Any) -> str:
    content = node.get_content(mode='rb')
    if not content.startswith(PNG_SIGNATURE):
        return f'<p class="failed">{_escape(name)}: not a PNG ({_identity(node)})</p>'
    data = base64.b64encode(content).decode()
    return (
        f'<figure><img alt="{_escape(name)}" src="data:image/png;base64,{data}">'
        f'<figcaption>{_escape(name)} ({_identity(node)})</figcaption></figure>'
    )


def _tables(node: Any) -> list[tuple[str, str]]:
    """Return ``(title, text)`` of the tables in a step's outputs: learning, validation, guards, summary."""
    outputs = node.outputs
    tables = []
    if 'iterations' in outputs and not hasattr(outputs['iterations'], 'pk'):
        iterations = {name: summary.get_dict() for name, summary in outputs['iterations'].items()}
        tables.append(('Concurrent learning per iteration', format_iterations_table(iterations)))
    if 'comparison' in outputs and 'rmse_f' in outputs['comparison'].get_dict():
        tables.append(
            ('Validation beside the paper', format_validation_comparison(outputs['comparison'].get_dict()))
        )
    if 'guards' in outputs and 'guards' in outputs['guards'].get_dict():
        guards = outputs['guards']
        tables.append(('Physics guards', format_guard_report(guards.get_dict(), f'guards <PK={guards.pk}>')))
    if 'summary' in outputs and 'mode' in outputs['summary'].get_dict():
        tables.append(
            ('Nucleation analysis beside the paper', format_nucleation_summary(outputs['summary'].get_dict()))
        )
    return tables


def _settings(node: Any) -> str:
    """Return the process's Dict and scalar inputs as JSON (top level: the settings it ran with)."""
    settings: dict[str, Any] = {}
    for name in sorted(node.inputs):
        value = node.inputs[name]
        if hasattr(value, 'get_dict'):
            settings[name] = value.get_dict()
        elif hasattr(value, 'value') and isinstance(value.value, (int, float, str, bool)):
            settings[name] = value.value
        elif hasattr(value, 'full_label'):
            settings[name] = f'code {value.full_label}'
    return json.dumps(settings, indent=1, sort_keys=True, default=str)


def _section(node: Any, title: str) -> str:
    status = _status(node)
    css = '' if node.is_finished_ok else ' class="failed"'
    parts = [
        f'<h2 id="pk{node.pk}">{_escape(title)}: {_escape(node.process_label)}</h2>',
        f'<p class="meta">{_identity(node)}; <span{css}>{_escape(status)}</span>; '
        f'created {node.ctime:%Y-%m-%d %H:%M}</p>',
        f'<details><summary>settings</summary><pre>{_escape(_settings(node))}</pre></details>',
    ]
    for heading, text in _tables(node):
        parts.append(f'<h3>{_escape(heading)}</h3><pre>{_escape(text)}</pre>')
    parts.extend(_figure_html(name, figure) for name, figure in _figures(node))
    return '\n'.join(parts)


def _steps(node: Any) -> list[tuple[str, Any]]:
    """Return ``(call link label, child)`` of the work chains called by ``node``, in the order they ran."""
    links = node.base.links.get_outgoing().all()
    children = [(link.link_label, link.node) for link in links if link.link_type.value == 'call_work']
    return sorted(children, key=lambda item: item[1].ctime)


def process_report_html(node: Any) -> str:
    """Return the self-contained HTML report of terminated process ``node`` and the work chains it called."""
    sections = [_section(node, 'the process')]
    sections.extend(_section(child, label) for label, child in _steps(node))
    contents = ''.join(
        f'<li><a href="#pk{child.pk}">{_escape(label)}</a>: {_escape(_status(child))}</li>'
        for label, child in _steps(node)
    )
    title = f'aiida-lisei report: {node.process_label} <{node.pk}>'
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        f'<title>{_escape(title)}</title><style>{STYLE}</style></head><body>'
        f'<h1>{_escape(title)}</h1><p class="meta">{_identity(node)}. Every table and figure names the node '
        'it comes from: <code>verdi node show &lt;PK&gt;</code> follows it back to its inputs.</p>'
        f'<ol>{contents}</ol>' + '\n'.join(sections) + '</body></html>\n'
    )
