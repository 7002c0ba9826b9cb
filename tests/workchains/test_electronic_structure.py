"""Tests of ``lisei.electronic_structure``: real CP2K runs on small cells, known gaps, the SEI demo chain.

Known gaps as a check of the gap extraction: rock-salt LiCl (8 atoms) against CP2K's own printed
``MO| Band gap``, and bcc Li16 (a metal) giving 0; with GFN1-xTB (seconds) and PBE (LiCl, slow).
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
from aiida import orm
from aiida.engine import run_get_node
from aiida.plugins import WorkflowFactory
from ase.build import bulk
from ase.spacegroup import crystal

from aiida_lisei.reporting.plots import png_size
from aiida_lisei.workchains.electronic_structure import es_cp2k_parameters

ElectronicStructureWorkChain = WorkflowFactory('lisei.electronic_structure')


def licl() -> orm.StructureData:
    """Rock-salt LiCl, conventional cell (8 atoms, a = 5.13 Å)."""
    atoms = crystal(['Li', 'Cl'], [(0, 0, 0), (0.5, 0.5, 0.5)], spacegroup=225, cellpar=[5.13] * 3 + [90] * 3)
    return orm.StructureData(ase=atoms)


def li16() -> orm.StructureData:
    """bcc Li16 (a = 3.42 Å)."""
    return orm.StructureData(ase=bulk('Li', 'bcc', a=3.42, cubic=True).repeat(2))


def check_dos(dos: orm.ArrayData, n_orbitals: int) -> None:
    """The DOS integrates to 2 electrons per orbital and the element DOS add up to the total."""
    energy, total = dos.get_array('energy'), dos.get_array('dos_total')
    step = energy[1] - energy[0]
    assert total.sum() * step == pytest.approx(2 * n_orbitals, rel=1e-3)
    elements = sum(
        dos.get_array(name)
        for name in dos.get_arraynames()
        if name.startswith('dos_') and name != 'dos_total'
    )
    np.testing.assert_allclose(elements, total, atol=0.05 * total.max())


@pytest.mark.slow  # two CP2K runs of ~3 s each; 30 s measured with the 2 cores shared (load 12)
def test_known_gaps_gfn1_xtb(cp2k_code):
    """LiCl: our gap equals CP2K's printed one; bcc Li: 0 (partially occupied states); labelled not PBE."""
    builder = ElectronicStructureWorkChain.get_builder_from_protocol(
        cp2k_code, {'licl': licl(), 'li16': li16()}, protocol='demo', options={'max_wallclock_seconds': 600}
    )
    results, node = run_get_node(builder)
    assert node.is_finished_ok, node.exit_message
    salt, metal = results['gaps']['licl'], results['gaps']['li16']
    assert salt['gap'] == pytest.approx(salt['engine_band_gap'], abs=1e-3)
    assert salt['gap'] > 3.0 and not salt['metallic']
    assert salt['method'] == 'lowest unoccupied minus highest occupied orbital energy'
    assert metal['gap'] == 0.0 and metal['metallic'] and 'partially occupied' in metal['method']
    for gap in (salt, metal):
        assert gap['level_of_theory_label'] == 'GFN1-xTB, not PBE' and gap['kpoints'] == 'gamma'
        assert gap['smearing']['method'] == 'FERMI_DIRAC'
    check_dos(results['dos']['licl'], salt['n_orbitals'])
    assert set(results['dos']['licl'].get_arraynames()) == {'energy', 'dos_total', 'dos_Li', 'dos_Cl'}
    rows = {row['system']: row for row in results['comparison']['rows']}
    assert rows['licl']['paper_gap'] is None and 'GFN1-xTB' in results['comparison']['table']
    assert png_size(results['dos_figure'].get_content(mode='rb'))[0] > 100


@pytest.mark.slow  # ~1 min on 2 idle cores
def test_known_gap_pbe(cp2k_code):
    """CP2K PBE on LiCl: our gap is CP2K's printed one, a wide gap, labelled PBE and comparable."""
    builder = ElectronicStructureWorkChain.get_builder_from_protocol(
        cp2k_code,
        {'licl': licl()},
        protocol='pbe',
        options={
            'max_wallclock_seconds': 1200,
            'resources': {'num_machines': 1, 'num_mpiprocs_per_machine': 2},
        },
    )
    results, node = run_get_node(builder)
    assert node.is_finished_ok, node.exit_message
    gap = results['gaps']['licl']
    print(f'PBE LiCl: gap {gap["gap"]:.4f} eV, CP2K printed {gap["engine_band_gap"]:.4f} eV')
    assert gap['gap'] == pytest.approx(gap['engine_band_gap'], abs=1e-3)
    assert 4.0 < gap['gap'] < 8.0  # PBE underestimates LiCl's 9.4 eV gap: ~6 eV
    assert gap['level_of_theory_label'] == 'PBE'
    check_dos(results['dos']['licl'], gap['n_orbitals'])


