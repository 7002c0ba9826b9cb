"""The PLUMED input (plumed.dat) of the moving-restraint MD and PLUMED's COLVAR format.

One plumed.dat drives both routes of the MD launcher: an MD engine with PLUMED (``fix plumed``, or
PLUMED through LAMMPS ``fix external``) reads it directly; the fast route reads it back with
:func:`read_plumed_input` and evaluates the same CV with
:class:`aiida_lisei.science.fast_cv.FastCoordinationCV`, writing COLVAR in the same format
(:func:`colvar_fields`, :func:`write_colvar`) so that :func:`read_colvar` serves both.

Units: ``UNITS LENGTH=A ENERGY=eV`` (R_0, D_MAX, NL_CUTOFF in Å; KAPPA in eV per CV unit²);
PLUMED's time unit stays ps. Atom lists are 1-based serials (= LAMMPS atom ids = index + 1).
The file written::

    UNITS LENGTH=A ENERGY=eV
    cn_Li_Li: COORDINATION GROUPA=.. GROUPB=.. SWITCH={RATIONAL R_0=3.2 NN=6 MM=12 D_MAX=10.0}
    ...
    cv: COMBINE ARG=cn_Li_Li,cn_Li_S,.. COEFFICIENTS=w/n,.. PERIODIC=NO
    restraint: MOVINGRESTRAINT ARG=cv STEP0=.. AT0=.. KAPPA0=.. STEP1=.. AT1=.. KAPPA1=..
    PRINT ARG=cv,cn_Li_Li,..,restraint.cv_cntr,restraint.bias,restraint.work STRIDE=.. FILE=COLVAR FMT=%.12g

The normalisation ``n`` is folded into the COMBINE coefficients (PLUMED has no separate keyword)
and recorded in a ``# lisei: normalisation=n`` comment so that the reader recovers the weights.
"""

from __future__ import annotations

import io
import math
import os
import re
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

import numpy as np

from aiida_lisei.science.restraint_cv import (
    CoordinationCV,
    CoordinationTerm,
    MovingRestraint,
    check_neighbour_list,
)

__all__ = (
    'COLVAR_FMT',
    'CV_LABEL',
    'LAUNCHER_ERROR',
    'PLUMED_ENERGY_UNITS',
    'PLUMED_LENGTH_UNITS',
    'PLUMED_TIME_UNITS',
    'RESTRAINT_LABEL',
    'colvar_fields',
    'colvar_header',
    'colvar_line',
    'format_atom_list',
    'parse_atom_list',
    'read_colvar',
    'read_plumed_input',
    'term_action_label',
    'write_colvar',
    'write_plumed_input',
)

#: How ``lisei-lmp-plumed`` starts the line it writes to stderr when it stops before or outside LAMMPS.
LAUNCHER_ERROR = 'lisei-lmp-plumed: ERROR:'

#: PLUMED's MD-unit conversions for LAMMPS' ``units metal`` (as ``src/PLUMED/fix_plumed.cpp`` sets them):
#: eV → kJ/mol, Å → nm, ps → ps.
PLUMED_ENERGY_UNITS = 96.48530749925792
PLUMED_LENGTH_UNITS = 0.1
PLUMED_TIME_UNITS = 1.0

CV_LABEL = 'cv'
RESTRAINT_LABEL = 'restraint'
#: printf format of the COLVAR values (12 significant digits).
COLVAR_FMT = '%.12g'
_NORMALISATION_TAG = re.compile(r'^#\s*lisei:\s*normalisation\s*=\s*(\S+)\s*$')
_ACTION_LABEL = re.compile(r'^cn_([A-Za-z0-9]+(?:_[A-Za-z0-9]+)*)$')


def term_action_label(label: str) -> str:
    """PLUMED action label of a coordination term: ``'Li-S'`` -> ``'cn_Li_S'``."""
    return 'cn_' + label.replace('-', '_')


def _term_label(action_label: str) -> str:
    match = _ACTION_LABEL.match(action_label)
    if not match:
        raise ValueError(f'COORDINATION label {action_label!r} is not of the form cn_<A>_<B> (e.g. cn_Li_S)')
    return match.group(1).replace('_', '-')


