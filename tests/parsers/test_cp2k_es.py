"""``Cp2kElectronicParser`` (``lisei.cp2k.es``) and the PDOS/MO readers, on real CP2K 2023.1 outputs.

Fixtures in ``tests/fixtures/parsers/cp2k_es/<case>/`` (see its README): GFN1-xTB rock-salt LiCl (an
insulator, CP2K prints its gap) and bcc Li16 (a metal).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from aiida import orm
from aiida.plugins import CalculationFactory, ParserFactory
from ase.build import bulk
from ase.spacegroup import crystal

from aiida_lisei.formats.cp2k import Cp2kOutputError, parse_cp2k_mo_summary, parse_cp2k_pdos
from aiida_lisei.science.electronic import band_gap

Cp2kElectronicParser = ParserFactory('lisei.cp2k.es')
Cp2kCalculation = CalculationFactory('cp2k')
FIXTURES = Path(__file__).parents[1] / 'fixtures' / 'parsers' / 'cp2k_es'


def structure(case: str) -> orm.StructureData:
    if case == 'licl_xtb':
        atoms = crystal(['Li', 'Cl'], [(0, 0, 0), (0.5, 0, 0)], spacegroup=225, cellpar=[5.13] * 3 + [90] * 3)
    else:
        atoms = bulk('Li', 'bcc', a=3.42, cubic=True).repeat(2)
    return orm.StructureData(ase=atoms)


@pytest.fixture
def calc_job_node(generate_calc_job_node):
    """Return a factory: a ``cp2k`` CalcJobNode with the case's retrieved files (some left out, replaced)."""

    def factory(case: str, exclude: tuple[str, ...] = (), replace: dict[str, bytes] | None = None):
        files = {
            path.name: path.read_bytes()
            for path in (FIXTURES / case).iterdir()
            if path.name not in exclude and path.name != 'aiida.inp'
        }
        files.update(replace or {})
        options = {'output_filename': 'aiida.out', 'parser_name': 'lisei.cp2k.es'}
        return generate_calc_job_node('cp2k', {'structure': structure(case)}, files, options=options)

    return factory


def test_pdos_and_mo_readers():
    """Energies in eV, occupations, projections summing to one over the kinds; CP2K's E(Fermi) and gap."""
    li, cl = (parse_cp2k_pdos((FIXTURES / 'licl_xtb' / f'aiida-k{k}-1.pdos').read_text()) for k in (1, 2))
    assert (li['kind'], cl['kind']) == ('Li', 'Cl')
    np.testing.assert_allclose(li['energies'], cl['energies'])
    np.testing.assert_allclose(li['weights'] + cl['weights'], 1.0, atol=1e-3)
    assert li['occupations'].sum() == pytest.approx(32.0)  # 8 Cl 3s3p shells: 16 doubly occupied orbitals
    summary = parse_cp2k_mo_summary((FIXTURES / 'licl_xtb' / 'aiida.out').read_text())
    assert summary == {'fermi': pytest.approx(-3.34499476), 'band_gap': pytest.approx(5.23591194)}
    assert band_gap(li['energies'], li['occupations'])['gap'] == pytest.approx(summary['band_gap'], abs=1e-4)
    with pytest.raises(Cp2kOutputError, match='not a CP2K PDOS file'):
        parse_cp2k_pdos('# something else\n1 2 3 4\n')


@pytest.mark.parametrize('case', ['licl_xtb', 'li16_xtb'])
def test_parser_attaches_orbitals(calc_job_node, case):
    """Exit 0; orbitals with their element weights; the Fermi level; CP2K's gap for the insulator only."""
    results, calcfunction = Cp2kElectronicParser.parse_from_node(calc_job_node(case))
    assert calcfunction.is_finished_ok, calcfunction.exit_message
    parameters = results['output_parameters'].get_dict()
    eigenvalues = results['eigenvalues']
    weights = sum(
        eigenvalues.get_array(name) for name in eigenvalues.get_arraynames() if name.startswith('weights_')
    )
    np.testing.assert_allclose(weights, 1.0, atol=1e-3)
    assert parameters['kpoints'] == 'Gamma' and parameters['n_orbitals'] == len(
        eigenvalues.get_array('energies')
    )
    gap = band_gap(eigenvalues.get_array('energies'), eigenvalues.get_array('occupations'))
    if case == 'licl_xtb':
        assert parameters['cp2k_band_gap'] == pytest.approx(gap['gap'], abs=1e-4)
        assert set(eigenvalues.get_arraynames()) == {'energies', 'occupations', 'weights_Cl', 'weights_Li'}
    else:
        assert parameters['cp2k_band_gap'] is None and gap['gap'] == 0.0 and gap['n_partial'] == 6


def test_parser_failures(calc_job_node):
    """No PDOS file: 303; a malformed PDOS file: 302."""
    _, calcfunction = Cp2kElectronicParser.parse_from_node(
        calc_job_node('licl_xtb', exclude=('aiida-k1-1.pdos', 'aiida-k2-1.pdos'))
    )
    assert calcfunction.exit_status == Cp2kCalculation.exit_codes.ERROR_OUTPUT_INCOMPLETE.status
    _, calcfunction = Cp2kElectronicParser.parse_from_node(
        calc_job_node('licl_xtb', replace={'aiida-k1-1.pdos': b'garbage\n'})
    )
    assert calcfunction.exit_status == Cp2kCalculation.exit_codes.ERROR_OUTPUT_PARSE.status
