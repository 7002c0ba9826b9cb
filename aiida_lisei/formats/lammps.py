"""LAMMPS files (``units metal``: Å, eV, ps, K, bar): what the calculations write, what the parsers read.

No AiiDA imports. Writers: the data file (:func:`lammps_data_text`) and the input scripts of the two MD
runs of the study, built from one set of line writers: the exploration with the model deviation of an
ensemble (:func:`generate_exploration_script`) and the moving-restraint MD under PLUMED
(:func:`generate_restraint_md_script`); their parameters and defaults (timestep and dampings in fs, strides
in steps) are checked by :func:`check_exploration_parameters` and :func:`check_restraint_md_parameters`.
Readers: the log (:func:`parse_log`, :func:`summarize_log`), text dumps (:func:`parse_dump`) and DeePMD's
``model_devi.out`` (:func:`parse_model_devi`).

The moving-restraint script (SI §4) is a standard script for any LAMMPS built with PLUMED: ``pair_style
deepmd``, the restraint as ``fix restraint all plumed plumedfile plumed.dat outfile plumed.log`` (defined
before the integrator, as LAMMPS requires for barostats), the paper's NPT (Nosé-Hoover thermostat, barostat
on x and y only at 1 bar, z fixed because of the vacuum, 300 K, 1 fs) or NVT, thermo, a dump with image
flags (atoms can be followed across the boundaries), periodic restart files and a final ``write_restart``.
The same script runs unchanged on an HPC LAMMPS with the PLUMED package, and locally through
``lisei-lmp-plumed`` (:mod:`aiida_lisei.engines.lammps_plumed`), which swaps the ``fix plumed`` line for
``fix external``. Segments: ``n_steps`` is the *total* length of the simulation (``run N upto``). A segment
started from a restart file (``read_restart``; velocities and thermostat/barostat state from the file, no
new velocities) continues the timestep counter, so PLUMED's ``MOVINGRESTRAINT`` (driven by the MD step)
continues its schedule ``s0(t)`` where the previous segment stopped, and runs only the remaining steps.
``timer timeout`` stops a run before the scheduler's walltime (:data:`TIMEOUT_FRACTION` of it); the final
``write_restart`` still runs. As in PLUMED itself, each segment backs up an existing COLVAR
(``bck.<n>.COLVAR``), prints the row of its first step again, and restarts ``MOVINGRESTRAINT``'s
accumulated ``work`` from 0 (add the segments' last values to join them). LAMMPS's ``npt`` is the
Martyna-Tobias-Klein form of Nosé-Hoover + Parrinello-Rahman.
"""

from __future__ import annotations

import io
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from aiida_lisei.common.seeds import check_seed
from aiida_lisei.common.validation import (
    check_stride_within_run,
    complete_parameters,
    is_number,
    positive_integer,
    positive_number,
)

if TYPE_CHECKING:
    from ase import Atoms

__all__ = (
    'BAROSTATS',
    'DEFAULT_EXPLORATION_PARAMETERS',
    'DEFAULT_MINIMIZE_PARAMETERS',
    'DEFAULT_RESTRAINT_MD_PARAMETERS',
    'MODEL_DEVI_COLUMNS',
    'RESTART_PATTERN',
    'RESTRAINT_FIX_ID',
    'THERMO_AVERAGES',
    'THERMO_COLUMNS',
    'TIMEOUT_FRACTION',
    'DumpFrames',
    'LammpsLog',
    'MinimizationStats',
    'box_to_cell',
    'check_exploration_parameters',
    'check_minimize_parameters',
    'check_restraint_md_parameters',
    'generate_exploration_script',
    'generate_minimize_script',
    'generate_restraint_md_script',
    'lammps_data_text',
    'lammps_failure',
    'parse_dump',
    'parse_log',
    'parse_minimization',
    'parse_model_devi',
    'restart_filename',
    'summarize_log',
    'timeout_seconds',
    'uses_berendsen',
)

# --------------------------------------------------------------------------------------------------
# Parameters of the two MD runs (K, bar, fs, steps)
# --------------------------------------------------------------------------------------------------

#: Exploration parameters and defaults (``None``: required or unused). Units: K, bar, fs, steps.
DEFAULT_EXPLORATION_PARAMETERS: dict[str, Any] = {
    'ensemble': 'nvt',  # 'nvt' (Nosé-Hoover) or 'npt' (Nosé-Hoover + isotropic/anisotropic barostat)
    'temperature': None,  # K, required
    'pressure': None,  # bar, required for npt only
    'n_steps': None,  # number of MD steps, required
    'timestep': 1.0,  # fs
    'stride': 10,  # steps between model-deviation rows, dumped frames and thermo lines
    'thermostat_damping': 100.0,  # fs
    'barostat_damping': 1000.0,  # fs
    'pressure_coupling': 'iso',  # 'iso', 'aniso', 'xy' or 'xy_coupled' (PRESSURE_COUPLINGS; npt only)
    'barostat_drag': 0.0,  # LAMMPS `drag` of fix npt: damps the box's oscillation and the thermostat's too
    # 'nose_hoover' (fix npt: the NPT ensemble) or 'berendsen' (fix nvt + fix press/berendsen: the box relaxes
    # to the target pressure without oscillating, but samples no ensemble and conserves no energy: for
    # equilibration only)
    'barostat': 'nose_hoover',
    'barostat_modulus': 250000.0,  # bar, Berendsen only: bulk modulus setting its rate (Li6PS5Cl ~25 GPa)
    'short_range_repulsion': None,  # Å, {'inner', 'outer'}: ZBL under the model (DP-ZBL); None: the model
}

