"""Figures as PNG bytes from NumPy arrays (matplotlib's Agg canvas, no pyplot state, no AiiDA imports).

Reusable by calcfunctions (which wrap the bytes in a ``SinglefileData``), scripts and notebooks. Model
validation (the paper's Figure 1d, e):

* :func:`energy_force_parity_png` — two panels, model vs reference energy per atom and force components,
  with the RMSE (and the paper's RMSE, if given) in each panel;
* :func:`parity_png` — any number of :class:`ParityPanel` side by side;
* :func:`rmse` — root-mean-square difference of two arrays; :func:`png_size` — width and height of PNG
  bytes (raises ``ValueError`` if they are not a PNG).

The moving restraint: :func:`restraint_figures` (CV and s0, coordination numbers, bias and work vs time,
from :func:`time_series_png`).

The electronic structure (the paper's Figure 4d): :func:`dos_png` — DOS panels stacked (bulk above, SEI
below), energies relative to the Fermi level, total and per element, the gap written in each panel.

The nucleation analysis (the paper's Figures 3 and 4; Å, ps, e):

* :func:`charge_histograms_png` — Li charge distributions per region at chosen times (Fig. 3b-d as
  histograms: anode ≈ 0 in blue, electrolyte ≈ +1 in red, SEI in between in green, cluster in wine);
* :func:`rdf_png` — Li-Li g(r) of the cluster against the bcc Li of the anode, with the paper's
  nearest-neighbour distances (Fig. 4b);
* :func:`cluster_growth_png` — largest isolated Li cluster vs time, with the collective variable of the
  moving restraint on a second axis when given;
* :func:`snapshot_png` — side view (x-z projection) of a frame with the cluster highlighted in wine
  (Fig. 3a) and, if charges are given, the Li coloured by charge (Fig. 3b-d).
"""

from __future__ import annotations

import io
import struct
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from aiida_lisei.reporting.paper import PAPER_NUCLEATION

__all__ = (
    'CLUSTER_COLOUR',
    'PNG_SIGNATURE',
    'REGION_COLOURS',
    'SPECIES_COLOURS',
    'ChargePanel',
    'DosPanel',
    'ParityPanel',
    'charge_histograms_png',
    'cluster_growth_png',
    'dos_png',
    'energy_force_parity_png',
    'parity_png',
    'png_size',
    'rdf_png',
    'restraint_figures',
    'rmse',
    'snapshot_png',
    'time_series_png',
)

#: The eight bytes every PNG file starts with.
PNG_SIGNATURE = b'\x89PNG\r\n\x1a\n'


def rmse(reference: np.ndarray, predicted: np.ndarray) -> float:
    """Return the RMSE of ``predicted - reference`` over all entries (same unit as the inputs).

    Raises ``ValueError`` on different shapes or empty arrays.
    """
    reference, predicted = np.asarray(reference, dtype=float), np.asarray(predicted, dtype=float)
    if reference.shape != predicted.shape:
        raise ValueError(f'shapes differ: reference {reference.shape}, predicted {predicted.shape}')
    if reference.size == 0:
        raise ValueError('no values')
    return float(np.sqrt(np.mean((predicted - reference) ** 2)))


def png_size(data: bytes) -> tuple[int, int]:
    """Return ``(width, height)`` in pixels of PNG ``data``; raise ``ValueError`` if it is not a PNG."""
    if len(data) < 24 or not data.startswith(PNG_SIGNATURE) or data[12:16] != b'IHDR':
        raise ValueError('not a PNG: no PNG signature followed by an IHDR chunk')
    width, height = struct.unpack('>II', data[16:24])
    return width, height


