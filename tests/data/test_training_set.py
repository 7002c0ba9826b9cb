"""Tests of the ``lisei.training_set`` data plugin and its pure helpers."""

from __future__ import annotations

import uuid

import dpdata
import numpy as np
import pytest
from aiida import orm
from aiida.engine import calcfunction
from aiida.plugins import DataFactory

from aiida_lisei.data.level_of_theory import (
    LevelOfTheoryError,
    canonical_level_of_theory,
    level_of_theory_key,
)
from aiida_lisei.data.training_set import (
    SIDECAR_FILENAME,
    FrameSystem,
    TrainingFrames,
    TrainingSetData,
    TrainingSetError,
    merge,
    merge_frames,
    split_frames,
)

TYPE_MAP = ['Li', 'P', 'S', 'Cl']
CP2K_XTB = {'engine': 'cp2k', 'method': 'GFN1-xTB', 'version': '2023.1', 'settings': {'do_ewald': True}}
TBLITE_XTB = {'engine': 'tblite', 'method': 'GFN1-xTB', 'version': '0.8.0', 'electronic_temperature': 300}
ARRAYS = ('atom_types', 'coords', 'cells', 'energies', 'forces', 'virials')
CALC_A, CALC_B = str(uuid.uuid4()), str(uuid.uuid4())


def make_system(
    label: str, atom_types, nframes: int, seed: int, virials: bool = True, **provenance
) -> FrameSystem:
    """A system of random frames (cell ~6 Å, energies ~ -2 eV/atom) with float64 arrays."""
    rng = np.random.default_rng(seed)
    natoms = len(atom_types)
    cells = np.eye(3) * 6.0 + rng.normal(0.0, 0.05, (nframes, 3, 3))
    return FrameSystem(
        label,
        atom_types,
        rng.uniform(0.0, 6.0, (nframes, natoms, 3)),
        cells,
        rng.normal(-2.0 * natoms, 0.1, nframes),
        rng.normal(0.0, 0.5, (nframes, natoms, 3)),
        rng.normal(0.0, 1.0, (nframes, 3, 3)) if virials else None,
        **provenance,
    )


@pytest.fixture
def frames() -> TrainingFrames:
    """Systems 'bulk_Li' with virials (AIMD 300 K) and 'interface' without (exploration, 2 iterations)."""
    bulk = make_system(
        'bulk_Li', [0, 0, 0, 0], 4, 1, labelled_by=CALC_A, tags={'source': 'aimd', 'temperature': 300}
    )
    tags = [
        {'source': 'exploration', 'temperature': t, 'iteration': i} for t, i in [(300, 2), (800, 3), (800, 3)]
    ]
    interface = make_system(
        'interface', [0, 0, 1, 2, 2, 3], 3, 2, virials=False, labelled_by=[CALC_A, CALC_B, None], tags=tags
    )
    return TrainingFrames(TYPE_MAP, CP2K_XTB, [bulk, interface])


def assert_same_frames(first: TrainingFrames, second: TrainingFrames) -> None:
    """Exact equality of type map, level, labels, arrays (values and dtype) and provenance."""
    assert first.type_map == second.type_map
    assert first.level_of_theory == second.level_of_theory
    assert [s.label for s in first.systems] == [s.label for s in second.systems]
    for one, two in zip(first.systems, second.systems, strict=True):
        for name in ARRAYS:
            a, b = getattr(one, name), getattr(two, name)
            assert (a is None) == (b is None), name
            if a is not None:
                assert a.dtype == b.dtype and np.array_equal(a, b), name
        assert one.labelled_by == two.labelled_by
        assert one.tags == two.tags