#: Moving-restraint MD parameters and defaults (``None``: required). Units: K, bar, fs, steps.
DEFAULT_RESTRAINT_MD_PARAMETERS: dict[str, Any] = {
    'ensemble': 'npt',  # 'npt' (paper: barostat on x and y, z fixed) or 'nvt'
    'temperature': 300.0,  # K
    'pressure': 1.0,  # bar, x and y (npt only)
    'n_steps': None,  # total number of MD steps of the simulation (segments continue up to it), required
    'timestep': 1.0,  # fs
    'thermostat_damping': 100.0,  # fs
    'barostat_damping': 1000.0,  # fs
    'pressure_coupling': 'xy',  # x and y at P, z fixed: 'xy' (each on its own) or 'xy_coupled' (square)
    'thermo_stride': 100,  # steps between thermo lines
    'dump_stride': 1000,  # steps between dumped frames (id type x y z ix iy iz)
    'restart_stride': 10000,  # steps between periodic restart files (restart.<step>), 0: none
    'short_range_repulsion': None,  # Å, {'inner', 'outer'}: ZBL under the model (DP-ZBL); None: the model
}

#: Largest ``outer`` radius (Å) of the short-range repulsion: the closest physical pairs of the study (P-S
#: 2.04 Å, S-S in polysulfides 2.05 Å, Li-X >= 2.3 Å) lie beyond it, so it acts only where the model has no
#: data and may fall into a spurious attractive hole.
MAX_REPULSION_OUTER = 1.8

#: Minimisation parameters and defaults (LAMMPS ``minimize etol ftol maxiter maxeval``; ``ftol`` eV/Å).
#: ``relax_box``: also relax the cell (``fix box/relax``) to ``pressure`` (bar) with ``box_coupling``
#: ``iso``, ``aniso`` or ``tri``; ``vmax`` the largest fractional volume change per iteration.
DEFAULT_MINIMIZE_PARAMETERS: dict[str, Any] = {
    'min_style': 'cg',  # 'cg', 'fire', 'sd' (box relaxation needs 'cg' or 'sd')
    'etol': 0.0,  # relative energy tolerance (0: off)
    'ftol': 1.0e-3,  # eV/Å, largest force component at convergence (LAMMPS: 2-norm of the global force)
    'maxiter': 2000,
    'maxeval': 20000,
    'relax_box': False,
    'pressure': 0.0,  # bar, target of the box relaxation
    'box_coupling': 'iso',
    'vmax': 0.001,
}

#: ``fix box/relax`` keywords per coupling (``{P}`` bar).
BOX_COUPLINGS: dict[str, str] = {'iso': 'iso {P}', 'aniso': 'aniso {P}', 'tri': 'tri {P}'}

#: Barostat keywords of ``fix npt`` per pressure coupling (``{P}`` bar, ``{damp}`` ps): ``xy`` couples x and y
#: independently and keeps z fixed, as the paper's sandwich runs (SI §4: "1 bar along the x and y directions")
#: and any slab with vacuum need; ``xy_coupled`` sets the pressure on the lateral area (x and y scaled
#: together, a square cell stays square; z fixed): the paper does not say which (docs/paper_gaps.md).
PRESSURE_COUPLINGS: dict[str, str] = {
    'iso': 'iso {P} {P} {damp}',
    'aniso': 'aniso {P} {P} {damp}',
    'xy': 'x {P} {P} {damp} y {P} {P} {damp} couple none',
    'xy_coupled': 'x {P} {P} {damp} y {P} {P} {damp} couple xy',
}
#: The pressure couplings of a run with z fixed (the sandwich's moving-restraint MD).
LATERAL_COUPLINGS = ('xy', 'xy_coupled')
#: Barostats of an NPT exploration: ``nose_hoover`` (``fix npt``, the NPT ensemble, conserves an energy) or
#: ``berendsen`` (``fix nvt`` + ``fix press/berendsen``: relaxes the box without oscillating; equilibration).
BAROSTATS = ('nose_hoover', 'berendsen')


def uses_berendsen(parameters: Mapping[str, Any]) -> bool:
    """Return whether MD ``parameters`` relax the box with the Berendsen barostat (no conserved energy)."""
    return parameters.get('barostat') == 'berendsen'


#: Fraction of ``max_wallclock_seconds`` after which LAMMPS stops the run itself (``timer timeout``).
TIMEOUT_FRACTION = 0.9

#: Fix ID of the restraint (``fix plumed`` here, ``fix external`` in ``lisei-lmp-plumed``).
RESTRAINT_FIX_ID = 'restraint'

#: Restart files, ``restart.<step>``: LAMMPS replaces ``*`` by the timestep when writing, and ``read_restart
#: restart.*`` reads the file with the largest timestep, so a segment killed without its final restart file
#: continues from its newest periodic one.
RESTART_PATTERN = 'restart.*'

#: Thermo columns of the restraint MD (LAMMPS ``thermo_style custom``); ``f_restraint`` is the bias (eV).
THERMO_COLUMNS: tuple[str, ...] = (
    'step',
    'time',
    'temp',
    'press',
    'pe',
    'ke',
    'etotal',
    'econserve',
    'vol',
    'lx',
    'ly',
    'lz',
    'pxx',
    'pyy',
    'pzz',
    f'f_{RESTRAINT_FIX_ID}',
)

