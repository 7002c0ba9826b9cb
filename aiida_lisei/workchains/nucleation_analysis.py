"""``lisei.nucleation_analysis``: Li nucleation in a Li|Li6PS5Cl|Li trajectory beside the paper (§3).

The chain of processes:

``lisei.qeq`` (QEq charges of every ``charge_stride``-th frame, SI §5) → :func:`analyse_nucleation` (regions,
Li environments, isolated metallic clusters, origins, RDFs and charge statistics of every ``stride``-th frame
with :func:`~aiida_lisei.science.nucleation.summarise_trajectory`; ``summary``: our numbers beside the
paper's, ``time_series``, ``analysis``: the full result) → the figures, each a calcfunction returning a PNG
``SinglefileData``: :func:`plot_charge_histograms` (Fig. 3b-d), :func:`plot_rdf` (Fig. 4b),
:func:`plot_cluster_growth` (cluster size and CV vs time), :func:`plot_snapshot` (Fig. 3a).

The paper's numbers and the comparison live in :mod:`aiida_lisei.reporting` (``paper``: a Li cluster
appears in the SEI at ~125 ps, ~1 nm from the anode/SEI boundary, made of Li that were in the electrolyte;
its Li-Li nearest neighbours are closer than in bcc Li; QEq Li charges are ≈ 0 in the anode, ≈ +1 in the
electrolyte, in between in the SEI and ≈ 0 in the cluster). The ``summary`` says for every number whether
it agrees within a stated tolerance and whether it comes from a system smaller or a run shorter than the
paper's (``demo_size``): a demo does not test the paper's claims.
"""

from __future__ import annotations

import io
import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from aiida import orm
from aiida.common import AttributeDict
from aiida.engine import ProcessBuilder, ToContext, WorkChain, calcfunction, if_

from aiida_lisei.calculations.qeq import (
    QEqCalculation,
    check_trajectory,
    trajectory_site_indices,
)
from aiida_lisei.data.structure import GroupedStructureData
from aiida_lisei.engines.qeq_charges import check_settings
from aiida_lisei.protocols import ProtocolMixin
from aiida_lisei.reporting.comparisons import nucleation_comparison
from aiida_lisei.reporting.paper import PAPER_NUCLEATION
from aiida_lisei.science.nucleation import NucleationParameters, summarise_trajectory
from aiida_lisei.science.regions import check_slab_cell

__all__ = (
    'ANALYSIS_DEFAULTS',
    'NucleationAnalysisWorkChain',
    'analyse_nucleation',
    'check_analysis_parameters',
    'plot_charge_histograms',
    'plot_cluster_growth',
    'plot_rdf',
    'plot_snapshot',
    'snapshot_frame',
    'time_series_arrays',
)

#: Defaults of the ``analysis`` input: ``stride`` (analyse every stride-th frame), ``charge_stride`` (QEq on
#: every charge_stride-th frame, a multiple of ``stride``), ``charge_times`` (ps: full charge statistics at
#: the frames with charges nearest to them; ``None``: every frame with charges), ``nucleation``
#: (:class:`~aiida_lisei.science.nucleation.NucleationParameters` as a dict, missing keys: defaults).
ANALYSIS_DEFAULTS: dict[str, Any] = {
    'stride': 1,
    'charge_stride': 1,
    'charge_times': [100.0, 125.0, 150.0],
    'nucleation': {},
}

#: File names of the figures.
FIGURE_FILES = {
    'charge_histograms': 'charge_histograms.png',
    'rdf': 'rdf.png',
    'cluster_growth': 'cluster_growth.png',
    'snapshot': 'snapshot.png',
}

#: Most charge-histogram panels drawn (first, middle and last frame when ``charge_times`` is ``None``).
MAX_CHARGE_PANELS = 3


# ----------------------------------------------------------------------------------------------------------
# Pure helpers (no database access)
# ----------------------------------------------------------------------------------------------------------


