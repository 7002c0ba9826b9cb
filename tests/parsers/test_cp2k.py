"""``Cp2kLabelParser`` (``lisei.cp2k``) and its text parser, on real CP2K 2023.1 outputs.

Fixtures in ``tests/fixtures/parsers/cp2k/<case>/`` are outputs of real runs made with this package's
protocols (``aiida.inp`` and ``aiida.coords.xyz`` are the inputs aiida-cp2k wrote, 2 MPI ranks):

* ``li16_xtb``: rattled bcc Li16, ``gfn1_xtb`` (metal settings), converged in 9 SCF steps;
* ``li2s_xtb``: rattled antifluorite Li2S (12 atoms, a = 5.70 Å), ``gfn1_xtb`` (insulator settings);
* ``li16_scf_not_converged``: ``gfn1_xtb_metal`` without smearing and MAX_SCF 5 (a real failure);
* ``li16_walltime``: the same with ``GLOBAL/WALLTIME 1``: CP2K stops the SCF on its walltime;
* ``li2s_xtb_fd/{dx,exx,exy}_{p,m}``: ``li2s_xtb`` with atom 1 moved by ±0.01 Å along x, and strained
  by ε_xx = ±0.002 and ε_xy = ε_yx = ±0.001, for finite differences.
"""

from __future__ import annotations

from pathlib import Path

import dpdata
import numpy as np
import pytest
from aiida import orm
from aiida.plugins import CalculationFactory, ParserFactory
from ase.io import read

from aiida_lisei.formats.cp2k import (
    EV_PER_ANGSTROM3_TO_GPA,
    Cp2kOutputError,
    cp2k_stress_to_ase,
    parse_cp2k_output,
)

Cp2kLabelParser = ParserFactory('lisei.cp2k')
Cp2kCalculation = CalculationFactory('cp2k')

FIXTURES = Path(__file__).parents[1] / 'fixtures' / 'parsers' / 'cp2k'


def _parse(case: str) -> dict:
    return parse_cp2k_output((FIXTURES / case / 'aiida.out').read_text())


def _atoms(case: str):
    atoms = read(FIXTURES / case / 'aiida.coords.xyz')
    cell = [
        [float(x) for x in line.split()[1:4]]
        for line in (FIXTURES / case / 'aiida.inp').read_text().splitlines()
        if line.split() and line.split()[0] in ('A', 'B', 'C')
    ]
    atoms.set_cell(cell)
    atoms.pbc = True
    return atoms


# ----------------------------------------------------------------------------------------------------------
# Pure text parser
# ----------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ('case', 'natoms', 'converged', 'n_scf_steps', 'completed', 'walltime'),
    [
        ('li16_xtb', 16, True, 9, True, False),
        ('li2s_xtb', 12, True, 19, True, False),
        ('li16_scf_not_converged', 16, False, 5, True, False),
        ('li16_walltime', 16, False, 1, True, True),
    ],
)
def test_parse_flags(case, natoms, converged, n_scf_steps, completed, walltime):
    """Version, SCF status and step count, completion and walltime flags of each real output."""
    results = _parse(case)
    assert results['version'] == '2023.1'
    assert results['scf_converged'] is converged
    assert results['n_scf_steps'] == n_scf_steps
    assert results['completed'] is completed
    assert results['walltime_exceeded'] is walltime
    assert results['abort'] is None
    assert results['forces'].shape == (natoms, 3)
    assert results['stress'].shape == (3, 3)
    assert results['wall_time_seconds'] > 0


@pytest.mark.parametrize('case', ['li16_xtb', 'li2s_xtb'])
def test_forces_sum_to_zero_and_stress_is_symmetric(case):
    """Newton's third law (no external field) and a symmetric analytical stress."""
    results = _parse(case)
    assert np.abs(results['forces'].sum(axis=0)).max() < 1e-4  # eV/Å
    assert np.abs(results['forces']).max() > 0.05  # rattled: a real test
    np.testing.assert_allclose(results['stress'], results['stress'].T, atol=1e-6)  # GPa


