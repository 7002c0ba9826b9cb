"""Checks shared by the ``check_*`` functions of every layer, and the port-validator wrapper.

The contract of the package: a ``check_*`` function returns its input completed with defaults and raises
``ValueError`` naming the offending key; a ``validate_*`` function (an AiiDA port validator) returns the
error message or ``None``. :func:`dict_port_validator` turns the first into the second. No AiiDA imports:
the wrapper only calls ``get_dict()`` on the port's value.
"""

from __future__ import annotations

import copy
import math
import re
from collections.abc import Callable, Mapping
from typing import Any

__all__ = (
    'check_code_plugin',
    'check_finite_geometry',
    'check_stride_within_run',
    'complete_parameters',
    'dict_port_validator',
    'finite_number',
    'fraction',
    'is_number',
    'port_validator',
    'positive_integer',
    'positive_number',
    'safe_label',
    'value_port_validator',
)

#: A label that is safe as a folder or file name and in a shell: letters, digits, ``_ . -``, no ``..``.
_SAFE_LABEL = re.compile(r'^[A-Za-z0-9][A-Za-z0-9_.-]*$')


def is_number(value: Any) -> bool:
    """Whether ``value`` is an ``int`` or ``float`` (not a ``bool``)."""
    return not isinstance(value, bool) and isinstance(value, int | float)


def positive_integer(value: Any, name: str, minimum: int = 1) -> int:
    """Return ``value`` if it is an integer >= ``minimum``; raise ``ValueError`` (``name`` as written)."""
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        wanted = 'a positive integer' if minimum == 1 else f'an integer >= {minimum}'
        raise ValueError(f'{name} must be {wanted}, got {value!r}')
    return value


def positive_number(value: Any, name: str) -> float:
    """Return ``value`` if it is a finite positive number; raise ``ValueError`` (``name`` as written)."""
    if not is_number(value) or not (math.isfinite(value) and value > 0):
        raise ValueError(f'{name} must be a positive number, got {value!r}')
    return value


def finite_number(value: Any, name: str) -> float:
    """Return ``value`` if it is a finite number; raise ``ValueError`` (``name`` as written)."""
    if not is_number(value) or not math.isfinite(value):
        raise ValueError(f'{name} must be a finite number, got {value!r}')
    return value


def fraction(value: Any, name: str, *, zero: bool = True) -> float:
    """Return ``value`` if it is a number in ``[0, 1]`` (``(0, 1]`` without ``zero``); else ``ValueError``."""
    if not is_number(value) or not (0 <= value <= 1 if zero else 0 < value <= 1):
        interval = '[0, 1]' if zero else '(0, 1]'
        raise ValueError(f'{name} must be a fraction in {interval}, got {value!r}')
    return value


def safe_label(value: Any, name: str) -> str:
    """Return ``value`` if it is a safe label (a folder or file name: letters, digits, ``_ . -``, no path,
    no spaces, no ``..``); raise ``ValueError`` saying how to write it."""
    if not isinstance(value, str) or not _SAFE_LABEL.match(value) or '..' in value:
        raise ValueError(
            f'{name} must be a plain name of letters, digits, `_`, `.` and `-` (no `/`, spaces or `..`), '
            f'got {value!r}: e.g. {re.sub(r"[^A-Za-z0-9_.-]+", "_", str(value)).strip("._") or "system"!r}'
        )
    return value


def check_finite_geometry(cell: Any, positions: Any, name: str, *, periodic: bool = True) -> None:
    """Raise ``ValueError`` if ``positions`` (Å) or ``cell`` (Å, rows) hold NaN/inf, or a periodic cell
    has (almost) no volume (< 1e-6 Å^3)."""
    import numpy as np

    cell, positions = np.asarray(cell, dtype=float), np.asarray(positions, dtype=float)
    if not np.isfinite(positions).all():
        rows = sorted({int(i) for i in np.argwhere(~np.isfinite(positions))[:, 0]})
        raise ValueError(
            f'{name}: positions of sites {rows[:10]} are NaN or infinite: give finite positions (Å)'
        )
    if not np.isfinite(cell).all():
        raise ValueError(f'{name}: the cell holds NaN or infinite values: give finite cell vectors (Å)')
    if periodic and abs(np.linalg.det(cell)) < 1e-6:
        raise ValueError(
            f'{name}: the cell has zero volume (vectors {cell.tolist()}): '
            'give three independent cell vectors (Å)'
        )


def check_stride_within_run(
    stride: Any, n_steps: Any, stride_name: str, steps_name: str = '`n_steps`'
) -> None:
    """Raise ``ValueError`` if the output ``stride`` is longer than the run (no frame after the first)."""
    if is_number(stride) and is_number(n_steps) and stride > n_steps:
        raise ValueError(
            f'{stride_name} = {stride} is longer than the run ({steps_name} = {n_steps}): nothing would be '
            f'written after step 0; lower {stride_name} or raise {steps_name}'
        )


def check_code_plugin(plugin: str | None, name: str, expected: tuple[str, ...]) -> None:
    """Raise ``ValueError`` if a code is missing (``plugin`` is ``None`` for no code) or its default CalcJob
    plugin is not one of ``expected``."""
    if plugin is None:
        raise ValueError(f'{name} is required: give a code of plugin {" or ".join(expected)}')
    if plugin not in expected:
        raise ValueError(
            f'{name} is a code of plugin `{plugin}`, not {" or ".join(f"`{e}`" for e in expected)}: give the '
            'right code (see `verdi code list`)'
        )


def complete_parameters(
    parameters: Mapping[str, Any], defaults: Mapping[str, Any], what: str = 'parameters'
) -> dict[str, Any]:
    """Return a copy of ``defaults`` updated with ``parameters``; raise ``ValueError`` on keys ``defaults``
    lacks."""
    unknown = sorted(set(parameters) - set(defaults))
    if unknown:
        raise ValueError(f'unknown {what} {unknown}; known: {sorted(defaults)}')
    return {**copy.deepcopy(dict(defaults)), **parameters}


def port_validator(
    check: Callable[[Any], Any], read: Callable[[Any], Any] = lambda node: node.get_dict()
) -> Callable[[Any, Any], str | None]:
    """Wrap ``check`` (raises ``ValueError`` on bad input) as a port validator of the value ``read`` from
    the port's node (default: ``get_dict()`` of a ``Dict``).

    The validator returns the error message instead of raising, as AiiDA's ports expect.
    """

    def validator(value: Any, _ctx: Any = None) -> str | None:
        try:
            check(read(value))
        except ValueError as exception:
            return str(exception)
        return None

    validator.__doc__ = f'Port validator: ``{getattr(check, "__name__", "check")}`` on the node.'
    return validator


def dict_port_validator(check: Callable[[dict[str, Any]], Any]) -> Callable[[Any, Any], str | None]:
    """:func:`port_validator` of ``check`` on the content of a ``Dict`` port."""
    return port_validator(check, lambda node: node.get_dict())


def value_port_validator(check: Callable[[Any], Any]) -> Callable[[Any, Any], str | None]:
    """:func:`port_validator` of ``check`` on the ``value`` of an ``Int``, ``Float``, ``Str``, ``Bool``."""
    return port_validator(check, lambda node: node.value)