def test_entry_point_store_and_load(frames):
    """The entry point resolves; arrays and provenance survive storing; metadata are attributes."""
    assert DataFactory('lisei.training_set') is TrainingSetData
    node = TrainingSetData(frames).store()
    loaded = orm.load_node(node.pk)
    assert_same_frames(loaded.frames, frames)
    assert loaded.type_map == TYPE_MAP
    assert loaded.nframes == 7
    assert loaded.systems[1] == {
        'label': 'interface',
        'formula': 'Li2P1S2Cl1',
        'natoms': 6,
        'nframes': 3,
        'has_virials': False,
    }
    assert loaded.level_of_theory_key == level_of_theory_key(CP2K_XTB)
    assert loaded.frame_provenance('interface', 1) == {
        'system': 'interface',
        'labelled_by': CALC_B,
        'level_of_theory': canonical_level_of_theory(CP2K_XTB),
        'tags': {'iteration': 3, 'source': 'exploration', 'temperature': 800},
    }
    assert sorted(loaded.get_arraynames()) == sorted(
        [f's0_{name}' for name in ARRAYS] + [f's1_{name}' for name in ARRAYS if name != 'virials']
    )


def test_select_frames_and_query(frames):
    """select_frames on tags/system/labeller; QueryBuilder finds sets holding such frames (SQLite too)."""
    node = TrainingSetData(frames).store()
    assert node.select_frames(system='interface', temperature=800, iteration=3) == [
        ('interface', 1),
        ('interface', 2),
    ]
    assert node.select_frames(temperature=300) == [('bulk_Li', i) for i in range(4)] + [('interface', 0)]
    assert node.select_frames(iteration=[2, 4]) == [('interface', 0)]
    assert node.select_frames(labelled_by=CALC_B) == [('interface', 1)]
    assert node.select_frames(source='perturbation') == []
    assert node.subset(node.select_frames(temperature=800)).nframes == 2

    def query(**filters):
        builder = orm.QueryBuilder().append(TrainingSetData, filters=filters, project='uuid')
        return builder.all(flat=True)

    wanted = {'system': 'interface', 'temperature': 800, 'iteration': 3}
    assert node.uuid in query(**{'attributes.tag_sets': {'contains': [wanted]}})
    assert node.uuid not in query(**{'attributes.tag_sets': {'contains': [{**wanted, 'iteration': 4}]}})
    assert node.uuid in query(**{'attributes.labelled_by': {'contains': [CALC_B]}})
    assert node.uuid not in query(**{'attributes.labelled_by': {'contains': [str(uuid.uuid4())]}})
    assert node.uuid in query(**{'attributes.level_of_theory_key': level_of_theory_key(CP2K_XTB)})


def test_deepmd_npy_round_trip(frames, tmp_path):
    """Exact round trip through dpdata's deepmd/npy (dpdata writes float64 by default: nothing is cast)."""
    node = TrainingSetData(frames)
    paths = node.to_deepmd_npy(tmp_path)
    assert [path.name for path in paths] == ['bulk_Li', 'interface']
    assert (paths[0] / 'type_map.raw').read_text().split() == TYPE_MAP
    assert (paths[0] / 'set.000' / 'virial.npy').is_file()
    assert not (paths[1] / 'set.000' / 'virial.npy').exists()
    assert np.load(paths[1] / 'set.000' / 'coord.npy').dtype == np.float64
    assert_same_frames(TrainingSetData.from_deepmd_npy(paths).frames, frames)

    # Without the sidecar: label = directory name, provenance from the arguments.
    (paths[1] / SIDECAR_FILENAME).unlink()
    plain = TrainingSetData.from_deepmd_npy(paths[1], CP2K_XTB, tags={'source': 'imported'})
    assert plain.system_labels == ['interface']
    assert plain.select_frames(source='imported') == [('interface', i) for i in range(3)]
    assert np.array_equal(plain.get_system('interface').forces, frames.systems[1].forces)
    with pytest.raises(TrainingSetError, match='no level of theory'):
        TrainingSetData.from_deepmd_npy(paths[1])
    with pytest.raises(LevelOfTheoryError, match='tblite/GFN1-xTB'):
        TrainingSetData.from_deepmd_npy(paths, TBLITE_XTB)


