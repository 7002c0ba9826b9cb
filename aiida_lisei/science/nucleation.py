"""Li nucleation analysis of a Li|Li6PS5Cl|Li trajectory: SEI, Li clusters, origins, RDF, charges.

Pure NumPy/SciPy (no AiiDA imports); lengths in Å, times in ps, charges in e. The building blocks:

* :mod:`aiida_lisei.science.environments` — neighbour counts and the Li environment classes;
* :mod:`aiida_lisei.science.regions` — anode / SEI / electrolyte / source along z, per frame;
* :mod:`aiida_lisei.science.clusters` — metallic Li clusters isolated from the bulk metal, origins;
* :mod:`aiida_lisei.science.rdf` — g(r) of atom sets and its first peak.

:func:`analyse_frame` runs them on one frame; :func:`summarise_trajectory` runs them on a whole
trajectory and returns a JSON-serialisable dictionary of time series and summary numbers (for an
AiiDA calcfunction to wrap). The rules and thresholds are documented in ``docs/nucleation_analysis.md``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from aiida_lisei.science.clusters import (
    ClusterParameters,
    Clusters,
    cluster_centre,
    find_clusters,
    first_onset,
    min_distance,
    origin_fractions,
)
from aiida_lisei.science.environments import (
    LI_CLASSES,
    Coordination,
    EnvironmentParameters,
    LiClass,
    class_counts,
    classify_li,
    coordination,
    neighbour_pairs,
)
from aiida_lisei.science.rdf import RdfAccumulator
from aiida_lisei.science.regions import (
    REGIONS,
    Region,
    RegionParameters,
    Regions,
    assign_regions,
    initial_origin,
)

__all__ = (
    'FrameAnalysis',
    'NucleationParameters',
    'analyse_frame',
    'charge_statistics',
    'group_statistics',
    'order_by_ids',
    'summarise_trajectory',
)

#: Default charge histogram bins (e): 0.05 e wide from -1.5 to +1.5 e.
DEFAULT_CHARGE_BINS: tuple[float, float, int] = (-1.5, 1.5, 60)


@dataclass(frozen=True)
class NucleationParameters:
    """All parameters of the analysis (see each part's docstring for the defaults and their reasons).

    * ``rdf_r_max`` (Å), ``rdf_bin_width`` (Å), ``rdf_smoothing`` (Å, Gaussian sigma for the peak search);
    * ``rdf_max_frames``: at most this many frames (evenly spaced) are pooled per RDF;
    * ``anode_rdf_depth`` (Å): the bcc reference RDF uses the anode Li at least this far below the
      anode/SEI boundary (the bulk of the anode, as the paper's "anode Li");
    * ``charge_bins``: (low, high, count) of the charge histograms (e).
    """

    environment: EnvironmentParameters = field(default_factory=EnvironmentParameters)
    regions: RegionParameters = field(default_factory=RegionParameters)
    clusters: ClusterParameters = field(default_factory=ClusterParameters)
    rdf_r_max: float = 6.0
    rdf_bin_width: float = 0.005
    rdf_smoothing: float = 0.03
    rdf_max_frames: int = 20
    anode_rdf_depth: float = 3.0
    charge_bins: tuple[float, float, int] = DEFAULT_CHARGE_BINS

    def as_dict(self) -> dict[str, Any]:
        """JSON-serialisable copy (nested dictionaries)."""
        return {
            'environment': self.environment.as_dict(),
            'regions': self.regions.as_dict(),
            'clusters': self.clusters.as_dict(),
            'rdf_r_max': self.rdf_r_max,
            'rdf_bin_width': self.rdf_bin_width,
            'rdf_smoothing': self.rdf_smoothing,
            'rdf_max_frames': self.rdf_max_frames,
            'anode_rdf_depth': self.anode_rdf_depth,
            'charge_bins': list(self.charge_bins),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any] | None) -> NucleationParameters:
        """Inverse of :meth:`as_dict`; missing keys keep their defaults."""
        data = dict(data or {})
        nested = {
            'environment': EnvironmentParameters(**data.pop('environment', {})),
            'regions': RegionParameters(**data.pop('regions', {})),
            'clusters': ClusterParameters(**data.pop('clusters', {})),
        }
        if 'charge_bins' in data:
            low, high, count = data.pop('charge_bins')
            nested['charge_bins'] = (float(low), float(high), int(count))
        return cls(**nested, **data)


@dataclass(frozen=True)
class FrameAnalysis:
    """Everything :func:`analyse_frame` finds in one frame.

    ``classes`` (N,): :class:`~aiida_lisei.science.environments.LiClass` codes (-1 for non-Li);
    ``largest_cluster``: atom indices of the largest isolated metallic cluster (may be empty).
    """

    coordination: Coordination
    classes: np.ndarray
    regions: Regions
    clusters: Clusters
    largest_cluster: np.ndarray


def analyse_frame(
    positions: np.ndarray,
    cell: np.ndarray,
    species: Sequence[str] | np.ndarray,
    origin: Sequence[str] | np.ndarray,
    params: NucleationParameters | None = None,
) -> FrameAnalysis:
    """Environments, regions and clusters of one frame.

    :param positions: (N, 3) positions (Å).
    :param cell: (3, 3) cell (Å), c along z (see :func:`~aiida_lisei.science.regions.check_slab_cell`).
    :param species: (N,) chemical symbols.
    :param origin: (N,) initial origin (``anode``, ``electrolyte``, ``source``, ``other``), e.g.
        :func:`~aiida_lisei.science.regions.initial_origin` of the builder's region labels.
    """
    params = params or NucleationParameters()
    env = params.environment
    species = np.asarray(species)
    positions = np.asarray(positions, dtype=float)
    cutoff = max(env.max_cutoff, params.clusters.link_cutoff)
    pairs = neighbour_pairs(positions, cell, cutoff)
    coord = coordination(species, pairs, env)
    classes = classify_li(species, coord, env)
    is_li = species == 'Li'
    anion_poor = is_li & (coord.n_anions <= env.metallic_max_anions)
    regions = assign_regions(
        positions, cell, species, anion_poor, coord.bonded_s | coord.bonded_p, origin, params.regions
    )
    excluded = (regions.codes == Region.ANODE) | (regions.codes == Region.SOURCE)
    clusters = find_clusters(positions, cell, classes == LiClass.METALLIC, excluded, params.clusters, pairs)
    return FrameAnalysis(coord, classes, regions, clusters, clusters.largest_isolated())


def charge_statistics(
    charges: np.ndarray,
    groups: Mapping[str, np.ndarray],
    bins: tuple[float, float, int] = DEFAULT_CHARGE_BINS,
) -> dict[str, Any]:
    """Count, mean, standard deviation and histogram of the charges (e) of each group of atoms.

    :param charges: (N,) atomic charges (e).
    :param groups: name → boolean mask (N,) or atom indices.
    :param bins: (low, high, count) of the histogram; charges outside are not binned but counted.
    :return: ``{'bin_edges': [...], name: {'count', 'mean', 'std', 'histogram'}}``; mean and std are
        None for an empty group.
    """
    charges = np.asarray(charges, dtype=float)
    edges = np.linspace(float(bins[0]), float(bins[1]), int(bins[2]) + 1)
    out: dict[str, Any] = {'bin_edges': edges.tolist()}
    for name, selection in groups.items():
        selection = np.asarray(selection)
        values = charges[selection]
        values = values[np.isfinite(values)]
        histogram = np.histogram(values, bins=edges)[0]
        out[name] = {
            'count': len(values),
            'mean': float(values.mean()) if len(values) else None,
            'std': float(values.std()) if len(values) else None,
            'histogram': histogram.astype(int).tolist(),
        }
    return out


def group_statistics(charges: np.ndarray, labels: Sequence[str]) -> dict[str, dict[str, Any]]:
    """Per group of atoms, count, and mean and standard deviation of the charges (e) in every frame.

    :param charges: (F, N) charges (e); NaN entries (frames not solved) are left out.
    :param labels: (N,) group label of every atom (e.g. ``anode_Li``, or the chemical symbol).
    :return: ``{label: {'count': atoms, 'mean': [F], 'std': [F]}}`` in sorted label order; ``None`` where
        a frame has no finite charge in the group.
    """
    charges = np.asarray(charges, dtype=float)
    labels = np.asarray(labels, dtype=str)
    if charges.ndim != 2 or charges.shape[1] != len(labels):
        raise ValueError(f'charges must be (F, {len(labels)}), got {charges.shape}')
    groups = {name: labels == name for name in sorted(set(labels.tolist()))}
    out = {name: {'count': int(mask.sum()), 'mean': [], 'std': []} for name, mask in groups.items()}
    for frame in charges:
        stats = charge_statistics(frame, groups)
        for name in groups:
            out[name]['mean'].append(stats[name]['mean'])
            out[name]['std'].append(stats[name]['std'])
    return out


def order_by_ids(atom_ids: np.ndarray | None, n_frames: int, n_atoms: int) -> np.ndarray | None:
    """Row order (F, N) that sorts each frame by atom id; ``None`` if the rows are already in id order.

    :param atom_ids: ``None``, (N,) ids of the rows (same in every frame) or (F, N) per frame.
    """
    if atom_ids is None:
        return None
    ids = np.asarray(atom_ids)
    if ids.ndim == 1:
        ids = np.broadcast_to(ids, (n_frames, n_atoms))
    if ids.shape != (n_frames, n_atoms):
        raise ValueError(f'atom_ids must be (N,) or (F, N) = ({n_frames}, {n_atoms}), got {ids.shape}')
    order = np.argsort(ids, axis=1, kind='stable')
    reference = np.take_along_axis(ids, order[:1], axis=1)[0]
    if np.any(np.take_along_axis(ids, order, axis=1) != reference):
        raise ValueError('every frame must hold the same set of atom ids')
    if np.unique(reference).size != n_atoms:
        raise ValueError('atom ids must be unique')
    if np.all(order == np.arange(n_atoms)):
        return None
    return order


def _json(value: Any) -> Any:
    """Plain JSON types: NumPy scalars and arrays to Python, NaN and inf to None."""
    if isinstance(value, Mapping):
        return {str(k): _json(v) for k, v in value.items()}
    if isinstance(value, list | tuple | np.ndarray):
        return [_json(v) for v in value]
    if isinstance(value, np.bool_ | bool):
        return bool(value)
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, np.floating | float):
        return float(value) if np.isfinite(value) else None
    return value


def _cluster_record(
    frame: FrameAnalysis, positions: np.ndarray, cell: np.ndarray, origin: np.ndarray
) -> dict[str, Any]:
    """Size, position, distances and origin of the largest isolated cluster of a frame."""
    atoms = frame.largest_cluster
    regions = frame.regions
    if not len(atoms):
        return {'size': 0}
    centre = cluster_centre(positions[atoms], cell)
    heights = regions.heights[atoms]
    height = float(heights.mean()) if np.ptp(heights) < 0.5 * regions.cell_z else float('nan')
    anode = np.flatnonzero(regions.codes == Region.ANODE)
    region_codes = np.bincount(regions.codes[atoms], minlength=len(REGIONS))
    return {
        'size': len(atoms),
        'atoms': atoms,
        'centre': centre,
        'centre_height': height,
        'boundary_distance': height - regions.boundaries['anode_sei'],
        'min_distance_to_anode': min_distance(positions[atoms], positions[anode], cell),
        'region': REGIONS[int(np.argmax(region_codes))],
        'origin': origin_fractions(atoms, origin),
    }


def summarise_trajectory(
    positions: np.ndarray,
    cells: np.ndarray,
    species: Sequence[str] | np.ndarray,
    initial_labels: Sequence[str] | np.ndarray,
    times: Sequence[float] | np.ndarray,
    atom_ids: np.ndarray | None = None,
    charges: np.ndarray | None = None,
    charge_times: Sequence[float] | None = None,
    params: NucleationParameters | Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Time series and summary numbers of a nucleation trajectory, as a JSON-serialisable dictionary.

    :param positions: (F, N, 3) positions (Å).
    :param cells: (F, 3, 3) or (3, 3) cells (Å), c along z.
    :param species: (N,) chemical symbols, in the order of the sorted atom ids.
    :param initial_labels: (N,) region labels of the built model (``anode_Li``, ``electrolyte_S``,
        ``source_Li``, ... as :mod:`aiida_lisei.structures.builders` gives them), same order as ``species``.
    :param times: (F,) times (ps).
    :param atom_ids: ``None`` (rows are atoms in order), (N,) or (F, N) ids of the rows; rows are
        sorted by id before the analysis, so ``species``/``initial_labels`` follow the sorted ids.
    :param charges: optional (F, N) atomic charges (e) in the same row order as ``positions``; frames
        without charges may be all NaN.
    :param charge_times: times (ps) at which full charge statistics (histograms) are reported; the
        nearest frame with charges is taken. ``None``: every frame with charges.
    :param params: :class:`NucleationParameters` or its ``as_dict()`` form.
    :return: ``{'parameters', 'n_frames', 'n_atoms', 'time_ps', 'series': {...}, 'clusters': [...],
        'rdf': {...}, 'charges': {...}, 'summary': {...}}``; lengths in Å, NaN written as None.
        ``clusters[f]['atoms']`` are indices into the id-sorted atoms (the k-th smallest id is k).
        ``summary`` holds ``cluster_onset_time_ps`` (first time the largest isolated cluster reaches
        ``onset_size``, None if never), the cluster's size, region, distance of its centre above the
        anode/SEI boundary, smallest distance to an anode atom and origin fractions at the onset and in
        the last frame, the Li-Li nearest-neighbour distance of the cluster and of the anode (first
        RDF peaks) and the mean Li charge of each region.
    """
    if not isinstance(params, NucleationParameters):
        params = NucleationParameters.from_dict(params)
    positions = np.asarray(positions, dtype=float)
    if positions.ndim != 3 or positions.shape[2] != 3:
        raise ValueError(f'positions must be (F, N, 3), got {positions.shape}')
    n_frames, n_atoms = positions.shape[:2]
    cells = np.asarray(cells, dtype=float)
    cells = np.broadcast_to(cells, (n_frames, 3, 3)) if cells.ndim == 2 else cells
    times = np.asarray(times, dtype=float)
    species = np.asarray(species)
    origin = initial_origin(initial_labels)
    if cells.shape != (n_frames, 3, 3) or times.shape != (n_frames,):
        raise ValueError('cells must be (F, 3, 3) or (3, 3) and times (F,)')
    if species.shape != (n_atoms,) or origin.shape != (n_atoms,):
        raise ValueError('species and initial_labels must have one entry per atom')
    if charges is not None:
        charges = np.asarray(charges, dtype=float)
        if charges.shape != (n_frames, n_atoms):
            raise ValueError(f'charges must be (F, N) = ({n_frames}, {n_atoms}), got {charges.shape}')
    order = order_by_ids(atom_ids, n_frames, n_atoms)

    def frame_arrays(f: int) -> tuple[np.ndarray, np.ndarray | None]:
        pos = positions[f] if order is None else positions[f][order[f]]
        q = None
        if charges is not None:
            q = charges[f] if order is None else charges[f][order[f]]
        return pos, q

    is_li = species == 'Li'
    anion_kinds = ('sulfide_S', 'thiophosphate_S', 'phosphide_P', 'thiophosphate_P', 'Cl')
    series: dict[str, Any] = {
        'boundary_z': {
            name: []
            for name in ('anode_sei', 'sei_electrolyte', 'electrolyte_source_sei', 'source_sei_source')
        },
        'boundary_height': {
            name: []
            for name in ('anode_sei', 'sei_electrolyte', 'electrolyte_source_sei', 'source_sei_source')
        },
        'sei_thickness': [],
        'li_per_region': {name: [] for name in REGIONS},
        'li_classes': {name: [] for name in LI_CLASSES},
        'sei_li_classes': {name: [] for name in LI_CLASSES},
        'sei_anions': {name: [] for name in anion_kinds},
        'largest_cluster_size': [],
        'n_clusters_at_onset_size': [],
        'isolated_metallic_li': [],
        'attached_metallic_li_outside_metal': [],
        'cluster_boundary_distance': [],
        'mean_li_charge': {name: [] for name in (*REGIONS, 'cluster')},
    }
    cluster_records: list[dict[str, Any]] = []
    cluster_atoms: list[np.ndarray] = []
    anode_interior: list[np.ndarray] = []
    has_charges_at: list[bool] = []
    bin_edges = None
    charge_stats: list[dict[str, Any]] = []

    for f in range(n_frames):
        pos, q = frame_arrays(f)
        frame = analyse_frame(pos, cells[f], species, origin, params)
        regions, codes, classes = frame.regions, frame.regions.codes, frame.classes
        for name, value in regions.boundaries.items():
            series['boundary_height'][name].append(value)
            series['boundary_z'][name].append(regions.to_cell_z(value))
        series['sei_thickness'].append(regions.sei_thickness)
        li_regions = np.bincount(codes[is_li], minlength=len(REGIONS))
        for name, count in zip(REGIONS, li_regions, strict=True):
            series['li_per_region'][name].append(int(count))
        for name, count in class_counts(classes).items():
            series['li_classes'][name].append(count)
        sei = codes == Region.SEI
        for name, count in class_counts(classes, sei).items():
            series['sei_li_classes'][name].append(count)
        bonded = frame.coordination.bonded_s | frame.coordination.bonded_p
        anion_masks = {
            'sulfide_S': (species == 'S') & ~bonded,
            'thiophosphate_S': (species == 'S') & bonded,
            'phosphide_P': (species == 'P') & ~bonded,
            'thiophosphate_P': (species == 'P') & bonded,
            'Cl': species == 'Cl',
        }
        for name, mask in anion_masks.items():
            series['sei_anions'][name].append(int(np.count_nonzero(mask & sei)))
        clusters = frame.clusters
        isolated = clusters.isolated_sizes
        series['largest_cluster_size'].append(int(isolated[0]) if len(isolated) else 0)
        series['n_clusters_at_onset_size'].append(
            int(np.count_nonzero(isolated >= params.clusters.onset_size))
        )
        series['isolated_metallic_li'].append(int(isolated.sum()))
        attached = clusters.attached_members()
        outside = (codes[attached] != Region.ANODE) & (codes[attached] != Region.SOURCE)
        series['attached_metallic_li_outside_metal'].append(int(np.count_nonzero(outside)))
        record = _cluster_record(frame, pos, cells[f], origin)
        cluster_records.append(record)
        series['cluster_boundary_distance'].append(record.get('boundary_distance', float('nan')))
        cluster_atoms.append(frame.largest_cluster)
        top = regions.boundaries['anode_sei'] - params.anode_rdf_depth
        anode_interior.append(np.flatnonzero(is_li & (codes == Region.ANODE) & (regions.heights <= top)))

        groups = {f'{name}_Li': is_li & (codes == code) for code, name in enumerate(REGIONS)}
        groups['cluster_Li'] = np.isin(np.arange(n_atoms), frame.largest_cluster)
        has_charges = q is not None and np.any(np.isfinite(q))
        has_charges_at.append(bool(has_charges))
        for key, name in zip((*REGIONS, 'cluster'), groups, strict=True):
            values = q[groups[name]] if has_charges else np.zeros(0)
            values = values[np.isfinite(values)]
            series['mean_li_charge'][key].append(float(values.mean()) if len(values) else float('nan'))
        if has_charges:
            stats = charge_statistics(q, groups, params.charge_bins)
            bin_edges = stats.pop('bin_edges')
            charge_stats.append(stats)
        else:
            charge_stats.append({})

    sizes = series['largest_cluster_size']
    onset = first_onset(sizes, params.clusters)

    # RDFs pooled over (at most rdf_max_frames) frames: from the onset on, or every frame without one.
    window = np.arange(onset, n_frames) if onset >= 0 else np.arange(n_frames)
    if onset >= 0:
        window = window[np.asarray(sizes)[window] >= params.clusters.onset_size]
    if len(window) > params.rdf_max_frames:
        window = window[np.linspace(0, len(window) - 1, params.rdf_max_frames).round().astype(int)]
    cluster_rdf = RdfAccumulator(params.rdf_r_max, params.rdf_bin_width)
    anode_rdf = RdfAccumulator(params.rdf_r_max, params.rdf_bin_width)
    for f in window:
        pos, _ = frame_arrays(int(f))
        if onset >= 0:
            cluster_rdf.add(pos, cells[f], cluster_atoms[f])
        anode_rdf.add(pos, cells[f], anode_interior[f])
    cluster_result, anode_result = cluster_rdf.result(), anode_rdf.result()
    cluster_nn = cluster_result.first_peak(params.rdf_smoothing) if cluster_result.n_pairs else float('nan')
    anode_nn = anode_result.first_peak(params.rdf_smoothing) if anode_result.n_pairs else float('nan')

    # Full charge statistics at the requested times.
    with_charges = [f for f in range(n_frames) if has_charges_at[f]]
    if charge_times is None:
        report_frames = with_charges
    elif with_charges:
        report_frames = sorted(
            {with_charges[int(np.argmin(np.abs(times[with_charges] - t)))] for t in charge_times}
        )
    else:
        report_frames = []

    onset_record = cluster_records[onset] if onset >= 0 else {'size': 0}
    final_record = cluster_records[-1]
    mean_charges = {
        key: (float(np.nanmean(values)) if np.any(np.isfinite(values)) else float('nan'))
        for key, values in series['mean_li_charge'].items()
    }
    summary = {
        'cluster_onset_frame': onset if onset >= 0 else None,
        'cluster_onset_time_ps': float(times[onset]) if onset >= 0 else None,
        'cluster_size_at_onset': onset_record['size'],
        'cluster_region_at_onset': onset_record.get('region'),
        'cluster_boundary_distance_at_onset': onset_record.get('boundary_distance'),
        'cluster_min_distance_to_anode_at_onset': onset_record.get('min_distance_to_anode'),
        'cluster_origin_at_onset': onset_record.get('origin'),
        'cluster_size_final': final_record['size'],
        'cluster_boundary_distance_final': final_record.get('boundary_distance'),
        'cluster_origin_final': final_record.get('origin'),
        'max_cluster_size': int(max(sizes)) if sizes else 0,
        'cluster_nn_distance': cluster_nn,
        'anode_nn_distance': anode_nn,
        'cluster_nn_contraction': cluster_nn - anode_nn,
        'sei_thickness_initial': series['sei_thickness'][0] if n_frames else None,
        'sei_thickness_final': series['sei_thickness'][-1] if n_frames else None,
        'mean_li_charge': mean_charges,
    }
    result = {
        'parameters': params.as_dict(),
        'n_frames': n_frames,
        'n_atoms': n_atoms,
        'time_ps': times,
        'series': series,
        'clusters': cluster_records,
        'rdf': {
            'frames': window,
            'r': cluster_result.r,
            'cluster_g': cluster_result.g,
            'anode_g': anode_result.g,
            'cluster_pairs': cluster_result.n_pairs,
            'anode_pairs': anode_result.n_pairs,
        },
        'charges': {
            'bin_edges': bin_edges,
            'frames': [{'frame': f, 'time_ps': float(times[f]), **charge_stats[f]} for f in report_frames],
        },
        'summary': summary,
    }
    return _json(result)
