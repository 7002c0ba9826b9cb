"""The SEI slab of one frame of a restraint-MD trajectory, as a calcfunction (paper §3, Fig. 4c).

:func:`extract_sei` cuts the region with :func:`aiida_lisei.science.sei.extract_region` (the rules, a paper
gap, are in that module and in ``docs/electronic_structure.md``) and returns a
:class:`~aiida_lisei.data.structure.GroupedStructureData` whose sites keep the built model's groups and
carry their ``atom_ids`` (id = site index of the trajectory's structure + 1), plus an ``extraction`` record.
:func:`check_sei_extraction` runs the same pure code without storing anything: work chains call it in their
input validators, so a frame out of range, an empty region or overlapping atoms are refused before
anything is submitted.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from aiida import orm
from aiida.engine import calcfunction

from aiida_lisei.calculations.qeq import trajectory_site_indices
from aiida_lisei.data.structure import GroupedStructureData
from aiida_lisei.science.sei import SlabExtraction, check_region, extract_region, select_frame

__all__ = ('ATOM_IDS_KEY', 'EXTRACTION_KEY', 'check_sei_extraction', 'extract_sei', 'frame_extraction')

#: Attribute of the slab holding the 1-based ids of its atoms in the trajectory's structure.
ATOM_IDS_KEY = 'atom_ids'
#: Attribute of the slab holding the extraction record (frame, how chosen, window, charge report).
EXTRACTION_KEY = 'sei_extraction'


def frame_extraction(
    trajectory: orm.TrajectoryData,
    structure: orm.StructureData | None,
    frame: int | None,
    analysis: dict[str, Any] | None,
    region: dict[str, Any] | None,
) -> tuple[SlabExtraction, dict[str, Any]]:
    """Select the frame, put it in site order and cut the region; return the slab and the record.

    Raises ``ValueError`` with what to fix (frame out of range, empty region, overlaps, bad region).
    """
    index, how = select_frame(trajectory.numsteps, frame, analysis)
    sites = trajectory_site_indices(trajectory)
    positions = np.empty((len(sites), 3))
    positions[sites] = trajectory.get_positions()[index]
    cell = np.asarray(trajectory.get_cells()[index], dtype=float)
    if structure is not None:
        symbols = [structure.get_kind(site.kind_name).symbol for site in structure.sites]
    else:
        symbols = [None] * len(sites)
        for row, site in enumerate(sites):
            symbols[site] = trajectory.symbols[row]
    labels = structure.atom_groups if isinstance(structure, GroupedStructureData) else None
    nucleation = (analysis or {}).get('parameters')
    slab = extract_region(positions, cell, symbols, labels, region, nucleation)
    times = trajectory.get_times()
    record = {
        'frame': index,
        'frame_choice': how,
        'time_ps': float(times[index]) if times is not None else None,
        'region': check_region(region),
        **slab.as_dict(),
    }
    return slab, record


def check_sei_extraction(
    trajectory: orm.TrajectoryData,
    structure: orm.StructureData | None = None,
    frame: int | None = None,
    analysis: dict[str, Any] | None = None,
    region: dict[str, Any] | None = None,
) -> str | None:
    """Return why the extraction would fail (``None`` if it works): for the input validators."""
    try:
        frame_extraction(trajectory, structure, frame, analysis, region)
    except ValueError as exception:
        return str(exception)
    return None


@calcfunction
def extract_sei(
    trajectory: orm.TrajectoryData,
    structure: orm.StructureData,
    region: orm.Dict,
    frame: orm.Int | None = None,
    analysis: orm.Dict | None = None,
) -> dict[str, orm.Data]:
    """Cut the SEI (or an explicit z-window) of one frame and make it periodic along z, with no vacuum.

    :param trajectory: the MD frames (positions and cells Å; optional ``atom_ids`` = site index + 1).
    :param structure: the trajectory's structure; a ``GroupedStructureData`` gives the groups (needed for
        the ``sei`` mode) which the slab keeps.
    :param region: the region choice (:data:`~aiida_lisei.science.sei.REGION_DEFAULTS`).
    :param frame: trajectory frame index; default: the cluster-onset frame of ``analysis``, else the last.
    :param analysis: the ``analysis`` output of ``lisei.nucleation_analysis`` (onset frame, parameters).
    :return: ``structure`` (``GroupedStructureData``, or ``StructureData`` without groups; attributes
        ``atom_ids`` and ``sei_extraction``) and ``extraction`` (``Dict``: frame, how it was chosen, window
        in cell z Å, thickness, gap, removed ids, composition, net formal charge in e).
    """
    slab, record = frame_extraction(
        trajectory,
        structure,
        frame.value if frame is not None else None,
        analysis.get_dict() if analysis is not None else None,
        region.get_dict(),
    )
    grouped = isinstance(structure, GroupedStructureData)
    node = GroupedStructureData(cell=slab.cell.tolist(), pbc=(True, True, True)) if grouped else None
    node = node if node is not None else orm.StructureData(cell=slab.cell.tolist(), pbc=(True, True, True))
    for symbol, position in zip(slab.symbols, slab.positions, strict=True):
        node.append_atom(position=position.tolist(), symbols=symbol)
    if grouped:
        groups, layers = structure.atom_groups, structure.atom_layers
        node.set_atom_groups(
            [groups[i - 1] for i in slab.atom_ids], [int(layers[i - 1]) for i in slab.atom_ids]
        )
    node.base.attributes.set(ATOM_IDS_KEY, [int(value) for value in slab.atom_ids])
    node.base.attributes.set(EXTRACTION_KEY, record)
    return {'structure': node, 'extraction': orm.Dict(record)}
