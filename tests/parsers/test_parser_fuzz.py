"""The parser contract under fuzzing: real outputs of every parser, mutated, never crash or pass truncated.

Each case is a real output of the engine behind a parser (the fixture folders of ``tests/fixtures/parsers``,
or a run of the engine in this module for the small Python engines: tblite labels and MD, QEq); each of
its parsed files is mutated in a fixed, seeded set of ways (:data:`MUTATIONS`) and the CalcJob node goes
through ``Parser.parse_from_node`` (outputs stored, as the engine would). The contract
(``docs/reliability.md``): no exception; either exit 0 with no NaN/inf in any output, or a non-zero exit
code the CalcJob documents; a truncated file never gives exit 0.
"""

from __future__ import annotations

import itertools
import json
import os
import random
import re
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from aiida import orm
from aiida.manage import get_manager
from aiida.plugins import CalculationFactory, ParserFactory

FIXTURES = Path(__file__).parents[1] / 'fixtures'
PARSERS = FIXTURES / 'parsers'

# -- mutations --------------------------------------------------------------------------------------------

#: A decimal number with a point (integers such as atom counts and steps are left to the other mutations).
_FLOAT = re.compile(rb'(?<![\w.])[-+]?\d+\.\d*(?:[eEdD][-+]?\d+)?(?![\w.])')


def _cut(fraction: float) -> Callable[[bytes, random.Random], bytes]:
    return lambda data, rng: data[: int(len(data) * fraction)]


def _lines(data: bytes) -> list[bytes]:
    return data.splitlines(keepends=True)


def _drop_last_line(data: bytes, rng: random.Random) -> bytes:
    lines = _lines(data.rstrip(b'\n'))
    return b''.join(lines[:-1])


def _duplicate_lines(data: bytes, rng: random.Random) -> bytes:
    lines = _lines(data)
    for index in sorted(rng.sample(range(len(lines)), k=min(3, len(lines))), reverse=True):
        lines.insert(index, lines[index])
    return b''.join(lines)


def _shuffle_lines(data: bytes, rng: random.Random) -> bytes:
    lines = [line.rstrip(b'\n') + b'\n' for line in _lines(data)]
    rng.shuffle(lines)
    return b''.join(lines)


def _random_bytes(data: bytes, rng: random.Random) -> bytes:
    buffer = bytearray(data)
    for _ in range(min(16, len(buffer))):
        buffer[rng.randrange(len(buffer))] = rng.randrange(256)
    return bytes(buffer)


def _insert(token: bytes) -> Callable[[bytes, random.Random], bytes]:
    def mutate(data: bytes, rng: random.Random) -> bytes:
        index = rng.randrange(len(data) + 1)
        return data[:index] + token + data[index:]

    return mutate


def _numbers(token: bytes, count: int = 5) -> Callable[[bytes, random.Random], bytes]:
    """Replace ``count`` random decimal numbers by ``token``."""

    def mutate(data: bytes, rng: random.Random) -> bytes:
        matches = list(_FLOAT.finditer(data))
        chosen = sorted(
            rng.sample(matches, k=min(count, len(matches))), key=lambda m: m.start(), reverse=True
        )
        for match in chosen:
            data = data[: match.start()] + token + data[match.end() :]
        return data

    return mutate


def _columns(add: bool) -> Callable[[bytes, random.Random], bytes]:
    """Drop the last field of, or add a field to, every line of three or more numeric-looking fields."""

    def mutate(data: bytes, rng: random.Random) -> bytes:
        out = []
        for line in _lines(data):
            fields = line.split()
            if len(fields) >= 3 and _FLOAT.fullmatch(fields[-1]):
                end = b'\r\n' if line.endswith(b'\r\n') else b'\n'
                fields = [*fields, b'1.5'] if add else fields[:-1]
                line = b' '.join(fields) + end
            out.append(line)
        return b''.join(out)

    return mutate


