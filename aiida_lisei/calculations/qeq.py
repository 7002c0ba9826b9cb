"""``QEqCalculation``: QEq charges of the frames of a trajectory (every ``stride``-th) in one job."""

from __future__ import annotations

import json
from typing import Any

import numpy as np
from aiida import orm
from aiida.common.datastructures import CalcInfo
from aiida.common.folders import Folder
from aiida.engine import CalcJobProcessSpec

from aiida_lisei.calculations.base import LiseiCalcJob, validate_structure, validate_trajectory
from aiida_lisei.common.validation import dict_port_validator
from aiida_lisei.data.structure import GroupedStructureData
from aiida_lisei.engines.qeq_charges import check_settings, species_parameters
from aiida_lisei.formats.frames_npz import TrajectoryFrames, write_trajectory

__all__ = (
    'QEqCalculation',
    'check_trajectory',
    'selected_frames',
    'trajectory_site_indices',
    'trajectory_species',
)


def selected_frames(nframes: int, stride: int) -> np.ndarray:
    """Indices of the frames a run with ``stride`` solves: 0, stride, 2 stride, ... < ``nframes``."""
    return np.arange(0, nframes, stride)


def trajectory_site_indices(trajectory: orm.TrajectoryData) -> np.ndarray:
    """Site index (0-based) of the structure for every row of ``trajectory``.

    Rows are sites in order unless the trajectory has an ``atom_ids`` array: 1-based ids (LAMMPS), (N,) or
    (F, N) with the same ids in every frame, with ``id = site index + 1``. Raises ``ValueError`` if the ids
    are not a permutation of 1..N or change between frames.
    """
    natoms = trajectory.numsites
    if 'atom_ids' not in trajectory.get_arraynames():
        return np.arange(natoms)
    ids = np.asarray(trajectory.get_array('atom_ids'))
    if ids.ndim == 2:
        if not np.all(ids == ids[:1]):
            raise ValueError('`atom_ids` change between frames: the rows must keep one atom order')
        ids = ids[0]
    if ids.shape != (natoms,):
        raise ValueError(f'`atom_ids` must hold one id per atom ({natoms}), got shape {ids.shape}')
    if not np.array_equal(np.sort(ids), np.arange(1, natoms + 1)):
        raise ValueError(f'`atom_ids` must be a permutation of 1..{natoms} (id = site index + 1)')
    return ids.astype(int) - 1


def trajectory_species(
    trajectory: orm.TrajectoryData, structure: orm.StructureData | None = None
) -> list[str]:
    """Chemical symbol of every row of ``trajectory``.

    With ``structure``, from its sites (through :func:`trajectory_site_indices`); the trajectory's own
    symbols must then be the site's element or kind name. Without, the trajectory's symbols, which must be
    chemical symbols. Raises ``ValueError`` on a mismatch.
    """
    from ase.data import atomic_numbers

    names = list(trajectory.symbols)
    if structure is None:
        unknown = sorted(set(names) - set(atomic_numbers))
        if unknown:
            raise ValueError(f'trajectory symbols {unknown} are not chemical symbols: give the `structure`')
        return names
    sites = trajectory_site_indices(trajectory)
    kinds = {kind.name: kind.symbol for kind in structure.kinds}
    all_sites = structure.sites  # read once: each `.sites` rebuilds every site from the stored attributes
    site_kinds = [all_sites[index].kind_name for index in sites]
    species = [kinds[kind] for kind in site_kinds]
    for row, (name, kind, symbol) in enumerate(zip(names, site_kinds, species, strict=True)):
        if name not in (kind, symbol):
            raise ValueError(
                f'row {row} of the trajectory is a {name} but site {sites[row]} of the structure a {symbol}'
                + ('' if 'atom_ids' in trajectory.get_arraynames() else ' (no `atom_ids`: rows = sites)')
            )
    return species


