"""``extract_sei``: the SEI of one frame of a synthetic nucleation trajectory (``nucleation_run``)."""

from __future__ import annotations

import pytest
from aiida import orm

from aiida_lisei.workchains.sei_extraction import (
    ATOM_IDS_KEY,
    check_sei_extraction,
    extract_sei,
)

ONSET = 2


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
