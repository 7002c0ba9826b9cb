"""Defaults and validation of the atomic-model parameters (no AiiDA imports).

Every ``validate_<model>_parameters`` returns the *complete* parameter dictionary (defaults
filled in, types normalised) or raises :class:`ParameterError` naming the offending
parameter and its allowed range. Lengths are in Å.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable, Mapping
from typing import Any

__all__ = (
    'DEFAULTS',
    'ELECTROLYTE_SPECIES',
    'FORMAL_CHARGES',
    'MIN_INTERATOMIC_DISTANCE',
    'ParameterError',
    'sandwich_default_interface_gap',
    'validate_argyrodite_parameters',
    'validate_bcc_lithium_parameters',
    'validate_interface_parameters',
    'validate_parameters',
    'validate_sandwich_parameters',
    'validate_seed',
)

#: Species an electrolyte cell may contain (Li6PS5Cl).
ELECTROLYTE_SPECIES: tuple[str, ...] = ('Li', 'P', 'S', 'Cl')

#: Smallest interatomic distance (Å) accepted across an interface or the vacuum of a built
#: model; the shortest bond of the system (P-S) is 2.05 Å, Li-Li in bcc Li 2.96 Å.
MIN_INTERATOMIC_DISTANCE = 1.2

#: The SI's sandwich (30.81 x 30.81 x 150.42 Å³): 16 + 9 Li layers, 6 electrolyte cells, 40 Å vacuum.
_SI_CELL_Z = 150.42
_SI_VACUUM = 40.0


def sandwich_default_interface_gap(
    cell_z: float = _SI_CELL_Z,
    vacuum: float = _SI_VACUUM,
    anode_layers: int = 16,
    source_layers: int = 9,
    electrolyte_repeat_z: int = 6,
    li_lattice_constant: float = 3.42,
    electrolyte_lattice_constant: float = 10.25,
) -> float:
    """Extra separation (Å) of each of the two Li/electrolyte interfaces that reproduces ``cell_z``.

    The SI gives Lz = 150.42 Å and 40 Å vacuum but no interface separation:
    ``(150.42 - 25 x 3.42/2 - 6 x 10.25 - 40) / 2 = 6.17 / 2 = 3.085`` Å.
    """
    slabs = (anode_layers + source_layers) * li_lattice_constant / 2 + electrolyte_repeat_z * (
        electrolyte_lattice_constant
    )
    return (cell_z - slabs - vacuum) / 2


_DEFAULT_GAP = round(sandwich_default_interface_gap(), 6)
_INTERFACE_GAP = 1.0

#: Default formal charges (e) used for the Madelung ordering of Li on 48h.
FORMAL_CHARGES: dict[str, float] = {'Li': 1.0, 'P': 5.0, 'S': -2.0, 'Cl': -1.0}

DEFAULTS: dict[str, dict[str, Any]] = {
    'bcc_lithium': {'lattice_constant': 3.42, 'repeat': 2},
    'argyrodite': {
        'lattice_constant': 10.25,
        's16e_x': 0.6155,
        'li48h_x': 0.18,
        'li48h_z': 0.02,
        'n_starts': 128,
        'formal_charges': FORMAL_CHARGES,
    },
    'interface': {
        'li_lattice_constant': 3.42,
        'electrolyte_repeat_xy': 1,
        'electrolyte_repeat_z': 2,
        'anode_layers': 9,
        'vacuum': 15.0,
        # The paper gives no separation for the 185-atom interface (which is relaxed before
        # labelling): 1.0 Å puts the closest Li-electrolyte pair at ~2.5 Å, a Li-S bond length.
        'interface_gap': _INTERFACE_GAP,
    },
    'sandwich': {
        'li_lattice_constant': 3.42,
        'electrolyte_repeat_xy': 3,
        'electrolyte_repeat_z': 6,
        'anode_layers': 16,
        'source_layers': 9,
        'vacuum': _SI_VACUUM,
        'interface_gap': _DEFAULT_GAP,
    },
}


class ParameterError(ValueError):
    """A model parameter is unknown, of the wrong type or outside its allowed range."""


def _integer(name: str, low: int, high: int) -> Callable[[Any], int]:
    def check(value: Any) -> int:
        if isinstance(value, bool) or not isinstance(value, int | float) or int(value) != value:
            raise ParameterError(f'{name} must be an integer in [{low}, {high}], got {value!r}')
        if not low <= int(value) <= high:
            raise ParameterError(f'{name} must be an integer in [{low}, {high}], got {value!r}')
        return int(value)

    return check


def _real(name: str, low: float, high: float) -> Callable[[Any], float]:
    def check(value: Any) -> float:
        if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
            raise ParameterError(f'{name} must be a number in [{low}, {high}], got {value!r}')
        if not low <= float(value) <= high:
            raise ParameterError(f'{name} must be a number in [{low}, {high}], got {value!r}')
        return float(value)

    return check


def _charges(name: str) -> Callable[[Any], dict[str, float]]:
    def check(value: Any) -> dict[str, float]:
        if not isinstance(value, Mapping):
            raise ParameterError(f'{name} must be a mapping {{species: charge}}, got {value!r}')
        unknown = sorted(set(value) - set(ELECTROLYTE_SPECIES))
        missing = sorted(set(ELECTROLYTE_SPECIES) - set(value))
        if unknown or missing:
            raise ParameterError(
                f'{name} must give a charge for exactly the species {list(ELECTROLYTE_SPECIES)}; '
                f'unknown: {unknown}, missing: {missing}'
            )
        charges = {species: _real(f'{name}[{species}]', -8.0, 8.0)(value[species]) for species in value}
        total = 24 * charges['Li'] + 4 * charges['P'] + 20 * charges['S'] + 4 * charges['Cl']
        if abs(total) > 1e-9:
            raise ParameterError(f'{name} must make Li24P4S20Cl4 neutral, total charge is {total:+g} e')
        return {species: charges[species] for species in ELECTROLYTE_SPECIES}

    return check


_LI_A = (3.0, 4.0)
_CHECKS: dict[str, dict[str, Callable[[Any], Any]]] = {
    'bcc_lithium': {
        'lattice_constant': _real('lattice_constant', *_LI_A),
        'repeat': _integer('repeat', 1, 20),
    },
    'argyrodite': {
        'lattice_constant': _real('lattice_constant', 9.5, 11.0),
        's16e_x': _real('s16e_x', 0.58, 0.66),
        'li48h_x': _real('li48h_x', 0.15, 0.22),
        'li48h_z': _real('li48h_z', 0.01, 0.06),
        'n_starts': _integer('n_starts', 1, 10000),
        'formal_charges': _charges('formal_charges'),
    },
    'interface': {
        'li_lattice_constant': _real('li_lattice_constant', *_LI_A),
        'electrolyte_repeat_xy': _integer('electrolyte_repeat_xy', 1, 20),
        'electrolyte_repeat_z': _integer('electrolyte_repeat_z', 1, 50),
        'anode_layers': _integer('anode_layers', 1, 200),
        'vacuum': _real('vacuum', 0.0, 500.0),
        'interface_gap': _real('interface_gap', -3.0, 20.0),
    },
}
_CHECKS['sandwich'] = {**_CHECKS['interface'], 'source_layers': _integer('source_layers', 1, 200)}


def validate_parameters(model: str, params: Mapping[str, Any] | None) -> dict[str, Any]:
    """Return the complete, validated parameters of ``model`` (a key of :data:`DEFAULTS`)."""
    if model not in DEFAULTS:
        raise ParameterError(f'unknown model {model!r}; known: {sorted(DEFAULTS)}')
    params = dict(params or {})
    unknown = sorted(set(params) - set(DEFAULTS[model]))
    if unknown:
        raise ParameterError(f'unknown parameters {unknown} for {model}; allowed: {sorted(DEFAULTS[model])}')
    full = {**copy.deepcopy(DEFAULTS[model]), **params}
    return {key: _CHECKS[model][key](full[key]) for key in sorted(full)}


def validate_seed(seed: Any) -> int:
    """Validate the random seed of the Li ordering (a non-negative integer < 2**63)."""
    return _integer('seed', 0, 2**63 - 1)(seed)


def validate_bcc_lithium_parameters(params: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Validate the bulk bcc Li parameters (``lattice_constant`` Å, ``repeat`` per axis)."""
    return validate_parameters('bcc_lithium', params)


def validate_argyrodite_parameters(params: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Validate the Li6PS5Cl parameters (``lattice_constant`` Å, fractional coordinates, ``n_starts``)."""
    return validate_parameters('argyrodite', params)


def validate_interface_parameters(params: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Validate the Li/Li6PS5Cl interface parameters (lengths in Å, counts of layers and cells)."""
    return validate_parameters('interface', params)


def validate_sandwich_parameters(params: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Validate the Li|Li6PS5Cl|Li sandwich parameters (lengths in Å, counts of layers and cells)."""
    return validate_parameters('sandwich', params)
