"""Tests of the plain-text tables in ``aiida_lisei.reporting``."""

from __future__ import annotations

from aiida_lisei.reporting.tables import format_guard_report, format_iterations_table, format_table
from aiida_lisei.science.guards import combine_guard_summaries


def test_format_table_aligns_columns():
    """Columns are padded to the widest cell; a rule follows the header."""
    lines = format_table(['a', 'long'], [[1, 'x'], [100, 'yy']]).splitlines()
    assert lines == ['a    long', '---  ----', '1    x   ', '100  yy  ']


def test_format_iterations_table_rows_per_temperature_and_pooled():
    """One row per iteration, system and temperature (sorted by value), then the system's pooled row."""
    stats = {
        'fractions': {'accurate': 0.5, 'candidate': 0.25, 'failed': 0.25},
        'n_selected': 2,
    }
    iterations = {
        'iteration_01': {
            'iteration': 1,
            'systems': {
                'bcc_lithium': {
                    'accurate': 0.6,
                    'candidate': 0.3,
                    'failed': 0.1,
                    'n_selected': 3,
                    'n_labelled': 3,
                    'temperatures': {'1000': stats, '300': {**stats, 'n_selected': 1}},
                }
            },
        }
    }
    lines = format_iterations_table(iterations).splitlines()
    assert lines[0].split()[-2:] == ['selected', 'labelled'] and 'accurate %' in lines[0]
    assert lines[2].split() == ['1', 'bcc_lithium', '300', '50.0', '25.0', '25.0', '1']
    assert lines[3].split() == ['1', 'bcc_lithium', '1000', '50.0', '25.0', '25.0', '2']
    assert lines[4].split() == ['1', 'bcc_lithium', 'all', '60.0', '30.0', '10.0', '3', '3']


def test_format_guard_report_says_the_verdict_first():
    """A heading, then all passed or the failed guards by name, then one row per guard."""
    guards = {
        'passed': False,
        'failed': ['temperature'],
        'guards': {
            'temperature': {
                'value': 412.0,
                'threshold': 30.0,
                'passed': False,
                'step': 40,
                'detail': 'mean T',
            },
            'pressure': {
                'value': 10.0,
                'threshold': 2500.0,
                'passed': True,
                'step': None,
                'detail': 'mean P',
            },
        },
    }
    report = format_guard_report(guards, 'guards <PK=1>')
    assert report.splitlines()[0] == 'guards <PK=1> FAILED: temperature'
    assert 'FAIL' in report and 'pass' in report and 'mean T' in report
    assert format_guard_report({**guards, 'passed': True, 'failed': []}, 'x').startswith('x all passed')


def test_guard_table_of_a_run_in_segments_names_each_rows_segment():
    """A stitched run's table (``combine_guard_summaries``) says which of its segments each row comes from."""

    def segment(value: float) -> dict:
        """One segment's passing ``deviation`` guard, its value ``value``."""
        result = {'value': value, 'threshold': 0.1, 'passed': True, 'step': None, 'detail': f'{value}'}
        return {'passed': True, 'failed': [], 'guards': {'deviation': result}, 'thresholds': {}}

    combined = combine_guard_summaries([segment(0.02), segment(0.05), segment(0.01)])
    lines = format_guard_report(combined, 'guards').splitlines()
    assert lines[1].split()[-2:] == ['segment', 'measured']
    assert lines[3].split()[-2:] == ['2/3', '0.05']
    single = format_guard_report(segment(0.02), 'guards').splitlines()
    assert 'segment' not in single[1]