@dataclass(frozen=True)
class ParityPanel:
    """One parity panel: reference (x) and predicted (y) values, flattened when plotted.

    :param reference: reference values (e.g. DFT), any shape.
    :param predicted: predicted values (e.g. DP), same shape.
    :param quantity: axis label of the quantity, e.g. ``'Energy'``.
    :param unit: unit of the values as shown, e.g. ``'eV/atom'``.
    :param error_scale: factor from the values' unit to the unit of the printed RMSE (e.g. 1000 for
        eV -> meV).
    :param error_unit: unit of the printed RMSE, e.g. ``'meV/atom'``.
    :param paper_rmse: RMSE to print next to ours, in ``error_unit`` (``None``: none printed).
    """

    reference: np.ndarray
    predicted: np.ndarray
    quantity: str
    unit: str
    error_scale: float = 1.0
    error_unit: str = ''
    paper_rmse: float | None = None

    def __post_init__(self) -> None:
        """Flatten both arrays and check that they match."""
        reference = np.asarray(self.reference, dtype=float).ravel()
        predicted = np.asarray(self.predicted, dtype=float).ravel()
        if reference.shape != predicted.shape:
            raise ValueError(
                f'{self.quantity}: {reference.size} reference values but {predicted.size} predicted'
            )
        if reference.size == 0:
            raise ValueError(f'{self.quantity}: no values to plot')
        if not (np.isfinite(reference).all() and np.isfinite(predicted).all()):
            raise ValueError(f'{self.quantity}: non-finite values')
        object.__setattr__(self, 'reference', reference)
        object.__setattr__(self, 'predicted', predicted)

    @property
    def rmse(self) -> float:
        """RMSE in ``error_unit``."""
        return rmse(self.reference, self.predicted) * self.error_scale

    def annotation(self) -> str:
        """Return the text printed in the panel: number of points, our RMSE and the paper's."""
        unit = f' {self.error_unit}' if self.error_unit else ''
        lines = [f'RMSE = {self.rmse:.3g}{unit}']
        if self.paper_rmse is not None:
            lines.append(f'paper: {self.paper_rmse:.3g}{unit}')
        lines.append(f'n = {self.reference.size}')
        return '\n'.join(lines)


def _draw(axes, panel: ParityPanel) -> None:
    """Draw one parity panel (scatter, y = x diagonal, equal limits, RMSE text) on matplotlib ``axes``."""
    low = float(min(panel.reference.min(), panel.predicted.min()))
    high = float(max(panel.reference.max(), panel.predicted.max()))
    margin = 0.05 * (high - low) if high > low else max(abs(high), 1.0) * 1e-3
    limits = (low - margin, high + margin)
    axes.plot(limits, limits, color='0.4', linewidth=0.8, linestyle='--', zorder=1)
    axes.scatter(
        panel.reference,
        panel.predicted,
        s=6 if panel.reference.size > 1000 else 14,
        alpha=0.5 if panel.reference.size > 1000 else 0.8,
        edgecolors='none',
        color='tab:blue',
        rasterized=True,
        zorder=2,
    )
    axes.set_xlim(limits)
    axes.set_ylim(limits)
    axes.set_aspect('equal', adjustable='box')
    unit = f' ({panel.unit})' if panel.unit else ''
    axes.set_xlabel(f'{panel.quantity}, reference{unit}')
    axes.set_ylabel(f'{panel.quantity}, model{unit}')
    axes.ticklabel_format(useOffset=False)
    axes.text(
        0.04,
        0.96,
        panel.annotation(),
        transform=axes.transAxes,
        va='top',
        ha='left',
        fontsize=9,
        bbox={'boxstyle': 'round', 'facecolor': 'white', 'alpha': 0.8, 'edgecolor': '0.7'},
    )


def parity_png(panels: Sequence[ParityPanel], title: str | None = None, dpi: int = 120) -> bytes:
    """Return a PNG (bytes) with the parity ``panels`` side by side (reference on x, model on y).

    :param panels: one :class:`ParityPanel` per panel (e.g. energy per atom, then force components).
    :param title: figure title (e.g. flagging a demo run), or ``None``.
    :param dpi: resolution; each panel is 4.2 x 4.2 inches.
    """
    if not panels:
        raise ValueError('no panels to plot')
    figure = _figure(4.2 * len(panels), 4.6 if title else 4.2, dpi)
    for index, panel in enumerate(panels, start=1):
        _draw(figure.add_subplot(1, len(panels), index), panel)
    if title:
        figure.suptitle(title, fontsize=10)
    return _figure_png(figure, dpi)


