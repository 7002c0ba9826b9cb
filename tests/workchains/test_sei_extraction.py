"""``extract_sei``: the SEI of one frame of a synthetic nucleation trajectory, as a calcfunction.

The trajectory: a small sandwich of the paper's shape (1x1x1 electrolyte cell, 4 anode and 2 source Li
layers) with a 16 Å interface gap and 20 Å of vacuum, 4 frames; from frame 2 on, 15 Li (10 from the
electrolyte, 5 from the source) form a bcc cluster in the gap 8 Å above the anode. Rows are in reverse
site order with ``atom_ids``, as a LAMMPS dump sorted otherwise would be.
"""

from __future__ import annotations

import numpy as np
import pytest
from aiida import orm

from aiida_lisei.data.structure import GroupedStructureData
from aiida_lisei.structures.builders import argyrodite, sandwich
from aiida_lisei.workchains.sei_extraction import (
    ATOM_IDS_KEY,
    check_sei_extraction,
    extract_sei,
)

ONSET = 2


@pytest.fixture(scope='module')
def nucleation_run():
    """The sandwich (GroupedStructureData), its trajectory and the ids of the cluster atoms."""
    model = sandwich(
        argyrodite(seed=20241125).atoms,
        electrolyte_repeat_xy=1,
        electrolyte_repeat_z=1,
        anode_layers=4,
        source_layers=2,
        interface_gap=16.0,
        vacuum=20.0,
    )
    atoms, groups = model.atoms, np.array(model.groups)
    rng = np.random.default_rng(5)
    donors = np.concatenate(
        [
            rng.choice(np.flatnonzero(groups == 'electrolyte_Li'), 10, replace=False),
            rng.choice(np.flatnonzero(groups == 'source_Li'), 5, replace=False),
        ]
    )
    shells = np.array(
        [[0, 0, 0]]
        + [[x, y, z] for x in (-0.5, 0.5) for y in (-0.5, 0.5) for z in (-0.5, 0.5)]
        + [list(v) for v in np.vstack([np.eye(3), -np.eye(3)])]
    )
    lateral = atoms.cell[0, 0]
    centre = np.array([0.5 * lateral, 0.5 * lateral, model.info['anode_top_z'] + 8.0])
    frames = np.repeat(atoms.positions[None], 4, axis=0)
    frames[ONSET:, donors] = centre + 2.75 * 2 / np.sqrt(3) * shells
    frames += rng.normal(0.0, 0.03, frames.shape)
    order = np.arange(len(atoms))[::-1]
    trajectory = orm.TrajectoryData()
    trajectory.set_trajectory(
        symbols=[atoms.get_chemical_symbols()[i] for i in order],
        positions=frames[:, order],
        stepids=np.arange(4) * 1000,
        cells=np.repeat(atoms.cell[:][None], 4, axis=0),
        times=np.arange(4) * 1.0,
        pbc=(True, True, True),
    )
    trajectory.set_array('atom_ids', order + 1)
    structure = GroupedStructureData(ase=atoms)
    structure.set_atom_groups(model.groups, model.layers)
    return structure.store(), trajectory.store(), donors + 1


def analysis_of(onset: int | None) -> orm.Dict:
    """The parts of a ``lisei.nucleation_analysis`` ``analysis`` output that the extraction reads."""
    return orm.Dict(
        {'summary': {'cluster_onset_frame': onset}, 'frame_indices': [0, 1, 2, 3], 'parameters': {}}
    )


def test_onset_frame_sei_holds_the_cluster(nucleation_run):
    """At the onset frame the SEI window holds the 15 cluster Li, with their ids and groups."""
    structure, trajectory, cluster_ids = nucleation_run
    result = extract_sei(trajectory, structure, orm.Dict({}), analysis=analysis_of(ONSET))
    slab, record = result['structure'], result['extraction']
    assert record['frame'] == ONSET
    assert record['frame_choice'] == 'cluster onset frame of the nucleation analysis'
    ids = slab.base.attributes.get(ATOM_IDS_KEY)
    assert set(int(i) for i in cluster_ids) <= set(ids)  # the cluster, and the electrolyte's bottom face
    assert record['composition'] == {'Li': 19, 'S': 6}  # 15 cluster Li + the face's 4 Li and 6 S
    assert record['net_formal_charge'] == 19 - 2 * 6  # Li in excess of a salt: the metallic cluster
    assert slab.cell[2][2] == pytest.approx(record['thickness'] + record['gap'])
    assert 8.0 < record['thickness'] < 20.0  # the 16 Å gap and the electrolyte's face
    groups = dict(zip(slab.base.attributes.get(ATOM_IDS_KEY), slab.atom_groups, strict=True))
    assert {groups[int(i)] for i in cluster_ids} == {'electrolyte_Li', 'source_Li'}
    assert {groups[i] for i in set(ids) - set(int(i) for i in cluster_ids)} == {
        'electrolyte_Li',
        'electrolyte_S',
    }
    assert all(slab.pbc)


def test_no_cluster_takes_the_last_frame_and_explicit_windows(nucleation_run):
    """No cluster: the last frame, said so; an explicit z-window cuts the electrolyte side."""
    structure, trajectory, _ = nucleation_run
    result = extract_sei(trajectory, structure, orm.Dict({}), analysis=analysis_of(None))
    assert result['extraction']['frame'] == 3
    assert result['extraction']['frame_choice'] == 'last frame: no cluster formed'
    z = trajectory.get_positions()[1][:, 2]
    region = orm.Dict({'mode': 'z', 'z_low': float(z.min()) - 0.5, 'z_high': float(z.max()) + 0.5})
    whole = extract_sei(trajectory, structure, region, frame=orm.Int(1))
    assert len(whole['structure'].sites) == trajectory.numsites
    assert whole['extraction']['frame_choice'] == 'frame given'


@pytest.mark.parametrize(
    ('kwargs', 'message'),
    [
        ({'frame': 4}, 'frame index 4 is out of range'),
        ({'region': {'mode': 'z', 'z_low': 1.0}}, 'needs numbers z_low and z_high'),
        ({'region': {'mode': 'slab'}}, "must be 'sei' or 'z'"),
        ({'region': {'mode': 'sei'}, 'frame': 2, 'no_groups': True}, 'needs the structure'),
    ],
)
def test_bad_extractions_rejected(nucleation_run, kwargs, message):
    """Frame out of range, an empty region, bad region choices: the reason, before anything runs."""
    structure, trajectory, _ = nucleation_run
    if kwargs.pop('no_groups', False):
        structure = orm.StructureData(ase=structure.get_ase())
    reason = check_sei_extraction(trajectory, structure, **kwargs)
    assert reason is not None and message in reason


def test_empty_region_rejected(nucleation_run):
    """A window in the vacuum holds no atom: refused, with what to change."""
    structure, trajectory, _ = nucleation_run
    top = float(trajectory.get_positions()[0][:, 2].max())
    reason = check_sei_extraction(
        trajectory, structure, 0, None, {'mode': 'z', 'z_low': top + 1, 'z_high': top + 3}
    )
    assert reason is not None and 'holds no atom: choose another frame or other bounds' in reason