def check_trajectory(
    trajectory: orm.TrajectoryData, structure: orm.StructureData | None = None
) -> str | None:
    """Return why ``trajectory`` cannot be analysed (with ``structure``), or ``None``.

    It needs at least one frame, a cell per frame and, with a structure, as many atoms as the structure with
    the same elements (rows mapped to sites by ``atom_ids``, see :func:`trajectory_site_indices`).
    """
    if trajectory.numsteps == 0:
        return 'the trajectory has no frames'
    if trajectory.get_cells() is None:
        return 'the trajectory has no cells (QEq needs the periodic cell of every frame)'
    if structure is not None and trajectory.numsites != len(structure.sites):
        return (
            f'the trajectory has {trajectory.numsites} atoms per frame but the structure has '
            f'{len(structure.sites)} sites: they must be the same system'
        )
    try:
        trajectory_species(trajectory, structure)
    except ValueError as exception:
        return str(exception)
    return None


validate_parameters = dict_port_validator(check_settings)


def validate_stride(stride: orm.Int, _ctx: Any = None) -> str | None:
    """Return an error message unless ``stride`` >= 1."""
    return None if stride.value >= 1 else f'`stride` must be at least 1, got {stride.value}'


def validate_inputs(inputs: dict[str, Any], ctx: Any = None) -> str | None:
    """Check the trajectory against the structure and the parameters against its species."""
    if ctx is not None and 'trajectory' not in ctx:
        return None
    trajectory, structure = inputs.get('trajectory'), inputs.get('structure')
    if trajectory is None:
        return None
    message = check_trajectory(trajectory, structure)
    if message is not None or 'parameters' not in inputs:
        return message
    try:
        settings = check_settings(inputs['parameters'].get_dict())
        species_parameters(settings, trajectory_species(trajectory, structure))
    except ValueError as exception:
        return f'`parameters`: {exception}'
    return None


