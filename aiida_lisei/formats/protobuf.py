"""Check that a file is a whole protocol-buffers message (a TensorFlow frozen graph) without TensorFlow.

No AiiDA and no TensorFlow here: :func:`frozen_graph_problem` walks the top-level fields of the wire format
(``GraphDef``: ``node`` 1, ``library`` 2, ``version`` 3, ``versions`` 4, ``debug_info`` 5) and says why the
bytes are not one: empty, a length that runs past the end (a truncated copy), an unknown field or wire type
(not a graph at all). A corrupted byte inside a node is not found; TensorFlow finds it when it loads.
"""

from __future__ import annotations

__all__ = ('frozen_graph_problem',)

#: Top-level fields of TensorFlow's ``GraphDef``.
GRAPH_DEF_FIELDS = frozenset({1, 2, 3, 4, 5})


def _varint(data: bytes, index: int) -> tuple[int, int]:
    """Return the varint at ``index`` and the index after it; ``ValueError`` past the end or over 10 bytes."""
    value = shift = 0
    for offset in range(10):
        if index + offset >= len(data):
            raise ValueError('a varint runs past the end of the file')
        byte = data[index + offset]
        value |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return value, index + offset + 1
        shift += 7
    raise ValueError('a varint longer than 10 bytes')


def frozen_graph_problem(data: bytes) -> str | None:
    """Return why ``data`` is not a whole frozen ``GraphDef`` (``None`` if its top-level fields are sound)."""
    if not data:
        return 'the file is empty (0 bytes)'
    index, nodes = 0, 0
    try:
        while index < len(data):
            key, index = _varint(data, index)
            number, wire = key >> 3, key & 7
            if number not in GRAPH_DEF_FIELDS:
                return f'field {number} at byte {index}: not a TensorFlow graph'
            if wire == 0:
                _, index = _varint(data, index)
            elif wire == 1:
                index += 8
            elif wire == 2:
                length, index = _varint(data, index)
                index += length
            elif wire == 5:
                index += 4
            else:
                return f'wire type {wire} at byte {index}: not a TensorFlow graph'
            nodes += number == 1
    except ValueError as exception:
        return f'{exception} (truncated?)'
    if index > len(data):
        return f'the last field runs {index - len(data)} bytes past the end of the file (truncated)'
    if not nodes:
        return 'no graph nodes'
    return None
