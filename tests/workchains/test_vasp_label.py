"""``VaspLabelWorkChain``: end to end against aiida-vasp's ``mock-vasp``, protocol builders, input validation.

``mock-vasp`` hashes the INCAR, POSCAR and KPOINTS aiida-vasp writes and copies the outputs of the
registry entry with the same hash (``tests/fixtures/vasp/registry``, see its README): the builder is
made from the entry's own ``inp/`` files. POTCARs are aiida-vasp's dummy test files.
"""

from __future__ import annotations

import sys
from pathlib import Path

import ase.build
import ase.io
import numpy as np
import pytest
from aiida import orm
from aiida.engine import run_get_node
from aiida_vasp.parsers.content_parsers.incar import IncarParser
from aiida_vasp.parsers.content_parsers.kpoints import KpointsParser
from aiida_vasp.parsers.content_parsers.poscar import PoscarParser
from aiida_vasp.parsers.vasp import get_kpoints_node, get_structure_node

from aiida_lisei.structures import builders
from aiida_lisei.workchains.vasp_label import VaspLabelWorkChain

FIXTURES = Path(__file__).parents[1] / 'fixtures' / 'vasp'
REGISTRY = FIXTURES / 'registry'
ZN_ENTRY = REGISTRY / 'zn3ps42_phonon_disp'
OPTIONS = {'withmpi': False, 'resources': {'num_machines': 1, 'num_mpiprocs_per_machine': 1}}


@pytest.fixture
def mock_vasp(aiida_code_installed) -> orm.InstalledCode:
    """aiida-vasp's ``mock-vasp`` as a ``vasp.vasp`` code that reads our registry (polled without delay)."""
    code = aiida_code_installed(
        label='mock-vasp',
        default_calc_job_plugin='vasp.vasp',
        filepath_executable=str(Path(sys.executable).parent / 'mock-vasp'),
        prepend_text=f'export MOCK_VASP_REG_BASE={REGISTRY}',
    )
    code.computer.set_minimum_job_poll_interval(0.0)
    return code


def read_entry(entry: Path) -> tuple[orm.StructureData, dict, orm.KpointsData]:
    """Structure, INCAR and k-points of a registry entry, read with aiida-vasp's own parsers."""
    with (entry / 'inp' / 'POSCAR').open() as handle:
        structure = get_structure_node(PoscarParser(handler=handle).structure)
    with (entry / 'inp' / 'INCAR').open() as handle:
        incar = IncarParser(handler=handle, validate_tags=False).incar
    with (entry / 'inp' / 'KPOINTS').open() as handle:
        kpoints = get_kpoints_node(KpointsParser(handler=handle).kpoints, structure.cell)
    return structure, incar, kpoints


def zn_builder(code, family):
    """Builder whose VASP inputs are exactly those of the Zn3(PS4)2 registry entry."""
    structure, incar, kpoints = read_entry(ZN_ENTRY)
    builder = VaspLabelWorkChain.get_builder_from_protocol(
        code,
        structure,
        overrides={'type_map': ['P', 'S', 'Zn'], 'potential_mapping': {'Zn': 'Zn'}},
        options=OPTIONS,
        potential_family=family,
        system_label='zn3ps42',
        tags={'source': 'phonopy-displacement', 'temperature': 0},
    )
    builder.vasp.parameters = orm.Dict({'incar': incar})
    builder.vasp.kpoints = kpoints
    return builder


