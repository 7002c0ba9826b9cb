"""Defaults and validation of the model parameters."""

from __future__ import annotations

import pytest

from aiida_lisei.data.structure import REGION_GROUPS
from aiida_lisei.structures import builders
from aiida_lisei.structures.parameters import (
    DEFAULTS,
    ParameterError,
    sandwich_default_interface_gap,
    validate_argyrodite_parameters,
    validate_bcc_lithium_parameters,
    validate_interface_parameters,
    validate_parameters,
    validate_sandwich_parameters,
    validate_seed,
)


def test_group_labels_match_the_data_plugin():
    assert builders.GROUP_LABELS == REGION_GROUPS


@pytest.mark.parametrize('model', sorted(DEFAULTS))
def test_defaults_validate_to_complete_dicts(model):
    full = validate_parameters(model, {})
    assert set(full) == set(DEFAULTS[model])
    assert validate_parameters(model, full) == full


def test_default_interface_gap_reproduces_the_si_cell():
    """(150.42 - 25 x 1.71 - 6 x 10.25 - 40) / 2 = 3.085 Å."""
    assert sandwich_default_interface_gap() == pytest.approx(3.085, abs=1e-9)
    assert DEFAULTS['sandwich']['interface_gap'] == pytest.approx(3.085, abs=1e-9)


def test_values_are_normalised():
    full = validate_sandwich_parameters({'anode_layers': 4.0, 'vacuum': 10})
    assert full['anode_layers'] == 4 and isinstance(full['anode_layers'], int)
    assert full['vacuum'] == 10.0 and isinstance(full['vacuum'], float)


@pytest.mark.parametrize(
    ('validate', 'params', 'pattern'),
    [
        (
            validate_sandwich_parameters,
            {'anode_layers': 0},
            r'anode_layers must be an integer in \[1, 200\], got 0',
        ),
        (
            validate_sandwich_parameters,
            {'source_layers': -2},
            r'source_layers must be an integer in \[1, 200\]',
        ),
        (validate_sandwich_parameters, {'source_layers': 2.5}, r'source_layers must be an integer'),
        (validate_sandwich_parameters, {'electrolyte_repeat_xy': True}, r'electrolyte_repeat_xy'),
        (validate_interface_parameters, {'electrolyte_repeat_z': 0}, r'electrolyte_repeat_z .*\[1, 50\]'),
        (validate_interface_parameters, {'vacuum': -1.0}, r'vacuum must be a number in \[0.0, 500.0\]'),
        (validate_interface_parameters, {'li_lattice_constant': 5.0}, r'li_lattice_constant .*\[3.0, 4.0\]'),
        (validate_interface_parameters, {'interface_gap': float('nan')}, r'interface_gap must be a number'),
        (validate_interface_parameters, {'source_layers': 3}, r"unknown parameters \['source_layers'\]"),
        (validate_bcc_lithium_parameters, {'repeat': 0}, r'repeat must be an integer in \[1, 20\]'),
        (validate_bcc_lithium_parameters, {'lattice_constant': 1.0}, r'lattice_constant .*\[3.0, 4.0\]'),
        (validate_argyrodite_parameters, {'lattice_constant': 12.0}, r'lattice_constant .*\[9.5, 11.0\]'),
        (validate_argyrodite_parameters, {'n_starts': 0}, r'n_starts must be an integer in \[1, 10000\]'),
        (validate_argyrodite_parameters, {'li48h_x': 0.3}, r'li48h_x'),
        (
            validate_argyrodite_parameters,
            {'formal_charges': {'Li': 1, 'P': 5, 'S': -2, 'Cl': -1, 'Na': 1}},
            r"formal_charges .*unknown: \['Na'\]",
        ),
        (
            validate_argyrodite_parameters,
            {'formal_charges': {'Li': 1, 'P': 5, 'S': -2, 'Cl': 0}},
            r'formal_charges must make Li24P4S20Cl4 neutral',
        ),
    ],
)
def test_bad_parameters_name_the_parameter(validate, params, pattern):
    with pytest.raises(ParameterError, match=pattern):
        validate(params)


def test_bad_seed_and_model():
    with pytest.raises(ParameterError, match=r'seed must be an integer in \[0, '):
        validate_seed(-1)
    with pytest.raises(ParameterError, match='unknown model'):
        validate_parameters('perovskite', {})