def energy_force_parity_png(
    energy_reference: np.ndarray,
    energy_predicted: np.ndarray,
    natoms: np.ndarray | int,
    force_reference: np.ndarray,
    force_predicted: np.ndarray,
    *,
    paper_energy_rmse: float | None = None,
    paper_force_rmse: float | None = None,
    title: str | None = None,
    dpi: int = 120,
) -> bytes:
    """Return a two-panel parity PNG: energy per atom (eV/atom) and force components (eV/Å).

    :param energy_reference: reference total energies per frame (eV).
    :param energy_predicted: predicted total energies per frame (eV).
    :param natoms: atoms per frame (one number or one per frame); energies are divided by it.
    :param force_reference: reference forces (eV/Å), any shape (all components are plotted).
    :param force_predicted: predicted forces (eV/Å), same shape.
    :param paper_energy_rmse: the paper's energy RMSE to print (meV/atom), or ``None``.
    :param paper_force_rmse: the paper's force RMSE to print (meV/Å), or ``None``.
    :param title: figure title, or ``None``.
    :param dpi: resolution.
    """
    natoms = np.asarray(natoms, dtype=float)
    if np.any(natoms <= 0):
        raise ValueError('natoms must be positive')
    energy = ParityPanel(
        np.asarray(energy_reference, dtype=float) / natoms,
        np.asarray(energy_predicted, dtype=float) / natoms,
        quantity='Energy',
        unit='eV/atom',
        error_scale=1000.0,
        error_unit='meV/atom',
        paper_rmse=paper_energy_rmse,
    )
    force = ParityPanel(
        force_reference,
        force_predicted,
        quantity='Force component',
        unit='eV/Å',
        error_scale=1000.0,
        error_unit='meV/Å',
        paper_rmse=paper_force_rmse,
    )
    return parity_png([energy, force], title=title, dpi=dpi)