def test_electronic_structure_parameters():
    """The CP2K input of a single point: ENERGY, no forces or stress, PDOS of every orbital, MO summary."""
    parameters = es_cp2k_parameters(
        {
            'GLOBAL': {'RUN_TYPE': 'ENERGY_FORCE'},
            'FORCE_EVAL': {'STRESS_TENSOR': 'ANALYTICAL', 'PRINT': {}, 'DFT': {}},
        }
    )
    assert parameters['GLOBAL']['RUN_TYPE'] == 'ENERGY'
    assert 'STRESS_TENSOR' not in parameters['FORCE_EVAL'] and 'PRINT' not in parameters['FORCE_EVAL']
    assert parameters['FORCE_EVAL']['DFT']['PRINT']['PDOS']['NLUMO'] == -1


@pytest.mark.parametrize(
    ('change', 'message'),
    [
        ({'engine': 'qe'}, 'engine `qe` is not available'),
        ({'structures': {'li_16': None}}, 'no underscore'),
        ({'relax_structures': ['sei']}, 'relax_structures'),
    ],
)
def test_bad_inputs_rejected(cp2k_code, change, message):
    """Engine, structure keys and the relaxation choice are checked before anything runs."""
    builder = ElectronicStructureWorkChain.get_builder_from_protocol(cp2k_code, {'li16': li16()})
    if 'engine' in change:
        builder.engine = orm.Str(change['engine'])
    if 'structures' in change:
        builder.structures = {'li_16': li16()}
    if 'relax_structures' in change:
        builder.relax_structures = orm.List(change['relax_structures'])
    with pytest.raises(ValueError, match=message):
        run_get_node(builder)


def test_overlapping_atoms_rejected(cp2k_code):
    """Atoms closer than 0.5 Å are refused with the pair and the distance."""
    structure = li16().get_ase()
    structure.positions[1] = structure.positions[0] + [0.2, 0.0, 0.0]
    with pytest.raises(ValueError, match='overlapping atoms'):
        builder = ElectronicStructureWorkChain.get_builder_from_protocol(
            cp2k_code, {'li16': orm.StructureData(ase=structure)}
        )
        run_get_node(builder)


@pytest.fixture
def lmp_minimize(aiida_computer_local, aiida_code_installed) -> orm.InstalledCode:
    """``lmp`` with the DeePMD plugin as a ``lisei.dp_minimize`` code, one thread, polled without delay."""
    computer = aiida_computer_local()
    computer.set_minimum_job_poll_interval(0.0)
    computer.configure(safe_interval=0.0)
    return aiida_code_installed(
        computer=computer,
        filepath_executable=str(Path(sys.executable).parent / 'lmp'),
        default_calc_job_plugin='lisei.dp_minimize',
        prepend_text='export OMP_NUM_THREADS=1 DP_INTRA_OP_PARALLELISM_THREADS=1 '
        'DP_INTER_OP_PARALLELISM_THREADS=1 TF_CPP_MIN_LOG_LEVEL=2',
    )


def cluster_window(trajectory: orm.TrajectoryData, ids: np.ndarray, frame: int = 2) -> dict[str, float]:
    """An explicit z-window (cell z, Å) around the planted cluster: 1 Å beyond its atoms."""
    rows = np.isin(trajectory.get_array('atom_ids'), ids)
    z = trajectory.get_positions()[frame][rows, 2]
    return {'mode': 'z', 'z_low': float(z.min()) - 1.0, 'z_high': float(z.max()) + 1.0}


@pytest.mark.slow  # DP relaxation + CP2K GFN1-xTB on the 15-atom cluster slab and the 52-atom Li6PS5Cl
def test_sei_demo_chain(cp2k_code, lmp_minimize, tiny_model, nucleation_run):
    """Extract at the onset frame, relax with the DP, gaps with GFN1-xTB: the metallic slab 0, the bulk open.

    The tiny test model knows bcc Li only, so the slab is the window around the planted Li cluster.
    """
    from aiida_lisei.workchains.electronic_structure import sei_electronic_structure_builder

    structure, trajectory, cluster = nucleation_run
    analysis = {'summary': {'cluster_onset_frame': 2}, 'frame_indices': [0, 1, 2, 3], 'parameters': {}}
    builder = sei_electronic_structure_builder(
        cp2k_code,
        trajectory,
        structure,
        analysis=orm.Dict(analysis),
        region=cluster_window(trajectory, cluster),
        lammps_code=lmp_minimize,
        model=tiny_model,
        options={'max_wallclock_seconds': 900},
    )
    results, node = run_get_node(builder)
    assert node.is_finished_ok, node.exit_message
    assert set(results['relaxed_structures']) == {'sei'}
    relaxed, extracted = results['relaxed_structures']['sei'], builder.structures['sei']
    assert relaxed.base.attributes.get('atom_ids') == extracted.base.attributes.get('atom_ids')
    assert sorted(extracted.base.attributes.get('atom_ids')) == sorted(int(i) for i in cluster)
    sei, bulk = results['gaps']['sei'], results['gaps']['bulk']
    print(f'demo gaps (GFN1-xTB): bulk {bulk["gap"]:.3f} eV, SEI {sei["gap"]:.3f} eV ({sei["method"]})')
    assert bulk['gap'] > 1.0 and not bulk['metallic']  # the electrolyte is an insulator
    assert sei['gap'] == 0.0 and sei['metallic']  # a Li cluster is a metal
    rows = {row['system']: row for row in results['comparison']['rows']}
    assert rows['bulk']['paper_gap'] == 2.15 and rows['sei']['paper_gap'] == 0.0
    assert not rows['bulk']['comparable'] and rows['bulk']['agrees'] is None  # GFN1-xTB vs the paper's PBE


