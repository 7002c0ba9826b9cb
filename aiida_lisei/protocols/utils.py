"""Protocol machinery, in the shape of aiida-quantumespresso's ``ProtocolMixin``.

A protocol file ``<name>.yaml`` next to this module holds ``default_inputs``,
``default_protocol`` and ``protocols: {name: {description, ...overrides}}``.

Overrides are checked against the process's input ports and the protocol's own keys (as
aiida-quantumespresso's ``_validate_override_keys``): a key that matches neither raises ``ValueError``
naming the key and the closest match, so a mistyped key is never silently dropped. The content of a
``Dict`` port (e.g. ``parameters``) is left to that port's validator, and ``overrides`` of a child's
protocol to the child's own ``get_protocol_inputs``.
"""

from __future__ import annotations

import copy
import difflib
import pathlib
from collections.abc import Mapping
from typing import Any

import yaml

__all__ = ('ProtocolMixin', 'check_override_keys', 'recursive_merge')

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


#: Keys whose value is the overrides of a child process's protocol: checked by the child, not here.
CHILD_OVERRIDES_KEY = 'overrides'


def check_override_keys(
    overrides: Mapping[str, Any], ports: Any, protocol: Mapping[str, Any] | None, path: str = ''
) -> None:
    """Raise ``ValueError`` for a key of ``overrides`` that matches no port of ``ports`` (a port namespace,
    or ``None``) and no key of ``protocol`` (the protocol's inputs at this level), naming the closest."""
    for key, value in overrides.items():
        port = ports[key] if ports is not None and key in ports else None
        in_protocol = isinstance(protocol, Mapping) and key in protocol
        if port is None and not in_protocol and key != CHILD_OVERRIDES_KEY:
            known = sorted({*(ports or {}), *(protocol or {})})
            close = difflib.get_close_matches(key, known, n=1)
            if (
                ports is not None
                and ports.dynamic
                and not difflib.get_close_matches(key, known, n=1, cutoff=0.8)
            ):
                continue  # a free-form namespace takes any key that is not a near miss of a known one
            hint = f'did you mean `{path}{close[0]}`?' if close else f'known here: {known}'
            raise ValueError(f'override `{path}{key}` matches no input port and no protocol key: {hint}')
        if not isinstance(value, Mapping) or key == CHILD_OVERRIDES_KEY:
            continue
        if port is not None and not hasattr(port, 'ports'):
            continue  # a Dict port: its validator checks the content
        sub_protocol = protocol.get(key) if in_protocol else None
        check_override_keys(
            value, port, sub_protocol if isinstance(sub_protocol, Mapping) else None, f'{path}{key}.'
        )


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
        if overrides:
            check_override_keys(overrides, cls.spec().inputs, inputs)
        return recursive_merge(inputs, overrides or {})