def _figure(width: float, height: float, dpi: int):
    """A matplotlib ``Figure`` attached to an Agg canvas (no global pyplot state)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(width, height), dpi=dpi)
    FigureCanvasAgg(figure)
    return figure


@dataclass(frozen=True)
class ChargePanel:
    """Charge histograms of the Li groups at one time.

    :param time: time of the frame (ps).
    :param histograms: group name (``anode``, ``sei``, ``electrolyte``, ``cluster``, ...) → counts per bin.
    :param means: group name → mean charge (e), printed in the legend (optional).
    """

    time: float
    histograms: Mapping[str, Sequence[int]]
    means: Mapping[str, float | None] = field(default_factory=dict)


def _figure_png(figure, dpi: int) -> bytes:
    """Return ``figure`` (a matplotlib ``Figure`` with an Agg canvas) as PNG bytes."""
    figure.tight_layout()
    buffer = io.BytesIO()
    figure.savefig(buffer, format='png', dpi=dpi)
    return buffer.getvalue()


def time_series_png(
    time: np.ndarray,
    panels: Sequence[tuple[str, Sequence[tuple[str, np.ndarray]]]],
    *,
    title: str | None = None,
    dpi: int = 110,
) -> bytes:
    """Return a PNG of stacked panels sharing the time axis (ps).

    :param panels: per panel its y label and its ``(legend label, values)`` curves.
    """
    if not panels:
        raise ValueError('no panels to plot')
    figure = _figure(6.4, 2.4 * len(panels) + (0.3 if title else 0.0), dpi)
    axes_list = figure.subplots(len(panels), 1, sharex=True, squeeze=False)[:, 0]
    for axes, (ylabel, curves) in zip(axes_list, panels, strict=True):
        for label, values in curves:
            axes.plot(time, values, label=label, linewidth=1.2)
        axes.set_ylabel(ylabel)
        if len(curves) > 1:
            axes.legend(fontsize=8, loc='best')
    axes_list[-1].set_xlabel('time (ps)')
    if title:
        figure.suptitle(title, fontsize=10)
    return _figure_png(figure, dpi)


def restraint_figures(colvar: dict[str, np.ndarray], dpi: int = 110) -> dict[str, bytes]:
    """Return the moving-restraint figures of a COLVAR table as PNG bytes.

    :param colvar: arrays ``time`` (ps), ``cv``, ``s0``, ``cn_<A>_<B>`` (raw coordination numbers),
        ``bias`` and ``work`` (eV), as the ``lisei.restraint_md`` parser names them.
    :return: ``cv`` (CV and s0 vs time), ``coordination`` (each CN vs time), ``bias_work`` (bias and
        accumulated work vs time).
    """
    time = np.asarray(colvar['time'], dtype=float)
    coordination = [
        (name[3:].replace('_', '-'), colvar[name]) for name in sorted(colvar) if name.startswith('cn_')
    ]
    figures = {
        'cv': time_series_png(
            time, [('CV', [('CV', colvar['cv']), ('s0 (restraint centre)', colvar['s0'])])], dpi=dpi
        ),
        'bias_work': time_series_png(
            time,
            [('bias (eV)', [('bias', colvar['bias'])]), ('work (eV)', [('work', colvar['work'])])],
            dpi=dpi,
        ),
    }
    if coordination:
        figures['coordination'] = time_series_png(
            time, [(f'CN({label})', [(label, values)]) for label, values in coordination], dpi=dpi
        )
    return figures


# ----------------------------------------------------------------------------------------------------------
# The nucleation analysis
# ----------------------------------------------------------------------------------------------------------

#: The wine of the paper's cluster atoms (Fig. 3a).
CLUSTER_COLOUR = '#7b1e3a'

#: Colours of the Li groups in the charge plots (the paper's colour code: metal blue, Li+ red, SEI green).
REGION_COLOURS: dict[str, str] = {
    'anode': 'tab:blue',
    'sei': 'tab:green',
    'electrolyte': 'tab:red',
    'source_sei': 'tab:olive',
    'source': 'tab:cyan',
    'cluster': CLUSTER_COLOUR,
}

#: Colours of the elements in snapshots (the paper's Fig. 2: Li green, P blue, S yellow, Cl orange).
SPECIES_COLOURS: dict[str, str] = {'Li': '#4daf4a', 'P': '#377eb8', 'S': '#e6c700', 'Cl': '#ff7f00'}


def charge_histograms_png(
    bin_edges: Sequence[float], panels: Sequence[ChargePanel], title: str | None = None, dpi: int = 110
) -> bytes:
    """Return a PNG with one panel per time: the fraction of each group's Li per charge bin (e).

    Each group's histogram is normalised to its own count, so that a 10-atom cluster is as visible as a
    1000-atom anode; empty groups are left out. Raises ``ValueError`` without panels or on a histogram
    whose length does not match ``bin_edges``.
    """
    edges = np.asarray(bin_edges, dtype=float)
    if not panels:
        raise ValueError('no charge panels to plot')
    figure = _figure(3.6 * len(panels), 3.4 if title else 3.1, dpi)
    for index, panel in enumerate(panels, start=1):
        axes = figure.add_subplot(1, len(panels), index)
        for name, counts in panel.histograms.items():
            counts = np.asarray(counts, dtype=float)
            if counts.shape != (len(edges) - 1,):
                raise ValueError(f'histogram of `{name}` has {counts.size} bins, edges give {len(edges) - 1}')
            total = counts.sum()
            if total == 0:
                continue
            mean = panel.means.get(name)
            label = f'{name} ({int(total)})' + ('' if mean is None else f', {mean:+.2f} e')
            axes.stairs(
                counts / total,
                edges,
                label=label,
                color=REGION_COLOURS.get(name, '0.3'),
                linewidth=2.0 if name == 'cluster' else 1.3,
                fill=name == 'cluster',
                alpha=0.6 if name == 'cluster' else 1.0,
            )
        axes.set_xlabel('Li charge (e)')
        axes.set_ylabel('fraction of the group' if index == 1 else '')
        axes.set_title(f't = {panel.time:g} ps', fontsize=10)
        axes.legend(fontsize=7, loc='upper left')
    if title:
        figure.suptitle(title, fontsize=10)
    return _figure_png(figure, dpi)


def rdf_png(
    r: Sequence[float],
    cluster_g: Sequence[float],
    reference_g: Sequence[float],
    *,
    cluster_nn: float | None = None,
    reference_nn: float | None = None,
    paper_cluster_nn: float | None = PAPER_NUCLEATION['cluster_nn_distance'],
    paper_reference_nn: float | None = PAPER_NUCLEATION['anode_nn_distance'],
    smoothing: float = 0.03,
    title: str | None = None,
    dpi: int = 110,
) -> bytes:
    """Return a PNG of the Li-Li g(r) of the cluster (wine) and of the anode's bcc Li (blue), r in Å.

    Each curve is smoothed with a Gaussian of ``smoothing`` Å (as the peak search of
    :mod:`aiida_lisei.science.rdf`) and scaled to a maximum of 1 (a cluster's g(r) has no meaningful
    amplitude, only peak positions). First peaks: ours solid, the paper's dotted, values in the legend.
    """
    from scipy.ndimage import gaussian_filter1d

    r = np.asarray(r, dtype=float)
    spacing = float(np.mean(np.diff(r))) if r.size > 1 else 1.0
    curves = {'cluster Li': (cluster_g, CLUSTER_COLOUR), 'anode bcc Li': (reference_g, 'tab:blue')}
    figure = _figure(5.4, 3.8 if title else 3.5, dpi)
    axes = figure.add_subplot(1, 1, 1)
    drawn = 0
    for label, (values, colour) in curves.items():
        values = np.asarray(values, dtype=float)
        if values.shape != r.shape:
            raise ValueError(f'{label}: g(r) has {values.size} values for {r.size} radii')
        values = np.nan_to_num(values)
        if smoothing > 0 and values.size:
            values = gaussian_filter1d(values, smoothing / spacing, mode='constant')
        top = values.max() if values.size else 0.0
        if top > 0:
            axes.plot(r, values / top, color=colour, label=label, linewidth=1.4)
            drawn += 1
    for value, colour, style, text in (
        (cluster_nn, CLUSTER_COLOUR, '-', 'cluster nn, ours'),
        (paper_cluster_nn, CLUSTER_COLOUR, ':', 'cluster nn, paper'),
        (reference_nn, 'tab:blue', '-', 'bcc nn, ours'),
        (paper_reference_nn, 'tab:blue', ':', 'bcc nn, paper'),
    ):
        if value is not None and np.isfinite(value):
            axes.axvline(value, color=colour, linestyle=style, linewidth=1.0, label=f'{text} {value:.2f} Å')
    if drawn == 0:
        axes.text(0.5, 0.5, 'no Li pairs to histogram', transform=axes.transAxes, ha='center')
    axes.set_xlim(float(r.min()) if r.size else 0.0, float(r.max()) if r.size else 6.0)
    axes.set_ylim(0.0, 1.1)
    axes.set_xlabel('r (Å)')
    axes.set_ylabel('g(r) / max')
    axes.legend(fontsize=7, loc='upper right')
    if title:
        axes.set_title(title, fontsize=10)
    return _figure_png(figure, dpi)


def cluster_growth_png(
    time: Sequence[float],
    largest_cluster_size: Sequence[float],
    *,
    onset_size: int | None = None,
    onset_time: float | None = None,
    paper_onset_time: float | None = PAPER_NUCLEATION['cluster_onset_time_ps'],
    cv_time: Sequence[float] | None = None,
    cv: Sequence[float] | None = None,
    title: str | None = None,
    dpi: int = 110,
) -> bytes:
    """Return a PNG of the largest isolated Li cluster (atoms) vs time (ps), and the CV if given.

    ``onset_size`` is drawn as a horizontal line, our onset time as a solid and the paper's (~125 ps) as a
    dotted vertical line; the collective variable (``cv`` at ``cv_time``, ps) goes on a second y axis.
    """
    time = np.asarray(time, dtype=float)
    sizes = np.asarray(largest_cluster_size, dtype=float)
    if time.shape != sizes.shape or time.ndim != 1 or time.size == 0:
        raise ValueError(
            f'time and largest_cluster_size must be equal non-empty 1D arrays: {time.shape}, {sizes.shape}'
        )
    figure = _figure(6.0, 3.8 if title else 3.5, dpi)
    axes = figure.add_subplot(1, 1, 1)
    axes.plot(time, sizes, color=CLUSTER_COLOUR, marker='o', markersize=3, label='largest isolated cluster')
    if onset_size is not None:
        axes.axhline(onset_size, color='0.5', linestyle='--', linewidth=0.8, label=f'onset size {onset_size}')
    if onset_time is not None and np.isfinite(onset_time):
        axes.axvline(onset_time, color=CLUSTER_COLOUR, linewidth=1.0, label=f'onset {onset_time:g} ps (ours)')
    if paper_onset_time is not None:
        axes.axvline(paper_onset_time, color='0.2', linestyle=':', label=f'~{paper_onset_time:g} ps (paper)')
    axes.set_xlabel('time (ps)')
    axes.set_ylabel('Li atoms in the largest cluster')
    axes.set_ylim(bottom=0)
    handles, labels = axes.get_legend_handles_labels()
    if cv is not None and cv_time is not None:
        cv_time, cv = np.asarray(cv_time, dtype=float), np.asarray(cv, dtype=float)
        if cv_time.shape != cv.shape:
            raise ValueError(f'cv_time and cv must have the same shape: {cv_time.shape}, {cv.shape}')
        twin = axes.twinx()
        (line,) = twin.plot(cv_time, cv, color='tab:purple', linewidth=1.2, label='CV')
        twin.set_ylabel('collective variable')
        handles.append(line)
        labels.append('CV')
    axes.legend(handles, labels, fontsize=7, loc='upper left')
    if title:
        axes.set_title(title, fontsize=10)
    return _figure_png(figure, dpi)


def _charge_colourmap():
    """Blue (0 e, metal) → green → red (+1 e, Li+), as the paper's Fig. 3b-d."""
    from matplotlib.colors import LinearSegmentedColormap

    return LinearSegmentedColormap.from_list('li_charge', ['tab:blue', 'tab:green', 'tab:red'])


