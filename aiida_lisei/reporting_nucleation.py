"""Text table of a ``lisei.nucleation_analysis`` summary: our numbers beside the paper's (no AiiDA)."""

from __future__ import annotations

from typing import Any

from aiida_lisei.reporting import format_table

__all__ = ('format_nucleation_summary', 'format_value')


def format_value(value: Any, unit: str = '') -> str:
    """Return ``value`` for a table cell: numbers with 3 significant decimals and the unit, ``-`` for none."""
    if value is None:
        return '-'
    if isinstance(value, bool):
        return 'yes' if value else 'no'
    if isinstance(value, int | float):
        text = f'{value:+.2f}' if unit == 'e' else f'{value:.3g}' if abs(value) < 1000 else f'{value:.0f}'
        return f'{text} {unit}'.strip()
    return f'{value} {unit}'.strip()


def format_nucleation_summary(summary: dict[str, Any]) -> str:
    """Return the paper comparison of a nucleation summary as a fixed-width table with notes.

    :param summary: the ``summary`` output of ``lisei.nucleation_analysis`` (``get_dict()``): ``mode``,
        ``quantities`` (rows with ``label``, ``ours``, ``paper`` or ``paper_text``, ``unit``, ``agrees``,
        ``tolerance``, ``demo_size``, ``note``) and ``notes``.
    """
    rows = []
    for quantity in summary['quantities']:
        agrees = quantity['agrees']
        rows.append(
            [
                quantity['label'],
                format_value(quantity['ours'], quantity['unit']),
                quantity.get('paper_text') or format_value(quantity['paper'], quantity['unit']),
                '-' if agrees is None else ('yes' if agrees else 'no'),
                quantity['tolerance'],
                'demo-size' if quantity['demo_size'] else '',
                quantity['note'],
            ]
        )
    headers = ['quantity', 'ours', 'paper', 'agrees', 'criterion', 'demo-size', 'note']
    mode = summary['mode']
    heading = 'Li nucleation: ours vs the paper (§3, Figs. 3-4)' + (
        '' if mode == 'paper' else '  [DEMO: not the paper setup, see the notes]'
    )
    notes = '\n'.join(f'- {note}' for note in summary.get('notes', []))
    return f'\n{heading}\n{format_table(headers, rows)}\n{notes}\n'