def colvar_fields(cv: CoordinationCV) -> list[str]:
    """Field names of COLVAR in the order :func:`write_plumed_input`'s PRINT writes them."""
    return [
        'time',
        CV_LABEL,
        *(term_action_label(t.label) for t in cv.terms),
        f'{RESTRAINT_LABEL}.{CV_LABEL}_cntr',
        f'{RESTRAINT_LABEL}.bias',
        f'{RESTRAINT_LABEL}.work',
    ]


# --------------------------------------------------------------------------------------------------
# Atom lists
# --------------------------------------------------------------------------------------------------


def format_atom_list(indices: Iterable[int]) -> str:
    """1-based PLUMED atom list of 0-based ``indices``, consecutive runs as ranges (``1-48,50``)."""
    serials = [int(i) + 1 for i in indices]
    if not serials:
        raise ValueError('empty atom list')
    parts: list[str] = []
    start = prev = serials[0]
    for s in [*serials[1:], None]:
        if s is not None and s == prev + 1:
            prev = s
            continue
        parts.append(str(start) if start == prev else f'{start}-{prev}')
        if s is not None:
            start = prev = s
    return ','.join(parts)


def parse_atom_list(text: str) -> np.ndarray:
    """0-based indices of a PLUMED atom list of serials and ranges (``1-48,50``)."""
    indices: list[int] = []
    for part in text.split(','):
        match = re.fullmatch(r'(\d+)(?:-(\d+))?', part.strip())
        if not match:
            raise ValueError(
                f'cannot read atom list entry {part!r} (only serials and a-b ranges are understood)'
            )
        first = int(match.group(1))
        last = int(match.group(2)) if match.group(2) else first
        if first < 1 or last < first:
            raise ValueError(f'invalid atom range {part!r}')
        indices.extend(range(first - 1, last))
    return np.array(indices, dtype=np.int64)


# --------------------------------------------------------------------------------------------------
# Writer
# --------------------------------------------------------------------------------------------------


def _num(value: float) -> str:
    """Shortest text that reads back as the same float."""
    value = float(value)
    if not math.isfinite(value):
        raise ValueError(f'cannot write non-finite number {value} to plumed.dat')
    return repr(value)


def write_plumed_input(
    cv: CoordinationCV,
    restraint: MovingRestraint,
    *,
    stride: int,
    colvar_file: str = 'COLVAR',
    nl_stride: int | None = None,
    nl_cutoff: float | None = None,
) -> str:
    """Text of plumed.dat for ``cv`` under ``restraint``, printing COLVAR every ``stride`` steps.

    :param stride: PRINT stride (MD steps).
    :param colvar_file: name of the COLVAR file.
    :param nl_stride: if given, COORDINATION uses PLUMED's neighbour list updated every ``nl_stride``
        steps; pairs beyond ``nl_cutoff`` at an update are dropped until the next one (the restraint's
        defaults: :data:`~aiida_lisei.science.restraint_cv.PLUMED_NL_STRIDE`, proven exact).
    :param nl_cutoff: neighbour-list cut-off (Å), must exceed every ``d_max``; default
        ``d_max +`` :data:`~aiida_lisei.science.restraint_cv.PLUMED_NL_SKIN`.
    """
    if int(stride) != stride or stride < 1:
        raise ValueError(f'stride must be a positive integer, got {stride}')
    if not colvar_file or any(c.isspace() for c in colvar_file):
        raise ValueError(f'colvar_file must be a non-empty name without spaces, got {colvar_file!r}')
    nl_cutoff = check_neighbour_list(nl_stride, nl_cutoff, cv.d_max)

    lines = [
        '# plumed.dat written by aiida-lisei: moving restraint on a coordination-number CV',
        f'# lisei: normalisation={_num(cv.normalisation)}',
        'UNITS LENGTH=A ENERGY=eV',
    ]
    labels = []
    for term in cv.terms:
        label = term_action_label(term.label)
        labels.append(label)
        switch = (
            f'SWITCH={{RATIONAL R_0={_num(term.r_0)} NN={int(term.nn)} '
            f'MM={int(term.mm)} D_MAX={_num(term.d_max)}}}'
        )
        line = (
            f'{label}: COORDINATION GROUPA={format_atom_list(term.group_a)} '
            f'GROUPB={format_atom_list(term.group_b)} {switch}'
        )
        if nl_stride is not None:
            line += f' NLIST NL_CUTOFF={_num(nl_cutoff)} NL_STRIDE={int(nl_stride)}'
        lines.append(line)
    coefficients = ','.join(_num(t.weight / cv.normalisation) for t in cv.terms)
    lines.append(f'{CV_LABEL}: COMBINE ARG={",".join(labels)} COEFFICIENTS={coefficients} PERIODIC=NO')
    lines.append(
        f'{RESTRAINT_LABEL}: MOVINGRESTRAINT ARG={CV_LABEL} '
        f'STEP0={int(restraint.step_start)} AT0={_num(restraint.at_start)} KAPPA0={_num(restraint.kappa)} '
        f'STEP1={int(restraint.step_end)} AT1={_num(restraint.at_end)} KAPPA1={_num(restraint.kappa)}'
    )
    lines.append(
        f'PRINT ARG={",".join(colvar_fields(cv)[1:])} STRIDE={int(stride)} '
        f'FILE={colvar_file} FMT={COLVAR_FMT}'
    )
    return '\n'.join(lines) + '\n'