def snapshot_png(
    positions: np.ndarray,
    cell: np.ndarray,
    species: Sequence[str],
    *,
    highlight: Sequence[int] = (),
    boundary_z: float | None = None,
    charges: np.ndarray | None = None,
    title: str | None = None,
    dpi: int = 110,
) -> bytes:
    """Return a PNG side view (x horizontal, z vertical, Å) of a frame, the ``highlight`` atoms in wine.

    :param positions: (N, 3) positions (Å); x is wrapped into the cell.
    :param cell: (3, 3) cell (Å), c along z.
    :param species: (N,) chemical symbols.
    :param highlight: indices of the cluster atoms, drawn larger in wine on top.
    :param boundary_z: z of the anode/SEI boundary (Å), a dashed grey line.
    :param charges: (N,) charges (e): adds a second panel with only the Li, coloured by charge (0 to +1).
    """
    positions = np.asarray(positions, dtype=float)
    species = np.asarray(species, dtype=str)
    cell = np.asarray(cell, dtype=float)
    if positions.shape != (len(species), 3):
        raise ValueError(f'positions must be (N, 3) for {len(species)} atoms, got {positions.shape}')
    fractional = np.linalg.solve(cell.T, positions.T).T
    fractional[:, :2] %= 1.0
    wrapped = fractional @ cell
    x, z = wrapped[:, 0], wrapped[:, 2]
    highlight = np.asarray(highlight, dtype=int)
    with_charges = charges is not None
    panels = 2 if with_charges else 1
    height = 6.5
    width = max(2.2, height * (cell[0, 0] + abs(cell[1, 0])) / max(np.ptp(z) + 4.0, 1.0)) * panels + 1.5
    figure = _figure(min(width, 12.0), height, dpi)

    axes = figure.add_subplot(1, panels, 1)
    for symbol in sorted(set(species.tolist())):
        mask = species == symbol
        axes.scatter(x[mask], z[mask], s=10, color=SPECIES_COLOURS.get(symbol, '0.5'), label=symbol, lw=0)
    if highlight.size:
        axes.scatter(x[highlight], z[highlight], s=28, color=CLUSTER_COLOUR, label='cluster', lw=0, zorder=3)
    panels_axes = [axes]
    if with_charges:
        charges = np.asarray(charges, dtype=float)
        if charges.shape != (len(species),):
            raise ValueError(f'charges must be (N,) for {len(species)} atoms, got {charges.shape}')
        right = figure.add_subplot(1, panels, 2, sharey=axes)
        li = (species == 'Li') & np.isfinite(charges)
        points = right.scatter(
            x[li], z[li], c=charges[li], cmap=_charge_colourmap(), vmin=0.0, vmax=1.0, s=12, lw=0
        )
        figure.colorbar(points, ax=right, label='Li charge (e)', fraction=0.08)
        right.set_title('Li by QEq charge', fontsize=9)
        panels_axes.append(right)
    for panel in panels_axes:
        if boundary_z is not None and np.isfinite(boundary_z):
            panel.axhline(boundary_z, color='0.5', linestyle='--', linewidth=0.8)
        panel.set_xlabel('x (Å)')
        panel.set_xlim(min(0.0, x.min()), max(x.max(), cell[0, 0]))
        panel.set_ylim(z.min() - 2.0, z.max() + 2.0)
        panel.set_aspect('equal', adjustable='box')
    axes.set_ylabel('z (Å)')
    axes.legend(fontsize=7, loc='upper left', bbox_to_anchor=(1.0, 1.0), markerscale=1.5, frameon=False)
    if title:
        figure.suptitle(title, fontsize=10)
    return _figure_png(figure, dpi)