@pytest.mark.parametrize('case', ['li16_xtb', 'li2s_xtb'])
def test_agrees_with_cp2kdata(case):
    """An independent parser (cp2kdata's ``cp2kdata/e_f`` through dpdata) gives the same labels.

    cp2kdata's virial is ``stress_cp2k * V`` (eV, DeePMD sign), so ours is ``-stress_ase * V``.
    """
    results = _parse(case)
    system = dpdata.LabeledSystem(str(FIXTURES / case / 'aiida.out'), fmt='cp2kdata/e_f')
    volume = abs(np.linalg.det(system['cells'][0]))
    assert system['energies'][0] == pytest.approx(results['energy'], rel=1e-7)
    np.testing.assert_allclose(system['forces'][0], results['forces'], rtol=1e-6, atol=1e-9)
    np.testing.assert_allclose(
        system['virials'][0], -cp2k_stress_to_ase(results['stress']) * volume, rtol=1e-6, atol=1e-9
    )


def test_forces_match_finite_differences():
    """F_x of atom 1 of Li2S equals -(E(x+h) - E(x-h)) / 2h of CP2K energies, h = 0.01 Å."""
    h = 0.01
    plus, minus = _parse('li2s_xtb_fd/dx_p')['energy'], _parse('li2s_xtb_fd/dx_m')['energy']
    force = _parse('li2s_xtb')['forces'][1, 0]
    assert abs(force) > 0.05
    assert -(plus - minus) / (2 * h) == pytest.approx(force, abs=2e-3)  # eV/Å


@pytest.mark.parametrize(('component', 'index'), [('exx', (0, 0)), ('exy', (0, 1))])
def test_stress_matches_finite_differences(component, index):
    """ASE's stress is (1/V) dE/dε: checks the sign convention (tension > 0) and the units (eV/Å³)."""
    eps = 0.002  # total symmetric strain amplitude: ε_xx, or ε_xy + ε_yx
    plus = _parse(f'li2s_xtb_fd/{component}_p')['energy']
    minus = _parse(f'li2s_xtb_fd/{component}_m')['energy']
    volume = _atoms('li2s_xtb').get_volume()
    stress = cp2k_stress_to_ase(_parse('li2s_xtb')['stress'])[index]
    finite_difference = (plus - minus) / (2 * eps * volume)
    assert finite_difference == pytest.approx(stress, abs=2e-3 if index == (0, 0) else 1e-3)


def test_not_a_cp2k_output():
    """Text without CP2K's header is refused."""
    with pytest.raises(Cp2kOutputError, match='not a CP2K output'):
        parse_cp2k_output('hello\n')


def test_truncated_forces_block_is_refused():
    """A forces block with a missing atom row is refused."""
    text = (FIXTURES / 'li16_xtb' / 'aiida.out').read_text()
    lines = text.splitlines()
    start = next(i for i, line in enumerate(lines) if line.strip() == 'ATOMIC FORCES in [a.u.]')
    del lines[start + 5]
    with pytest.raises(Cp2kOutputError, match='out of order'):
        parse_cp2k_output('\n'.join(lines))


def test_unit_constants():
    """1 eV/Å³ = 160.2 GPa."""
    assert pytest.approx(160.2176634, rel=1e-6) == EV_PER_ANGSTROM3_TO_GPA


# ----------------------------------------------------------------------------------------------------------
# AiiDA parser
# ----------------------------------------------------------------------------------------------------------


@pytest.fixture
def calc_job_node(generate_calc_job_node):
    """Return a factory: a stored ``cp2k`` CalcJobNode with input ``structure`` and ``retrieved`` files."""

    def factory(case: str | None, files: dict[str, bytes] | None = None, exit_status: int | None = None):
        if files is None:
            files = {'aiida.out': (FIXTURES / case / 'aiida.out').read_bytes()}
        inputs = {'structure': orm.StructureData(ase=_atoms(case or 'li16_xtb'))}
        options = {'output_filename': 'aiida.out', 'parser_name': 'lisei.cp2k'}
        return generate_calc_job_node('cp2k', inputs, files, options=options, exit_status=exit_status)

    return factory