_MD_NUMBERS = ('temperature', 'timestep', 'thermostat_damping', 'barostat_damping')


def check_short_range_repulsion(value: Any) -> dict[str, float] | None:
    """Return ``short_range_repulsion`` checked: ``None`` or ``{'inner': r1, 'outer': r2}`` (Å) with
    0 < r1 < r2 <= :data:`MAX_REPULSION_OUTER`; raise ``ValueError`` saying what to fix."""
    if value is None:
        return None
    if not isinstance(value, Mapping) or set(value) != {'inner', 'outer'}:
        raise ValueError(f"`short_range_repulsion` must be null or {{'inner': Å, 'outer': Å}}, got {value!r}")
    inner, outer = value['inner'], value['outer']
    if not all(is_number(radius) and math.isfinite(radius) for radius in (inner, outer)) or not (
        0 < inner < outer <= MAX_REPULSION_OUTER
    ):
        raise ValueError(
            f'`short_range_repulsion` needs 0 < inner < outer <= {MAX_REPULSION_OUTER} Å (below the closest '
            f'physical pair), got inner {inner!r}, outer {outer!r}'
        )
    return {'inner': float(inner), 'outer': float(outer)}


def check_exploration_parameters(parameters: Mapping[str, Any]) -> dict[str, Any]:
    """Return exploration ``parameters`` completed with :data:`DEFAULT_EXPLORATION_PARAMETERS`.

    Raises ``ValueError`` naming the offending parameter.
    """
    full = complete_parameters(parameters, DEFAULT_EXPLORATION_PARAMETERS)
    if full['ensemble'] not in ('nvt', 'npt'):
        raise ValueError(f"`ensemble` must be 'nvt' or 'npt', got {full['ensemble']!r}")
    if full['ensemble'] == 'npt' and full['pressure'] is None:
        raise ValueError('`pressure` (bar) is required for the npt ensemble')
    if full['ensemble'] == 'nvt' and full['pressure'] is not None:
        raise ValueError("`pressure` is given but `ensemble` is 'nvt': set `ensemble` to 'npt'")
    if full['pressure_coupling'] not in PRESSURE_COUPLINGS:
        raise ValueError(
            f'`pressure_coupling` must be one of {sorted(PRESSURE_COUPLINGS)}, '
            f'got {full["pressure_coupling"]!r}'
        )
    drag = full['barostat_drag']
    if not is_number(drag) or not 0 <= drag <= 2:
        raise ValueError(f'`barostat_drag` must be a number from 0 (none) to 2 (LAMMPS: 0.2-2), got {drag!r}')
    if full['barostat'] not in BAROSTATS:
        raise ValueError(f'`barostat` must be one of {list(BAROSTATS)}, got {full["barostat"]!r}')
    if full['barostat'] == 'berendsen':
        if full['ensemble'] != 'npt':
            raise ValueError("`barostat` 'berendsen' needs `ensemble` 'npt' (a pressure to relax to)")
        if drag:
            raise ValueError("`barostat_drag` applies to 'nose_hoover' only: set it to 0 with 'berendsen'")
        positive_number(full['barostat_modulus'], '`barostat_modulus`')
    for name in ('n_steps', 'stride'):
        positive_integer(full[name], f'`{name}`')
    if 'stride' in parameters:  # a stride asked for that is longer than the run (not the default's)
        check_stride_within_run(full['stride'], full['n_steps'], '`stride`')
    for name in _MD_NUMBERS:
        positive_number(full[name], f'`{name}`')
    full['short_range_repulsion'] = check_short_range_repulsion(full['short_range_repulsion'])
    return full


def check_minimize_parameters(parameters: Mapping[str, Any]) -> dict[str, Any]:
    """Return minimisation ``parameters`` completed with :data:`DEFAULT_MINIMIZE_PARAMETERS`.

    Raises ``ValueError`` naming the offending parameter.
    """
    full = complete_parameters(parameters, DEFAULT_MINIMIZE_PARAMETERS)
    if full['min_style'] not in ('cg', 'fire', 'sd'):
        raise ValueError(f"`min_style` must be 'cg', 'fire' or 'sd', got {full['min_style']!r}")
    if full['box_coupling'] not in BOX_COUPLINGS:
        raise ValueError(
            f'`box_coupling` must be one of {sorted(BOX_COUPLINGS)}, got {full["box_coupling"]!r}'
        )
    if not isinstance(full['relax_box'], bool):
        raise ValueError(f'`relax_box` must be true or false, got {full["relax_box"]!r}')
    if full['relax_box'] and full['min_style'] == 'fire':
        raise ValueError("`relax_box` needs `min_style` 'cg' or 'sd' (LAMMPS' fire cannot relax the box)")
    for name in ('maxiter', 'maxeval'):
        positive_integer(full[name], f'`{name}`')
    positive_number(full['ftol'], '`ftol`')
    positive_number(full['vmax'], '`vmax`')
    if not is_number(full['etol']) or full['etol'] < 0:
        raise ValueError(f'`etol` must be a number >= 0, got {full["etol"]!r}')
    if not is_number(full['pressure']) or not math.isfinite(full['pressure']):
        raise ValueError(f'`pressure` (bar) must be a finite number, got {full["pressure"]!r}')
    return full


