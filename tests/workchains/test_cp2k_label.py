"""``lisei.cp2k.label``: protocols, validation before submission, level of theory, handlers, real CP2K runs.

The runs use CP2K 2023.1 (``/usr/bin/cp2k.psmp``) with GFN1-xTB on rattled bcc Li16, 2 MPI ranks
(~2-5 s per single point on 2 free cores); they are skipped where CP2K is not installed.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from aiida import orm
from aiida.common.links import LinkType
from aiida.engine import run_get_node
from aiida.engine.utils import instantiate_process
from aiida.manage import get_manager
from aiida.plugins import CalculationFactory, WorkflowFactory
from ase.build import bulk

from aiida_lisei.data.level_of_theory import LevelOfTheoryError
from aiida_lisei.data.training_set import TrainingFrames, TrainingSetData
from aiida_lisei.workchains.cp2k_base import Cp2kBaseWorkChain, gentler_scf
from aiida_lisei.workchains.cp2k_label import get_level_of_theory

Cp2kLabelWorkChain = WorkflowFactory('lisei.cp2k.label')
Cp2kCalculation = CalculationFactory('cp2k')

CP2K = Path('/usr/bin/cp2k.psmp')
needs_cp2k = pytest.mark.skipif(not CP2K.is_file(), reason=f'{CP2K} not installed')
OPTIONS = {'resources': {'num_machines': 1, 'num_mpiprocs_per_machine': 2}, 'max_wallclock_seconds': 600}


def _node_count() -> int:
    return orm.QueryBuilder().append(orm.Node).count()


def li16(seed: int = 1) -> orm.StructureData:
    """bcc Li16 (a = 3.42 Å) rattled by 0.05 Å."""
    atoms = bulk('Li', 'bcc', a=3.42, cubic=True).repeat(2)
    atoms.rattle(0.05, seed=seed)
    return orm.StructureData(ase=atoms)


def li2s() -> orm.StructureData:
    """Antifluorite Li2S, conventional cell (12 atoms, a = 5.70 Å)."""
    return orm.StructureData(ase=bulk('SLi2', 'fluorite', a=5.70, cubic=True))


@pytest.fixture
def fake_code(aiida_localhost) -> orm.InstalledCode:
    """A ``cp2k`` code that is never run (builder tests)."""
    return orm.InstalledCode(
        computer=aiida_localhost, filepath_executable='/bin/true', default_calc_job_plugin='cp2k'
    ).store()


# ----------------------------------------------------------------------------------------------------------
# Protocols and validation
# ----------------------------------------------------------------------------------------------------------


def test_protocols_are_listed():
    """Four protocols, ``gfn1_xtb`` the default."""
    assert set(Cp2kLabelWorkChain.get_available_protocols()) == {
        'gfn1_xtb',
        'gfn1_xtb_metal',
        'gfn1_xtb_insulator',
        'pbe',
    }
    assert Cp2kLabelWorkChain.get_default_protocol() == 'gfn1_xtb'


@pytest.mark.parametrize(('structure', 'alpha', 'check_charges'), [(li16, 0.2, None), (li2s, 0.1, False)])
def test_gfn1_xtb_picks_settings_by_composition(fake_code, structure, alpha, check_charges):
    """Pure Li gets the metal mixing, Li2S the insulator mixing; both smear at 300 K and scale with size."""
    builder = Cp2kLabelWorkChain.get_builder_from_protocol(fake_code, structure(), system_label='x')
    dft = builder.cp2k.parameters['FORCE_EVAL']['DFT']
    assert dft['QS'] == {
        'METHOD': 'xTB',
        'XTB': {'DO_EWALD': True, **({} if check_charges is None else {'CHECK_ATOMIC_CHARGES': False})},
    }
    assert dft['SCF']['MIXING']['ALPHA'] == alpha
    assert dft['SCF']['SMEAR'] == {'_': 'ON', 'METHOD': 'FERMI_DIRAC', 'ELECTRONIC_TEMPERATURE': 300}
    assert dft['SCF']['ADDED_MOS'] == 20
    assert dft['SCF']['MAX_SCF'] == 100
    assert builder.cp2k.metadata['options']['parser_name'] == 'lisei.cp2k'
    assert builder.with_virials.value is (check_charges is not None)  # no virials for xTB metals


def test_settings_scale_with_size(fake_code):
    """ADDED_MOS and MAX_SCF grow with the number of atoms (Li 4x4x4 conventional cells: 128 atoms)."""
    atoms = bulk('Li', 'bcc', a=3.42, cubic=True).repeat(4)
    builder = Cp2kLabelWorkChain.get_builder_from_protocol(fake_code, orm.StructureData(ase=atoms))
    scf = builder.cp2k.parameters['FORCE_EVAL']['DFT']['SCF']
    assert (scf['ADDED_MOS'], scf['MAX_SCF']) == (96, 128)
    assert builder.system_label.value == 'Li128'


def test_pbe_kinds_and_level_of_theory(fake_code):
    """PBE: one KIND per species present with the protocol's basis and pseudopotential."""
    atoms = bulk('SLi2', 'fluorite', a=5.70, cubic=True)
    builder = Cp2kLabelWorkChain.get_builder_from_protocol(
        fake_code, orm.StructureData(ase=atoms), protocol='pbe'
    )
    parameters = builder.cp2k.parameters.get_dict()
    assert parameters['FORCE_EVAL']['SUBSYS']['KIND'] == [
        {'_': 'Li', 'ELEMENT': 'Li', 'BASIS_SET': 'DZVP-MOLOPT-SR-GTH', 'POTENTIAL': 'GTH-PBE-q3'},
        {'_': 'S', 'ELEMENT': 'S', 'BASIS_SET': 'DZVP-MOLOPT-SR-GTH', 'POTENTIAL': 'GTH-PBE-q6'},
    ]
    level = get_level_of_theory(parameters, '2023.1')
    assert level == {
        'engine': 'cp2k',
        'method': 'PBE',
        'version': '2023.1',
        'settings': {
            'basis_set': {'Li': 'DZVP-MOLOPT-SR-GTH', 'S': 'DZVP-MOLOPT-SR-GTH'},
            'pseudopotential': {'Li': 'GTH-PBE-q3', 'S': 'GTH-PBE-q6'},
            'cutoff': 400,
            'rel_cutoff': 50,
            'charge': 0,
            'kpoints': 'gamma',
            'smearing': {'method': 'FERMI_DIRAC', 'electronic_temperature': 300},
        },
    }