def check_analysis_parameters(parameters: Mapping[str, Any]) -> dict[str, Any]:
    """Return the ``analysis`` parameters completed with :data:`ANALYSIS_DEFAULTS`; raise ``ValueError``.

    ``nucleation`` is expanded to the complete :meth:`NucleationParameters.as_dict` form.
    """
    unknown = sorted(set(parameters) - set(ANALYSIS_DEFAULTS))
    if unknown:
        raise ValueError(f'unknown analysis parameters {unknown}; known: {sorted(ANALYSIS_DEFAULTS)}')
    merged = {**ANALYSIS_DEFAULTS, **parameters}
    for key in ('stride', 'charge_stride'):
        value = merged[key]
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f'{key} must be a positive integer, got {value!r}')
    if merged['charge_stride'] % merged['stride']:
        raise ValueError(
            f'charge_stride {merged["charge_stride"]} must be a multiple of stride {merged["stride"]} '
            '(the frames with charges must be analysed frames)'
        )
    times = merged['charge_times']
    if times is not None:
        if not isinstance(times, list | tuple) or not times:
            raise ValueError('charge_times must be a non-empty list of times (ps) or null')
        if any(isinstance(t, bool) or not isinstance(t, int | float) or not math.isfinite(t) for t in times):
            raise ValueError(f'charge_times must be numbers (ps), got {times!r}')
        merged['charge_times'] = [float(t) for t in times]
    try:
        merged['nucleation'] = NucleationParameters.from_dict(merged['nucleation']).as_dict()
    except (TypeError, ValueError) as exception:
        raise ValueError(f'nucleation parameters: {exception}') from None
    return merged


def time_series_arrays(
    result: Mapping[str, Any], frame_indices: np.ndarray, stepids: np.ndarray
) -> dict[str, np.ndarray]:
    """Arrays of the ``time_series`` output from a :func:`summarise_trajectory` result (``None`` → NaN).

    ``time`` (ps), ``frame_indices``, ``stepids``, cluster counts, ``cluster_boundary_distance`` and
    ``sei_thickness`` (Å), ``li_class_<class>`` and ``li_region_<region>`` (Li counts), ``boundary_z_<name>``
    (Å, cell z of the boundaries) and ``mean_li_charge_<region>`` (e).
    """

    def array(values: Sequence[Any], dtype: Any = float) -> np.ndarray:
        return np.array([np.nan if value is None else value for value in values], dtype=dtype)

    series = result['series']
    arrays = {
        'time': array(result['time_ps']),
        'frame_indices': np.asarray(frame_indices, dtype=np.int64),
        'stepids': np.asarray(stepids, dtype=np.int64),
    }
    for key in ('largest_cluster_size', 'isolated_metallic_li', 'n_clusters_at_onset_size'):
        arrays[key] = array(series[key], np.int64)
    arrays['attached_metallic_li_outside_metal'] = array(
        series['attached_metallic_li_outside_metal'], np.int64
    )
    arrays['cluster_boundary_distance'] = array(series['cluster_boundary_distance'])
    arrays['sei_thickness'] = array(series['sei_thickness'])
    for name, values in series['li_classes'].items():
        arrays[f'li_class_{name}'] = array(values, np.int64)
    for name, values in series['li_per_region'].items():
        arrays[f'li_region_{name}'] = array(values, np.int64)
    for name, values in series['boundary_z'].items():
        arrays[f'boundary_z_{name}'] = array(values)
    for name, values in series['mean_li_charge'].items():
        arrays[f'mean_li_charge_{name}'] = array(values)
    return arrays


def _site_order_positions(trajectory: orm.TrajectoryData, frame: int) -> np.ndarray:
    """Positions (Å) of one frame in the order of the structure's sites."""
    sites = trajectory_site_indices(trajectory)
    positions = np.empty((len(sites), 3))
    positions[sites] = trajectory.get_positions()[frame]
    return positions


