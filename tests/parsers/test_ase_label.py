"""Tests of ``AseLabelParser`` (``lisei.tblite``) on results written by the real engine."""

from __future__ import annotations

import json

import numpy as np
import pytest
from aiida import orm
from aiida.plugins import CalculationFactory, ParserFactory
from ase.build import bulk

from aiida_lisei.engines.ase_label import label_frames
from aiida_lisei.formats.frames_jsonl import read_ase_results
from aiida_lisei.parsers.ase_label import NO_RESULT

TbliteParser = ParserFactory('lisei.tblite')
TbliteCalculation = CalculationFactory('lisei.tblite')


def li16_frames() -> dict:
    """A perfect bcc Li16 frame and one with two atoms 0.2 Å apart (refused by the engine)."""
    good = bulk('Li', 'bcc', a=3.42, cubic=True).repeat(2)
    overlap = good.copy()
    overlap.positions[1] = overlap.positions[0] + [0.2, 0.0, 0.0]
    return {'good': good, 'overlap': overlap}


@pytest.fixture(scope='module')
def results_lines() -> list[str]:
    """JSON Lines of a real engine run on :func:`li16_frames` (header, 2 records, footer)."""
    return [json.dumps(record) for record in label_frames(list(li16_frames().items()), 'tblite', {})]


@pytest.fixture
def calc_job_node(generate_calc_job_node):
    """Return a factory: a stored ``lisei.tblite`` node with ``structures`` inputs and ``retrieved`` files."""

    def factory(files: dict[str, str], keys=('good', 'overlap'), exit_status: int | None = None):
        frames = li16_frames()
        inputs = {
            'structures': {key: orm.StructureData(ase=frames[key]) for key in keys},
            'system_label': orm.Str('li16'),
            'tags': orm.Dict({'source': 'test'}),
        }
        return generate_calc_job_node('lisei.tblite', inputs, files, exit_status=exit_status)

    return factory


def test_some_frames_failed(calc_job_node, results_lines) -> None:
    """One frame labelled, one refused: exit 0, ``labels`` with one frame, ``failed_frames``, a warning."""
    node = calc_job_node({'results.jsonl': '\n'.join(results_lines) + '\n'})
    results, calcfunction = TbliteParser.parse_from_node(node)

    assert calcfunction.is_finished_ok, calcfunction.exit_message
    labels = results['labels']
    assert labels.nframes == 1
    assert labels.level_of_theory['engine'] == 'tblite'
    assert labels.frame_provenance('li16', 0)['labelled_by'] == node.uuid
    assert labels.frame_provenance('li16', 0)['tags'] == {'source': 'test'}
    record = json.loads(results_lines[1])
    system = labels.get_system('li16')
    assert system.energies[0] == record['energy']
    volume = abs(np.linalg.det(system.cells[0]))
    np.testing.assert_array_equal(system.virials[0], -np.array(record['stress']) * volume)
    assert list(results['failed_frames'].keys()) == ['overlap']
    assert 'Å apart' in results['failed_frames']['overlap']
    logs = [log.message for log in orm.Log.collection.get_logs_for(node)]
    assert any('1 of 2 frames not labelled' in message for message in logs), logs


def test_all_frames_failed(calc_job_node, results_lines) -> None:
    """Only the refused frame in the batch: exit 410 with ``failed_frames`` and no ``labels``."""
    lines = [results_lines[0], results_lines[2], results_lines[3]]
    node = calc_job_node({'results.jsonl': '\n'.join(lines)}, keys=('overlap',))
    results, calcfunction = TbliteParser.parse_from_node(node)
    assert calcfunction.exit_status == TbliteCalculation.exit_codes.ERROR_ALL_FRAMES_FAILED.status == 410
    assert 'labels' not in results
    assert list(results['failed_frames'].keys()) == ['overlap']


@pytest.mark.parametrize(('exit_status', 'expected'), [(None, 312), (120, 400)])
def test_engine_stopped_early(calc_job_node, results_lines, exit_status, expected) -> None:
    """A job killed while writing frame 2: frame 1 kept, frame 2 reported; 312, or 400 on walltime."""
    text = '\n'.join(results_lines[:2]) + '\n' + results_lines[2][:20]
    node = calc_job_node({'results.jsonl': text}, exit_status=exit_status)
    results, calcfunction = TbliteParser.parse_from_node(node)
    assert calcfunction.exit_status == expected
    assert results['labels'].nframes == 1
    assert results['failed_frames'].get_dict() == {'overlap': NO_RESULT}


def test_output_missing_or_unreadable(calc_job_node, results_lines) -> None:
    """No results file: 302 (or the scheduler's code); a corrupt line inside the file: 310."""
    _, calcfunction = TbliteParser.parse_from_node(calc_job_node({'aiida.out': ''}))
    assert calcfunction.exit_status == TbliteCalculation.exit_codes.ERROR_OUTPUT_MISSING.status == 302
    _, calcfunction = TbliteParser.parse_from_node(calc_job_node({'aiida.out': ''}, exit_status=120))
    assert calcfunction.exit_status == 120
    corrupt = '\n'.join([results_lines[0], '{"type": "fra', results_lines[2]])
    _, calcfunction = TbliteParser.parse_from_node(calc_job_node({'results.jsonl': corrupt}))
    assert calcfunction.exit_status == TbliteCalculation.exit_codes.ERROR_OUTPUT_UNREADABLE.status == 310


def test_parse_results_function(results_lines) -> None:
    """The pure reader: header, frames, failures; a file without header is refused."""
    results = read_ase_results('\n'.join(results_lines))
    assert results.complete
    assert list(results.frames) == ['good']
    assert list(results.failures) == ['overlap']
    with pytest.raises(ValueError, match='no header'):
        read_ase_results('\n'.join(results_lines[1:]))