def test_labels_from_mock_vasp(mock_vasp, potential_family):
    """The real 104-atom VASP run becomes one frame equal to ASE's read of its vasprun.xml."""
    results, node = run_get_node(zn_builder(mock_vasp, potential_family))
    assert node.is_finished_ok, (node.exit_status, node.exit_message)

    labels = results['labels']
    calcjob = results['misc'].creator
    assert calcjob.process_type == 'aiida.calculations:vasp.vasp'
    assert labels.creator.process_label == 'build_vasp_labels'
    reference = ase.io.read(ZN_ENTRY / 'out' / 'vasprun.xml', format='vasp-xml', index=-1)
    system = labels.get_system('zn3ps42')
    assert labels.type_map == ['P', 'S', 'Zn']
    assert system.energies[0] == pytest.approx(
        reference.get_potential_energy(force_consistent=True), abs=1e-7
    )
    np.testing.assert_allclose(system.forces[0], reference.get_forces(), atol=1e-8)
    np.testing.assert_allclose(
        system.virials[0], -reference.get_stress(voigt=False) * reference.get_volume(), atol=1e-6
    )
    np.testing.assert_allclose(system.coords[0], reference.positions, atol=1e-6)

    provenance = labels.frame_provenance('zn3ps42', 0)
    assert provenance['labelled_by'] == calcjob.uuid
    assert provenance['tags'] == {
        'kpoints_mesh': '1x1x2', 'lreal': 'false', 'source': 'phonopy-displacement', 'temperature': 0
    }  # fmt: skip
    level = labels.level_of_theory
    assert provenance['level_of_theory'] == level
    assert (level['engine'], level['method'], level['energy_type']) == ('vasp', 'PBEsol', 'energy_free')
    assert level['incar'] == {
        'addgrid': True,
        'encut': 359.7399,
        'gga': 'ps',
        'ismear': 0,
        'prec': 'accurate',
        'sigma': 0.01,
    }
    assert level['potential_family'] == potential_family


def bcc_li2() -> orm.StructureData:
    """The 2-atom conventional bcc Li cell of the SI (a = 3.42 Å)."""
    return orm.StructureData(ase=ase.build.bulk('Li', 'bcc', a=3.42, cubic=True))


def paper_models() -> dict[str, orm.StructureData]:
    """The SI's bulk cells: bcc Li (2 and 16 atoms), Li6PS5Cl (52) and the interface (185)."""
    argyrodite = builders.argyrodite(seed=20241125, lattice_constant=10.25).atoms
    interface = builders.interface(
        argyrodite, electrolyte_repeat_xy=1, electrolyte_repeat_z=2, anode_layers=9, vacuum=15.0
    )
    return {
        'bcc_lithium': orm.StructureData(ase=builders.bcc_lithium(lattice_constant=3.42, repeat=2).atoms),
        'argyrodite': orm.StructureData(ase=argyrodite),
        'interface': orm.StructureData(ase=interface.atoms),
    }


def test_paper_protocol(mock_vasp, potential_family, data_regression):
    """SI meshes: 11x11x11 on 2-atom bcc Li, so 6x6x6 on Li16; 2x2x2 on Li6PS5Cl, 2x2x1 on the interface."""
    code = mock_vasp
    snapshot = {'systems': {}}
    si_mesh = VaspLabelWorkChain.get_builder_from_protocol(
        code, bcc_li2(), potential_family=potential_family, system_label='bcc_lithium'
    ).vasp.kpoints.get_kpoints_mesh()
    assert si_mesh == ([11, 11, 11], [0.0, 0.0, 0.0])
    for label, structure in paper_models().items():
        builder = VaspLabelWorkChain.get_builder_from_protocol(
            code, structure, protocol='paper', potential_family=potential_family, system_label=label
        )
        incar = builder.vasp.parameters.get_dict()['incar']
        snapshot['systems'][label] = {
            'natoms': len(structure.sites),
            'kpoints_mesh': builder.vasp.kpoints.get_kpoints_mesh()[0],
            'lreal': incar.pop('lreal'),
        }
        common = {
            'incar': incar,
            'settings': builder.vasp.settings.get_dict(),
            'potential_mapping': builder.potential_mapping.get_dict(),
            'energy_type': builder.energy_type.value,
            'type_map': builder.type_map.get_list(),
            'options': {
                key: builder.vasp.calc.metadata.options[key] for key in ('max_wallclock_seconds', 'withmpi')
            },
        }
        assert snapshot.setdefault('common', common) == common  # only k-points and LREAL depend on the system
    meshes = [system['kpoints_mesh'] for system in snapshot['systems'].values()]
    assert meshes == [[6, 6, 6], [2, 2, 2], [2, 2, 1]]
    assert [system['lreal'] for system in snapshot['systems'].values()] == [False, False, 'Auto']
    relax = VaspLabelWorkChain.get_builder_from_protocol(
        code, bcc_li2(), protocol='relax', potential_family=potential_family, system_label='bcc_lithium'
    )
    paper_incar = {**snapshot['common']['incar'], 'lreal': False}
    snapshot['relax_changes'] = {
        'incar': {
            key: value
            for key, value in relax.vasp.parameters.get_dict()['incar'].items()
            if paper_incar.get(key) != value
        },
        'settings': relax.vasp.settings.get_dict(),
    }
    data_regression.check(snapshot)