def _title(summary: orm.Dict, text: str) -> str:
    """Figure title flagged DEMO when the comparison is not the paper's setup."""
    return text if summary['mode'] == 'paper' else f'{text} — DEMO (not the paper setup)'


def _png_node(png: bytes, key: str) -> orm.SinglefileData:
    return orm.SinglefileData(io.BytesIO(png), filename=FIGURE_FILES[key])


# ----------------------------------------------------------------------------------------------------------
# Calcfunctions
# ----------------------------------------------------------------------------------------------------------


@calcfunction
def analyse_nucleation(
    trajectory: orm.TrajectoryData,
    structure: GroupedStructureData,
    charges: orm.ArrayData,
    parameters: orm.Dict,
    qeq_parameters: orm.Dict | None = None,
    guards: orm.Dict | None = None,
) -> dict[str, orm.Data]:
    """Analyse every ``stride``-th frame: regions, clusters, origins, RDFs, charges; compare with the paper.

    :param trajectory: positions and cells (Å), times (ps), optional ``atom_ids`` (= site index + 1).
    :param structure: the initial structure with region groups (the origin of every atom).
    :param charges: ``charges`` output of ``lisei.qeq`` (frames by ``frame_indices``; rows as the trajectory).
    :param parameters: the ``analysis`` parameters (:func:`check_analysis_parameters`).
    :param qeq_parameters: the QEq settings (their ``parameter_set`` enters the comparison).
    :param guards: the physics guards of the run that made the trajectory; the summary carries their verdict.
    :return: ``summary`` (``Dict``, ``nucleation_comparison``), ``time_series`` (``ArrayData``,
        :func:`time_series_arrays`) and ``analysis`` (``Dict``, the complete :func:`summarise_trajectory`
        result plus ``frame_indices``: lengths Å, times ps, charges e).
    """
    params = check_analysis_parameters(parameters.get_dict())
    indices = np.arange(0, trajectory.numsteps, params['stride'])
    positions = trajectory.get_positions()[indices]
    cells = trajectory.get_cells()[indices]
    times = np.asarray(trajectory.get_times(), dtype=float)[indices]
    stepids = np.asarray(trajectory.get_stepids())[indices]
    sites = trajectory_site_indices(trajectory)

    frame_charges = np.full(positions.shape[:2], np.nan)
    charge_frames = np.asarray(charges.get_array('frame_indices'))
    position_of = {int(frame): row for row, frame in enumerate(indices)}
    values = charges.get_array('charges')
    for row, frame in enumerate(charge_frames):
        if int(frame) in position_of:
            frame_charges[position_of[int(frame)]] = values[row]

    species = [structure.get_kind(site.kind_name).symbol for site in structure.sites]
    result = summarise_trajectory(
        positions,
        cells,
        species,
        structure.atom_groups,
        times,
        atom_ids=sites + 1,
        charges=frame_charges,
        charge_times=params['charge_times'],
        params=params['nucleation'],
    )
    result['frame_indices'] = indices.tolist()
    reported = [frame['time_ps'] for frame in result['charges']['frames']]
    settings = check_settings(qeq_parameters.get_dict() if qeq_parameters is not None else {})
    converged = charges.get_array('converged') if 'converged' in charges.get_arraynames() else []
    setup = {
        'natoms': trajectory.numsites,
        'n_frames': len(indices),
        'duration_ps': float(times[-1] - times[0]),
        'charge_times_ps': reported,
        'n_charge_frames': int(np.count_nonzero(np.isfinite(frame_charges).any(axis=1))),
        'not_converged': int(np.count_nonzero(~np.asarray(converged, dtype=bool))),
        'qeq_parameter_set': settings['parameter_set'] if not settings['species'] else 'custom',
        'onset_size': params['nucleation']['clusters']['onset_size'],
    }
    summary = nucleation_comparison(result['summary'], setup)
    if guards is not None:
        summary['guards'] = {
            'passed': guards['passed'],
            'failed': guards['failed'],
            'verdicts': {name: result['passed'] for name, result in guards['guards'].items()},
        }
    time_series = orm.ArrayData()
    for name, array in time_series_arrays(result, indices, stepids).items():
        time_series.set_array(name, array)
    return {'summary': orm.Dict(summary), 'time_series': time_series, 'analysis': orm.Dict(result)}