def test_dpdata_round_trip(frames):
    """Through dpdata.MultiSystems (labels become formulas) and a single LabeledSystem."""
    multi = TrainingSetData(frames).to_dpdata()
    assert isinstance(multi, dpdata.MultiSystems)
    back = TrainingSetData.from_dpdata(multi, CP2K_XTB).frames
    assert [s.label for s in back.systems] == ['Li4P0S0Cl0', 'Li2P1S2Cl1']
    for one, two in zip(back.systems, frames.systems, strict=True):
        for name in ARRAYS:
            assert (getattr(one, name) is None and getattr(two, name) is None) or np.array_equal(
                getattr(one, name), getattr(two, name)
            )
    single = TrainingSetData.from_dpdata(multi[0], CP2K_XTB, system_label='bulk_Li', labelled_by=CALC_A)
    assert single.system_labels == ['bulk_Li']
    assert single.select_frames(labelled_by=CALC_A) == [('bulk_Li', i) for i in range(4)]
    unlabelled = dpdata.System(
        data={k: v for k, v in multi[0].data.items() if k not in ('energies', 'forces')}
    )
    with pytest.raises(TrainingSetError, match='missing energies'):
        TrainingSetData.from_dpdata(unlabelled, CP2K_XTB, system_label='x')


def test_type_maps_must_match_unless_remapped(frames, tmp_path):
    """Mixed type maps raise on merge and on reading; remap_types re-indexes and keeps the elements."""
    node = TrainingSetData(frames)
    other_map = ['S', 'P', 'Li', 'Cl']
    remapped = node.remap_types(other_map)
    assert remapped.type_map == other_map
    interface = remapped.get_system('interface')
    assert [other_map[t] for t in interface.atom_types] == [TYPE_MAP[t] for t in frames.systems[1].atom_types]
    with pytest.raises(TrainingSetError, match=r"mixed type maps: \['Li', 'P', 'S', 'Cl'\].*remap_types"):
        merge(node, remapped)
    assert merge(node, remapped.remap_types(TYPE_MAP)).nframes == 14
    paths = node.to_deepmd_npy(tmp_path / 'a') + remapped.to_deepmd_npy(tmp_path / 'b')
    with pytest.raises(TrainingSetError, match='mixed type maps'):
        TrainingSetData.from_deepmd_npy([paths[0], paths[3]])
    both = TrainingSetData.from_deepmd_npy([paths[0], paths[3]], type_map=TYPE_MAP)
    assert np.array_equal(both.get_system('interface').atom_types, frames.systems[1].atom_types)
    with pytest.raises(TrainingSetError, match=r"elements \['P', 'S'\] are not in type_map"):
        node.remap_types(['Li', 'Cl'])


def test_level_of_theory_key_and_mixing():
    """Canonical key ignores key order and 600 vs 600.0; merging different levels names both."""
    vasp = {'engine': 'VASP', 'method': 'PBE', 'encut': 600, 'ediff': 1e-6, 'kpoints': (2, 2, 1)}
    same = {'kpoints': [2, 2, 1], 'ediff': 1e-6, 'encut': 600.0, 'method': 'PBE', 'engine': 'vasp'}
    assert level_of_theory_key(vasp) == level_of_theory_key(same)
    assert level_of_theory_key(vasp).startswith('vasp/PBE/')
    assert level_of_theory_key(CP2K_XTB) != level_of_theory_key(TBLITE_XTB)
    with pytest.raises(ValueError, match='method'):
        canonical_level_of_theory({'engine': 'cp2k'})
    first = TrainingFrames(TYPE_MAP, CP2K_XTB, [make_system('bulk_Li', [0, 0], 2, 1)])
    second = TrainingFrames(TYPE_MAP, TBLITE_XTB, [make_system('bulk_Li', [0, 0], 2, 2)])
    with pytest.raises(LevelOfTheoryError, match=r'cp2k/GFN1-xTB/\w+ .* vs tblite/GFN1-xTB/\w+'):
        merge_frames(first, second)


