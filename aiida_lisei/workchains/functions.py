"""Calcfunctions shared by the data-generation workchains: seeds, perturbations, trajectory sampling.

Each calcfunction has a pure counterpart (no AiiDA) that does the work, so tests and scripts can call
it directly; every random choice draws from a ``numpy`` generator seeded from an input.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np
from aiida import orm
from aiida.engine import calcfunction

from aiida_lisei.common.seeds import derive_label_seed
from aiida_lisei.data.structure import with_geometry
from aiida_lisei.protocols.utils import recursive_merge

__all__ = (
    'PERTURBATION_STYLES',
    'check_perturbation_parameters',
    'check_sampling_parameters',
    'derive_seeds',
    'merge_parameters',
    'perturb_cell_and_positions',
    'perturb_structure',
    'sample_indices',
    'sample_trajectory',
)

#: Atom displacement styles of dpdata's ``System.perturb``: ``uniform`` in a ball of radius ``d``,
#: ``normal`` with a standard deviation ``d / sqrt(3)`` per component, ``const`` of length exactly ``d``.
PERTURBATION_STYLES = ('uniform', 'normal', 'const')


def check_perturbation_parameters(parameters: Mapping[str, Any]) -> dict[str, Any]:
    """Return complete perturbation parameters; raise ``ValueError`` if invalid.

    ``n_copies`` (>= 1), ``cell_perturbation`` (fraction, 0 <= f < 0.5: each strain component is drawn
    uniformly in [-f, f]), ``atom_perturbation`` (Å, >= 0), ``style`` (one of :data:`PERTURBATION_STYLES`,
    default ``uniform``).
    """
    known = {'n_copies', 'cell_perturbation', 'atom_perturbation', 'style'}
    unknown = sorted(set(parameters) - known)
    if unknown:
        raise ValueError(f'unknown perturbation parameters {unknown}; known: {sorted(known)}')
    missing = sorted(known - {'style'} - set(parameters))
    if missing:
        raise ValueError(f'missing perturbation parameters {missing}')
    merged = {'style': 'uniform', **parameters}
    copies = merged['n_copies']
    if isinstance(copies, bool) or not isinstance(copies, int) or copies < 1:
        raise ValueError(f'n_copies must be a positive integer, got {copies!r}')
    for name, upper in (('cell_perturbation', 0.5), ('atom_perturbation', math.inf)):
        value = merged[name]
        if isinstance(value, bool) or not isinstance(value, int | float) or not (0 <= value < upper):
            raise ValueError(f'{name} must be a number in [0, {upper}), got {value!r}')
        merged[name] = float(value)
    if merged['style'] not in PERTURBATION_STYLES:
        raise ValueError(f'style {merged["style"]!r} is not one of {list(PERTURBATION_STYLES)}')
    return merged


def perturb_cell_and_positions(
    cell: np.ndarray,
    positions: np.ndarray,
    cell_perturbation: float,
    atom_perturbation: float,
    style: str,
    rng: np.random.Generator,
) -> tuple[np.ndarray, np.ndarray]:
    """Return ``(cell, positions)`` strained and displaced as dpdata's ``perturb`` does (rows = vectors, Å).

    The cell and the positions are multiplied by the symmetric matrix ``1 + e`` with the six strain
    components drawn uniformly in ``[-cell_perturbation, cell_perturbation]`` (off-diagonal halved);
    then every atom moves by a random vector of the given ``style`` and size ``atom_perturbation`` (Å).
    """
    e = rng.random(6) * 2 * cell_perturbation - cell_perturbation
    matrix = np.array(
        [
            [1 + e[0], 0.5 * e[5], 0.5 * e[4]],
            [0.5 * e[5], 1 + e[1], 0.5 * e[3]],
            [0.5 * e[4], 0.5 * e[3], 1 + e[2]],
        ]
    )
    natoms = len(positions)
    if style == 'normal':
        displacements = atom_perturbation / np.sqrt(3) * rng.standard_normal((natoms, 3))
    else:
        directions = rng.standard_normal((natoms, 3))
        directions /= np.linalg.norm(directions, axis=1)[:, None]
        lengths = rng.random(natoms) ** (1 / 3) if style == 'uniform' else np.ones(natoms)
        displacements = atom_perturbation * lengths[:, None] * directions
    return np.asarray(cell) @ matrix, np.asarray(positions) @ matrix + displacements


def check_sampling_parameters(parameters: Mapping[str, Any]) -> dict[str, int]:
    """Return complete sampling parameters: ``stride`` (>= 1, frames) and ``skip_first`` (>= 0, frames)."""
    known = {'stride', 'skip_first'}
    unknown = sorted(set(parameters) - known)
    if unknown:
        raise ValueError(f'unknown sampling parameters {unknown}; known: {sorted(known)}')
    merged = {'stride': 1, 'skip_first': 0, **parameters}
    for name, minimum in (('stride', 1), ('skip_first', 0)):
        value = merged[name]
        if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
            raise ValueError(f'{name} must be an integer >= {minimum}, got {value!r}')
    return merged


def sample_indices(nframes: int, stride: int, skip_first: int) -> list[int]:
    """Return the frame indices kept: every ``stride``-th frame after the first ``skip_first``."""
    return list(range(skip_first, nframes, stride))


@calcfunction
def derive_seeds(seed: orm.Int, labels: orm.List) -> dict[str, orm.Int]:
    """Return one seed per label under the root ``seed`` (see ``common.seeds.derive_label_seed``)."""
    return {label: orm.Int(derive_label_seed(seed.value, label)) for label in labels.get_list()}


@calcfunction
def perturb_structure(
    structure: orm.StructureData, parameters: orm.Dict, seed: orm.Int
) -> dict[str, orm.StructureData]:
    """Return ``n_copies`` randomly strained and displaced copies ``copy_0000``, ... of ``structure``.

    ``parameters``: see :func:`check_perturbation_parameters`; the copies are drawn in order from one
    generator seeded with ``seed``, so the same inputs give the same copies.
    """
    params = check_perturbation_parameters(parameters.get_dict())
    rng = np.random.default_rng(seed.value)
    atoms = structure.get_ase()
    copies = {}
    for index in range(params['n_copies']):
        cell, positions = perturb_cell_and_positions(
            atoms.cell.array,
            atoms.positions,
            params['cell_perturbation'],
            params['atom_perturbation'],
            params['style'],
            rng,
        )
        copies[f'copy_{index:04d}'] = with_geometry(structure, cell, positions)
    return copies


@calcfunction
def sample_trajectory(trajectory: orm.TrajectoryData, parameters: orm.Dict) -> dict[str, orm.StructureData]:
    """Return every ``stride``-th frame after the first ``skip_first`` as ``step_<step id>`` structures."""
    params = check_sampling_parameters(parameters.get_dict())
    steps = trajectory.get_stepids()
    return {
        f'step_{int(steps[index]):06d}': trajectory.get_step_structure(index)
        for index in sample_indices(trajectory.numsteps, params['stride'], params['skip_first'])
    }


@calcfunction
def merge_parameters(parameters: orm.Dict, overrides: orm.Dict) -> orm.Dict:
    """Return ``parameters`` updated recursively with the entries of ``overrides`` whose top-level key it
    has (so one overrides dict serves a relaxation and an MD run, each taking its own section)."""
    base = parameters.get_dict()
    return orm.Dict(recursive_merge(base, {k: v for k, v in overrides.get_dict().items() if k in base}))