@calcfunction
def plot_charge_histograms(analysis: orm.Dict, summary: orm.Dict) -> orm.SinglefileData:
    """Return the Li charge histograms per region and of the cluster at the reported times (PNG, Fig. 3b-d).

    At most :data:`MAX_CHARGE_PANELS` panels: the first, middle and last of the reported frames.
    """
    from aiida_lisei.reporting.plots import ChargePanel, charge_histograms_png

    charges = analysis['charges']
    frames = charges['frames']
    if len(frames) > MAX_CHARGE_PANELS:
        picks = np.linspace(0, len(frames) - 1, MAX_CHARGE_PANELS).round().astype(int)
        frames = [frames[i] for i in sorted(set(picks.tolist()))]
    groups = ('anode', 'sei', 'electrolyte', 'cluster')
    panels = [
        ChargePanel(
            time=frame['time_ps'],
            histograms={name: frame[f'{name}_Li']['histogram'] for name in groups},
            means={name: frame[f'{name}_Li']['mean'] for name in groups},
        )
        for frame in frames
    ]
    png = charge_histograms_png(
        charges['bin_edges'], panels, title=_title(summary, 'QEq Li charges by region')
    )
    return _png_node(png, 'charge_histograms')


@calcfunction
def plot_rdf(analysis: orm.Dict, summary: orm.Dict) -> orm.SinglefileData:
    """Return the Li-Li g(r) of the cluster and of the bcc anode, with the paper's peaks (PNG, Fig. 4b)."""
    from aiida_lisei.reporting.plots import rdf_png

    rdf, numbers = analysis['rdf'], analysis['summary']
    png = rdf_png(
        rdf['r'],
        [np.nan if v is None else v for v in rdf['cluster_g']],
        [np.nan if v is None else v for v in rdf['anode_g']],
        cluster_nn=numbers['cluster_nn_distance'],
        reference_nn=numbers['anode_nn_distance'],
        paper_cluster_nn=PAPER_NUCLEATION['cluster_nn_distance'],
        paper_reference_nn=PAPER_NUCLEATION['anode_nn_distance'],
        title=_title(summary, 'Li-Li RDF: cluster vs bcc anode'),
    )
    return _png_node(png, 'rdf')


@calcfunction
def plot_cluster_growth(
    time_series: orm.ArrayData, summary: orm.Dict, colvar: orm.ArrayData | None = None
) -> orm.SinglefileData:
    """Return the largest isolated cluster vs time (ps), with the CV of ``colvar`` if given (PNG)."""
    from aiida_lisei.reporting.plots import cluster_growth_png

    numbers = summary['analysis_summary']
    png = cluster_growth_png(
        time_series.get_array('time'),
        time_series.get_array('largest_cluster_size'),
        onset_size=summary['setup'].get('onset_size'),
        onset_time=numbers['cluster_onset_time_ps'],
        paper_onset_time=PAPER_NUCLEATION['cluster_onset_time_ps'],
        cv_time=None if colvar is None else colvar.get_array('time'),
        cv=None if colvar is None else colvar.get_array('cv'),
        title=_title(summary, 'Li cluster growth'),
    )
    return _png_node(png, 'cluster_growth')


def snapshot_frame(analysis: Mapping[str, Any]) -> int:
    """Index (into the analysed frames) of the snapshot: the frame with charges nearest to the onset.

    Without an onset, the last frame; frames with charges are preferred when there are any.
    """
    n_frames = analysis['n_frames']
    onset = analysis['summary']['cluster_onset_frame']
    target = n_frames - 1 if onset is None else onset
    with_charges = [
        f for f in range(n_frames) if analysis['series']['mean_li_charge']['electrolyte'][f] is not None
    ]
    candidates = with_charges or list(range(n_frames))
    return min(candidates, key=lambda f: (abs(f - target), -f))