def test_metal_and_insulator_settings_share_one_level_of_theory(fake_code):
    """Li16 (metal mixing) and Li2S (insulator mixing) share one level of theory: they can be merged."""
    levels = [
        get_level_of_theory(
            Cp2kLabelWorkChain.get_builder_from_protocol(fake_code, structure()).cp2k.parameters.get_dict(),
            '2023.1',
        )
        for structure in (li16, li2s)
    ]
    assert levels[0] == levels[1]
    assert levels[0]['method'] == 'GFN1-xTB'
    assert levels[0]['settings']['do_ewald'] is True


@pytest.mark.parametrize(
    ('kwargs', 'message'),
    [
        ({'structure': 'NaCl', 'protocol': 'pbe'}, r"no basis set or pseudopotential for \['Na'\]"),
        ({'structure': 'overlap'}, r'0\.300 Å apart \(minimum 0\.5 Å\): overlapping atoms'),
        (
            {
                'protocol': 'pbe',
                'overrides': {'cp2k': {'parameters': {'FORCE_EVAL': {'DFT': {'MGRID': {'CUTOFF': 0}}}}}},
            },
            r'MGRID/CUTOFF must be a positive number of Ry, got 0',
        ),
        (
            {
                'overrides': {
                    'cp2k': {'parameters': {'FORCE_EVAL': {'DFT': {'KPOINTS': {'SCHEME': 'GAMMA'}}}}}
                }
            },
            r'k-point sampling is not supported',
        ),
        ({'system_label': 'Li 16'}, r'system label'),
        ({'tags': {'system': 'x'}}, r'reserved'),
        ({'protocol': 'pbe0'}, r'unknown protocol `pbe0`'),
    ],
    ids=['species', 'overlap', 'cutoff', 'kpoints', 'label', 'tags', 'protocol'],
)
def test_builder_refuses_bad_inputs_before_storing(fake_code, kwargs, message):
    """Unknown species, overlapping atoms, zero cutoff, bad label or tag: ValueError, no node stored."""
    structure = kwargs.pop('structure', 'li16')
    atoms = bulk('Li', 'bcc', a=3.42, cubic=True).repeat(2)
    if structure == 'NaCl':
        atoms = bulk('NaCl', 'rocksalt', a=5.64, cubic=True)
    elif structure == 'overlap':
        atoms.positions[1] = atoms.positions[0] + [0.3, 0.0, 0.0]
    before = _node_count()
    with pytest.raises(ValueError, match=message):
        Cp2kLabelWorkChain.get_builder_from_protocol(fake_code, orm.StructureData(ase=atoms), **kwargs)
    assert _node_count() == before


