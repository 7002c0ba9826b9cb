"""Tests of the ``lisei-tblite-md`` / ``lisei-chgnet-md`` engine: parameters, relaxation, seeded MD, CLI."""

from __future__ import annotations

import json

import numpy as np
import pytest
from ase.build import bulk

from aiida_lisei.engines.ase_md import (
    DEFAULT_PARAMETERS,
    check_parameters,
    default_parameters,
    main_chgnet,
    main_tblite,
    run_task,
)
from aiida_lisei.formats.frames_jsonl import read_ase_results
from aiida_lisei.formats.frames_npz import write_structures


def li16(amplitude: float = 0.0, seed: int = 0):
    """bcc Li16 (a = 3.42 Å) displaced by seeded normal noise (Å)."""
    atoms = bulk('Li', 'bcc', a=3.42, cubic=True).repeat(2)
    atoms.positions += np.random.default_rng(seed).normal(scale=amplitude, size=atoms.positions.shape)
    return atoms


def li2s():
    """Antifluorite Li2S, conventional cell (Li8S4, a = 5.70 Å)."""
    return bulk('SLi2', 'fluorite', a=5.70, cubic=True)


def split(records: list[dict]) -> tuple[dict, list[dict], dict]:
    """Return header, frames and footer of a run."""
    return records[0], records[1:-1], records[-1]


def test_check_parameters() -> None:
    """Defaults fill every section; unknown keys, bad tasks and bad settings are refused."""
    complete = check_parameters({'task': 'relax', 'relax': {'fmax': 0.1}})
    assert complete['relax'] == {**DEFAULT_PARAMETERS['relax'], 'fmax': 0.1}
    assert complete['tblite']['method'] == 'GFN1-xTB'
    assert complete['md'] == DEFAULT_PARAMETERS['md']
    for parameters, message in (
        ({'task': 'nvt'}, 'task'),
        ({'thermostat': 'x'}, 'unknown parameters'),
        ({'md': {'pressure': 1}}, 'unknown md settings'),
        ({'md': {'n_steps': 2.5}}, 'md.n_steps'),
        ({'md': {'timestep': -1}}, 'md.timestep'),
        ({'relax': {'cell': 1}}, 'relax.cell'),
        ({'relax': {'optimizer': 'LBFGS'}}, 'optimizer'),
        ({'tblite': {'method': 'PBE'}}, 'method'),
        ({'chgnet': {'model': '0.3.0'}}, r"settings of \['chgnet'\] do not apply to a run with tblite"),
    ):
        with pytest.raises(ValueError, match=message):
            check_parameters(parameters)
    chgnet = check_parameters({'chgnet': {'model': '0.2.0'}}, 'chgnet')
    assert chgnet == {**default_parameters('chgnet'), 'chgnet': {'model': '0.2.0', 'threads': 1}}
    with pytest.raises(ValueError, match='unknown chgnet parameters'):
        check_parameters({'chgnet': {'method': 'GFN1-xTB'}}, 'chgnet')
    with pytest.raises(ValueError, match='unknown calculator'):
        check_parameters({}, 'mace')


def test_relax_positions_and_cell() -> None:
    """A rattled Li16 relaxes below fmax; frames at the stride and the last step; the cell moves too."""
    parameters = {'task': 'relax', 'relax': {'fmax': 0.1, 'max_steps': 30, 'stride': 2}}
    header, frames, footer = split(list(run_task(li16(0.05, seed=1), parameters)))
    assert header['program'] == 'lisei-tblite-md' and header['parameters']['relax']['fmax'] == 0.1
    assert header['calculator'] == 'tblite'
    assert footer['converged'] and footer['error'] is None
    steps = [frame['step'] for frame in frames]
    assert steps[:-1] == list(range(0, footer['steps'], 2)) and steps[-1] == footer['steps']
    assert frames[-1]['fmax'] < 0.1 < frames[0]['fmax']
    assert frames[-1]['energy'] < frames[0]['energy']

    cell = {**parameters, 'relax': {'fmax': 0.01, 'max_steps': 1, 'cell': True}}
    _, frames, footer = split(list(run_task(li16(), cell)))
    assert footer['steps'] == 1 and not footer['converged']  # perfect bcc: only the cell is off
    assert not np.allclose(frames[-1]['cell'], frames[0]['cell'])


