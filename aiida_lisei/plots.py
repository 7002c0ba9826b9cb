"""Plots as PNG bytes from NumPy arrays (matplotlib's Agg canvas, no pyplot state, no AiiDA imports).

Reusable by calcfunctions (which wrap the bytes in a ``SinglefileData``), scripts and notebooks:

* :func:`energy_force_parity_png` — two panels, model vs reference energy per atom and force components,
  as in the paper's Figure 1d and e, with the RMSE (and the paper's RMSE, if given) in each panel.
* :func:`parity_png` — any number of :class:`ParityPanel` side by side.
* :func:`rmse` — root-mean-square difference of two arrays.
* :func:`png_size` — width and height of PNG bytes (raises ``ValueError`` if they are not a PNG).
"""

from __future__ import annotations

import io
import struct
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

__all__ = ('PNG_SIGNATURE', 'ParityPanel', 'energy_force_parity_png', 'parity_png', 'png_size', 'rmse')

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
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    if not panels:
        raise ValueError('no panels to plot')
    figure = Figure(figsize=(4.2 * len(panels), 4.6 if title else 4.2), dpi=dpi)
    FigureCanvasAgg(figure)
    for index, panel in enumerate(panels, start=1):
        _draw(figure.add_subplot(1, len(panels), index), panel)
    if title:
        figure.suptitle(title, fontsize=10)
    figure.tight_layout()
    buffer = io.BytesIO()
    figure.savefig(buffer, format='png', dpi=dpi)
    return buffer.getvalue()


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
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    if not panels:
        raise ValueError('no panels to plot')
    figure = Figure(figsize=(6.4, 2.4 * len(panels) + (0.3 if title else 0.0)), dpi=dpi)
    FigureCanvasAgg(figure)
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