def test_port_validator_refuses_hand_edited_inputs(fake_code):
    """A GPW input without KIND sections fails at launch, before any node is stored."""
    builder = Cp2kLabelWorkChain.get_builder_from_protocol(fake_code, li16(), protocol='pbe')
    parameters = builder.cp2k.parameters.get_dict()
    del parameters['FORCE_EVAL']['SUBSYS']
    builder.cp2k.parameters = orm.Dict(parameters)
    before = _node_count()
    with pytest.raises(ValueError, match=r"no basis set or pseudopotential for \['Li'\]"):
        run_get_node(builder)
    assert _node_count() == before


def test_gentler_scf():
    """MAX_SCF doubled (floor 100), mixing ALPHA halved, ADDED_MOS times 1.5; smearing untouched."""
    parameters = {
        'FORCE_EVAL': {
            'DFT': {
                'SCF': {
                    'MAX_SCF': 3,
                    'ADDED_MOS': 20,
                    'MIXING': {'ALPHA': 0.2},
                    'SMEAR': {'_': 'ON', 'ELECTRONIC_TEMPERATURE': 300},
                }
            }
        }
    }
    new, changes = gentler_scf(parameters, Cp2kBaseWorkChain.defaults)
    scf = new['FORCE_EVAL']['DFT']['SCF']
    assert (scf['MAX_SCF'], scf['MIXING']['ALPHA'], scf['ADDED_MOS']) == (100, 0.1, 30)
    assert scf['SMEAR'] == parameters['FORCE_EVAL']['DFT']['SCF']['SMEAR']
    assert changes == ['MAX_SCF 3 -> 100', 'mixing ALPHA 0.2 -> 0.1', 'ADDED_MOS 20 -> 30']
    assert get_level_of_theory(new, '2023.1') == get_level_of_theory(parameters, '2023.1')


# ----------------------------------------------------------------------------------------------------------
# Handlers on a failed CalcJob node
# ----------------------------------------------------------------------------------------------------------


@pytest.fixture
def workchain_with_failed_child(fake_code, generate_calc_job_node):
    """Return a factory: an instantiated ``lisei.cp2k.base`` (after ``setup``), with the inputs that
    ``lisei.cp2k.label`` gives it, and a failed ``cp2k`` CalcJobNode."""

    def factory(exit_status: int, max_wallclock_seconds: int = 600):
        label = Cp2kLabelWorkChain.get_builder_from_protocol(
            fake_code, li16(), options={'max_wallclock_seconds': max_wallclock_seconds}
        )
        builder = Cp2kBaseWorkChain.get_builder()
        for name in ('cp2k', 'structure', 'clean_workdir', 'max_iterations'):
            builder[name] = label[name]
        process = instantiate_process(get_manager().get_runner(), builder)
        process.setup()
        node = generate_calc_job_node(
            'cp2k',
            options={'resources': {'num_machines': 1}, 'max_wallclock_seconds': max_wallclock_seconds},
            exit_status=exit_status,
            finished=True,
        )
        return process, node

    return factory


