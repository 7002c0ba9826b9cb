"""``aiida-lisei check``."""

from __future__ import annotations

from aiida_lisei.cli import check
from aiida_lisei.engines.probe import ENGINES


def test_check_lists_engines(run_cli):
    """Every engine is listed; all the demo needs is installed on this machine, so the exit code is 0."""
    result = run_cli('check')
    assert result.exit_code == 0, result.output
    for name in ENGINES:
        assert name in result.output
    assert '✓' in result.output


def test_check_missing_engine(run_cli, monkeypatch):
    """A missing engine the demo needs: ✗, its install command, exit code 1."""
    report = {
        'host': 'somewhere',
        'python': '3.11',
        'engines': {
            'cp2k': {'available': False, 'path': None, 'how_to_install': ENGINES['cp2k']['install']},
            'jax': {'available': True, 'version': '0.10'},
        },
    }
    monkeypatch.setattr(check, 'probe_environment', lambda: report)
    result = run_cli('check')
    assert result.exit_code == 1
    assert '✗ cp2k' in result.output
    assert ENGINES['cp2k']['install'] in result.output
    assert 'the demo needs the missing engines: cp2k' in result.output


def test_check_unknown_computer(run_cli):
    result = run_cli('check', '--computer', 'no-such-computer')
    assert result.exit_code == 1
    assert 'no computer no-such-computer' in result.output