def check_restraint_md_parameters(parameters: Mapping[str, Any]) -> dict[str, Any]:
    """Return restraint-MD ``parameters`` completed with :data:`DEFAULT_RESTRAINT_MD_PARAMETERS`.

    Raises ``ValueError`` naming the offending parameter: unknown names, an ensemble other than
    ``'npt'``/``'nvt'``, non-positive numbers or strides, a missing ``n_steps``, or a pressure that is
    not a finite number under NPT.
    """
    full = complete_parameters(parameters, DEFAULT_RESTRAINT_MD_PARAMETERS)
    if full['ensemble'] not in ('npt', 'nvt'):
        raise ValueError(f"`ensemble` must be 'npt' or 'nvt', got {full['ensemble']!r}")
    if full['pressure_coupling'] not in LATERAL_COUPLINGS:
        raise ValueError(
            f'`pressure_coupling` must be one of {list(LATERAL_COUPLINGS)} (z is fixed), '
            f'got {full["pressure_coupling"]!r}'
        )
    for name in ('n_steps', 'thermo_stride', 'dump_stride'):
        positive_integer(full[name], f'`{name}`')
    restart = full['restart_stride']
    if isinstance(restart, bool) or not isinstance(restart, int) or restart < 0:
        raise ValueError(f'`restart_stride` must be a non-negative integer (0: none), got {restart!r}')
    for name in _MD_NUMBERS:
        positive_number(full[name], f'`{name}`')
    if full['ensemble'] == 'npt':
        pressure = full['pressure']
        if not is_number(pressure) or not math.isfinite(pressure):
            raise ValueError(f'`pressure` (bar) must be a finite number for npt, got {pressure!r}')
    full['short_range_repulsion'] = check_short_range_repulsion(full['short_range_repulsion'])
    return full


def restart_filename(step: int) -> str:
    """Return the name of the restart file LAMMPS writes at ``step`` (:data:`RESTART_PATTERN`)."""
    return RESTART_PATTERN.replace('*', str(int(step)))


def timeout_seconds(max_wallclock_seconds: float | None) -> int | None:
    """Return the ``timer timeout`` (s) of a job with this walltime: :data:`TIMEOUT_FRACTION` of it."""
    return None if max_wallclock_seconds is None else int(TIMEOUT_FRACTION * max_wallclock_seconds)


# --------------------------------------------------------------------------------------------------
# Writers
# --------------------------------------------------------------------------------------------------


def lammps_data_text(atoms: Atoms, type_map: Sequence[str]) -> str:
    """Return ``atoms`` as a LAMMPS data file (``atom_style atomic``, types in ``type_map`` order).

    Atom ids are the atom indices + 1, so LAMMPS ids, PLUMED serials and the structure's sites agree.
    LAMMPS' cell is lower triangular: frames read back are in that orientation.
    """
    from ase.io import write

    buffer = io.StringIO()
    write(
        buffer,
        atoms,
        format='lammps-data',
        specorder=list(type_map),
        masses=True,
        units='metal',
        atom_style='atomic',
    )
    return buffer.getvalue()


def _start_lines(comment: str, data_file: str, restart_file: str | None = None) -> list[str]:
    """Comment, units, boundary, atom style, then ``read_data`` or ``read_restart``."""
    lines = [
        f'# {comment} (units metal: Å, eV, ps, K, bar)',
        'units metal',
        'boundary p p p',
        'atom_style atomic',
    ]
    if restart_file is None:
        lines.append(f'read_data {data_file}')
    else:
        lines += [
            f'read_restart {restart_file}',
            '# velocities, box, timestep and fix states from the restart',
        ]
    return lines


def _potential_lines(
    pair_style: str,
    type_map: Sequence[str],
    timestep_fs: float,
    repulsion: Mapping[str, float] | None = None,
) -> list[str]:
    """``pair_style deepmd ...``, ``pair_coeff`` in ``type_map`` order and the timestep (ps); with
    ``repulsion`` (Å, ``inner``/``outer``), LAMMPS's ZBL screened nuclear repulsion overlaid on the model
    (zero beyond ``outer``), one ``pair_coeff`` per pair of types with their atomic numbers."""
    if not type_map:
        raise ValueError('`type_map` must name at least one element')
    if repulsion is None:
        pair_lines = [f'pair_style deepmd {pair_style}', f'pair_coeff * * {" ".join(type_map)}']
    else:
        from ase.data import atomic_numbers

        numbers = [atomic_numbers[element] for element in type_map]
        pair_lines = [
            f'pair_style hybrid/overlay deepmd {pair_style} zbl {repulsion["inner"]} {repulsion["outer"]}',
            f'pair_coeff * * deepmd {" ".join(type_map)}',
            *(
                f'pair_coeff {i + 1} {j + 1} zbl {numbers[i]} {numbers[j]}'
                for i in range(len(numbers))
                for j in range(i, len(numbers))
            ),
        ]
    return [*pair_lines, f'timestep {timestep_fs / 1000.0}']


def _velocity_line(temperature: float, seed: int) -> str:
    """Gaussian velocities at ``temperature`` (K), zero total momentum, from ``seed``."""
    check_seed(seed)
    return f'velocity all create {temperature} {seed} dist gaussian mom yes'