@pytest.mark.slow  # one LAMMPS start (~10 s idle, minutes with the 2 cores shared)
def test_unphysical_relaxation_stops_the_chain(cp2k_code, lmp_minimize, tiny_model, nucleation_run):
    """The bcc-Li-only model collapses the S of the real SEI window onto Li: 503 before CP2K runs."""
    from aiida_lisei.workchains.electronic_structure import sei_electronic_structure_builder

    structure, trajectory, _ = nucleation_run
    builder = sei_electronic_structure_builder(
        cp2k_code, trajectory, structure, frame=2, lammps_code=lmp_minimize, model=tiny_model
    )
    _, node = run_get_node(builder)
    assert node.exit_status == ElectronicStructureWorkChain.exit_codes.ERROR_RELAXATION_UNPHYSICAL.status
    assert 'overlapping atoms' in node.exit_message
    assert not [child for child in node.called if child.process_label == 'Cp2kBaseWorkChain']


def test_vasp_engine_with_mock_vasp(mock_vasp, potential_family):
    """VASP through aiida-vasp and mock-vasp (the real Zn3(PS4)2 run): the gap is pymatgen's, labelled."""
    from pymatgen.io.vasp import Vasprun

    from workchains.test_vasp_label import ZN_ENTRY, read_entry

    structure, incar, kpoints = read_entry(ZN_ENTRY)
    builder = ElectronicStructureWorkChain.get_builder()
    builder.engine = orm.Str('vasp')
    builder.structures = {'zn3ps42': structure}
    builder.kpoints = {'zn3ps42': kpoints}
    builder.vasp.code = mock_vasp
    builder.vasp.parameters = orm.Dict({'incar': incar})
    builder.vasp.potential_family = orm.Str(potential_family)
    builder.vasp.potential_mapping = orm.Dict({'Zn': 'Zn', 'P': 'P', 'S': 'S'})
    builder.vasp.options = orm.Dict(
        {'withmpi': False, 'resources': {'num_machines': 1, 'num_mpiprocs_per_machine': 1}}
    )
    builder.vasp.settings = orm.Dict({'ADDITIONAL_RETRIEVE_LIST': ['vasprun.xml']})
    results, node = run_get_node(builder)
    assert node.is_finished_ok, node.exit_message
    gap = results['gaps']['zn3ps42']
    reference = Vasprun(
        str(ZN_ENTRY / 'out' / 'vasprun.xml'), parse_potcar_file=False
    ).eigenvalue_band_properties
    assert gap['gap'] == pytest.approx(reference[0], abs=1e-6)
    # the real run is PBEsol (GGA = PS): read from its INCAR and said so
    assert gap['level_of_theory_label'] == 'PBEsol, not PBE' and gap['kpoints'] == '2 k-points'
    assert gap['homo'] < gap['fermi_energy'] < gap['lumo']
    assert set(results['dos']['zn3ps42'].get_arraynames()) == {'energy', 'dos_total'}


def test_vasp_engine_needs_its_inputs(mock_vasp, potential_family):
    """Without k-points per structure, or without vasprun.xml retrieved, the VASP engine is refused."""
    builder = ElectronicStructureWorkChain.get_builder()
    builder.engine = orm.Str('vasp')
    builder.structures = {'li16': li16()}
    builder.vasp.code = mock_vasp
    builder.vasp.parameters = orm.Dict({'incar': {'ENCUT': 600}})
    builder.vasp.potential_family = orm.Str(potential_family)
    builder.vasp.potential_mapping = orm.Dict({'Li': 'Li_sv'})
    builder.vasp.options = orm.Dict({'withmpi': False, 'resources': {'num_machines': 1}})
    with pytest.raises(ValueError, match='needs a k-point mesh'):
        run_get_node(builder)
    kpoints = orm.KpointsData()
    kpoints.set_kpoints_mesh([1, 1, 3])
    builder.kpoints = {'li16': kpoints}
    with pytest.raises(ValueError, match=r"add 'vasprun\.xml'"):
        run_get_node(builder)
