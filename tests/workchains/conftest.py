"""Fixtures of the work-chain tests: a synthetic nucleation trajectory for the SEI extraction.

The trajectory: a small sandwich of the paper's shape (1x1x1 electrolyte cell, 4 anode and 2 source Li
layers) with a 16 Å interface gap and 20 Å of vacuum, 4 frames; from frame ``SEI_ONSET`` on, 15 Li (10 from
the electrolyte, 5 from the source) form a bcc cluster in the gap 8 Å above the anode. Rows are in reverse
site order with ``atom_ids``, as a LAMMPS dump sorted otherwise would be.
"""

from __future__ import annotations

import numpy as np
import pytest
from aiida import orm

from aiida_lisei.data.structure import GroupedStructureData
from aiida_lisei.structures.builders import argyrodite, sandwich
from workchains.test_vasp_label import mock_vasp  # noqa: F401  (aiida-vasp's mock-vasp on our registry)

#: Frame from which the planted cluster exists.
SEI_ONSET = 2


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
    frames[SEI_ONSET:, donors] = centre + 2.75 * 2 / np.sqrt(3) * shells
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