def _integrator_line(p: Mapping[str, Any], barostat: str) -> str:
    """``fix md`` of NVT or NPT (``barostat``: pressure keywords with ``{P}``, ``{damp}``); dampings in fs.
    With ``p['barostat'] == 'berendsen'``: Nosé-Hoover NVT and ``fix md_press press/berendsen``, two lines."""
    temperature, t_damp = p['temperature'], p['thermostat_damping'] / 1000.0
    thermostat = f'temp {temperature} {temperature} {t_damp}'
    if p['ensemble'] == 'nvt':
        return f'fix md all nvt {thermostat}'
    pressure = barostat.format(P=p['pressure'], damp=p['barostat_damping'] / 1000.0)
    if uses_berendsen(p):
        return (
            f'fix md all nvt {thermostat}\n'
            f'fix md_press all press/berendsen {pressure} modulus {p["barostat_modulus"]}'
        )
    drag = p.get('barostat_drag', 0.0)
    return f'fix md all npt {thermostat} ' + pressure + (f' drag {drag}' if drag else '')


def _timeout_line(seconds: int | None, every: int) -> list[str]:
    """``timer timeout H:MM:SS every N`` (none without ``seconds``)."""
    if seconds is None:
        return []
    if seconds < 1:
        raise ValueError(f'`timeout_seconds` must be at least 1 s, got {seconds!r}')
    hours, rest = divmod(int(seconds), 3600)
    return [f'timer timeout {hours:d}:{rest // 60:02d}:{rest % 60:02d} every {every}']


def generate_exploration_script(
    parameters: Mapping[str, Any],
    model_files: Sequence[str],
    type_map: Sequence[str],
    seed: int,
    data_file: str = 'structure.data',
    model_devi_file: str = 'model_devi.out',
    dump_file: str = 'traj.dump',
    timeout_seconds: int | None = None,
) -> str:
    """Return the LAMMPS input script of an exploration (``units metal``; timestep and dampings in fs).

    The first model drives the dynamics; all models give the deviation, written every ``stride`` steps
    (step 0 included) together with the dumped frame and a thermo line, so rows and frames align.
    """
    p = check_exploration_parameters(parameters)
    stride = p['stride']
    return (
        '\n'.join(
            [
                *_start_lines('aiida-lisei exploration: DeePMD MD with model deviation', data_file),
                *_potential_lines(
                    f'{" ".join(model_files)} out_file {model_devi_file} out_freq {stride}',
                    type_map,
                    p['timestep'],
                    p['short_range_repulsion'],
                ),
                _velocity_line(p['temperature'], seed),
                'thermo_style custom step time temp pe ke etotal econserve press vol lx ly lz pxx pyy pzz',
                'thermo_modify lost error flush yes',
                f'thermo {stride}',
                f'dump traj all custom {stride} {dump_file} id type x y z',
                'dump_modify traj sort id format float %.12g',
                _integrator_line(p, PRESSURE_COUPLINGS[p['pressure_coupling']]),
                *_timeout_line(timeout_seconds, stride),
                f'run {p["n_steps"]}',
            ]
        )
        + '\n'
    )


def generate_restraint_md_script(
    parameters: Mapping[str, Any],
    model_file: str,
    type_map: Sequence[str],
    seed: int,
    *,
    data_file: str = 'structure.data',
    restart_file: str | None = None,
    plumed_file: str = 'plumed.dat',
    plumed_log: str = 'plumed.log',
    dump_file: str = 'traj.dump',
    timeout_seconds: int | None = None,
    deviation_model_files: Sequence[str] = (),
    model_devi_file: str = 'model_devi.out',
) -> str:
    """Return the LAMMPS script of a moving-restraint DeePMD run (``units metal``: Å, eV, ps, K, bar).

    :param parameters: see :data:`DEFAULT_RESTRAINT_MD_PARAMETERS` (K, bar, fs, steps).
    :param model_file: frozen DeePMD model (``pair_style deepmd <model_file>``).
    :param type_map: element of each LAMMPS atom type, in type order (``pair_coeff * * <type_map>``).
    :param seed: seed of the initial velocities (``velocity create``, Gaussian, zero momentum); unused
        when starting from ``restart_file``.
    :param data_file: LAMMPS data file of a fresh start (``read_data``).
    :param restart_file: restart file of a continued segment (``read_restart``): positions, velocities,
        box, timestep and the thermostat/barostat state come from it; ``run n_steps upto`` then runs only
        the remaining steps.
    :param plumed_file: PLUMED input (the restraint; see :mod:`aiida_lisei.formats.plumed`).
    :param plumed_log: PLUMED log file.
    :param dump_file: trajectory (``id type x y z ix iy iz``, sorted by id, every ``dump_stride``; the
        step-0 frame of a fresh start is included; a continued segment appends, and repeats the frame of
        its first step when that step is a multiple of ``dump_stride``: readers keep the last copy).
    :param timeout_seconds: stop the run after this wall time (``timer timeout``, checked every
        ``thermo_stride`` steps), then write the final restart.
    :param deviation_model_files: the other models of the ensemble: ``model_file`` drives the dynamics, all
        of them give the model deviation, written to ``model_devi_file`` every ``dump_stride`` steps (the
        dumped frames' steps), as in an exploration.
    """
    p = check_restraint_md_parameters(parameters)
    check_seed(seed)
    fresh = restart_file is None
    pair_style = model_file
    if deviation_model_files:
        models = ' '.join([model_file, *deviation_model_files])
        pair_style = f'{models} out_file {model_devi_file} out_freq {p["dump_stride"]}'
    lines = [
        *_start_lines('aiida-lisei moving-restraint DeePMD MD', data_file, restart_file),
        *_potential_lines(pair_style, type_map, p['timestep'], p['short_range_repulsion']),
        *([_velocity_line(p['temperature'], seed)] if fresh else []),
        '# the restraint before the integrator: its virial reaches the barostat',
        f'fix {RESTRAINT_FIX_ID} all plumed plumedfile {plumed_file} outfile {plumed_log}',
        f'fix_modify {RESTRAINT_FIX_ID} energy yes virial yes',
        _integrator_line(p, PRESSURE_COUPLINGS[p['pressure_coupling']]),
        f'thermo_style custom {" ".join(THERMO_COLUMNS)}',
        'thermo_modify lost error flush yes norm no',
        f'thermo {p["thermo_stride"]}',
        f'dump traj all custom {p["dump_stride"]} {dump_file} id type x y z ix iy iz',
        'dump_modify traj sort id format float %.12g' + ('' if fresh else ' append yes'),
        *([f'restart {p["restart_stride"]} {RESTART_PATTERN}'] if p['restart_stride'] else []),
        *_timeout_line(timeout_seconds, p['thermo_stride']),
        f'run {p["n_steps"]} upto',
        f'write_restart {RESTART_PATTERN}',
    ]
    return '\n'.join(lines) + '\n'