@calcfunction
def plot_snapshot(
    trajectory: orm.TrajectoryData,
    structure: GroupedStructureData,
    analysis: orm.Dict,
    charges: orm.ArrayData,
) -> orm.SinglefileData:
    """Return a side view of the frame nearest the onset: cluster in wine, Li by charge (PNG, Fig. 3a, c)."""
    from aiida_lisei.reporting.plots import snapshot_png

    data = analysis.get_dict()
    index = snapshot_frame(data)
    frame = data['frame_indices'][index]
    positions = _site_order_positions(trajectory, frame)
    sites = trajectory_site_indices(trajectory)
    frame_charges = None
    rows = np.flatnonzero(np.asarray(charges.get_array('frame_indices')) == frame)
    if rows.size:
        frame_charges = np.empty(len(sites))
        frame_charges[sites] = charges.get_array('charges')[rows[0]]
    cluster = data['clusters'][index].get('atoms', [])
    time = data['time_ps'][index]
    png = snapshot_png(
        positions,
        trajectory.get_cells()[frame],
        [structure.get_kind(site.kind_name).symbol for site in structure.sites],
        highlight=cluster,
        boundary_z=data['series']['boundary_z']['anode_sei'][index],
        charges=frame_charges,
        title=f't = {time:g} ps: largest isolated cluster {len(cluster)} Li (wine)',
    )
    return _png_node(png, 'snapshot')


# ----------------------------------------------------------------------------------------------------------
# Validators
# ----------------------------------------------------------------------------------------------------------


def validate_analysis(value: orm.Dict, _ctx: Any = None) -> str | None:
    """Return an error message if the ``analysis`` parameters are invalid."""
    try:
        check_analysis_parameters(value.get_dict())
    except ValueError as exception:
        return f'`analysis`: {exception}'
    return None


def validate_colvar(value: orm.ArrayData, _ctx: Any = None) -> str | None:
    """Return an error message unless ``colvar`` has 1D arrays ``time`` (ps) and ``cv`` of one length."""
    names = set(value.get_arraynames())
    if not {'time', 'cv'} <= names:
        return f'`colvar` needs the arrays `time` (ps) and `cv`; it has {sorted(names)}'
    time, cv = value.get_array('time'), value.get_array('cv')
    if time.ndim != 1 or time.shape != cv.shape:
        return f'`colvar`: `time` and `cv` must be 1D arrays of one length, got {time.shape} and {cv.shape}'
    return None


def check_charge_times(analysis: orm.Dict | None, times: np.ndarray) -> str | None:
    """Return an error message if a requested ``charge_times`` (ps) lies outside the trajectory's times
    (by more than half a frame interval): it would silently report the charges of the nearest end frame."""
    try:
        parameters = check_analysis_parameters(analysis.get_dict() if analysis is not None else {})
    except ValueError:
        return None  # the `analysis` port's own validator says what is wrong
    requested = parameters['charge_times']
    if not requested or times.size == 0:
        return None
    tolerance = 0.5 * float(np.min(np.diff(times))) if times.size > 1 else 0.0
    start, end = float(times.min()), float(times.max())
    outside = [time for time in requested if time < start - tolerance or time > end + tolerance]
    if outside:
        return (
            f'`analysis.charge_times` {outside} (ps) lie outside the trajectory ({start:g} to {end:g} ps): '
            'give times within the run, or null for every frame with charges'
        )
    return None


def guards_of(trajectory: orm.TrajectoryData) -> orm.Dict | None:
    """Return the physics guards recorded with ``trajectory`` in the graph: the ``guards`` output of the
    process that made it (a ``lisei.restraint_md`` job, or the work chain's ``stitch_segments``); ``None``
    for a trajectory made elsewhere (imported, or an exploration)."""
    if not trajectory.is_stored:
        return None
    creator = trajectory.creator
    if creator is None or 'guards' not in creator.outputs:
        return None
    return creator.outputs.guards


