"""The four atomic models: bulk bcc Li, ordered Li6PS5Cl, the Li/Li6PS5Cl interface, the sandwich.

:mod:`.builders` and :mod:`.parameters` are pure ASE/NumPy; the AiiDA calcfunctions and
helpers of :mod:`.functions` are loaded on first access, so importing the pure builders does not
import AiiDA.
"""

from __future__ import annotations

import importlib
from typing import Any

from aiida_lisei.structures.builders import AtomicModel, argyrodite, bcc_lithium, interface, sandwich
from aiida_lisei.structures.parameters import DEFAULTS, ParameterError

_FUNCTIONS = (
    'argyrodite_node',
    'bcc_lithium_node',
    'build_argyrodite',
    'build_bcc_lithium',
    'build_interface',
    'build_sandwich',
    'interface_node',
    'sandwich_node',
    'summarize_model',
)

__all__ = (
    'DEFAULTS',
    'AtomicModel',
    'ParameterError',
    'argyrodite',
    'bcc_lithium',
    'interface',
    'sandwich',
    *_FUNCTIONS,
)


def __getattr__(name: str) -> Any:
    """Load the AiiDA-dependent names of :mod:`.functions` lazily."""
    if name in _FUNCTIONS:
        return getattr(importlib.import_module('aiida_lisei.structures.functions'), name)
    raise AttributeError(f'module {__name__!r} has no attribute {name!r}')