def generate_minimize_script(
    parameters: Mapping[str, Any],
    model_file: str,
    type_map: Sequence[str],
    data_file: str = 'structure.data',
    dump_file: str = 'relaxed.dump',
    timeout_seconds: int | None = None,
) -> str:
    """Return the LAMMPS input script of a DeePMD energy minimisation (``units metal``; ``ftol`` eV/Å).

    With ``relax_box`` the cell relaxes too (``fix box/relax``, target ``pressure`` bar). The final
    configuration is written with ``write_dump`` (``id type x y z``, sorted by id).
    """
    p = check_minimize_parameters(parameters)
    lines = [
        *_start_lines('aiida-lisei minimisation with a DeePMD model', data_file),
        *_potential_lines(model_file, type_map, 1.0),
        'thermo_style custom step pe press vol lx ly lz pxx pyy pzz fnorm fmax',
        'thermo_modify lost error flush yes norm no',
        'thermo 10',
    ]
    if p['relax_box']:
        coupling = BOX_COUPLINGS[p['box_coupling']].format(P=p['pressure'])
        lines.append(f'fix box all box/relax {coupling} vmax {p["vmax"]}')
    lines += [
        f'min_style {p["min_style"]}',
        *_timeout_line(timeout_seconds, 10),
        f'minimize {p["etol"]} {p["ftol"]} {p["maxiter"]} {p["maxeval"]}',
        f'write_dump all custom {dump_file} id type x y z modify sort id format float %.12g',
    ]
    return '\n'.join(lines) + '\n'


# --------------------------------------------------------------------------------------------------
# Readers
# --------------------------------------------------------------------------------------------------

#: Columns of DeePMD-kit's ``model_devi.out`` (force deviations in eV/Å, virial deviations in eV per atom).
MODEL_DEVI_COLUMNS = (
    'step',
    'max_devi_v',
    'min_devi_v',
    'avg_devi_v',
    'max_devi_f',
    'min_devi_f',
    'avg_devi_f',
)

_VERSION = re.compile(r'^LAMMPS \((?P<version>[^)]+)\)')
_LOOP = re.compile(r'^Loop time of (?P<seconds>\S+) on (?P<procs>\d+) procs for (?P<steps>\d+) steps')
_WALLTIME = re.compile(r'^Total wall time: (?P<h>\d+):(?P<m>\d+):(?P<s>\d+)')
_ERROR = re.compile(r'^(ERROR(?: on proc \d+)?:.*)$', re.MULTILINE)
_WARNING = re.compile(r'^WARNING:\s*(.*)$', re.MULTILINE)


@dataclass
class LammpsLog:
    """Content of a LAMMPS log: thermo table (column name -> values), version, errors, timings (s)."""

    version: str | None = None
    thermo: dict[str, np.ndarray] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    loop_time: float | None = None
    loop_steps: int | None = None
    walltime: float | None = None
    completed: bool = False
    timeout: bool = False


def _float(token: str) -> float:
    """Return ``token`` as a float; LAMMPS writes NaN as ``nan``, ``-nan`` or ``NaN``."""
    try:
        return float(token)
    except ValueError:
        return math.nan