def count_nodes() -> int:
    """Number of nodes in the profile."""
    return orm.QueryBuilder().append(orm.Node).count()


@pytest.mark.parametrize(
    ('change', 'message'),
    [
        (
            lambda b: setattr(b, 'potential_family', orm.Str('PBE.missing')),
            "POTCAR family 'PBE.missing' is not",
        ),
        (lambda b: setattr(b, 'potential_mapping', orm.Dict({'P': 'P', 'S': 'S'})), r"kind\(s\) \['Zn'\]"),
        (
            lambda b: setattr(b, 'potential_mapping', orm.Dict({'P': 'P', 'S': 'S', 'Zn': 'Zn_pv'})),
            "no \\['Zn_pv'\\]",
        ),
        (lambda b: setattr(b, 'type_map', orm.List(['P', 'S'])), r"lacks the element\(s\) \['Zn'\]"),
        (lambda b: setattr(b.vasp, 'parameters', orm.Dict({'incar': {'encut': -1}})), 'ENCUT must be > 0'),
        (lambda b: setattr(b.vasp, 'parameters', orm.Dict({'incar': {'pstress': 10}})), 'PSTRESS must be 0'),
        (
            lambda b: setattr(b.vasp, 'parameters', orm.Dict({'incar': {'nsw': 5, 'ibrion': 2}})),
            "'trajectory'",
        ),
        (lambda b: setattr(b.vasp, 'settings', orm.Dict({})), "add 'energy_free'"),
        (lambda b: setattr(b, 'system_label', orm.Str('bad label')), 'system_label'),
    ],
)
def test_invalid_inputs_store_nothing(mock_vasp, potential_family, change, message):
    """Each problem gives a message naming the fix, before any node is stored."""
    builder = zn_builder(mock_vasp, potential_family)
    change(builder)
    before = count_nodes()
    with pytest.raises(ValueError, match=message):
        run_get_node(builder)
    assert count_nodes() == before


def test_overlapping_atoms_and_bad_spacing(mock_vasp, potential_family):
    """Atoms closer than 0.5 Å are refused; the builder refuses a missing family and a k-spacing <= 0."""
    builder = zn_builder(mock_vasp, potential_family)
    ase_structure = builder.structure.get_ase()
    ase_structure.positions[1] = ase_structure.positions[0] + [0.3, 0.0, 0.0]
    builder.structure = orm.StructureData(ase=ase_structure)
    with pytest.raises(ValueError, match=r'atoms 0 and 1 are 0.300 Å apart'):
        run_get_node(builder)
    with pytest.raises(ValueError, match='not an uploaded POTCAR family'):
        VaspLabelWorkChain.get_builder_from_protocol(
            mock_vasp, bcc_li2(), potential_family='', system_label='x'
        )
    with pytest.raises(ValueError, match='spacing'):
        VaspLabelWorkChain.get_builder_from_protocol(
            mock_vasp, bcc_li2(), overrides={'kpoints_spacing': {'default': 0}},
            potential_family=potential_family, system_label='x',
        )  # fmt: skip
