"""Calcfunctions: outputs, provenance, caching, validation before anything is stored."""

from __future__ import annotations

import numpy as np
import pytest
from aiida import orm
from aiida.manage.caching import enable_caching
from aiida.plugins import CalculationFactory

from aiida_lisei.data.structure import GroupedStructureData
from aiida_lisei.structures import functions
from aiida_lisei.structures.parameters import DEFAULTS, ParameterError, validate_sandwich_parameters


def _node_count() -> int:
    return orm.QueryBuilder().append(orm.Node).count()


@pytest.fixture(scope='module')
def electrolyte() -> GroupedStructureData:
    return functions.argyrodite_node(seed=11, n_starts=16)


def test_entry_points():
    for name in ('bcc_lithium', 'argyrodite', 'interface', 'sandwich'):
        assert CalculationFactory(f'lisei.structures.{name}') is getattr(functions, f'build_{name}')


def test_bcc_lithium_node():
    node = functions.bcc_lithium_node()
    assert isinstance(node, GroupedStructureData) and node.is_stored
    assert node.group_counts == {'bulk_Li': 16}
    creator = node.creator
    assert creator.process_label == 'build_bcc_lithium' and creator.is_finished_ok
    assert creator.inputs.parameters.get_dict() == DEFAULTS['bcc_lithium']
    assert functions.summarize_model(node) == {
        'model': 'bcc_lithium',
        'natoms': 16,
        'group_counts': {'bulk_Li': 16},
        'cell_lengths': pytest.approx([6.84, 6.84, 6.84]),
        'lateral_strain': None,
        'layers': {},
    }


def test_argyrodite_node_provenance(electrolyte):
    assert electrolyte.group_counts == {
        'electrolyte_Li': 24,
        'electrolyte_P': 4,
        'electrolyte_S': 20,
        'electrolyte_Cl': 4,
    }
    inputs = electrolyte.creator.inputs
    assert inputs.seed.value == 11
    assert inputs.parameters.get_dict() == {**DEFAULTS['argyrodite'], 'n_starts': 16}
    info = electrolyte.base.attributes.get(functions.MODEL_INFO_KEY)
    assert info['seed'] == 11 and info['ewald_energy'] < 0


def test_sandwich_node_groups_layers_and_provenance(electrolyte, small_sandwich):
    node = functions.sandwich_node(electrolyte, **small_sandwich)
    assert node.creator.inputs.electrolyte.uuid == electrolyte.uuid  # provenance chain to the 52-atom cell
    assert node.creator.inputs.parameters.get_dict() == validate_sandwich_parameters(small_sandwich)
    assert len(node.sites) == 185
    top_anode = node.select('anode_Li', layers=range(1, 3))
    assert len(top_anode) == 18
    z = np.array([site.position[2] for site in node.sites])
    assert z[top_anode].min() > z[node.select('anode_Li', layers=[3])].max()
    summary = functions.summarize_model(node)
    assert summary['natoms'] == 185 and summary['layers'] == {'anode_Li': 6, 'source_Li': 3}
    assert summary['lateral_strain'] == pytest.approx(10.25 / (3 * 3.42) - 1)
    assert summary['group_counts']['source_Li'] == 27


def test_interface_node(electrolyte):
    node = functions.interface_node(electrolyte)
    assert len(node.sites) == 185 and node.group_counts['anode_Li'] == 81
    info = node.base.attributes.get(functions.MODEL_INFO_KEY)
    assert info['composition'] == {'Li': 129, 'P': 8, 'S': 40, 'Cl': 8}


def test_caching_reuses_the_node():
    with enable_caching():
        first = functions.bcc_lithium_node(repeat=3)
        second = functions.bcc_lithium_node(repeat=3)
    assert second.creator.base.caching.is_created_from_cache
    assert second.creator.base.caching.get_cache_source() == first.creator.uuid
    assert second.uuid != first.uuid and second.get_ase() == first.get_ase()


def test_incomplete_parameters_are_refused():
    with pytest.raises(ParameterError, match='complete'):
        functions.build_bcc_lithium(orm.Dict({'repeat': 2}))


@pytest.mark.parametrize(
    ('params', 'pattern'),
    [
        ({'anode_layers': 0}, 'anode_layers'),
        ({'vacuum': -5.0}, 'vacuum'),
        ({'interface_gap': -2.5}, 'interface_gap'),  # overlap found in the built geometry
        ({'color': 'red'}, 'unknown parameters'),
    ],
)
def test_nothing_is_stored_for_bad_parameters(electrolyte, params, pattern, small_sandwich):
    before = _node_count()
    with pytest.raises(ParameterError, match=pattern):
        functions.sandwich_node(electrolyte, **small_sandwich | params)
    with pytest.raises(ParameterError):
        functions.argyrodite_node(seed=-3)
    assert _node_count() == before


def test_full_sandwich_node(electrolyte):
    node = functions.sandwich_node(electrolyte)
    summary = functions.summarize_model(node)
    assert summary['natoms'] == 4833
    assert summary['layers'] == {'anode_Li': 16, 'source_Li': 9}
    assert summary['cell_lengths'][2] == pytest.approx(150.42, abs=0.1)