@pytest.mark.parametrize(
    ('change', 'message'),
    [
        ({'forces': None}, 'missing forces'),
        ({'energies': None}, 'missing energies'),
        ({'forces': np.zeros((2, 3, 3))}, r'forces has shape \(2, 3, 3\), expected \(2, 2, 3\)'),
        ({'cells': np.zeros((3, 3))}, r'cells has shape \(3, 3\), expected \(2, 3, 3\)'),
        ({'energies': [1.0, np.nan]}, r'energies has NaN/inf in frame\(s\) \[1\]'),
        ({'virials': np.full((2, 3, 3), np.inf)}, r'virials has NaN/inf in frame\(s\) \[0, 1\]'),
        ({'atom_types': [0.0, 1.0]}, 'atom_types must be'),
        ({'labelled_by': 'not-a-uuid'}, 'is not a UUID'),
        ({'tags': {'system': 'x'}}, 'reserved'),
        ({'tags': {'temperature': [300]}}, 'is not a str, int, bool or finite float'),
        ({'tags': [{}, {}, {}]}, 'got 3 `tags` entries for 2 frames'),
        ({'label': 'has space'}, 'system label'),
    ],
)
def test_invalid_frames(change, message):
    """Every inconsistency gives a clear error naming the system and the field."""
    fields = {
        'label': 'bulk_Li',
        'atom_types': [0, 0],
        'coords': np.zeros((2, 2, 3)),
        'cells': np.tile(np.eye(3) * 3.4, (2, 1, 1)),
        'energies': [-3.0, -3.1],
        'forces': np.zeros((2, 2, 3)),
        'virials': np.zeros((2, 3, 3)),
    }
    with pytest.raises(TrainingSetError, match=message):
        FrameSystem(**{**fields, **change})


def test_set_level_errors():
    """Duplicate labels and types outside the type map are rejected by the set."""
    system = make_system('bulk_Li', [0, 1], 1, 0)
    with pytest.raises(TrainingSetError, match='duplicate system labels'):
        TrainingFrames(TYPE_MAP, CP2K_XTB, [system, system])
    with pytest.raises(TrainingSetError, match='outside type_map'):
        TrainingFrames(['Li'], CP2K_XTB, [system])


def test_merge_concatenates_systems(frames):
    """Same label: frames appended with their provenance; atom lists and virials must agree."""
    extra = TrainingFrames(
        TYPE_MAP, CP2K_XTB, [make_system('bulk_Li', [0, 0, 0, 0], 2, 5, tags={'iteration': 1})]
    )
    merged = merge_frames(frames, extra)
    bulk = merged.get_system('bulk_Li')
    assert bulk.nframes == 6 and merged.nframes == 9
    assert np.array_equal(bulk.coords[4:], extra.systems[0].coords)
    assert bulk.tags[4:] == [{'iteration': 1}] * 2 and bulk.labelled_by[4:] == [None, None]
    no_virials = TrainingFrames(
        TYPE_MAP, CP2K_XTB, [make_system('bulk_Li', [0, 0, 0, 0], 1, 6, virials=False)]
    )
    with pytest.raises(TrainingSetError, match='with and without virials'):
        merge_frames(frames, no_virials)
    other_atoms = TrainingFrames(TYPE_MAP, CP2K_XTB, [make_system('bulk_Li', [0, 0], 1, 7)])
    with pytest.raises(TrainingSetError, match='different atom lists'):
        merge_frames(frames, other_atoms)


def test_merge_in_calcfunction(frames):
    """The node-level merge works inside a calcfunction (returns an unstored node)."""

    @calcfunction
    def merge_training_sets(**training_sets):
        return merge(*training_sets.values())

    first = TrainingSetData(frames)
    second = TrainingSetData(TrainingFrames(TYPE_MAP, CP2K_XTB, [make_system('bulk_Li', [0, 0, 0, 0], 2, 9)]))
    result = merge_training_sets(first=first, second=second)
    assert result.is_stored and result.nframes == 9
    assert result.creator.inputs.first.uuid == first.uuid


