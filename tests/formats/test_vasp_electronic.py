"""The VASP reader of orbital energies and DOS (``formats.vasp.parse_vasprun_electronic``) on a real run.

The file: aiida-vasp's real VASP 5.4 run of Zn3(PS4)2 (104 atoms, 2 k-points, Gaussian smearing 0.01 eV)
from the mock-vasp registry of the tests. The gap is checked against pymatgen's independent reader.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from aiida_lisei.formats.vasp import VaspOutputError, parse_vasprun_electronic
from aiida_lisei.science.electronic import band_gap

VASPRUN = (
    Path(__file__).parents[1]
    / 'fixtures'
    / 'vasp'
    / 'registry'
    / 'zn3ps42_phonon_disp'
    / 'out'
    / 'vasprun.xml'
)


@pytest.mark.engines  # pymatgen (with CHGNet) is not in the core install
def test_gap_and_dos_of_a_real_vasp_run():
    """Gap over both k-points equals pymatgen's; the integrated DOS at E_F counts the electrons."""
    from pymatgen.io.vasp import Vasprun

    data = parse_vasprun_electronic(VASPRUN.read_text())
    assert data['eigenvalues'].shape == (1, 2, 452) and data['ispin'] == 1
    assert data['ismear'] == 0 and data['sigma'] == pytest.approx(0.01)
    np.testing.assert_allclose(data['kpoint_weights'], [0.5, 0.5])
    gap = band_gap(data['eigenvalues'].ravel(), data['occupations'].ravel(), max_occupation=1.0)
    reference, cbm, vbm, _ = Vasprun(str(VASPRUN), parse_potcar_file=False).eigenvalue_band_properties
    assert gap['gap'] == pytest.approx(reference, abs=1e-6) and gap['gap'] > 2.0
    assert (gap['homo'], gap['lumo']) == (pytest.approx(vbm), pytest.approx(cbm))
    assert gap['homo'] < data['efermi'] < gap['lumo']
    electrons = 2 * data['occupations'][0].sum(axis=1) @ data['kpoint_weights']
    at_fermi = np.interp(data['efermi'], data['dos']['energy'], data['dos']['integrated'])
    assert at_fermi == pytest.approx(electrons, rel=0.01)


def test_not_a_vasprun():
    with pytest.raises(VaspOutputError, match='not valid XML'):
        parse_vasprun_electronic('no xml')
    with pytest.raises(VaspOutputError, match='lacks'):
        parse_vasprun_electronic('<modeling></modeling>')