# --------------------------------------------------------------------------------------------------
# Reader
# --------------------------------------------------------------------------------------------------


def _tokens(line: str) -> list[str]:
    """Whitespace-separated tokens, keeping ``{...}`` groups (SWITCH) in one token."""
    tokens, current, depth = [], '', 0
    for char in line:
        if char == '{':
            depth += 1
        elif char == '}':
            depth -= 1
            if depth < 0:
                raise ValueError(f'unbalanced braces in {line!r}')
        if char.isspace() and depth == 0:
            if current:
                tokens.append(current)
            current = ''
        else:
            current += char
    if depth:
        raise ValueError(f'unbalanced braces in {line!r}')
    if current:
        tokens.append(current)
    return tokens


def _keywords(action: str, tokens: Sequence[str], allowed: set[str], flags: set[str] = frozenset()) -> dict:
    """``KEY=value`` tokens of one action as a dict; unknown keywords raise ValueError."""
    found: dict[str, str] = {}
    for token in tokens:
        key, sep, value = token.partition('=')
        if not sep:
            if key not in flags:
                raise ValueError(f'{action}: flag {key!r} is not understood (allowed: {sorted(flags)})')
            found[key] = ''
            continue
        if key not in allowed:
            raise ValueError(f'{action}: keyword {key!r} is not understood (allowed: {sorted(allowed)})')
        if key in found:
            raise ValueError(f'{action}: keyword {key} given twice')
        found[key] = value
    return found


def _require(action: str, keys: Mapping[str, str], *names: str) -> None:
    missing = [n for n in names if n not in keys]
    if missing:
        raise ValueError(f'{action}: missing keyword(s) {missing}')