@dataclass(frozen=True)
class DosPanel:
    """One DOS panel: ``title``, ``energy`` (eV), ``dos`` (name → states/eV; ``total`` drawn in black),
    ``fermi`` (eV, the zero of the axis), ``gap`` (eV) and ``method`` (level of theory, in the label)."""

    title: str
    energy: Sequence[float]
    dos: Mapping[str, Sequence[float]]
    fermi: float
    gap: float | None = None
    method: str = ''


def dos_png(panels: Sequence[DosPanel], window: tuple[float, float] = (-6.0, 6.0), dpi: int = 110) -> bytes:
    """Stacked DOS panels (Fig. 4d: bulk above, SEI below), energy relative to each panel's Fermi level."""
    figure = _figure(6.0, 2.4 * len(panels) + 0.4, dpi)
    axes_list = figure.subplots(len(panels), 1, sharex=True, squeeze=False)[:, 0]
    for axes, panel in zip(axes_list, panels, strict=True):
        energy = np.asarray(panel.energy, dtype=float) - panel.fermi
        inside = (energy >= window[0]) & (energy <= window[1])
        for name, values in panel.dos.items():
            values = np.asarray(values, dtype=float)
            colour = 'black' if name == 'total' else SPECIES_COLOURS.get(name)
            axes.plot(
                energy[inside], values[inside], label=name, color=colour, lw=1.4 if name == 'total' else 1.0
            )
        axes.axvline(0.0, color='grey', ls='--', lw=0.8)
        gap = 'n/a' if panel.gap is None else f'{panel.gap:.2f} eV'
        axes.set_title(f'{panel.title}: gap {gap} ({panel.method})', fontsize=9)
        axes.set_ylabel('DOS (states/eV)')
        axes.legend(fontsize=7, loc='upper right')
    axes_list[-1].set_xlabel('E - E_F (eV)')
    return _figure_png(figure, dpi)
