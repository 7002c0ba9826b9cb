"""Tests of ``EngineProbeParser`` (``lisei.probe``) on reports written by the real ``lisei-probe``."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from aiida import orm
from aiida.plugins import CalculationFactory, ParserFactory

from aiida_lisei.parsers.probe import parse_probe_report

EngineProbeParser = ParserFactory('lisei.probe')
EngineProbeCalculation = CalculationFactory('lisei.probe')

LISEI_PROBE = Path(sys.executable).parent / 'lisei-probe'


@pytest.fixture
def probe_report(tmp_path: Path) -> Path:
    """Run the real ``lisei-probe --output probe.json`` in ``tmp_path``; the PLUMED kernel made missing."""
    if not LISEI_PROBE.is_file():
        pytest.skip(f'{LISEI_PROBE} not found: install the package (pip install -e .)')
    output = tmp_path / 'probe.json'
    env = {**os.environ, 'PLUMED_KERNEL': str(tmp_path / 'no-such-kernel.so')}  # a missing engine, on purpose
    subprocess.run([str(LISEI_PROBE), '--output', str(output)], check=True, env=env, timeout=120)
    return output


@pytest.fixture
def calc_job_node(generate_calc_job_node):
    """Return a factory: a stored ``CalcJobNode`` of ``lisei.probe`` whose ``retrieved`` holds ``files``."""

    def factory(files: dict[str, bytes]) -> orm.CalcJobNode:
        options = {'report_filename': 'probe.json', 'parser_name': 'lisei.probe'}
        return generate_calc_job_node('lisei.probe', retrieved=files, options=options)

    return factory


def test_parse_real_report(calc_job_node, probe_report: Path) -> None:
    """A report of the real probe parses into ``engines``; the missing kernel is listed and logged."""
    node = calc_job_node({'probe.json': probe_report.read_bytes()})
    results, calcfunction = EngineProbeParser.parse_from_node(node)

    assert calcfunction.is_finished_ok, calcfunction.exit_message
    report = results['engines'].get_dict()
    expected = json.loads(probe_report.read_text())
    assert report['engines'] == expected['engines']
    assert report['host'] == expected['host']
    assert 'plumed-kernel' in report['missing']
    assert report['missing'] == sorted(name for name, e in expected['engines'].items() if not e['available'])
    logs = [log.message for log in orm.Log.collection.get_logs_for(node)]
    assert any('engines missing' in message and 'plumed-kernel' in message for message in logs), logs


def test_output_missing(calc_job_node) -> None:
    """No report in ``retrieved``: exit code 302."""
    node = calc_job_node({'aiida.out': b''})
    _, calcfunction = EngineProbeParser.parse_from_node(node)
    assert calcfunction.exit_status == EngineProbeCalculation.exit_codes.ERROR_OUTPUT_MISSING.status == 302
    assert 'probe.json' in calcfunction.exit_message


def test_output_truncated(calc_job_node, probe_report: Path) -> None:
    """A report cut in the middle (a killed job, a full disk): exit code 310."""
    text = probe_report.read_bytes()
    node = calc_job_node({'probe.json': text[: len(text) // 2]})
    results, calcfunction = EngineProbeParser.parse_from_node(node)
    assert calcfunction.exit_status == EngineProbeCalculation.exit_codes.ERROR_OUTPUT_UNREADABLE.status == 310
    assert 'engines' not in results


def test_scheduler_exit_code_kept(calc_job_node) -> None:
    """No report after a walltime kill: the scheduler's exit code 120 is kept, not replaced by 302."""
    node = calc_job_node({'aiida.out': b''})
    node.set_exit_status(120)
    _, calcfunction = EngineProbeParser.parse_from_node(node)
    assert (
        calcfunction.exit_status == EngineProbeCalculation.exit_codes.ERROR_SCHEDULER_OUT_OF_WALLTIME.status
    )


@pytest.mark.parametrize('text', ['[]', '{"host": "x"}', '{"engines": {"lmp": {"path": null}}}'])
def test_output_without_engines_table(calc_job_node, text: str) -> None:
    """Valid JSON that is not a probe report: exit code 310."""
    node = calc_job_node({'probe.json': text.encode()})
    _, calcfunction = EngineProbeParser.parse_from_node(node)
    assert calcfunction.exit_status == 310


def test_parse_probe_report_function() -> None:
    """The pure helper adds a sorted ``missing`` list."""
    report = parse_probe_report(
        '{"engines": {"b": {"available": false}, "a": {"available": false}, "c": {"available": true}}}'
    )
    assert report['missing'] == ['a', 'b']