def test_split_is_seeded_and_per_system(frames):
    """Same seed gives the same split; each system contributes round(fraction * nframes) frames."""
    big = TrainingFrames(TYPE_MAP, CP2K_XTB, [make_system('bulk_Li', [0, 0], 20, 3), frames.systems[1]])
    train, validation = split_frames(big, 0.25, seed=42)
    again = split_frames(big, 0.25, seed=42)
    assert_same_frames(train, again[0])
    assert_same_frames(validation, again[1])
    assert [s.nframes for s in validation.systems] == [5, 1]
    assert [s.nframes for s in train.systems] == [15, 2]
    bulk = big.systems[0]
    union = np.concatenate([train.systems[0].energies, validation.systems[0].energies])
    assert np.array_equal(np.sort(union), np.sort(bulk.energies))
    other = split_frames(big, 0.25, seed=43)[1]
    assert not np.array_equal(other.systems[0].energies, validation.systems[0].energies)
    _, node_validation = TrainingSetData(big).split(0.25, seed=42)
    assert_same_frames(node_validation.frames, validation)
    with pytest.raises(TrainingSetError, match='leaves the validation set empty'):
        split_frames(frames, 0.01, seed=0)


@pytest.fixture(scope='module')
def tblite_calculator():
    """tblite's GFN1-xTB (Γ point, Fermi smearing 300 K)."""
    tblite_ase = pytest.importorskip('tblite.ase')
    return tblite_ase.TBLite(method='GFN1-xTB', electronic_temperature=300, verbosity=0)


def strained_energy(atoms, calculator, strain: np.ndarray) -> float:
    """Energy (eV) after the homogeneous strain ``cell -> cell (1 + strain)``, atoms scaled with the cell."""
    strained = atoms.copy()
    strained.set_cell(atoms.cell.array @ (np.eye(3) + strain), scale_atoms=True)
    strained.calc = calculator
    return strained.get_potential_energy()


@pytest.mark.engines
def test_from_ase_with_tblite_virial_sign(tblite_calculator):
    """Real GFN1-xTB labels of distorted bcc Li (2 atoms); virial = -dE/dstrain (finite differences)."""
    from ase.build import bulk

    frames_ase = []
    for shift, shear in [(0.05, 0.03), (-0.04, 0.02)]:
        atoms = bulk('Li', 'bcc', a=3.42, cubic=True)
        atoms.set_cell(
            atoms.cell.array @ np.array([[1, shear, 0], [0, 1, 0.02], [0.01, 0, 1]]), scale_atoms=True
        )
        atoms.positions[0] += [shift, -0.03, 0.02]
        atoms.calc = tblite_calculator
        frames_ase.append(atoms)
    tags = [{'source': 'perturbation', 'temperature': 0}] * 2
    node = TrainingSetData.from_ase(frames_ase, TBLITE_XTB, 'bulk_Li', type_map=TYPE_MAP, tags=tags)
    system = node.get_system('bulk_Li')
    assert node.type_map == TYPE_MAP and system.atom_types.tolist() == [0, 0]
    assert system.has_virials and node.select_frames(source='perturbation') == [
        ('bulk_Li', 0),
        ('bulk_Li', 1),
    ]

    atoms, step = frames_ase[0], 1e-4
    assert np.isclose(system.energies[0], strained_energy(atoms, tblite_calculator, np.zeros((3, 3))))
    for i, j in [(0, 0), (2, 2), (0, 1), (1, 2)]:
        strain = np.zeros((3, 3))
        strain[i, j] = strain[j, i] = step if i == j else step / 2
        slope = (
            strained_energy(atoms, tblite_calculator, strain)
            - strained_energy(atoms, tblite_calculator, -strain)
        ) / (2 * step)
        assert np.isclose(system.virials[0, i, j], -slope, rtol=1e-3, atol=1e-4), (i, j)
    no_virials = TrainingSetData.from_ase(frames_ase, TBLITE_XTB, 'bulk_Li', with_virials=False)
    assert no_virials.type_map == ['Li', 'P', 'S', 'Cl'] and not no_virials.systems[0]['has_virials']