class QEqCalculation(LiseiCalcJob):
    """QEq charges (e) of every ``stride``-th frame of a trajectory, with the paper's model (SI §5).

    The code is the ``lisei-qeq`` console script of an ``aiida-lisei`` installation
    (``<venv>/bin/lisei-qeq``), run serially as
    ``lisei-qeq --frames frames.npz --settings settings.json --output charges.jsonl``; the solver is
    :class:`~aiida_lisei.science.qeq.QEqSolver`, warm-started from the previous frame.

    Inputs: ``trajectory`` (``TrajectoryData``: positions Å, cells Å, symbols; optional ``stepids``,
    ``times`` ps and ``atom_ids``, see :func:`trajectory_site_indices`), optional ``structure``
    (``GroupedStructureData`` of the same system: element of every row and the region groups of the
    statistics), ``parameters`` (``Dict`` of QEq settings, defaults and meaning in
    :data:`~aiida_lisei.engines.qeq_charges.DEFAULT_SETTINGS`) and ``stride`` (``Int``, default 1).

    Outputs (``lisei.qeq`` parser), rows in the trajectory's row order, one entry per solved frame:

    * ``charges`` (``ArrayData``): ``charges`` (F, N) e (NaN for a frame that failed), ``frame_indices``
      (into the trajectory), ``stepids``, ``times`` (ps, NaN if the trajectory has none), ``iterations``,
      ``converged``, ``chemical_potential`` (eV/e), ``energy`` (eV), ``residual`` (eV/e);
    * ``statistics`` (``Dict``): per region group of ``structure`` (``groups``) and per element
      (``species``), the atom count and the mean and standard deviation of the charges in every frame (e),
      the total charge of every frame, frames not converged and failed.

    Exit codes (ranges as in aiida-quantumespresso; outputs are attached first where there are any):

    * 302 ``ERROR_OUTPUT_MISSING``: the results file was not retrieved.
    * 310 ``ERROR_OUTPUT_UNREADABLE``: the results file has no valid header, a corrupt line, or other atoms.
    * 312 ``ERROR_OUTPUT_INCOMPLETE``: the engine stopped before solving every frame.
    * 400 ``ERROR_OUT_OF_WALLTIME``: the scheduler killed the job on walltime.
    * 410 ``ERROR_QEQ_FAILED``: the solver raised on some frames (their charges are NaN).
    * 420 ``ERROR_NOT_CONVERGED``: some frames did not reach the tolerance in ``max_iterations``.
    """

    _DEFAULT_PARSER = 'lisei.qeq'

    _FRAMES_FILE = 'frames.npz'
    _SETTINGS_FILE = 'settings.json'
    _RESULTS_FILE = 'charges.jsonl'

    @classmethod
    def define(cls, spec: CalcJobProcessSpec) -> None:  # type: ignore[override]
        """Define the process specification: inputs, outputs and exit codes."""
        super().define(spec)
        spec.input(
            'trajectory',
            valid_type=orm.TrajectoryData,
            validator=validate_trajectory,
            help='Frames (positions and cells Å, symbols; optional times ps, atom_ids = site index + 1).',
        )
        spec.input(
            'structure',
            valid_type=GroupedStructureData,
            validator=validate_structure,
            required=False,
            help='The same system with region groups: statistics per group, and the element of every row.',
        )
        spec.input(
            'parameters',
            valid_type=orm.Dict,
            default=lambda: orm.Dict({}),
            serializer=orm.to_aiida_type,
            validator=validate_parameters,
            help='QEq settings: parameter_set (paper, rappe_goddard), species, slab, total_charge (e), '
            'tolerance (eV/e), max_iterations, ... (defaults: the paper).',
        )
        spec.input(
            'stride',
            valid_type=orm.Int,
            default=lambda: orm.Int(1),
            serializer=orm.to_aiida_type,
            validator=validate_stride,
            help='Solve every stride-th frame, from the first.',
        )
        spec.inputs.validator = validate_inputs

        spec.output(
            'charges', valid_type=orm.ArrayData, required=False, help='Charges (e) per frame and atom.'
        )
        spec.output(
            'statistics',
            valid_type=orm.Dict,
            required=False,
            help='Mean and std of the charges (e) per region group and element, per frame.',
        )

        cls.define_file_exit_codes(spec)
        cls.define_frame_batch_exit_codes(spec)
        spec.exit_code(
            410,
            'ERROR_QEQ_FAILED',
            message='The QEq solver failed on {failed} of {nframes} frames: {reasons}',
        )
        spec.exit_code(
            420,
            'ERROR_NOT_CONVERGED',
            message='{count} of {nframes} frames did not converge within max_iterations (outputs attached).',
        )

    def prepare_for_submission(self, folder: Folder) -> CalcInfo:
        """Write the selected frames and the complete settings; run ``lisei-qeq`` on them."""
        trajectory = self.inputs.trajectory
        structure = self.inputs.get('structure')
        indices = selected_frames(trajectory.numsteps, self.inputs.stride.value)
        times = trajectory.get_times()
        frames = TrajectoryFrames(
            positions=trajectory.get_positions()[indices],
            cells=trajectory.get_cells()[indices],
            symbols=trajectory_species(trajectory, structure),
            frame_indices=indices,
            stepids=np.asarray(trajectory.get_stepids())[indices],
            times=None if times is None else np.asarray(times, dtype=float)[indices],
        )
        with folder.open(self._FRAMES_FILE, 'wb') as handle:
            write_trajectory(handle, frames)
        with folder.open(self._SETTINGS_FILE, 'w') as handle:
            json.dump(check_settings(self.inputs.parameters.get_dict()), handle, indent=2, sort_keys=True)

        arguments = [
            '--frames',
            self._FRAMES_FILE,
            '--settings',
            self._SETTINGS_FILE,
            '--output',
            self._RESULTS_FILE,
        ]
        return self.code_calcinfo(arguments, [self._RESULTS_FILE])