def validate_inputs(inputs: dict[str, Any], _ctx: Any = None) -> str | None:
    """Check the trajectory against the structure: atoms, elements, times, slab cell, region groups; refuse
    a trajectory that failed its physics guards unless ``allow_failed_guards``."""
    trajectory, structure = inputs.get('trajectory'), inputs.get('structure')
    if trajectory is None or structure is None:
        return None
    guards = guards_of(trajectory)
    allowed = inputs.get('allow_failed_guards')
    if guards is not None and not guards['passed'] and not (allowed is not None and allowed.value):
        failed = '; '.join(f'{name}: {guards["guards"][name]["detail"]}' for name in guards['failed'])
        return (
            f'the trajectory failed its physics guards <{guards.uuid}> ({failed}): it is not a simulation of '
            'the interface, and its analysis would present a broken run as a result. Fix the run (see '
            'docs/guards.md), or pass `allow_failed_guards=True` to analyse it anyway (the summary says so).'
        )
    message = check_trajectory(trajectory, structure)
    if message is not None:
        return message
    times = trajectory.get_times()
    if times is None:
        return 'the trajectory has no `times` (ps): the onset time and the charge times need them'
    message = check_charge_times(inputs.get('analysis'), times)
    if message is not None:
        return message
    try:
        check_slab_cell(trajectory.get_cells()[0])
    except ValueError as exception:
        return f'the trajectory cell: {exception}'
    if structure.base.attributes.get(GroupedStructureData._KEY_GROUPS, None) is None:
        return 'the structure has no region groups (anode_Li, electrolyte_*, source_Li): use the builders'
    return None


# ----------------------------------------------------------------------------------------------------------
# The workchain
# ----------------------------------------------------------------------------------------------------------