def test_parser_converged(calc_job_node):
    """Converged Li2S: exit 0, energy (eV), forces (eV/Å), stress (eV/Å³, ASE sign), pressure (GPa)."""
    node = calc_job_node('li2s_xtb')
    results, calcfunction = Cp2kLabelParser.parse_from_node(node)
    assert calcfunction.is_finished_ok, calcfunction.exit_message
    raw = _parse('li2s_xtb')
    parameters = results['output_parameters'].get_dict()
    assert parameters['energy'] == pytest.approx(raw['energy'])
    assert parameters['scf_converged'] is True
    assert parameters['cp2k_version'] == '2023.1'
    assert parameters['natoms'] == 12
    assert parameters['pressure'] == pytest.approx(np.trace(raw['stress']) / 3)
    np.testing.assert_allclose(results['forces'].get_array('forces'), raw['forces'])
    stress = results['stress'].get_array('stress')
    np.testing.assert_allclose(stress, -raw['stress'] / EV_PER_ANGSTROM3_TO_GPA)
    assert np.trace(stress) > 0  # xTB Li2S at a = 5.70 Å is under tension: ASE's stress is positive


def test_parser_scf_not_converged(calc_job_node):
    """A real non-converged SCF: outputs are attached but the calculation fails with 450."""
    node = calc_job_node('li16_scf_not_converged')
    results, calcfunction = Cp2kLabelParser.parse_from_node(node)
    assert calcfunction.exit_status == Cp2kCalculation.exit_codes.ERROR_SCF_NOT_CONVERGED.status == 450
    assert results['output_parameters']['scf_converged'] is False
    assert results['forces'].get_array('forces').shape == (16, 3)


def test_parser_walltime(calc_job_node):
    """CP2K stopped by GLOBAL/WALLTIME: 400."""
    _, calcfunction = Cp2kLabelParser.parse_from_node(calc_job_node('li16_walltime'))
    assert calcfunction.exit_status == Cp2kCalculation.exit_codes.ERROR_OUT_OF_WALLTIME.status == 400


def test_parser_scheduler_walltime_with_truncated_output(calc_job_node):
    """Killed by the scheduler (exit 120) mid-run, output cut before the forces: 400, not 303."""
    text = (FIXTURES / 'li16_xtb' / 'aiida.out').read_text()
    truncated = text[: text.index('ATOMIC FORCES')].encode()
    node = calc_job_node(None, {'aiida.out': truncated}, exit_status=120)
    _, calcfunction = Cp2kLabelParser.parse_from_node(node)
    assert calcfunction.exit_status == 400


def test_parser_truncated_output(calc_job_node):
    """Output cut before the forces without a scheduler error: 303 ERROR_OUTPUT_INCOMPLETE."""
    text = (FIXTURES / 'li16_xtb' / 'aiida.out').read_text()
    node = calc_job_node(None, {'aiida.out': text[: text.index('ATOMIC FORCES')].encode()})
    _, calcfunction = Cp2kLabelParser.parse_from_node(node)
    assert calcfunction.exit_status == Cp2kCalculation.exit_codes.ERROR_OUTPUT_INCOMPLETE.status == 303


@pytest.mark.parametrize(
    ('files', 'status'),
    [({'other.txt': b''}, 210), ({'aiida.out': b'not cp2k\n'}, 302)],
    ids=['missing', 'unparsable'],
)
def test_parser_bad_output(calc_job_node, files, status):
    """No output file: aiida-cp2k's 210 ERROR_OUTPUT_MISSING; not a CP2K output: 302 ERROR_OUTPUT_PARSE."""
    _, calcfunction = Cp2kLabelParser.parse_from_node(calc_job_node(None, files))
    assert calcfunction.exit_status == status


def test_parser_atom_count_mismatch(calc_job_node):
    """Forces for 12 atoms on a 16-atom input structure: 302."""
    files = {'aiida.out': (FIXTURES / 'li2s_xtb' / 'aiida.out').read_bytes()}
    _, calcfunction = Cp2kLabelParser.parse_from_node(calc_job_node(None, files))
    assert calcfunction.exit_status == 302
