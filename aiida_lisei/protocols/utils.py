"""Protocol machinery, in the shape of aiida-quantumespresso's ``ProtocolMixin``.

A protocol file ``<name>.yaml`` next to this module holds ``default_inputs``,
``default_protocol`` and ``protocols: {name: {description, ...overrides}}``.
"""

from __future__ import annotations

import copy
import pathlib
from typing import Any

import yaml

__all__ = ('ProtocolMixin', 'recursive_merge')

PROTOCOL_DIRECTORY = pathlib.Path(__file__).parent


def recursive_merge(left: dict[str, Any], right: dict[str, Any]) -> dict[str, Any]:
    """Return a copy of ``left`` updated recursively with ``right`` (``right`` wins)."""
    merged = copy.deepcopy(left)
    for key, value in right.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = recursive_merge(merged[key], value)
        else:
            merged[key] = copy.deepcopy(value)
    return merged


class ProtocolMixin:
    """Give a process class ``get_builder_from_protocol`` support from its YAML protocol file."""

    #: Stem of the YAML file in ``aiida_lisei/protocols`` (set by the process class).
    _protocol_file: str = ''

    @classmethod
    def get_protocol_filepath(cls) -> pathlib.Path:
        """Return the path of this process's protocol file."""
        if not cls._protocol_file:
            raise NotImplementedError(f'{cls.__name__} does not define `_protocol_file`')
        return PROTOCOL_DIRECTORY / f'{cls._protocol_file}.yaml'

    @classmethod
    def _load_protocol_file(cls) -> dict[str, Any]:
        with cls.get_protocol_filepath().open() as handle:
            return yaml.safe_load(handle)

    @classmethod
    def get_default_protocol(cls) -> str:
        """Return the name of the default protocol."""
        return cls._load_protocol_file()['default_protocol']

    @classmethod
    def get_available_protocols(cls) -> dict[str, dict[str, str]]:
        """Return ``{name: {'description': ...}}`` for every protocol."""
        data = cls._load_protocol_file()
        return {name: {'description': spec['description']} for name, spec in data['protocols'].items()}

    @classmethod
    def get_protocol_inputs(
        cls, protocol: str | None = None, overrides: dict[str, Any] | None = None
    ) -> dict[str, Any]:
        """Return the inputs of ``protocol`` (default protocol if ``None``) merged with ``overrides``."""
        data = cls._load_protocol_file()
        protocol = protocol or data['default_protocol']
        if protocol not in data['protocols']:
            raise ValueError(f'unknown protocol `{protocol}`; available: {sorted(data["protocols"])}')
        protocol_inputs = {k: v for k, v in data['protocols'][protocol].items() if k != 'description'}
        inputs = recursive_merge(data['default_inputs'], protocol_inputs)
        return recursive_merge(inputs, overrides or {})