def test_handle_out_of_walltime(workchain_with_failed_child):
    """Walltime times 1.5 and CP2K's GLOBAL/WALLTIME at 90 % of it; at the cap: exit 520."""
    process, node = workchain_with_failed_child(400, 600)
    assert process.ctx.inputs.parameters['GLOBAL']['WALLTIME'] == 540
    report = process.handle_out_of_walltime(node)
    assert report.do_break and report.exit_code.status == 0
    assert process.ctx.inputs.metadata['options']['max_wallclock_seconds'] == 900
    assert process.ctx.inputs.parameters['GLOBAL']['WALLTIME'] == 810

    process, node = workchain_with_failed_child(400, Cp2kBaseWorkChain.defaults.max_wallclock_seconds_cap)
    report = process.handle_out_of_walltime(node)
    assert report.exit_code.status == Cp2kBaseWorkChain.exit_codes.ERROR_WALLTIME_CAP_REACHED.status == 520
    assert Cp2kLabelWorkChain.exit_codes.ERROR_WALLTIME_CAP_REACHED.status == 520  # passed on as it is


def test_handle_scf_not_converged_gives_up(workchain_with_failed_child):
    """After ``max_scf_restarts`` restarts the handler stops the work chain with 411."""
    process, node = workchain_with_failed_child(450)
    for _ in range(Cp2kBaseWorkChain.defaults.max_scf_restarts):
        assert process.handle_scf_not_converged(node).exit_code.status == 0
    report = process.handle_scf_not_converged(node)
    assert report.exit_code.status == Cp2kBaseWorkChain.exit_codes.ERROR_SCF_NOT_CONVERGED.status == 411
    assert Cp2kLabelWorkChain.exit_codes.ERROR_SCF_NOT_CONVERGED.status == 411  # passed on as it is


# ----------------------------------------------------------------------------------------------------------
# Real CP2K runs
# ----------------------------------------------------------------------------------------------------------


@needs_cp2k
def test_label_li16_gfn1_xtb(cp2k_code, tmp_path):
    """Li16 with ``gfn1_xtb``: a frame with energy, forces, virial and provenance; deepmd/npy round trip."""
    structure = li16()
    tags = {'temperature': 300, 'iteration': 0, 'source': 'perturbation'}
    builder = Cp2kLabelWorkChain.get_builder_from_protocol(
        cp2k_code,
        structure,
        overrides={'with_virials': True},  # off by default for xTB metals; on here to check the conversion
        options=OPTIONS,
        system_label='bulk_Li',
        tags=tags,
        type_map=['Li', 'P', 'S', 'Cl'],
    )
    results, node = run_get_node(builder)
    assert node.is_finished_ok, node.exit_message
    (base,) = [child for child in node.called if child.process_label == 'Cp2kBaseWorkChain']
    calc = base.called[0]
    assert isinstance(calc, orm.CalcJobNode) and calc.is_finished_ok

    labels = results['labels']
    assert labels.nframes == 1 and labels.system_labels == ['bulk_Li']
    assert labels.type_map == ['Li', 'P', 'S', 'Cl']
    assert labels.level_of_theory['method'] == 'GFN1-xTB'
    assert labels.level_of_theory['version'] == '2023.1'
    assert labels.frame_provenance('bulk_Li', 0)['labelled_by'] == calc.uuid
    system = labels.get_system('bulk_Li')
    energy = results['output_parameters']['energy']
    assert system.energies[0] == pytest.approx(energy) and -175 < energy < -165  # eV
    np.testing.assert_allclose(system.forces[0], results['forces'].get_array('forces'))
    np.testing.assert_allclose(system.coords[0], structure.get_ase().positions)
    volume = structure.get_ase().get_volume()
    np.testing.assert_allclose(system.virials[0], -results['stress'].get_array('stress') * volume)
    assert np.abs(system.forces[0].sum(axis=0)).max() < 1e-4

    # provenance: structure + parameters + parsed outputs -> labels
    creator = labels.creator
    assert creator.process_label == 'build_cp2k_labels'
    incoming = {
        link.link_label for link in creator.base.links.get_incoming(link_type=LinkType.INPUT_CALC).all()
    }
    assert {
        'structure',
        'parameters',
        'output_parameters',
        'forces',
        'stress',
        'system_label',
        'tags',
    } <= incoming

    # deepmd/npy round trip keeps arrays, level of theory and provenance
    paths = labels.to_deepmd_npy(tmp_path)
    reread = TrainingSetData.from_deepmd_npy(paths)
    assert reread.level_of_theory == labels.level_of_theory
    assert reread.frame_provenance('bulk_Li', 0) == labels.frame_provenance('bulk_Li', 0)
    for field in ('coords', 'cells', 'energies', 'forces', 'virials'):
        np.testing.assert_array_equal(getattr(reread.get_system('bulk_Li'), field), getattr(system, field))

    # a PBE frame can never be merged with it
    pbe_parameters = Cp2kLabelWorkChain.get_builder_from_protocol(
        cp2k_code, structure, protocol='pbe'
    ).cp2k.parameters
    frames = labels.frames
    pbe_level = get_level_of_theory(pbe_parameters.get_dict(), '2023.1')
    pbe = TrainingSetData(TrainingFrames(frames.type_map, pbe_level, frames.systems))
    with pytest.raises(LevelOfTheoryError, match='different levels of theory'):
        labels.merge(pbe)


