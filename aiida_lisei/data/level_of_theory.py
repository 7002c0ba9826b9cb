"""Level of theory of labelled frames: a small canonical dict and a hashable key.

Energies and forces from different engines are not interchangeable even for the
"same" method (CP2K's GFN1-xTB and tblite's differ by eV per cell; VASP-PBE/PAW and
CP2K-PBE/GTH differ too), so every training frame carries its level of theory and
frames at different levels are never mixed.

A level is a JSON-like dict with at least ``engine`` and ``method``, e.g.
``{'engine': 'cp2k', 'method': 'GFN1-xTB', 'version': '2023.1', 'settings': {...}}``
or ``{'engine': 'vasp', 'method': 'PBE', 'encut': 600, 'ediff': 1e-6}``.
No AiiDA imports here.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Mapping
from typing import Any

__all__ = ('LevelOfTheoryError', 'canonical_level_of_theory', 'check_same_level', 'level_of_theory_key')

_REQUIRED = ('engine', 'method')


class LevelOfTheoryError(ValueError):
    """Frames labelled at different levels of theory were combined."""


def _canonical_value(value: Any, where: str) -> Any:
    """Return ``value`` as plain JSON types; integral floats become ints (600.0 == 600)."""
    if isinstance(value, Mapping):
        if not all(isinstance(key, str) for key in value):
            raise TypeError(f'level of theory `{where}`: keys must be strings')
        return {key: _canonical_value(value[key], f'{where}.{key}') for key in sorted(value)}
    if isinstance(value, list | tuple):
        return [_canonical_value(item, where) for item in value]
    if hasattr(value, 'item') and not isinstance(value, str):  # numpy scalar
        value = value.item()
    if isinstance(value, bool) or value is None or isinstance(value, str | int):
        return value
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ValueError(f'level of theory `{where}`: non-finite value {value}')
        return int(value) if value.is_integer() else value
    raise TypeError(f'level of theory `{where}`: unsupported type {type(value).__name__}')


def canonical_level_of_theory(level: Mapping[str, Any]) -> dict[str, Any]:
    """Validate ``level`` and return it with sorted keys, plain JSON values and a lower-case engine."""
    if not isinstance(level, Mapping):
        raise TypeError(f'level of theory must be a dict, got {type(level).__name__}')
    missing = [key for key in _REQUIRED if not isinstance(level.get(key), str) or not level.get(key)]
    if missing:
        raise ValueError(f'level of theory {dict(level)} lacks the string key(s) {missing}')
    canonical = _canonical_value(level, 'level')
    canonical['engine'] = canonical['engine'].lower()
    return canonical


def level_of_theory_key(level: Mapping[str, Any]) -> str:
    """Return a short, stable, hashable key: ``'<engine>/<method>/<sha256 of the canonical JSON>[:16]'``."""
    canonical = canonical_level_of_theory(level)
    digest = hashlib.sha256(json.dumps(canonical, sort_keys=True, separators=(',', ':')).encode()).hexdigest()
    return f'{canonical["engine"]}/{canonical["method"]}/{digest[:16]}'


def check_same_level(first: Mapping[str, Any], second: Mapping[str, Any]) -> dict[str, Any]:
    """Return the canonical level if both are the same, else raise :class:`LevelOfTheoryError` naming both."""
    canonical_first, canonical_second = canonical_level_of_theory(first), canonical_level_of_theory(second)
    if canonical_first != canonical_second:
        raise LevelOfTheoryError(
            'cannot mix frames labelled at different levels of theory: '
            f'{level_of_theory_key(canonical_first)} {canonical_first} vs '
            f'{level_of_theory_key(canonical_second)} {canonical_second}'
        )
    return canonical_first
