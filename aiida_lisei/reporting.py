"""Plain-text tables for people: model summaries and comparisons with the paper.

Functions take AiiDA nodes or plain dicts and return strings; they create no nodes.
"""

from __future__ import annotations

from typing import Any

__all__ = (
    'PAPER_SANDWICH',
    'format_iterations_table',
    'format_models_summary',
    'format_paper_comparison',
    'format_table',
)

#: The sandwich of the paper's SI §3 (cell in Å, strain of Li as a fraction).
PAPER_SANDWICH: dict[str, Any] = {
    'natoms': 4833,
    'anode_Li': 1296,
    'electrolyte': 2808,
    'source_Li': 729,
    'cell_lengths': (30.81, 30.81, 150.42),
    'lateral_strain': 0.0016,
}


def format_table(headers: list[str], rows: list[list[Any]]) -> str:
    """Return a fixed-width table with a header rule."""
    cells = [[str(value) for value in row] for row in [headers, *rows]]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
    lines = ['  '.join(value.ljust(width) for value, width in zip(row, widths, strict=True)) for row in cells]
    lines.insert(1, '  '.join('-' * width for width in widths))
    return '\n'.join(lines)


def _regions(group_counts: dict[str, int]) -> str:
    electrolyte = sum(count for group, count in group_counts.items() if group.startswith('electrolyte_'))
    parts = [
        f'{group}={count}' for group, count in group_counts.items() if not group.startswith('electrolyte_')
    ]
    if electrolyte:
        parts.insert(1 if 'anode_Li' in group_counts else 0, f'electrolyte={electrolyte}')
    return ' '.join(parts)


def format_models_summary(workchain_node, title: str) -> str:
    """Table of a finished ``lisei.atomic_models`` run: atoms per region, cell (Å), strain, PK."""
    summary = workchain_node.outputs.summary.get_dict()
    rows = []
    for name, model in summary.items():
        strain = model['lateral_strain']
        rows.append(
            [
                name,
                model['natoms'],
                _regions(model['group_counts']),
                ' x '.join(f'{length:.2f}' for length in model['cell_lengths']),
                '-' if strain is None else f'{100 * strain:+.3f} %',
                workchain_node.outputs[name].pk,
            ]
        )
    table = format_table(['model', 'atoms', 'atoms per region', 'cell (Å)', 'Li strain', 'PK'], rows)
    pks = f'workchain PK={workchain_node.pk}, summary PK={workchain_node.outputs.summary.pk}'
    return f'\n{title}  [{pks}]\n{table}\n'


def format_paper_comparison(summary: dict[str, Any]) -> str:
    """Compare the paper-size sandwich of ``summary`` (output of ``lisei.atomic_models``) with the SI."""
    sandwich = summary['sandwich']
    counts = sandwich['group_counts']
    ours = {
        'natoms': sandwich['natoms'],
        'anode_Li': counts.get('anode_Li', 0),
        'electrolyte': sum(n for group, n in counts.items() if group.startswith('electrolyte_')),
        'source_Li': counts.get('source_Li', 0),
    }
    rows = [[key, PAPER_SANDWICH[key], value] for key, value in ours.items()]
    for axis, paper_length, length in zip(
        'xyz', PAPER_SANDWICH['cell_lengths'], sandwich['cell_lengths'], strict=True
    ):
        rows.append([f'cell {axis} (Å)', f'{paper_length:.2f}', f'{length:.2f}'])
    rows.append(
        [
            'Li lateral strain',
            f'{100 * PAPER_SANDWICH["lateral_strain"]:+.2f} %',
            f'{100 * sandwich["lateral_strain"]:+.3f} %',
        ]
    )
    note = (
        'Note: with the SI lattice constant a(Li6PS5Cl) = 10.25 Å the lateral cell is 3 x 10.25 = 30.75 Å;\n'
        "the paper's 30.81 Å (30.814 Å in SI §3) implies a = 10.271 Å, hence its +0.16 % vs our strain of Li."
    )
    return (
        '\nLi|Li6PS5Cl|Li sandwich: paper (SI §3) vs this build\n'
        + format_table(['quantity', 'paper', 'ours'], rows)
        + '\n'
        + note
        + '\n'
    )


def format_iterations_table(iterations: dict[str, dict[str, Any]]) -> str:
    """Return the per-iteration table of a concurrent-learning run.

    :param iterations: ``{'iteration_01': statistics, ...}``, the ``get_dict()`` of the ``iterations`` outputs
        of ``lisei.concurrent_learning``. One row per iteration, system and temperature (K), then the pooled
        row of the system: fractions in %, frames selected for labelling and frames labelled.
    """
    rows = []
    for name in sorted(iterations):
        summary = iterations[name]
        for system, data in sorted(summary['systems'].items()):
            for temperature, stats in sorted(data['temperatures'].items(), key=lambda item: float(item[0])):
                fractions = stats['fractions']
                rows.append(
                    [
                        summary['iteration'],
                        system,
                        temperature,
                        f'{100 * fractions["accurate"]:.1f}',
                        f'{100 * fractions["candidate"]:.1f}',
                        f'{100 * fractions["failed"]:.1f}',
                        stats['n_selected'],
                        '',
                    ]
                )
            rows.append(
                [
                    summary['iteration'],
                    system,
                    'all',
                    f'{100 * data["accurate"]:.1f}',
                    f'{100 * data["candidate"]:.1f}',
                    f'{100 * data["failed"]:.1f}',
                    data['n_selected'],
                    data['n_labelled'],
                ]
            )
    headers = ['iter', 'system', 'T (K)', 'accurate %', 'candidate %', 'failed %', 'selected', 'labelled']
    return format_table(headers, rows)