def parse_log(text: str) -> LammpsLog:
    """Parse a LAMMPS log (or screen output) of one or more runs; thermo rows of all runs are concatenated.

    ``completed`` is True when LAMMPS printed ``Total wall time`` (normal end, also after a timeout);
    ``timeout`` when ``timer timeout`` stopped a run early (``WARNING: Wall time limit reached``).
    """
    log = LammpsLog()
    header: list[str] | None = None
    rows: list[list[float]] = []
    for line in text.splitlines():
        stripped = line.strip()
        if header is not None:
            tokens = stripped.split()
            if len(tokens) == len(header) and re.match(r'^[-+]?\d', tokens[0]):
                rows.append([_float(token) for token in tokens])
                continue
            header = None
        if stripped.startswith('Step ') or stripped == 'Step':
            header = stripped.split()
            if log.thermo and list(log.thermo) != header:
                rows = []  # a later run with other columns: keep only its table
            log.thermo = dict.fromkeys(header)
        elif log.version is None and (match := _VERSION.match(stripped)):
            log.version = match['version']
        elif match := _LOOP.match(stripped):
            log.loop_time = _float(match['seconds'])
            log.loop_steps = int(match['steps'])
        elif match := _WALLTIME.match(stripped):
            log.walltime = int(match['h']) * 3600.0 + int(match['m']) * 60.0 + int(match['s'])
            log.completed = True
        elif stripped.startswith('WARNING: Wall time limit reached'):
            log.timeout = True
    if log.thermo:
        table = np.array(rows, dtype=float).reshape(-1, len(log.thermo))
        log.thermo = {name: table[:, index] for index, name in enumerate(log.thermo)}
    log.errors = [message.strip() for message in _ERROR.findall(text)]
    log.warnings = [message.strip() for message in _WARNING.findall(text)]
    return log


#: Thermo columns whose mean is reported by :func:`summarize_log` (LAMMPS name -> key).
THERMO_AVERAGES = {
    'Temp': 'temperature',
    'PotEng': 'potential_energy',
    'KinEng': 'kinetic_energy',
    'TotEng': 'total_energy',
    'Press': 'pressure',
    'Volume': 'volume',
}


def summarize_log(log: LammpsLog) -> dict[str, Any]:
    """Return a summary of a parsed log: version, timings, steps, messages, thermo averages.

    Units: K, eV, bar, Å³, s; ``<key>_mean``, ``<key>_std`` and ``<key>_final`` of every column of
    :data:`THERMO_AVERAGES` that is finite throughout.
    """
    summary: dict[str, Any] = {
        'lammps_version': log.version,
        'walltime': log.walltime,
        'loop_time': log.loop_time,
        'n_steps_done': int(log.thermo['Step'][-1])
        if 'Step' in log.thermo and log.thermo['Step'].size
        else 0,
        'n_thermo_rows': int(log.thermo['Step'].size) if 'Step' in log.thermo else 0,
        'warnings': log.warnings[:20],
        'errors': log.errors[:20],
        'units': {'energy': 'eV', 'temperature': 'K', 'pressure': 'bar', 'volume': 'Å^3', 'time': 's'},
    }
    for column, key in THERMO_AVERAGES.items():
        values = log.thermo.get(column)
        if values is not None and values.size and np.isfinite(values).all():
            summary[f'{key}_mean'] = float(values.mean())
            summary[f'{key}_std'] = float(values.std())
            summary[f'{key}_final'] = float(values[-1])
    return summary


def lammps_failure(log: LammpsLog) -> tuple[str, dict[str, int | str]] | None:
    """Return the exit-code label and message arguments of lost atoms (``ERROR_LOST_ATOMS``, ``error``) or a
    NaN energy or pressure (``ERROR_NAN_ENERGY``, ``step``) in ``log``; ``None`` if there is neither."""
    for error in log.errors:
        if 'Lost atoms' in error:
            return 'ERROR_LOST_ATOMS', {'error': error}
    for column in ('PotEng', 'TotEng', 'Press'):
        values = log.thermo.get(column)
        if values is not None and not np.isfinite(values).all():
            return 'ERROR_NAN_ENERGY', {'step': int(log.thermo['Step'][~np.isfinite(values)][0])}
    return None


def parse_model_devi(text: str) -> dict[str, np.ndarray]:
    """Parse DeePMD's ``model_devi.out``: a dict column name -> values (``step`` as int).

    Column names come from the ``#`` header line when present, else :data:`MODEL_DEVI_COLUMNS`.
    Raises ``ValueError`` if the table has fewer than the 7 standard columns.
    """
    names = list(MODEL_DEVI_COLUMNS)
    for line in text.splitlines():
        if line.startswith('#'):
            names = line.lstrip('#').split()
            break
    table = np.loadtxt(io.StringIO(text), comments='#', ndmin=2, dtype=float)
    if table.size == 0:
        table = np.zeros((0, len(names)))
    if table.shape[1] < len(MODEL_DEVI_COLUMNS) or table.shape[1] != len(names):
        raise ValueError(f'model_devi table has {table.shape[1]} columns, header names {names}')
    columns = {name: table[:, index] for index, name in enumerate(names)}
    columns['step'] = columns['step'].astype(np.int64)
    return columns


