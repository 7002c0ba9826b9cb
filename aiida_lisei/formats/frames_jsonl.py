"""The per-frame JSON Lines results of the package's engines: one writer, one reader (no AiiDA).

The ASE engines (``lisei-tblite``, ``lisei-chgnet``, their ``-md`` runners) and ``lisei-qeq`` write
one JSON object per line as they go, so that a
job killed half-way keeps what it computed: a ``header`` line, then one ``frame`` record (or a ``failure``
record with its ``reason``) per frame, then a ``footer`` line. The record fields of each engine are
documented in its module (:mod:`aiida_lisei.engines`); here the framing.

:func:`read_frame_records` reads any of them: a truncated last line (a killed job) is ignored, a missing
header or a bad line elsewhere raises ``ValueError``. :func:`read_ase_results` and
:func:`read_qeq_results` add the checks of each engine's records.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import IO, Any

__all__ = (
    'ASE_FRAME_FIELDS',
    'QEQ_FRAME_FIELDS',
    'FrameRecords',
    'read_ase_results',
    'read_frame_records',
    'read_qeq_results',
    'write_frame_records',
)

#: Fields every ``frame`` record of the ASE engines (``lisei-tblite``, ``lisei-chgnet``, ``-md``) has.
ASE_FRAME_FIELDS = frozenset({'key', 'energy', 'forces', 'stress'})
#: Fields every ``frame`` record of ``lisei-qeq`` has (keyed by ``index``).
QEQ_FRAME_FIELDS = frozenset(
    {'index', 'charges', 'chemical_potential', 'energy', 'iterations', 'residual', 'converged'}
)


@dataclass
class FrameRecords:
    """Content of a results file: ``header``, ``frames`` ``{key: record}``, ``failures`` ``{key: reason}``,
    the ``footer`` record (``None`` if the engine stopped before writing it) and ``complete``."""

    header: dict[str, Any]
    frames: dict[Any, dict[str, Any]] = field(default_factory=dict)
    failures: dict[Any, str] = field(default_factory=dict)
    footer: dict[str, Any] | None = None

    @property
    def complete(self) -> bool:
        """Whether the engine finished (wrote its footer line)."""
        return self.footer is not None


def write_frame_records(handle: IO[str], records: Iterable[dict[str, Any]]) -> None:
    """Write ``records`` to ``handle`` one JSON line each, flushed after every line."""
    for record in records:
        handle.write(json.dumps(record) + '\n')
        handle.flush()


def read_frame_records(
    text: str, *, header_field: str, frame_fields: Iterable[str], key: str = 'key'
) -> FrameRecords:
    """Read JSON Lines results: a header with ``header_field``, ``frame`` records with ``frame_fields``
    (keyed by their ``key`` field; an integer ``key`` such as ``index`` is converted), ``failure``
    records ``{key, reason}`` and a ``footer``.

    Raises ``ValueError`` if the header is missing, a line other than the last is not valid JSON, or a
    record is of no known kind.
    """
    lines = text.splitlines()
    records = []
    for number, line in enumerate(lines, start=1):
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            if number < len(lines):
                raise ValueError(f'line {number} is not valid JSON') from None
    if not records or records[0].get('type') != 'header' or header_field not in records[0]:
        raise ValueError(f'no header line with `{header_field}`')
    results = FrameRecords(header=records[0])
    frame_fields = frozenset(frame_fields) | {key}
    for record in records[1:]:
        kind = record.get('type')
        if kind == 'frame' and frame_fields <= set(record):
            results.frames[_key(record[key])] = record
        elif kind == 'failure' and {key, 'reason'} <= set(record):
            results.failures[_key(record[key])] = record['reason']
        elif kind == 'footer':
            results.footer = record
        else:
            raise ValueError(f'unexpected record {str(record)[:200]}')
    return results


def _key(value: Any) -> Any:
    """A record's key: integers (QEq frame indices) as ``int``, the rest as they are."""
    return int(value) if isinstance(value, int | float) and not isinstance(value, bool) else value


def read_ase_results(text: str) -> FrameRecords:
    """Read the results of an ASE engine (``lisei-tblite``, ``lisei-chgnet``, ``-md``: a ``calculator``)."""
    return read_frame_records(text, header_field='calculator', frame_fields=ASE_FRAME_FIELDS)


def read_qeq_results(text: str) -> FrameRecords:
    """Read the results of ``lisei-qeq`` (header with ``natoms``; one charge per atom in every frame)."""
    results = read_frame_records(text, header_field='natoms', frame_fields=QEQ_FRAME_FIELDS, key='index')
    natoms = int(results.header['natoms'])
    for index, record in results.frames.items():
        if len(record['charges']) != natoms:
            raise ValueError(f'frame {index} has {len(record["charges"])} charges for {natoms} atoms')
    return results