def _float(action: str, key: str, text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise ValueError(f'{action}: {key}={text!r} is not a number') from None
    if not math.isfinite(value):
        raise ValueError(f'{action}: {key}={text!r} is not finite')
    return value


def _int(action: str, key: str, text: str) -> int:
    if not re.fullmatch(r'[+-]?\d+', text.strip()):
        raise ValueError(f'{action}: {key}={text!r} is not an integer')
    return int(text)


def _switch(label: str, text: str) -> tuple[float, int, int, float]:
    """``(R_0, NN, MM, D_MAX)`` of a ``{RATIONAL ...}`` switching function."""
    if not (text.startswith('{') and text.endswith('}')):
        raise ValueError(f'{label}: SWITCH must be a {{RATIONAL ...}} block, got {text!r}')
    tokens = text[1:-1].split()
    if not tokens or tokens[0] != 'RATIONAL':
        raise ValueError(f'{label}: only RATIONAL switching functions are understood, got {text!r}')
    keys = _keywords(f'{label} SWITCH', tokens[1:], {'R_0', 'NN', 'MM', 'D_MAX', 'D_0'})
    _require(f'{label} SWITCH', keys, 'R_0', 'D_MAX')
    if 'D_0' in keys and _float(label, 'D_0', keys['D_0']) != 0.0:
        raise ValueError(f'{label}: D_0 other than 0 is not understood')
    nn = _int(label, 'NN', keys.get('NN', '6'))
    mm = _int(label, 'MM', keys.get('MM', '0'))
    return (
        _float(label, 'R_0', keys['R_0']),
        nn,
        (2 * nn if mm == 0 else mm),
        _float(label, 'D_MAX', keys['D_MAX']),
    )


def read_plumed_input(text: str) -> tuple[CoordinationCV, MovingRestraint, int, str]:
    """Read plumed.dat as written by :func:`write_plumed_input`: ``(cv, restraint, stride, colvar_file)``.

    Understands ``UNITS`` (LENGTH=A, ENERGY=eV, TIME=ps), ``COORDINATION`` with GROUPA/GROUPB and a
    stretched RATIONAL ``SWITCH`` (NLIST allowed), one ``COMBINE``, one single-segment
    ``MOVINGRESTRAINT`` with constant KAPPA and one ``PRINT``; anything else raises ValueError.
    """
    normalisation: float | None = None
    units_seen = False
    coordinations: dict[str, tuple] = {}
    combine = restraint = printed = None
    for number, raw in enumerate(text.splitlines(), start=1):
        stripped = raw.strip()
        tag = _NORMALISATION_TAG.match(stripped)
        if tag:
            normalisation = _float('normalisation comment', 'normalisation', tag.group(1))
            continue
        line = raw.split('#', 1)[0].strip()
        if not line:
            continue
        if line.endswith('...') or line.startswith('...'):
            raise ValueError(f'line {number}: continuation lines ("...") are not understood')
        tokens = _tokens(line)
        label = None
        if tokens[0].endswith(':'):
            label, tokens = tokens[0][:-1], tokens[1:]
        if not tokens:
            raise ValueError(f'line {number}: a label without an action')
        directive, args = tokens[0], tokens[1:]
        labelled = [a for a in args if a.startswith('LABEL=')]
        if labelled:
            if label is not None or len(labelled) > 1:
                raise ValueError(f'line {number}: the action is labelled twice')
            label = labelled[0].partition('=')[2]
            args = [a for a in args if not a.startswith('LABEL=')]
        where = f'line {number} ({directive})'

        if directive == 'UNITS':
            keys = _keywords(where, args, {'LENGTH', 'ENERGY', 'TIME'})
            expected = {'LENGTH': 'A', 'ENERGY': 'eV', 'TIME': 'ps'}
            wrong = {k: v for k, v in keys.items() if v != expected[k]}
            if wrong or 'LENGTH' not in keys or 'ENERGY' not in keys:
                raise ValueError(
                    f'{where}: only UNITS LENGTH=A ENERGY=eV [TIME=ps] is understood, got {keys}'
                )
            if coordinations or combine or restraint or printed:
                raise ValueError(f'{where}: UNITS must come before the actions')
            units_seen = True
        elif directive == 'COORDINATION':
            if label is None:
                raise ValueError(f'{where}: COORDINATION needs a label cn_<A>_<B>')
            keys = _keywords(where, args, {'GROUPA', 'GROUPB', 'SWITCH', 'NL_CUTOFF', 'NL_STRIDE'}, {'NLIST'})
            _require(where, keys, 'GROUPA', 'GROUPB', 'SWITCH')
            if label in coordinations:
                raise ValueError(f'{where}: label {label} defined twice')
            r_0, nn, mm, d_max = _switch(label, keys['SWITCH'])
            coordinations[label] = (
                _term_label(label),
                parse_atom_list(keys['GROUPA']),
                parse_atom_list(keys['GROUPB']),
                r_0,
                d_max,
                nn,
                mm,
            )
        elif directive == 'COMBINE':
            if combine is not None:
                raise ValueError(f'{where}: only one COMBINE is understood')
            keys = _keywords(where, args, {'ARG', 'COEFFICIENTS', 'PERIODIC', 'POWERS'})
            _require(where, keys, 'ARG', 'COEFFICIENTS', 'PERIODIC')
            if keys['PERIODIC'] != 'NO':
                raise ValueError(f'{where}: only PERIODIC=NO is understood')
            args_ = keys['ARG'].split(',')
            coefficients = [_float(where, 'COEFFICIENTS', c) for c in keys['COEFFICIENTS'].split(',')]
            if len(coefficients) != len(args_):
                raise ValueError(f'{where}: {len(args_)} ARG but {len(coefficients)} COEFFICIENTS')
            if 'POWERS' in keys and any(_float(where, 'POWERS', p) != 1.0 for p in keys['POWERS'].split(',')):
                raise ValueError(f'{where}: POWERS other than 1 are not understood')
            combine = (label, args_, coefficients)
        elif directive == 'MOVINGRESTRAINT':
            if restraint is not None:
                raise ValueError(f'{where}: only one MOVINGRESTRAINT is understood')
            allowed = {'ARG', 'STEP0', 'AT0', 'KAPPA0', 'STEP1', 'AT1', 'KAPPA1', 'VERSE'}
            keys = _keywords(where, args, allowed)
            _require(where, keys, 'ARG', 'STEP0', 'AT0', 'KAPPA0', 'STEP1')
            if keys.get('VERSE', 'B') != 'B':
                raise ValueError(f'{where}: only VERSE=B (two-sided) is understood')
            kappa = _float(where, 'KAPPA0', keys['KAPPA0'])
            if 'KAPPA1' in keys and _float(where, 'KAPPA1', keys['KAPPA1']) != kappa:
                raise ValueError(f'{where}: KAPPA1 differs from KAPPA0 (a changing kappa is not understood)')
            at0 = _float(where, 'AT0', keys['AT0'])
            restraint = (
                label,
                keys['ARG'],
                MovingRestraint(
                    kappa=kappa,
                    at_start=at0,
                    at_end=_float(where, 'AT1', keys['AT1']) if 'AT1' in keys else at0,
                    step_start=_int(where, 'STEP0', keys['STEP0']),
                    step_end=_int(where, 'STEP1', keys['STEP1']),
                ),
            )
        elif directive == 'PRINT':
            if printed is not None:
                raise ValueError(f'{where}: only one PRINT is understood')
            keys = _keywords(where, args, {'ARG', 'STRIDE', 'FILE', 'FMT'})
            _require(where, keys, 'ARG', 'STRIDE', 'FILE')
            printed = (keys['ARG'].split(','), _int(where, 'STRIDE', keys['STRIDE']), keys['FILE'])
        else:
            raise ValueError(f'{where}: action {directive!r} is not understood')

    if not units_seen:
        raise ValueError('plumed.dat lacks UNITS LENGTH=A ENERGY=eV (lengths and KAPPA would be ambiguous)')
    if not coordinations or combine is None or restraint is None or printed is None:
        raise ValueError(
            'plumed.dat needs COORDINATION actions, one COMBINE, one MOVINGRESTRAINT and one PRINT'
        )
    combine_label, combine_args, coefficients = combine
    unknown = [a for a in combine_args if a not in coordinations]
    if unknown:
        raise ValueError(f'COMBINE uses {unknown}, which are not COORDINATION actions')
    unused = sorted(set(coordinations) - set(combine_args))
    if unused:
        raise ValueError(f'COORDINATION actions {unused} are not used by COMBINE')
    restraint_label, restraint_arg, moving = restraint
    if restraint_arg != combine_label:
        raise ValueError(f'MOVINGRESTRAINT acts on {restraint_arg!r}, not on the COMBINE {combine_label!r}')
    if printed[1] < 1:
        raise ValueError(f'PRINT STRIDE must be positive, got {printed[1]}')

    norm = 1.0 if normalisation is None else normalisation
    terms = []
    for name, coefficient in zip(combine_args, coefficients, strict=True):
        weight = coefficient * norm
        if abs(weight - round(weight)) <= 1e-9 * max(1.0, abs(weight)):
            weight = float(round(weight))
        if not math.isclose(weight / norm, coefficient, rel_tol=1e-12):
            raise ValueError(f'COMBINE coefficient of {name} is inconsistent with the normalisation {norm}')
        label, group_a, group_b, r_0, d_max, nn, mm = coordinations[name]
        terms.append(CoordinationTerm(label, weight, group_a, group_b, r_0, d_max, nn, mm))
    del restraint_label
    return CoordinationCV(tuple(terms), norm), moving, printed[1], printed[2]


# --------------------------------------------------------------------------------------------------
# COLVAR
# --------------------------------------------------------------------------------------------------


def colvar_header(fields: Sequence[str]) -> str:
    """The ``#! FIELDS`` line of a COLVAR file (with its newline)."""
    if not fields or any(not f or any(c.isspace() for c in f) for f in fields):
        raise ValueError(f'invalid COLVAR field names {list(fields)}')
    return '#! FIELDS ' + ' '.join(fields) + '\n'


def colvar_line(values: Sequence[float], fmt: str = COLVAR_FMT) -> str:
    """One COLVAR data line (with its newline), each value as PLUMED's PRINT writes it."""
    return ''.join(' ' + fmt % float(v) for v in values) + '\n'


def write_colvar(
    columns: Mapping[str, Sequence[float]], path: str | os.PathLike | None = None, *, fmt: str = COLVAR_FMT
) -> str:
    """COLVAR text of ``columns`` (field name -> values, in order); also written to ``path`` if given."""
    fields = list(columns)
    data = [np.asarray(columns[f], dtype=float).ravel() for f in fields]
    lengths = {len(d) for d in data}
    if len(lengths) > 1:
        raise ValueError(f'COLVAR columns have different lengths: {sorted(lengths)}')
    buffer = io.StringIO()
    buffer.write(colvar_header(fields))
    for row in zip(*data, strict=True):
        buffer.write(colvar_line(row, fmt))
    text = buffer.getvalue()
    if path is not None:
        Path(path).write_text(text)
    return text


def read_colvar(path_or_text: str | os.PathLike) -> dict[str, np.ndarray]:
    """Columns of a PLUMED COLVAR file (``#! FIELDS`` header) as ``{field: array}``.

    A :class:`~pathlib.Path` (any ``os.PathLike``) is read as a file; a string is always the text itself
    (never opened as a file name: a parser hands it the content of a retrieved file, whatever it holds).
    Repeated headers (restarts) must name the same fields; ``#! SET`` and other comment lines are skipped.
    Raises ``ValueError`` without a ``#! FIELDS`` header or on a malformed row.
    """
    text = Path(path_or_text).read_text() if isinstance(path_or_text, os.PathLike) else str(path_or_text)
    fields: list[str] | None = None
    rows: list[list[float]] = []
    for number, line in enumerate(text.splitlines(), start=1):
        stripped = line.strip()
        if stripped.startswith('#! FIELDS'):
            names = stripped.split()[2:]
            if fields is not None and names != fields:
                raise ValueError(f'line {number}: COLVAR header changes fields from {fields} to {names}')
            fields = names
            continue
        if not stripped or stripped.startswith('#'):
            continue
        if fields is None:
            raise ValueError(f'line {number}: data before the #! FIELDS header')
        values = stripped.split()
        if len(values) != len(fields):
            raise ValueError(f'line {number}: {len(values)} values for {len(fields)} fields')
        try:
            rows.append([float(v) for v in values])
        except ValueError:
            raise ValueError(f'line {number}: non-numeric COLVAR value in {stripped!r}') from None
    if fields is None:
        raise ValueError('no #! FIELDS header: not a PLUMED COLVAR file')
    table = np.array(rows, dtype=float).reshape(len(rows), len(fields))
    return {name: table[:, k].copy() for k, name in enumerate(fields)}