#: The fixed mutation set: name -> function of (content, seeded rng).
MUTATIONS: dict[str, Callable[[bytes, random.Random], bytes]] = {
    'empty': lambda data, rng: b'',
    'cut_10': _cut(0.1),
    'cut_50': _cut(0.5),
    'cut_90': _cut(0.9),
    'drop_last_line': _drop_last_line,
    'duplicate_lines': _duplicate_lines,
    'shuffle_lines': _shuffle_lines,
    'random_bytes': _random_bytes,
    'nul_bytes': _insert(b'\x00' * 64),
    'invalid_utf8': _insert(b'\xff\xfe\xc3('),
    'crlf': lambda data, rng: data.replace(b'\n', b'\r\n'),
    'nan': _numbers(b'NaN'),
    'inf': _numbers(b'-Infinity'),
    'overflow_1e400': _numbers(b'1e400'),
    'fortran_stars': _numbers(b'********'),
    'letters': _numbers(b'abc'),
    'column_dropped': _columns(add=False),
    'column_added': _columns(add=True),
    'garbage': lambda data, rng: rng.randbytes(max(64, len(data) // 4)),
}

#: Mutations that truncate the file: they must never give exit 0 on a file whose end the parser checks.
TRUNCATIONS = ('empty', 'cut_10', 'cut_50', 'cut_90', 'drop_last_line')


def mutate(data: bytes, mutation: str, key: str) -> bytes:
    """Apply ``mutation`` with a generator seeded by ``key`` (the same bytes on every run)."""
    return MUTATIONS[mutation](data, random.Random(zlib.crc32(key.encode())))


# -- cases: real outputs and the inputs of their CalcJob ---------------------------------------------------


@dataclass
class Case:
    """A real output of a parser's engine: the CalcJob's inputs, retrieved files, and the files to fuzz.

    ``fuzz`` maps each fuzzed file to whether a truncation of it must fail the parse (``True``: every one
    of :data:`TRUNCATIONS`, or a tuple of them).
    """

    entry_point: str
    parser: str
    inputs: Callable[[], dict[str, Any]]
    files: Callable[[], dict[str, bytes]]
    fuzz: dict[str, bool | tuple[str, ...]]
    options: dict[str, Any] = field(default_factory=dict)
    temporary: Callable[[], dict[str, bytes]] | None = None


def _folder(path: Path, names: tuple[str, ...]) -> Callable[[], dict[str, bytes]]:
    return lambda: {name: (path / name).read_bytes() for name in names}


@cache
def _training_set():
    from aiida_lisei.data.training_set import TrainingSetData

    folder = FIXTURES / 'dp_training_set'
    return TrainingSetData.from_deepmd_npy(sorted(p for p in folder.iterdir() if p.is_dir())).store()


@cache
def _cp2k_inputs(case: str) -> dict[str, Any]:
    from ase.io import read

    atoms = read(PARSERS / 'cp2k' / case / 'aiida.coords.xyz')
    return {'structure': orm.StructureData(ase=atoms).store()}


@cache
def _cp2k_md_inputs() -> dict[str, Any]:
    from ase.build import bulk

    atoms = bulk('Li', 'bcc', a=3.42, cubic=True).repeat(2)
    atoms.rattle(0.05, seed=1)
    record = json.loads((PARSERS / 'cp2k_md' / 'li16_md' / 'case.json').read_text())
    return {
        'structure': orm.StructureData(ase=atoms).store(),
        'parameters': orm.Dict(record['parameters']).store(),
    }


@cache
def _dp_test_inputs() -> dict[str, Any]:
    from fixture_models import parser_fixture_model

    test_set = _training_set()
    return {'test_set': test_set, 'model': parser_fixture_model(test_set.level_of_theory_key).store()}


@cache
def _dp_train_inputs() -> dict[str, Any]:
    from aiida.plugins import WorkflowFactory

    parameters = WorkflowFactory('lisei.dp_train').get_protocol_inputs('demo')['dp_train']['parameters']
    parameters['training'].update(numb_steps=60, disp_freq=10, save_freq=30)
    return {
        'training_set': _training_set(),
        'parameters': orm.Dict(parameters).store(),
        'seed': orm.Int(1).store(),
    }


@cache
def _exploration_inputs() -> dict[str, Any]:
    record = json.loads((PARSERS / 'exploration' / 'nvt_300k' / 'case.json').read_text())
    models = sorted((FIXTURES / 'models').glob('model_*.pb'))
    return {
        'parameters': orm.Dict(record['parameters']).store(),
        'seed': orm.Int(record['seed']).store(),
        'models': {f'm{i}': orm.SinglefileData(path).store() for i, path in enumerate(models, start=1)},
    }


@cache
def _restraint_inputs() -> dict[str, Any]:
    from aiida_lisei.structures.functions import argyrodite_node, sandwich_node

    record = json.loads((PARSERS / 'restraint_md' / 'default' / 'case.json').read_text())
    electrolyte = argyrodite_node(seed=20241125)
    structure = sandwich_node(
        electrolyte,
        electrolyte_repeat_xy=1,
        electrolyte_repeat_z=1,
        anode_layers=2,
        source_layers=2,
        vacuum=12.0,
    )
    return {
        'structure': structure,
        'model': orm.SinglefileData(FIXTURES / 'models' / 'model_1.pb').store(),
        'parameters': orm.Dict(record['parameters']).store(),
        'restraint': orm.Dict(record['restraint']).store(),
        'guards': orm.Dict(record['guards']).store(),
        'seed': orm.Int(record['seed']).store(),
    }


def _li16_frames() -> dict[str, Any]:
    from ase.build import bulk

    atoms = bulk('Li', 'bcc', a=3.42, cubic=True).repeat(2)
    rattled = atoms.copy()
    rattled.rattle(0.05, seed=3)
    return {'a': atoms, 'b': rattled}


@cache
def _tblite_run() -> tuple[dict[str, Any], dict[str, bytes]]:
    """A real ``lisei-tblite`` labelling of two Li16 frames (the engine's function, in this process)."""
    from aiida_lisei.engines.ase_label import label_frames

    frames = _li16_frames()
    lines = [json.dumps(record) for record in label_frames(list(frames.items()), 'tblite', {})]
    inputs = {
        'structures': {key: orm.StructureData(ase=atoms).store() for key, atoms in frames.items()},
        'system_label': orm.Str('bcc_li').store(),
    }
    return inputs, {'results.jsonl': ('\n'.join(lines) + '\n').encode()}


@cache
def _tblite_md_run() -> tuple[dict[str, Any], dict[str, bytes]]:
    """A real 2-step ``lisei-tblite-md`` run of Li16."""
    from aiida_lisei.data.structure import GroupedStructureData
    from aiida_lisei.engines.ase_md import run_task

    atoms = _li16_frames()['a']
    records = run_task(atoms, {'task': 'md', 'md': {'n_steps': 2, 'stride': 1}}, seed=9)
    lines = [json.dumps(record) for record in records]
    inputs = {'structure': GroupedStructureData(ase=atoms).store()}
    return inputs, {'trajectory.jsonl': ('\n'.join(lines) + '\n').encode()}


@cache
def _qeq_run() -> tuple[dict[str, Any], dict[str, bytes]]:
    """A real QEq solve (``lisei-qeq``'s function) of 2 of 3 frames of a 4-atom Li2SCl cell."""
    from aiida_lisei.data.structure import GroupedStructureData
    from aiida_lisei.engines.qeq_charges import solve_frames
    from aiida_lisei.formats.frames_npz import TrajectoryFrames

    symbols = ['Li', 'Li', 'S', 'Cl']
    positions = np.array([[0.0, 0.0, 0.0], [2.5, 0.0, 0.0], [0.0, 2.5, 0.0], [2.5, 2.5, 2.5]])
    cell = np.diag([5.0, 5.0, 5.0])
    noisy = positions + np.random.default_rng(5).normal(0.0, 0.05, (3, 4, 3))
    structure = GroupedStructureData(cell=cell.tolist())
    for symbol, position in zip(symbols, positions, strict=True):
        structure.append_atom(position=position.tolist(), symbols=symbol)
    structure.set_atom_groups(['anode_Li', 'electrolyte_Li', 'electrolyte_S', 'electrolyte_Cl'])
    trajectory = orm.TrajectoryData()
    trajectory.set_trajectory(
        symbols=symbols,
        positions=noisy,
        stepids=np.array([0, 10, 20]),
        cells=np.repeat(cell[None], 3, axis=0),
        times=np.array([0.0, 1.0, 2.0]),
        pbc=(True, True, True),
    )
    selected = [0, 2]
    frames = TrajectoryFrames(
        noisy[selected],
        np.repeat(cell[None], 2, axis=0),
        symbols,
        frame_indices=np.array(selected),
        stepids=np.array([0, 20]),
        times=np.array([0.0, 2.0]),
    )
    lines = [json.dumps(record) for record in solve_frames(frames, {'slab': False})]
    inputs = {
        'trajectory': trajectory.store(),
        'structure': structure.store(),
        'stride': orm.Int(2).store(),
        'parameters': orm.Dict({'slab': False}).store(),
    }
    return inputs, {'charges.jsonl': ('\n'.join(lines) + '\n').encode()}


@cache
def _probe_report() -> bytes:
    """The report of a real ``lisei-probe`` (the engine's function, in this process)."""
    import tempfile

    from aiida_lisei.engines.probe import main

    with tempfile.TemporaryDirectory() as folder:
        output = Path(folder) / 'probe.json'
        main(['--output', str(output)])
        return output.read_bytes()


_CP2K_OPTIONS = {'output_filename': 'aiida.out'}
#: CP2K's output ends with a banner whose last line is the wrapped path of the working folder: losing only
#: that line loses nothing, so the last-line truncation is not checked on it.
CP2K_END = ('empty', 'cut_10', 'cut_50', 'cut_90')
CASES: dict[str, Case] = {
    'cp2k_label': Case(
        'cp2k',
        'lisei.cp2k',
        lambda: _cp2k_inputs('li2s_xtb'),
        _folder(PARSERS / 'cp2k' / 'li2s_xtb', ('aiida.out',)),
        {'aiida.out': CP2K_END},
        {**_CP2K_OPTIONS, 'parser_name': 'lisei.cp2k'},
    ),
    'cp2k_md': Case(
        'cp2k',
        'lisei.cp2k.md',
        _cp2k_md_inputs,
        _folder(
            PARSERS / 'cp2k_md' / 'li16_md',
            (
                'aiida.out',
                'aiida-1.cell',
                'aiida-1.ener',
                'aiida-1.restart',
                'aiida-frc-1.xyz',
                'aiida-pos-1.xyz',
            ),
        ),
        {
            'aiida.out': CP2K_END,
            'aiida-pos-1.xyz': True,
            'aiida-frc-1.xyz': True,
            'aiida-1.cell': True,
            'aiida-1.restart': True,
            'aiida-1.ener': False,
        },
        {**_CP2K_OPTIONS, 'parser_name': 'lisei.cp2k.md'},
    ),
    'dp_test': Case(
        'lisei.dp_test',
        'lisei.dp_test',
        _dp_test_inputs,
        _folder(
            PARSERS / 'dp_test' / 'default', ('test.log', 'detail.e.out', 'detail.f.out', 'detail.v.out')
        ),
        {'test.log': True, 'detail.e.out': True, 'detail.f.out': True, 'detail.v.out': True},
    ),
    'dp_train': Case(
        'lisei.dp_train',
        'lisei.dp_train',
        _dp_train_inputs,
        _folder(
            PARSERS / 'dp_train' / 'default',
            ('train.log', 'lcurve.out', 'out.json', 'frozen_model.pb', 'freeze.log'),
        ),
        {'train.log': False, 'lcurve.out': True, 'out.json': False, 'frozen_model.pb': True},
    ),
    'exploration': Case(
        'lisei.exploration',
        'lisei.exploration',
        _exploration_inputs,
        _folder(
            PARSERS / 'exploration' / 'nvt_300k', ('log.lammps', 'model_devi.out', 'traj.dump', 'aiida.out')
        ),
        {'log.lammps': True, 'model_devi.out': True, 'traj.dump': True},
    ),
    'restraint_md': Case(
        'lisei.restraint_md',
        'lisei.restraint_md',
        _restraint_inputs,
        _folder(PARSERS / 'restraint_md' / 'default', ('log.lammps', 'COLVAR', 'traj.dump', 'aiida.out')),
        {'log.lammps': True, 'COLVAR': True, 'traj.dump': True},
        temporary=_folder(PARSERS / 'restraint_md' / 'default', ('restart.40',)),
    ),
    'tblite': Case(
        'lisei.tblite',
        'lisei.tblite',
        lambda: _tblite_run()[0],
        lambda: _tblite_run()[1],
        {'results.jsonl': True},
    ),
    'tblite_md': Case(
        'lisei.tblite_md',
        'lisei.tblite_md',
        lambda: _tblite_md_run()[0],
        lambda: _tblite_md_run()[1],
        {'trajectory.jsonl': True},
    ),
    'qeq': Case(
        'lisei.qeq', 'lisei.qeq', lambda: _qeq_run()[0], lambda: _qeq_run()[1], {'charges.jsonl': True}
    ),
    'probe': Case(
        'lisei.probe', 'lisei.probe', dict, lambda: {'probe.json': _probe_report()}, {'probe.json': True}
    ),
}


def _selection(everything: bool) -> list[tuple[str, str, str]]:
    """``(case, file, mutation)`` to run: all, or a fixed subset that covers every parser, every file and
    every mutation (round robin), with truncations of every file whose end is checked."""
    if everything:
        return [
            (case, name, mutation)
            for case, spec in CASES.items()
            for name in spec.fuzz
            for mutation in MUTATIONS
        ]
    others = [mutation for mutation in MUTATIONS if mutation not in TRUNCATIONS]
    random.Random(14).shuffle(others)
    cycle_others, cycle_cuts = itertools.cycle(others), itertools.cycle(TRUNCATIONS[1:])
    selected = []
    for case, spec in CASES.items():
        for position, (name, checked) in enumerate(spec.fuzz.items()):
            if position == 0:
                cuts = ['empty', 'cut_50', next(cycle_cuts)] if checked else ['empty']
                chosen = [*dict.fromkeys(cuts), *(next(cycle_others) for _ in range(2))]
            else:
                chosen = [next(cycle_cuts) if checked else 'empty', next(cycle_others)]
            selected += [(case, name, mutation) for mutation in chosen]
    return selected


#: ``LISEI_FUZZ_ALL=1`` runs every mutation of every file (about 490 parses, minutes).
PARAMETERS = [
    pytest.param(case, name, mutation, id=f'{case}-{name}-{mutation}')
    for case, name, mutation in _selection(bool(os.environ.get('LISEI_FUZZ_ALL')))
]


# -- the contract --------------------------------------------------------------------------------------------


def _nonfinite(node: orm.Data) -> list[str]:
    """Where ``node`` holds NaN/inf: array names of an ``ArrayData``, attribute keys of any node."""
    found = []
    if isinstance(node, orm.ArrayData):
        found += [
            name
            for name in node.get_arraynames()
            if node.get_array(name).dtype.kind in 'fc' and not np.isfinite(node.get_array(name)).all()
        ]
    text = json.dumps(node.base.attributes.all, default=str)
    if re.search(r'\bNaN\b|\bInfinity\b', text):
        found.append('attributes')
    return found


@pytest.fixture
def parse(generate_calc_job_node, tmp_path):
    """Return a function: parse ``case`` with ``files`` replacing its retrieved files; ``(results, node)``."""

    def run(name: str, files: dict[str, bytes], exit_status: int | None = None):
        case = CASES[name]
        retrieved = {**case.files(), **files}
        inputs = case.inputs()
        with get_manager().get_profile_storage().transaction():  # one commit per node, not one per link
            node = generate_calc_job_node(
                case.entry_point, inputs, retrieved, options=case.options, exit_status=exit_status
            )
        temporary = None
        if case.temporary is not None:
            temporary = tmp_path / 'temporary'
            temporary.mkdir(exist_ok=True)
            for filename, content in case.temporary().items():
                (temporary / filename).write_bytes(content)
        parser = ParserFactory(case.parser)
        results, calcfunction = parser.parse_from_node(
            node, store_provenance=False, retrieved_temporary_folder=temporary
        )
        return results, calcfunction, node

    return run


@pytest.mark.parametrize('case', list(CASES))
def test_the_real_output_succeeds(parse, case):
    """Unmutated, every case parses to exit 0 with finite outputs (each mutation is compared to success)."""
    results, calcfunction, _ = parse(case, {})
    assert calcfunction.is_finished_ok, (calcfunction.exit_status, calcfunction.exit_message)
    assert results
    assert not {label: bad for label, node in results.items() if (bad := _nonfinite(node))}


@pytest.mark.parametrize(('case', 'filename', 'mutation'), PARAMETERS)
def test_the_contract_holds_on_mutated_output(parse, case, filename, mutation):
    """No exception; exit 0 with finite outputs, or a documented non-zero exit code; no truncation passes."""
    spec = CASES[case]
    original = spec.files()[filename]
    mutated = mutate(original, mutation, f'{case}/{filename}/{mutation}')
    results, calcfunction, _ = parse(case, {filename: mutated})
    assert calcfunction.is_finished, f'{case}: {filename} {mutation}: the parser raised'
    assert not calcfunction.is_excepted
    status = calcfunction.exit_status
    documented = {code.status for code in CalculationFactory(spec.entry_point).spec().exit_codes.values()}
    if status:
        assert status in documented, f'{status} is not an exit code of {spec.entry_point}'
        return
    nonfinite = {label: bad for label, node in results.items() if (bad := _nonfinite(node))}
    assert not nonfinite, f'exit 0 with NaN/inf in {nonfinite}'
    checked = spec.fuzz[filename]
    checked = TRUNCATIONS if checked is True else checked or ()
    if mutation in checked and mutated != original:
        pytest.fail(f'{filename} truncated ({mutation}: {len(mutated)} of {len(original)} bytes) gave exit 0')


@pytest.mark.parametrize('case', ['restraint_md', 'exploration', 'qeq', 'probe'])
def test_the_scheduler_status_survives_a_parse_failure(parse, case):
    """Garbage in the main file of a job the scheduler killed on its walltime: the scheduler's 120 (or the
    CalcJob's own walltime code 400) is kept, never replaced by a parse failure."""
    name = next(iter(CASES[case].fuzz))
    _, calcfunction, _ = parse(case, {name: b'\xff\xfe garbage \x00 ****'}, exit_status=120)
    assert calcfunction.exit_status in (120, 400), calcfunction.exit_message


def test_nan_in_a_dict_is_an_exit_code_not_a_crash(parse):
    """A NaN in a report (AiiDA cannot store it in a ``Dict``): 313, the value stored as ``None``."""
    report = json.loads(_probe_report())
    report['nan_value'] = float('nan')
    results, calcfunction, _ = parse('probe', {'probe.json': json.dumps(report).encode()})
    assert calcfunction.exit_status == 313, calcfunction.exit_message
    assert '`engines` nan_value' in calcfunction.exit_message
    assert results['engines']['nan_value'] is None


def test_pure_readers_refuse_what_they_cannot_read():
    """The readers the parsers share: Fortran overflow fields, truncated or foreign frozen models."""
    from aiida_lisei.formats.cp2k import Cp2kOutputError, fortran_float
    from aiida_lisei.formats.protobuf import frozen_graph_problem

    assert fortran_float('-1.5D-03') == pytest.approx(-1.5e-3)
    with pytest.raises(Cp2kOutputError, match='Fortran overflow'):
        fortran_float('********')
    model = (PARSERS / 'dp_train' / 'default' / 'frozen_model.pb').read_bytes()
    assert frozen_graph_problem(model) is None
    assert 'empty' in frozen_graph_problem(b'')
    assert 'truncated' in frozen_graph_problem(model[: len(model) // 2])
    assert 'not a TensorFlow graph' in frozen_graph_problem(random.Random(1).randbytes(1000))
