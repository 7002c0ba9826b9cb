"""Band gap and density of states from orbital energies and occupations (no AiiDA imports).

Units: energies in eV, DOS in states/eV (per cell, spin-summed occupations 0-2). Smearing is handled
explicitly: with a smeared SCF (Fermi-Dirac) the occupations are fractional near the Fermi level, so

* a state is *occupied* when its occupation is above half the maximum, *unoccupied* when below;
* when any state is *partially occupied* (its occupation fraction between ``partial_tolerance`` and
  ``1 - partial_tolerance``, i.e. within a few kT of the Fermi level), the system is metallic: the gap is
  0 and the method says why;
* otherwise the gap is the lowest unoccupied minus the highest occupied orbital energy.

A gap from Gamma-point orbitals of a finite cell is the gap of that cell at Gamma (recorded as such): a
metal sampled at Gamma only can show a spurious gap between discrete levels; the partial-occupation test
catches it when the smearing spans the Fermi level's levels.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

__all__ = ('DEFAULT_DOS_PARAMETERS', 'band_gap', 'check_dos_parameters', 'density_of_states')

#: Gaussian broadening ``sigma`` (eV), grid ``step`` (eV), ``margin`` (eV) below the lowest and above the
#: highest orbital, and ``partial_tolerance`` of :func:`band_gap`.
DEFAULT_DOS_PARAMETERS: dict[str, float] = {
    'sigma': 0.1,
    'step': 0.01,
    'margin': 1.0,
    'partial_tolerance': 0.02,
}


def check_dos_parameters(parameters: Mapping[str, Any] | None) -> dict[str, float]:
    """Return complete DOS parameters (:data:`DEFAULT_DOS_PARAMETERS`); raise ``ValueError`` if invalid."""
    parameters = dict(parameters or {})
    unknown = sorted(set(parameters) - set(DEFAULT_DOS_PARAMETERS))
    if unknown:
        raise ValueError(f'unknown DOS parameters {unknown}; known: {sorted(DEFAULT_DOS_PARAMETERS)}')
    merged = {**DEFAULT_DOS_PARAMETERS, **parameters}
    for name, value in merged.items():
        if isinstance(value, bool) or not isinstance(value, int | float) or value <= 0:
            raise ValueError(f'DOS parameter {name} must be a positive number, got {value!r}')
    if merged['partial_tolerance'] >= 0.5:
        raise ValueError('partial_tolerance must be below 0.5')
    return {name: float(value) for name, value in merged.items()}


def band_gap(
    energies: np.ndarray,
    occupations: np.ndarray,
    max_occupation: float = 2.0,
    partial_tolerance: float = DEFAULT_DOS_PARAMETERS['partial_tolerance'],
) -> dict[str, Any]:
    """Gap (eV) of one set of orbitals by the rule of the module docstring.

    :return: ``gap``, ``homo``, ``lumo`` (eV; ``lumo`` None without unoccupied states), ``metallic``,
        ``n_partial`` (partially occupied states), ``method`` (how the gap was determined).
    """
    energies = np.asarray(energies, dtype=float)
    fraction = np.asarray(occupations, dtype=float) / max_occupation
    if energies.shape != fraction.shape or not energies.size:
        raise ValueError('energies and occupations must be non-empty and of the same length')
    occupied, empty = fraction > 0.5, fraction <= 0.5
    if not occupied.any():
        raise ValueError('no occupied orbital')
    homo = float(energies[occupied].max())
    lumo = float(energies[empty].min()) if empty.any() else None
    partial = (fraction > partial_tolerance) & (fraction < 1 - partial_tolerance)
    n_partial = int(np.count_nonzero(partial))
    if lumo is None:
        raise ValueError('no unoccupied orbital: add unoccupied states (CP2K ADDED_MOS, PDOS NLUMO)')
    if n_partial:
        gap, method = (
            0.0,
            (
                f'0: {n_partial} partially occupied state(s) at the Fermi level (occupation fraction between '
                f'{partial_tolerance} and {1 - partial_tolerance}): metallic'
            ),
        )
    else:
        gap, method = max(0.0, lumo - homo), 'lowest unoccupied minus highest occupied orbital energy'
    return {
        'gap': gap,
        'homo': homo,
        'lumo': lumo,
        'metallic': bool(n_partial) or gap == 0.0,
        'n_partial': n_partial,
        'method': method,
    }


def density_of_states(
    energies: np.ndarray,
    weights: Mapping[str, np.ndarray] | None = None,
    parameters: Mapping[str, Any] | None = None,
    max_occupation: float = 2.0,
) -> dict[str, np.ndarray]:
    """Gaussian-broadened DOS (states/eV, spin-summed) on a regular grid, total and per projection.

    :param weights: ``{name: (M,) projection of each orbital}`` (e.g. per element); each gives ``dos_<name>``.
    :return: ``energy`` (eV), ``dos_total`` and one ``dos_<name>`` per projection.
    """
    p = check_dos_parameters(parameters)
    energies = np.asarray(energies, dtype=float)
    grid = np.arange(energies.min() - p['margin'], energies.max() + p['margin'] + p['step'], p['step'])
    kernel = np.exp(-0.5 * ((grid[:, None] - energies[None, :]) / p['sigma']) ** 2)
    kernel *= max_occupation / (p['sigma'] * np.sqrt(2 * np.pi))
    result = {'energy': grid, 'dos_total': kernel.sum(axis=1)}
    for name, values in (weights or {}).items():
        result[f'dos_{name}'] = kernel @ np.asarray(values, dtype=float)
    return result
