"""Port validators built from the pure ``check_*`` functions of the engines and structure builders."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from aiida import orm

__all__ = ('dict_port_validator',)


def dict_port_validator(check: Callable[[dict[str, Any]], Any]) -> Callable[[orm.Dict, Any], str | None]:
    """Wrap ``check`` (raises ``ValueError`` on bad input) as a port validator of a ``Dict``.

    The validator returns the error message instead of raising, as AiiDA's ports expect.
    """

    def validator(value: orm.Dict, _ctx: Any = None) -> str | None:
        try:
            check(value.get_dict())
        except ValueError as exception:
            return str(exception)
        return None

    validator.__doc__ = f'Port validator: ``{getattr(check, "__name__", "check")}`` on the Dict.'
    return validator