@needs_cp2k
def test_scf_failure_is_fixed_by_the_handler(cp2k_code):
    """MAX_SCF 2 on rattled Li16 fails (450); the handler raises it and the second CalcJob converges."""
    overrides = {'cp2k': {'parameters': {'FORCE_EVAL': {'DFT': {'SCF': {'MAX_SCF': 2}}}}}}
    builder = Cp2kLabelWorkChain.get_builder_from_protocol(
        cp2k_code, li16(), overrides=overrides, options=OPTIONS
    )
    results, node = run_get_node(builder)
    assert node.is_finished_ok, node.exit_message
    calcs = [child for child in node.called_descendants if isinstance(child, orm.CalcJobNode)]
    assert [calc.exit_status for calc in sorted(calcs, key=lambda calc: calc.ctime)] == [450, 0]
    reports = ' '.join(
        log.message for process in (node, *node.called) for log in orm.Log.collection.get_logs_for(process)
    )
    assert 'handle_scf_not_converged' in reports and 'MAX_SCF 2 -> 100' in reports
    assert results['output_parameters']['scf_converged'] is True
    assert results['labels'].nframes == 1
    assert not results['labels'].get_system('Li16').has_virials  # gfn1_xtb_metal: no virials
    assert 'stress' in results


@needs_cp2k
@pytest.mark.slow
def test_label_li16_pbe(cp2k_code):
    """Li16 with ``pbe`` (~35 s on 2 free cores): labels at the PBE level, its settings recorded."""
    builder = Cp2kLabelWorkChain.get_builder_from_protocol(cp2k_code, li16(), protocol='pbe', options=OPTIONS)
    results, node = run_get_node(builder)
    assert node.is_finished_ok, node.exit_message
    level = results['labels'].level_of_theory
    assert level['method'] == 'PBE'
    assert level['settings']['pseudopotential'] == {'Li': 'GTH-PBE-q3'}
    assert (level['settings']['cutoff'], level['settings']['rel_cutoff']) == (400, 50)
    # GPW's real-space grid breaks translation invariance slightly: 3e-3 eV/Å net force measured at 400 Ry
    assert np.abs(results['forces'].get_array('forces').sum(axis=0)).max() < 1e-2


def test_docs_list_every_handler_and_exit_code():
    """docs/labelling_cp2k.md names every handler and every exit code of the work chain (no drift)."""
    text = (Path(__file__).parents[2] / 'docs' / 'labelling_cp2k.md').read_text()
    handlers = {handler.__name__ for handler in Cp2kBaseWorkChain.get_process_handlers()}
    assert handlers == {'handle_out_of_walltime', 'handle_scf_not_converged', 'handle_relax_not_converged'}
    assert all(f'`{name}`' in text for name in handlers)
    for label in ('ERROR_SCF_NOT_CONVERGED', 'ERROR_WALLTIME_CAP_REACHED'):
        code = Cp2kLabelWorkChain.exit_codes[label]
        assert f'**{code.status}** `{label}`' in text