def test_md_seeded_and_thermostatted() -> None:
    """Same seed: identical trajectory; other seed: different. Starts at exactly T with no net momentum;
    the Nosé-Hoover conserved energy drifts by < 1 meV/atom over 5 fs."""
    parameters = {'task': 'md', 'md': {'temperature': 300.0, 'n_steps': 5, 'stride': 2}}
    header, frames, footer = split(list(run_task(li16(), parameters, seed=42)))
    assert header['seed'] == 42 and footer == {**footer, 'steps': 5, 'error': None}
    assert [frame['step'] for frame in frames] == [0, 2, 4, 5]  # the last step is always written
    assert [frame['time'] for frame in frames] == [0.0, 2.0, 4.0, 5.0]
    assert frames[0]['temperature'] == pytest.approx(300.0)
    drift = abs(frames[-1]['conserved_energy'] - frames[0]['conserved_energy'])
    assert drift < 1e-3 * len(li16())
    assert 50 < frames[-1]['temperature'] < 900

    again = split(list(run_task(li16(), parameters, seed=42)))[1]
    # Same seed, same trajectory; tblite's OpenMP reductions may differ in the last bit between runs,
    # so compare to 1e-12 relative instead of bit for bit.
    for first, second in zip(frames, again, strict=True):
        np.testing.assert_allclose(first['positions'], second['positions'], rtol=1e-12, atol=1e-12)
        assert first['energy'] == pytest.approx(second['energy'], rel=1e-12)
    other = split(list(run_task(li16(), {**parameters, 'md': {'n_steps': 2, 'stride': 2}}, seed=43)))[1]
    assert other[1]['positions'] != frames[1]['positions']
    # zero total momentum: the mass-weighted mean displacement vanishes
    masses = li16().get_masses()
    shift = (np.array(frames[-1]['positions']) - np.array(frames[0]['positions'])) * masses[:, None]
    assert np.abs(shift.sum(axis=0) / masses.sum()).max() < 1e-8


def test_tblite_failure_ends_the_run() -> None:
    """An SCF that cannot converge in 1 cycle ends the run with an error footer and no frame."""
    records = list(run_task(li16(0.1), {'task': 'md', 'tblite': {'max_iterations': 1}}, seed=1))
    _, frames, footer = split(records)
    assert frames == [] and 'CalculationFailed' in footer['error']


def test_cli_output_reads_as_results(tmp_path) -> None:
    """The console script writes JSON Lines that the ``lisei-tblite`` results parser reads."""
    write_structures(tmp_path / 'structure.npz', {'structure': li2s()})
    (tmp_path / 'parameters.json').write_text(json.dumps({'task': 'md', 'md': {'n_steps': 2, 'stride': 1}}))
    output = tmp_path / 'trajectory.jsonl'
    args = ['--structure', str(tmp_path / 'structure.npz'), '--parameters', str(tmp_path / 'parameters.json')]
    assert main_tblite([*args, '--seed', '7', '--output', str(output)]) == 0
    results = read_ase_results(output.read_text())
    assert results.complete and list(results.frames) == ['step_000000', 'step_000001', 'step_000002']
    assert results.header['seed'] == 7


def test_chgnet_relax_and_md(tmp_path) -> None:
    """CHGNet: a rattled Li16 relaxes; a seeded NVT run conserves the Nosé-Hoover energy; its CLI runs."""
    relax = {'task': 'relax', 'relax': {'fmax': 0.05, 'max_steps': 50, 'stride': 5}}
    header, frames, footer = split(list(run_task(li16(0.05, seed=1), relax, calculator='chgnet')))
    assert header['program'] == 'lisei-chgnet-md' and header['calculator'] == 'chgnet'
    assert header['parameters']['chgnet'] == {'model': '0.3.0', 'threads': 1}
    assert footer['converged'] and footer['error'] is None
    assert frames[-1]['fmax'] < 0.05 < frames[0]['fmax'] and frames[-1]['energy'] < frames[0]['energy']

    write_structures(tmp_path / 'structure.npz', {'structure': li16()})
    md = {'task': 'md', 'md': {'temperature': 300.0, 'n_steps': 20, 'stride': 10}}
    (tmp_path / 'parameters.json').write_text(json.dumps(md))
    output = tmp_path / 'trajectory.jsonl'
    args = ['--structure', str(tmp_path / 'structure.npz'), '--parameters', str(tmp_path / 'parameters.json')]
    assert main_chgnet([*args, '--seed', '3', '--output', str(output)]) == 0
    results = read_ase_results(output.read_text())
    assert results.complete and results.footer['error'] is None and results.header['calculator'] == 'chgnet'
    frames = list(results.frames.values())
    assert [frame['step'] for frame in frames] == [0, 10, 20]
    assert frames[0]['temperature'] == pytest.approx(300.0)
    # float32 model: the conserved energy holds to a few meV over 20 fs of 16 atoms
    assert abs(frames[-1]['conserved_energy'] - frames[0]['conserved_energy']) < 1e-3 * len(li16())
