"""AiiDA calcfunctions that build the four atomic models with provenance.

Each calcfunction takes the *complete* parameter dictionary (every default filled in, as
returned by :mod:`aiida_lisei.structures.parameters`), so that the node hash covers every value
and caching reuses a model only if it is really the same. The ``*_node`` helpers validate
first (nothing is stored for bad input) and then call the calcfunction. Each output is a
:class:`~aiida_lisei.data.structure.GroupedStructureData` with region groups, layer indices and
the builder's summary in the ``model_info`` attribute.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from aiida import orm
from aiida.engine import calcfunction

from aiida_lisei.data.structure import GroupedStructureData
from aiida_lisei.structures import builders
from aiida_lisei.structures.parameters import (
    ParameterError,
    validate_argyrodite_parameters,
    validate_bcc_lithium_parameters,
    validate_interface_parameters,
    validate_sandwich_parameters,
    validate_seed,
)

__all__ = (
    'MODEL_INFO_KEY',
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

#: Node attribute holding the builder's ``info`` dictionary.
MODEL_INFO_KEY = 'model_info'


def _to_node(model: builders.AtomicModel) -> GroupedStructureData:
    """Unstored ``GroupedStructureData`` with the model's groups, layers and ``info``."""
    node = GroupedStructureData(ase=model.atoms)
    node.set_atom_groups(model.groups, model.layers)
    node.base.attributes.set(MODEL_INFO_KEY, model.info)
    return node


def _complete(
    parameters: orm.Dict, validate: Callable[[Mapping[str, Any]], dict[str, Any]]
) -> dict[str, Any]:
    """Validated parameters; raise if ``parameters`` lacks any key (the hash must cover every value)."""
    given = parameters.get_dict()
    full = validate(given)
    missing = sorted(set(full) - set(given))
    if missing:
        raise ParameterError(f'parameters must be complete (use the *_node helpers); missing: {missing}')
    return full


@calcfunction
def build_bcc_lithium(parameters: orm.Dict) -> GroupedStructureData:
    """Bulk bcc Li (16 atoms with the defaults), group ``bulk_Li``."""
    return _to_node(builders.bcc_lithium(**_complete(parameters, validate_bcc_lithium_parameters)))


@calcfunction
def build_argyrodite(parameters: orm.Dict, seed: orm.Int) -> GroupedStructureData:
    """Ordered Li6PS5Cl cell (52 atoms), Li ordering by seeded Ewald minimisation."""
    params = _complete(parameters, validate_argyrodite_parameters)
    return _to_node(builders.argyrodite(seed=seed.value, **params))


@calcfunction
def build_interface(electrolyte: orm.StructureData, parameters: orm.Dict) -> GroupedStructureData:
    """Li(001)/Li6PS5Cl(001) slab (185 atoms with the defaults) on the given electrolyte cell."""
    params = _complete(parameters, validate_interface_parameters)
    return _to_node(builders.interface(electrolyte.get_ase(), **params))


@calcfunction
def build_sandwich(electrolyte: orm.StructureData, parameters: orm.Dict) -> GroupedStructureData:
    """Li|Li6PS5Cl|Li sandwich (4833 atoms with the defaults) from the given electrolyte cell."""
    params = _complete(parameters, validate_sandwich_parameters)
    return _to_node(builders.sandwich(electrolyte.get_ase(), **params))


def bcc_lithium_node(**params: Any) -> GroupedStructureData:
    """Validate ``params`` (see ``DEFAULTS['bcc_lithium']``) and run :func:`build_bcc_lithium`."""
    return build_bcc_lithium(orm.Dict(validate_bcc_lithium_parameters(params)))


def argyrodite_node(seed: int = 0, **params: Any) -> GroupedStructureData:
    """Validate ``seed`` and ``params`` (see ``DEFAULTS['argyrodite']``) and run :func:`build_argyrodite`."""
    full, seed = validate_argyrodite_parameters(params), validate_seed(seed)
    return build_argyrodite(orm.Dict(full), orm.Int(seed))


def _slab_node(
    builder: Callable[..., builders.AtomicModel],
    process: Callable[..., GroupedStructureData],
    validate: Callable[[Mapping[str, Any]], dict[str, Any]],
    electrolyte: orm.StructureData,
    params: Mapping[str, Any],
) -> GroupedStructureData:
    """Validate ``params``, build the model once without AiiDA (geometry checks), then run ``process``."""
    full = validate(params)
    builder(electrolyte.get_ase(), **full)  # raises ParameterError / ValueError before anything is stored
    return process(electrolyte, orm.Dict(full))


def interface_node(electrolyte: orm.StructureData, **params: Any) -> GroupedStructureData:
    """Check ``params`` (``DEFAULTS['interface']``) and the geometry; run :func:`build_interface`."""
    return _slab_node(builders.interface, build_interface, validate_interface_parameters, electrolyte, params)


def sandwich_node(electrolyte: orm.StructureData, **params: Any) -> GroupedStructureData:
    """Check ``params`` (``DEFAULTS['sandwich']``) and the geometry; run :func:`build_sandwich`."""
    return _slab_node(builders.sandwich, build_sandwich, validate_sandwich_parameters, electrolyte, params)


def summarize_model(structure: GroupedStructureData) -> dict[str, Any]:
    """Summary of a model: ``natoms``, ``group_counts``, ``cell_lengths`` (Å), ``lateral_strain`` (fraction or
    ``None`` for bulk models), ``layers`` (number of layers per layered group) and ``model``."""
    info = structure.base.attributes.get(MODEL_INFO_KEY, {})
    layers = structure.atom_layers
    layer_counts = {
        group: len(set(layers[indices].tolist()))
        for group, indices in structure.get_atom_groups().items()
        if layers[indices].min() > 0
    }
    return {
        'model': info.get('model'),
        'natoms': len(structure.sites),
        'group_counts': structure.group_counts,
        'cell_lengths': [float(x) for x in structure.cell_lengths],
        'lateral_strain': info.get('lateral_strain'),
        'layers': layer_counts,
    }