class NucleationAnalysisWorkChain(ProtocolMixin, WorkChain):
    """QEq charges, Li clusters, origins, RDFs of a nucleation trajectory, and the paper's numbers beside."""

    _protocol_file = 'nucleation_analysis'

    @classmethod
    def define(cls, spec):
        """Define the process specification."""
        super().define(spec)
        spec.input(
            'trajectory',
            valid_type=orm.TrajectoryData,
            help='MD frames: positions and cells (Å), times (ps), symbols; optional atom_ids (= site + 1).',
        )
        spec.input(
            'structure',
            valid_type=GroupedStructureData,
            help='The initial structure with its region groups (anode_Li, electrolyte_*, source_Li).',
        )
        spec.input(
            'colvar',
            valid_type=orm.ArrayData,
            required=False,
            validator=validate_colvar,
            help='Collective variable of the moving restraint: arrays `time` (ps) and `cv` (plotted).',
        )
        spec.input(
            'analysis',
            valid_type=orm.Dict,
            default=lambda: orm.Dict({}),
            serializer=orm.to_aiida_type,
            validator=validate_analysis,
            help='stride, charge_stride (QEq frames), charge_times (ps), nucleation (NucleationParameters).',
        )
        spec.input(
            'allow_failed_guards',
            valid_type=orm.Bool,
            default=lambda: orm.Bool(False),
            serializer=orm.to_aiida_type,
            help='Analyse a trajectory whose run failed its physics guards (refused by default); the summary '
            'and the report then say so.',
        )
        spec.expose_inputs(
            QEqCalculation,
            namespace='qeq',
            exclude=('trajectory', 'structure', 'stride'),
            namespace_options={'help': 'Inputs of `lisei.qeq` (code, parameters, metadata).'},
        )
        spec.inputs.validator = validate_inputs

        spec.output('charges', valid_type=orm.ArrayData, help='QEq charges (e) of the charge frames.')
        spec.output(
            'charge_statistics', valid_type=orm.Dict, help='Mean/std of the charges per group, per frame.'
        )
        spec.output(
            'summary', valid_type=orm.Dict, help="Our numbers beside the paper's, with demo-size flags."
        )
        spec.output(
            'time_series', valid_type=orm.ArrayData, help='Cluster size, Li classes, boundaries vs time.'
        )
        spec.output(
            'analysis', valid_type=orm.Dict, help='The complete analysis (series, clusters, RDF, charges).'
        )
        spec.output_namespace('figures', valid_type=orm.SinglefileData, dynamic=True, help='PNG figures.')

        spec.exit_code(501, 'ERROR_QEQ_FAILED', message='The QEq calculation {process} failed: {message}')
        spec.exit_code(502, 'ERROR_ANALYSIS_FAILED', message='The nucleation analysis failed: {message}')
        spec.outline(
            cls.setup,
            cls.run_qeq,
            cls.inspect_qeq,
            cls.analyse,
            cls.plot,
            if_(cls.has_charge_frames)(cls.plot_charges),
        )

    @classmethod
    def get_builder_from_protocol(
        cls,
        code: orm.AbstractCode,
        trajectory: orm.TrajectoryData,
        structure: GroupedStructureData,
        *,
        protocol: str | None = None,
        overrides: dict[str, Any] | None = None,
        colvar: orm.ArrayData | None = None,
        options: dict[str, Any] | None = None,
        allow_failed_guards: bool = False,
    ) -> ProcessBuilder:
        """Return a builder from a protocol (``demo`` by default, or ``paper``); no node is stored.

        :param code: the ``lisei-qeq`` code (``lisei.qeq``).
        :param overrides: nested dict merged over the protocol (``analysis``, ``qeq``).
        :param colvar: the restraint's COLVAR (``time`` ps, ``cv``), plotted with the cluster size.
        :param options: scheduler options merged over the protocol's ``qeq.metadata.options``.
        :param allow_failed_guards: analyse a trajectory whose run failed its guards (the summary says so).
        """
        inputs = cls.get_protocol_inputs(protocol, overrides)
        analysis = check_analysis_parameters(inputs['analysis'])
        builder = cls.get_builder()
        builder.trajectory = trajectory
        builder.structure = structure
        if colvar is not None:
            builder.colvar = colvar
        builder.analysis = orm.Dict(analysis)
        builder.allow_failed_guards = orm.Bool(allow_failed_guards)
        builder.qeq.code = code
        builder.qeq.parameters = orm.Dict(check_settings(inputs['qeq']['parameters']))
        metadata = dict(inputs['qeq'].get('metadata', {}))
        metadata['options'] = {**metadata.get('options', {}), **(options or {})}
        builder.qeq.metadata = metadata
        return builder

    # -- outline steps ----------------------------------------------------------------------------------

    def setup(self):
        """Complete the analysis parameters and report the plan."""
        self.ctx.analysis = check_analysis_parameters(self.inputs.analysis.get_dict())
        trajectory = self.inputs.trajectory
        self.ctx.guards = guards_of(trajectory)
        if self.ctx.guards is None:
            self.report('the trajectory carries no physics guards (made outside lisei.restraint_md)')
        elif self.ctx.guards['passed']:
            self.report(
                f'the run that made the trajectory passed its physics guards <PK={self.ctx.guards.pk}>'
            )
        else:
            self.report(
                'WARNING: analysing a run that FAILED its physics guards '
                f'({", ".join(self.ctx.guards["failed"])}) because allow_failed_guards is set: these numbers '
                'are not a result'
            )
        times = trajectory.get_times()
        self.report(
            f'nucleation analysis of {trajectory.numsteps} frames of {trajectory.numsites} atoms '
            f'({times[0]:g}-{times[-1]:g} ps): every {self.ctx.analysis["stride"]} frame(s) analysed, QEq on '
            f'every {self.ctx.analysis["charge_stride"]}'
        )

    def run_qeq(self):
        """Compute the QEq charges of every ``charge_stride``-th frame."""
        inputs = AttributeDict(self.exposed_inputs(QEqCalculation, namespace='qeq'))
        inputs.trajectory = self.inputs.trajectory
        inputs.structure = self.inputs.structure
        inputs.stride = orm.Int(self.ctx.analysis['charge_stride'])
        inputs.metadata = {**inputs.get('metadata', {}), 'call_link_label': 'qeq'}
        node = self.submit(QEqCalculation, **inputs)
        self.report(f'QEq charges <PK={node.pk}> submitted')
        return ToContext(qeq=node)

    def inspect_qeq(self):
        """Keep the charges; accept unconverged frames with a warning, fail on anything else."""
        node = self.ctx.qeq
        not_converged = node.exit_status == QEqCalculation.exit_codes.ERROR_NOT_CONVERGED.status
        if not (node.is_finished_ok or not_converged) or 'charges' not in node.outputs:
            message = f'exit status {node.exit_status}: {node.exit_message or "no message"}'
            return self.exit_codes.ERROR_QEQ_FAILED.format(
                process=f'{node.process_label}<{node.pk}>', message=message
            )
        if not_converged:
            self.report(f'QEq <PK={node.pk}>: {node.exit_message}; using the charges as they are')
        self.out('charges', node.outputs.charges)
        self.out('charge_statistics', node.outputs.statistics)
        return None

    def analyse(self):
        """Analyse the frames with the charges and compare with the paper (calcfunction)."""
        try:
            results = analyse_nucleation(
                self.inputs.trajectory,
                self.inputs.structure,
                self.ctx.qeq.outputs.charges,
                self.inputs.analysis,
                self.ctx.qeq.inputs.parameters,
                **({'guards': self.ctx.guards} if self.ctx.guards is not None else {}),
                metadata={'call_link_label': 'analyse_nucleation'},
            )
        except (ValueError, KeyError, IndexError) as exception:
            return self.exit_codes.ERROR_ANALYSIS_FAILED.format(
                message=f'{type(exception).__name__}: {exception}'
            )
        self.ctx.results = results
        for name in ('summary', 'time_series', 'analysis'):
            self.out(name, results[name])
        summary = results['summary']
        numbers = summary['analysis_summary']
        onset = numbers['cluster_onset_time_ps']
        self.report(
            f'[{summary["mode"].upper()}] cluster onset: '
            + (
                'none'
                if onset is None
                else f'{onset:g} ps (paper ~125 ps), {numbers["cluster_size_at_onset"]} Li'
            )
            + f'; max cluster {numbers["max_cluster_size"]} Li <PK={summary.pk}>'
        )
        return None

    def plot(self):
        """Plot the RDF, the cluster growth (with the CV) and the snapshot."""
        results = self.ctx.results
        figures = {
            'rdf': plot_rdf(
                results['analysis'], results['summary'], metadata={'call_link_label': 'plot_rdf'}
            ),
            'cluster_growth': plot_cluster_growth(
                results['time_series'],
                results['summary'],
                **({'colvar': self.inputs.colvar} if 'colvar' in self.inputs else {}),
                metadata={'call_link_label': 'plot_cluster_growth'},
            ),
            'snapshot': plot_snapshot(
                self.inputs.trajectory,
                self.inputs.structure,
                results['analysis'],
                self.ctx.qeq.outputs.charges,
                metadata={'call_link_label': 'plot_snapshot'},
            ),
        }
        for name, node in figures.items():
            self.out(f'figures.{name}', node)

    def has_charge_frames(self) -> bool:
        """Return whether the analysis reported charge statistics at some frame."""
        return bool(self.ctx.results['analysis']['charges']['frames'])

    def plot_charges(self):
        """Plot the Li charge histograms per region at the reported times."""
        results = self.ctx.results
        node = plot_charge_histograms(
            results['analysis'], results['summary'], metadata={'call_link_label': 'plot_charge_histograms'}
        )
        self.out('figures.charge_histograms', node)
        self.report(f'figures: {", ".join(sorted(FIGURE_FILES))} <summary PK={results["summary"].pk}>')
