"""Plain-text tables for people: model summaries, iterations, and our numbers beside the paper's.

Functions take finished nodes (read through their ``outputs``, without importing AiiDA) or plain dicts and
return strings; they create no nodes. The comparisons themselves are :mod:`aiida_lisei.reporting.comparisons`.
"""

from __future__ import annotations

from typing import Any

from aiida_lisei.reporting.comparisons import sandwich_comparison
from aiida_lisei.science.guards import GUARDS

__all__ = (
    'format_band_gap_table',
    'format_guard_table',
    'format_iterations_table',
    'format_models_summary',
    'format_nucleation_summary',
    'format_paper_comparison',
    'format_table',
    'format_validation_comparison',
    'format_value',
)


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
    note = (
        'Note: with the SI lattice constant a(Li6PS5Cl) = 10.25 Å the lateral cell is 3 x 10.25 = 30.75 Å;\n'
        "the paper's 30.81 Å (30.814 Å in SI §3) implies a = 10.271 Å, hence its +0.16 % vs our strain of Li."
    )
    return (
        '\nLi|Li6PS5Cl|Li sandwich: paper (SI §3) vs this build\n'
        + format_table(['quantity', 'paper', 'ours'], sandwich_comparison(summary))
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
    guards = summary.get('guards')
    if guards is None:
        verdict = 'physics guards: not recorded with the trajectory'
    elif guards['passed']:
        verdict = 'physics guards of the run: all passed'
    else:
        verdict = f'physics guards of the run: FAILED ({", ".join(guards["failed"])}): NOT A RESULT'
    return f'\n{heading}\n{verdict}\n{format_table(headers, rows)}\n{notes}\n'


def format_guard_report(guards: dict[str, Any], heading: str) -> str:
    """Return ``heading``, the verdict (all passed, or the failed guards) and :func:`format_guard_table`."""
    verdict = 'all passed' if guards['passed'] else f'FAILED: {", ".join(guards["failed"])}'
    return f'{heading} {verdict}\n{format_guard_table(guards)}'


def format_guard_table(guards: dict[str, Any]) -> str:
    """Return the guards (a ``guards`` output's dict, ``science.guards.guards_summary``) as a text table:
    guard, value, limit, verdict, first failing step, the segment a stitched run's row comes from
    (``science.guards.combine_guard_summaries``: the first that failed it, else the worst), what was seen."""
    verdicts = {True: 'pass', False: 'FAIL', None: 'n/a'}
    n_segments = guards.get('n_segments')
    rows = []
    for definition in GUARDS:
        result = guards['guards'].get(definition.name)
        if result is None:
            continue
        segment = [] if n_segments is None else [f'{result["segment"]}/{n_segments}']
        rows.append(
            [
                definition.name,
                format_value(result['value'], definition.unit),
                format_value(result['threshold'], definition.unit),
                verdicts[result['passed']],
                '' if result['step'] is None else result['step'],
                *segment,
                result['detail'],
            ]
        )
    headers = ['guard', 'value', 'limit', 'verdict', 'step', *([] if n_segments is None else ['segment'])]
    return format_table([*headers, 'measured'], rows)


def format_validation_comparison(comparison: dict[str, Any]) -> str:
    """Return a validation's RMSEs beside the paper's (``comparison`` output of ``lisei.model_validation``):
    a table, the mode and every difference of the setup from the paper's."""
    quantities = (('rmse_e_per_atom', 'RMSE energy', 'meV/atom'), ('rmse_f', 'RMSE force', 'meV/Å'))
    rows = [
        [
            label,
            format_value(comparison[key]['ours'], unit),
            format_value(comparison[key]['paper'], unit),
            f'{comparison[key]["ratio"]:.2f}',
        ]
        for key, label, unit in quantities
    ]
    heading = 'Model validation: ours vs the paper (main text, Fig. 1d, e)' + (
        '' if comparison['mode'] == 'paper' else '  [DEMO: not the paper setup]'
    )
    differences = '\n'.join(f'- {line}' for line in comparison.get('differences', []))
    return f'{heading}\n{format_table(["quantity", "ours", "paper", "ours/paper"], rows)}\n{differences}'


def format_band_gap_table(comparison: dict[str, Any]) -> str:
    """Our band gaps (eV, with the level of theory) beside the paper's (``band_gap_comparison``)."""
    rows = []
    for row in comparison['rows']:
        verdict = (
            'not comparable (other method)' if not row['comparable'] else ('yes' if row['agrees'] else 'no')
        )
        rows.append(
            [
                row['system'],
                format_value(row['gap'], 'eV'),
                row['method'],
                format_value(row['paper_gap'], 'eV'),
                row['paper_method'] or '',
                verdict if row['paper_gap'] is not None else '',
            ]
        )
    return format_table(['system', 'gap', 'level of theory', 'paper', 'paper method', 'agrees'], rows)
