"""Tests of ``DpTestParser`` (``lisei.dp_test``) on a real ``dp test`` run, checked against ``DeepPot``.

Fixture ``tests/fixtures/parsers/dp_test/default``: the model ``.../dp_train/default/frozen_model.pb``
tested on the 14 frames of ``tests/fixtures/dp_training_set`` by a ``DpTestCalculation`` (DeePMD-kit 3.2.0).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from aiida.plugins import CalculationFactory, ParserFactory

from aiida_lisei.parsers.dp_test import error_summary, parse_test_log, read_detail

DpTestCalculation = CalculationFactory('lisei.dp_test')
DpTestParser = ParserFactory('lisei.dp_test')
FIXTURES = Path(__file__).parents[1] / 'fixtures' / 'parsers'
TRAINING_SET = Path(__file__).parents[1] / 'fixtures' / 'dp_training_set'
MODEL_FILE = FIXTURES / 'dp_train' / 'default' / 'frozen_model.pb'


@pytest.fixture
def parse(generate_calc_job_node, generate_parser, test_set, model):
    """Return a function: run the parser on a ``lisei.dp_test`` node whose ``retrieved`` holds the fixture
    files (those in ``exclude`` left out)."""

    def run(exclude: tuple[str, ...] = ()):
        node = generate_calc_job_node(
            'lisei.dp_test',
            {'test_set': test_set, 'model': model},
            FIXTURES / 'dp_test' / 'default',
            exclude=exclude,
            computer=False,
        )
        return generate_parser('lisei.dp_test').parse_from_node(node, store_provenance=False)

    return run


def test_log_and_detail_files():
    """dp test writes one header for the first system and appends the next: the log gives the split."""
    log = (FIXTURES / 'dp_test' / 'default' / 'test.log').read_text()
    assert parse_test_log(log) == [('systems/bcc_li', 8), ('systems/li2s', 6)]
    reference, predicted = read_detail((FIXTURES / 'dp_test' / 'default' / 'detail.f.out').read_text())
    assert reference.shape == predicted.shape == (8 * 16 + 6 * 12, 3)


def test_error_summary():
    """Energy and virial errors are per atom; forces over all components."""
    natoms = np.array([2.0, 4.0])
    summary = error_summary(
        (np.zeros(2), np.array([2.0, -4.0]), natoms),
        (np.zeros((3, 3)), np.full((3, 3), 0.5)),
        (np.zeros((2, 9)), np.full((2, 9), 4.0)),
    )
    assert summary == pytest.approx(
        {'nframes': 2, 'rmse_e_per_atom': 1.0, 'mae_e_per_atom': 1.0, 'rmse_f': 0.5, 'mae_f': 0.5,
         'rmse_v_per_atom': np.sqrt((4 + 1) / 2), 'mae_v_per_atom': 1.5}
    )  # fmt: skip


def test_errors_equal_an_independent_deeppot_evaluation(parse, test_set, model):
    """The parsed RMSEs equal those of ``deepmd.infer.DeepPot`` evaluated here on the same frames (1e-6)."""
    results, calcfunction = parse()
    assert calcfunction.exit_status == 0, calcfunction.exit_message

    deep_pot = model.get_deep_pot()
    type_index = [deep_pot.get_type_map().index(element) for element in test_set.type_map]
    energy, predicted_energy, natoms, force, predicted_force, virial, predicted_virial = (
        [] for _ in range(7)
    )
    for label in test_set.system_labels:
        system = test_set.get_system(label)
        e, f, v = deep_pot.eval(
            system.coords.reshape(system.nframes, -1),
            system.cells.reshape(system.nframes, 9),
            np.array(type_index)[system.atom_types],
        )
        energy.append(system.energies)
        predicted_energy.append(e.ravel())
        natoms.append(np.full(system.nframes, system.natoms))
        force.append(system.forces.reshape(-1, 3))
        predicted_force.append(f.reshape(-1, 3))
        virial.append(system.virials.reshape(-1, 9))
        predicted_virial.append(v.reshape(-1, 9))
    natoms = np.concatenate(natoms)
    reference_rmse_e = np.sqrt(
        np.mean(((np.concatenate(predicted_energy) - np.concatenate(energy)) / natoms) ** 2)
    )
    reference_rmse_f = np.sqrt(np.mean((np.concatenate(predicted_force) - np.concatenate(force)) ** 2))
    dv = (np.concatenate(predicted_virial) - np.concatenate(virial)) / natoms[:, None]
    reference_rmse_v = np.sqrt(np.mean(dv**2))

    summary = results['output_parameters'].get_dict()
    assert summary['nframes'] == 14
    assert summary['rmse_e_per_atom'] == pytest.approx(reference_rmse_e, abs=1e-6)
    assert summary['rmse_f'] == pytest.approx(reference_rmse_f, abs=1e-6)
    assert summary['rmse_v_per_atom'] == pytest.approx(reference_rmse_v, abs=1e-6)
    assert set(summary['systems']) == {'bcc_li', 'li2s'}
    parity = results['parity']
    np.testing.assert_allclose(
        parity.get_array('energy_predicted'), np.concatenate(predicted_energy), atol=1e-6
    )
    np.testing.assert_allclose(
        parity.get_array('force_predicted'), np.concatenate(predicted_force), atol=1e-6
    )
    assert parity.base.attributes.get('systems') == ['bcc_li', 'li2s']


def test_missing_detail_file(parse):
    """No detail.f.out: 301."""
    _, calcfunction = parse(exclude=('detail.f.out',))
    assert calcfunction.exit_status == DpTestCalculation.exit_codes.ERROR_DETAIL_MISSING.status