def box_to_cell(bounds: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Convert LAMMPS dump box bounds to (cell rows in Å, origin in Å).

    ``bounds`` is (3, 2) for an orthogonal box or (3, 3) with the tilts ``xy, xz, yz`` in the third column
    (``xlo_bound xhi_bound xy`` ...), as in the LAMMPS ``dump`` documentation.
    """
    bounds = np.asarray(bounds, dtype=float)
    xy, xz, yz = bounds[:, 2] if bounds.shape[1] == 3 else (0.0, 0.0, 0.0)
    xlo = bounds[0, 0] - min(0.0, xy, xz, xy + xz)
    xhi = bounds[0, 1] - max(0.0, xy, xz, xy + xz)
    ylo = bounds[1, 0] - min(0.0, yz)
    yhi = bounds[1, 1] - max(0.0, yz)
    zlo, zhi = bounds[2, 0], bounds[2, 1]
    cell = np.array([[xhi - xlo, 0.0, 0.0], [xy, yhi - ylo, 0.0], [xz, yz, zhi - zlo]])
    return cell, np.array([xlo, ylo, zlo])


@dataclass
class DumpFrames:
    """Frames of a text dump: steps (F,), cells (F, 3, 3) Å, positions (F, N, 3) Å from the cell origin,
    atom ids (N,) and LAMMPS types (N,), taken from the first frame, and image flags (F, N, 3) when the
    dump has ``ix iy iz`` (unwrapped position = position + images @ cell)."""

    steps: np.ndarray
    cells: np.ndarray
    positions: np.ndarray
    ids: np.ndarray
    types: np.ndarray
    images: np.ndarray | None = None


def parse_dump(text: str) -> DumpFrames:
    """Parse a LAMMPS ``dump custom`` text file with columns ``id type x y z`` (any order, ``sort id``).

    Positions are shifted by the box origin, so that they are Cartesian coordinates in the returned cell.
    A truncated last frame (a killed run) is dropped. Raises ``ValueError`` if the atoms change between
    frames or a column is missing.
    """
    lines = text.splitlines()
    steps, cells, positions, images = [], [], [], []
    ids = types = None
    index = 0
    while index < len(lines):
        if not lines[index].startswith('ITEM: TIMESTEP'):
            index += 1
            continue
        try:
            step = int(lines[index + 1])
            natoms = int(lines[index + 3])
            ntilt = 3 if 'xy' in lines[index + 4] else 2
            bounds = np.array([lines[index + 5 + k].split()[:ntilt] for k in range(3)], dtype=float)
            columns = lines[index + 8].split()[2:]
            block = lines[index + 9 : index + 9 + natoms]
        except (IndexError, ValueError):
            break
        try:
            table = np.loadtxt(block, dtype=float, ndmin=2)
        except ValueError:  # a truncated line
            break
        if table.shape != (natoms, len(columns)):  # a truncated frame
            break
        try:
            order = [columns.index(name) for name in ('id', 'type', 'x', 'y', 'z')]
        except ValueError as exception:
            raise ValueError(f'dump columns {columns} lack id, type, x, y or z') from exception
        frame_ids, frame_types = table[:, order[0]].astype(int), table[:, order[1]].astype(int)
        if ids is None:
            ids, types = frame_ids, frame_types
        elif not (np.array_equal(ids, frame_ids) and np.array_equal(types, frame_types)):
            raise ValueError(f'the atoms of the frame at step {step} differ from those of the first frame')
        cell, origin = box_to_cell(bounds)
        if step in steps[-1:]:  # a continued run repeats the frame of its first step: keep the last copy
            steps.pop(), cells.pop(), positions.pop()
            images = images[:-1]
        steps.append(step)
        cells.append(cell)
        positions.append(table[:, order[2:]] - origin)
        if all(name in columns for name in ('ix', 'iy', 'iz')):
            images.append(table[:, [columns.index(name) for name in ('ix', 'iy', 'iz')]].astype(int))
        index += 9 + natoms
    if ids is None:
        return DumpFrames(
            np.zeros(0, int), np.zeros((0, 3, 3)), np.zeros((0, 0, 3)), np.zeros(0, int), np.zeros(0, int)
        )
    frame_images = np.array(images) if len(images) == len(steps) else None
    return DumpFrames(np.array(steps), np.array(cells), np.array(positions), ids, types, frame_images)


@dataclass
class MinimizationStats:
    """The ``Minimization stats`` block of a LAMMPS log: energies (eV), forces (eV/Å), counts."""

    stopping_criterion: str
    energy_initial: float
    energy_final: float
    iterations: int
    force_evaluations: int
    force_two_norm_final: float
    force_max_final: float


_STOPPING = re.compile(r'^\s*Stopping criterion = (?P<criterion>.+?)\s*$', re.MULTILINE)
_ENERGIES = re.compile(r'Energy initial, next-to-last, final =\s*\n\s*(\S+)\s+(\S+)\s+(\S+)')
_ITERATIONS = re.compile(r'Iterations, force evaluations =\s*(\d+)\s+(\d+)')
_TWO_NORM = re.compile(r'Force two-norm initial, final =\s*(\S+)\s+(\S+)')
_MAX_COMPONENT = re.compile(r'Force max component initial, final =\s*(\S+)\s+(\S+)')


def parse_minimization(text: str) -> MinimizationStats | None:
    """Return the last ``Minimization stats`` block of a LAMMPS log, ``None`` if there is none.

    LAMMPS' stopping criteria: ``energy tolerance``, ``force tolerance``, ``max iterations``,
    ``max force evaluations``, ``linesearch alpha is zero``, ... (the text as printed).
    """
    criteria = _STOPPING.findall(text)
    energies = _ENERGIES.findall(text)
    iterations = _ITERATIONS.findall(text)
    norms, maxima = _TWO_NORM.findall(text), _MAX_COMPONENT.findall(text)
    if not (criteria and energies and iterations and norms and maxima):
        return None
    return MinimizationStats(
        stopping_criterion=criteria[-1],
        energy_initial=_float(energies[-1][0]),
        energy_final=_float(energies[-1][2]),
        iterations=int(iterations[-1][0]),
        force_evaluations=int(iterations[-1][1]),
        force_two_norm_final=_float(norms[-1][1]),
        force_max_final=_float(maxima[-1][1]),
    )
