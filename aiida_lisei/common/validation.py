"""Checks shared by the ``check_*`` functions of every layer, and the port-validator wrapper.

The contract of the package: a ``check_*`` function returns its input completed with defaults and raises
``ValueError`` naming the offending key; a ``validate_*`` function (an AiiDA port validator) returns the
error message or ``None``. :func:`dict_port_validator` turns the first into the second. No AiiDA imports:
the wrapper only calls ``get_dict()`` on the port's value.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable, Mapping
from typing import Any

__all__ = (
    'complete_parameters',
    'dict_port_validator',
    'is_number',
    'port_validator',
    'positive_integer',
    'positive_number',
    'value_port_validator',
)


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
