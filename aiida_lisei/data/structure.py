"""A ``StructureData`` whose atoms carry the group labels the study needs.

Every atom of the Li|Li6PS5Cl models belongs to exactly one *region group*
(``electrolyte_Li``, ``electrolyte_P``, ``electrolyte_S``, ``electrolyte_Cl``,
``anode_Li``, ``source_Li``, ``bulk_Li``) and, for the Li slabs, to a *layer*
counted from the interface with the electrolyte (1 = the layer touching it).
The collective variable of the moving-restraint MD ("the top 8 anode layers")
and the origin tracking of the nucleation analysis are defined through them,
so they are stored as node attributes: queryable, hashed, exported in archives.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np
from aiida.orm import StructureData

__all__ = ('REGION_GROUPS', 'GroupedStructureData', 'with_geometry')

#: Allowed region labels, in the order used for summaries.
REGION_GROUPS: tuple[str, ...] = (
    'anode_Li',
    'electrolyte_Li',
    'electrolyte_P',
    'electrolyte_S',
    'electrolyte_Cl',
    'source_Li',
    'bulk_Li',
)

#: Layer index stored for atoms that do not belong to a layered Li slab.
NO_LAYER = 0


class GroupedStructureData(StructureData):
    """Structure with a region group and a layer index per atom (positions in Å)."""

    _KEY_GROUPS = 'atom_groups'
    _KEY_LAYERS = 'atom_layers'
    _KEY_COUNTS = 'group_counts'

    def set_atom_groups(self, groups: Sequence[str], layers: Sequence[int] | None = None) -> None:
        """Attach one region label (and optionally one layer index) to every site.

        :param groups: one entry of :data:`REGION_GROUPS` per site, in site order.
        :param layers: layer index per site counted from the interface (1 = touching the
            electrolyte); :data:`NO_LAYER` (0) for atoms outside layered slabs.
        """
        nsites = len(self.sites)
        groups = [str(group) for group in groups]
        if len(groups) != nsites:
            raise ValueError(f'got {len(groups)} group labels for {nsites} sites')
        unknown = sorted(set(groups) - set(REGION_GROUPS))
        if unknown:
            raise ValueError(f'unknown group labels {unknown}; allowed: {list(REGION_GROUPS)}')
        for site, group in zip(self.sites, groups, strict=True):
            element = self.get_kind(site.kind_name).symbol
            if not group.endswith(f'_{element}'):
                raise ValueError(f'group `{group}` given to a {element} atom')
        layers = [NO_LAYER] * nsites if layers is None else [int(layer) for layer in layers]
        if len(layers) != nsites:
            raise ValueError(f'got {len(layers)} layer indices for {nsites} sites')
        if min(layers) < 0:
            raise ValueError('layer indices must be >= 0 (0 means: not in a layered slab)')
        self.base.attributes.set(self._KEY_GROUPS, groups)
        self.base.attributes.set(self._KEY_LAYERS, layers)
        counts = {group: groups.count(group) for group in REGION_GROUPS if group in groups}
        self.base.attributes.set(self._KEY_COUNTS, counts)

    @property
    def atom_groups(self) -> list[str]:
        """Region label of every site, in site order."""
        return list(self.base.attributes.get(self._KEY_GROUPS))

    @property
    def atom_layers(self) -> np.ndarray:
        """Layer index of every site (1 = touching the electrolyte, 0 = not layered)."""
        return np.asarray(self.base.attributes.get(self._KEY_LAYERS), dtype=int)

    @property
    def group_counts(self) -> dict[str, int]:
        """Number of atoms in each region group present."""
        return dict(self.base.attributes.get(self._KEY_COUNTS))

    def get_atom_groups(self) -> dict[str, np.ndarray]:
        """Return ``{group: site indices (0-based)}`` for every group present."""
        labels = np.asarray(self.atom_groups)
        present = self.group_counts
        return {group: np.flatnonzero(labels == group) for group in REGION_GROUPS if group in present}

    def select(self, groups: str | Iterable[str], layers: Iterable[int] | None = None) -> np.ndarray:
        """Return the 0-based site indices in ``groups``, optionally restricted to ``layers``.

        Example: ``select('anode_Li', layers=range(1, 9))`` gives the top 8 anode layers.
        """
        wanted = {groups} if isinstance(groups, str) else set(groups)
        unknown = sorted(wanted - set(REGION_GROUPS))
        if unknown:
            raise ValueError(f'unknown group labels {unknown}; allowed: {list(REGION_GROUPS)}')
        mask = np.isin(np.asarray(self.atom_groups), sorted(wanted))
        if layers is not None:
            mask &= np.isin(self.atom_layers, list(layers))
        return np.flatnonzero(mask)


def with_geometry(
    structure: StructureData, cell: Sequence[Sequence[float]], positions: Sequence[Sequence[float]]
) -> StructureData:
    """Return an unstored copy of ``structure`` (same class, kinds and attributes, e.g. atom groups) with
    a new cell and new positions (Å)."""
    copy = structure.clone()
    copy.reset_cell(np.asarray(cell, dtype=float).tolist())
    copy.reset_sites_positions(np.asarray(positions, dtype=float).tolist())
    return copy
