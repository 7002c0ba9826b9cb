"""LAMMPS input of the moving-restraint DeePMD MD of the paper (SI §4), for any LAMMPS built with PLUMED.

:func:`generate_restraint_md_script` writes a standard ``units metal`` script: ``pair_style deepmd``, the
restraint as ``fix restraint all plumed plumedfile plumed.dat outfile plumed.log`` (defined before the
integrator, as LAMMPS requires for barostats), the paper's NPT (Nosé-Hoover thermostat, barostat on x
and y only at 1 bar, z fixed because of the vacuum, 300 K, 1 fs) or NVT, thermo, a dump with image flags
(atoms can be followed across the boundaries), periodic restart files and a final ``write_restart``.
The same script runs unchanged on an HPC LAMMPS with the PLUMED package, and locally through
``lisei-lmp-plumed`` (:mod:`aiida_lisei.engines.lammps_plumed`), which swaps the ``fix plumed`` line for
``fix external``.

Segments: ``n_steps`` is the *total* length of the simulation (``run N upto``). A segment started from
a restart file (``read_restart``; velocities and thermostat/barostat state from the file, no new
velocities) continues the timestep counter, so PLUMED's ``MOVINGRESTRAINT`` (driven by the MD step)
continues its schedule ``s0(t)`` where the previous segment stopped, and runs only the remaining steps.
``timer timeout`` stops a segment before the scheduler's walltime; the final ``write_restart`` still runs.
As in PLUMED itself, each segment backs up an existing COLVAR (``bck.<n>.COLVAR``), prints the row of
its first step again, and restarts ``MOVINGRESTRAINT``'s accumulated ``work`` from 0 (add the segments'
last values to join them). LAMMPS's ``npt`` is the Martyna-Tobias-Klein form of Nosé-Hoover +
Parrinello-Rahman.

Units: temperature K, pressure bar, timestep and dampings fs, strides in steps.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

__all__ = (
    'DEFAULT_RESTRAINT_MD_PARAMETERS',
    'MAX_SEED',
    'RESTART_PATTERN',
    'RESTRAINT_FIX_ID',
    'THERMO_COLUMNS',
    'check_restraint_md_parameters',
    'generate_restraint_md_script',
    'restart_filename',
)

#: Parameters and their defaults (``None``: required). Units: K, bar, fs, steps.
DEFAULT_RESTRAINT_MD_PARAMETERS: dict[str, Any] = {
    'ensemble': 'npt',  # 'npt' (paper: barostat on x and y, z fixed) or 'nvt'
    'temperature': 300.0,  # K
    'pressure': 1.0,  # bar, x and y (npt only)
    'n_steps': None,  # total number of MD steps of the simulation (segments continue up to it), required
    'timestep': 1.0,  # fs
    'thermostat_damping': 100.0,  # fs
    'barostat_damping': 1000.0,  # fs
    'thermo_stride': 100,  # steps between thermo lines
    'dump_stride': 1000,  # steps between dumped frames (id type x y z ix iy iz)
    'restart_stride': 10000,  # steps between periodic restart files (restart.<step>), 0: none
}

#: Fix ID of the restraint (``fix plumed`` here, ``fix external`` in ``lisei-lmp-plumed``).
RESTRAINT_FIX_ID = 'restraint'

#: Restart files, ``restart.<step>``: LAMMPS replaces ``*`` by the timestep when writing, and ``read_restart
#: restart.*`` reads the file with the largest timestep, so a segment killed without its final restart file
#: continues from its newest periodic one.
RESTART_PATTERN = 'restart.*'


def restart_filename(step: int) -> str:
    """Return the name of the restart file LAMMPS writes at ``step`` (:data:`RESTART_PATTERN`)."""
    return RESTART_PATTERN.replace('*', str(int(step)))


#: Thermo columns (LAMMPS ``thermo_style custom``); ``f_restraint`` is the bias energy (eV).
THERMO_COLUMNS: tuple[str, ...] = (
    'step',
    'time',
    'temp',
    'press',
    'pe',
    'ke',
    'etotal',
    'vol',
    'lx',
    'ly',
    'lz',
    'pxx',
    'pyy',
    'pzz',
    f'f_{RESTRAINT_FIX_ID}',
)

#: LAMMPS' Park-Miller generator needs 0 < seed < 2^31 - 1.
MAX_SEED = 2**31 - 2

_POSITIVE_INTEGERS = ('n_steps', 'thermo_stride', 'dump_stride')
_POSITIVE_NUMBERS = ('temperature', 'timestep', 'thermostat_damping', 'barostat_damping')


def _is_number(value: Any) -> bool:
    return not isinstance(value, bool) and isinstance(value, int | float)


def check_restraint_md_parameters(parameters: Mapping[str, Any]) -> dict[str, Any]:
    """Return ``parameters`` completed with :data:`DEFAULT_RESTRAINT_MD_PARAMETERS`.

    Raises ``ValueError`` naming the offending parameter: unknown names, an ensemble other than
    ``'npt'``/``'nvt'``, non-positive numbers or strides, a missing ``n_steps``, or a pressure that is
    not a finite number under NPT.
    """
    unknown = sorted(set(parameters) - set(DEFAULT_RESTRAINT_MD_PARAMETERS))
    if unknown:
        raise ValueError(f'unknown parameters {unknown}; known: {sorted(DEFAULT_RESTRAINT_MD_PARAMETERS)}')
    full = {**DEFAULT_RESTRAINT_MD_PARAMETERS, **parameters}
    if full['ensemble'] not in ('npt', 'nvt'):
        raise ValueError(f"`ensemble` must be 'npt' or 'nvt', got {full['ensemble']!r}")
    for name in _POSITIVE_INTEGERS:
        value = full[name]
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f'`{name}` must be a positive integer, got {value!r}')
    restart = full['restart_stride']
    if isinstance(restart, bool) or not isinstance(restart, int) or restart < 0:
        raise ValueError(f'`restart_stride` must be a non-negative integer (0: none), got {restart!r}')
    for name in _POSITIVE_NUMBERS:
        value = full[name]
        if not _is_number(value) or not value > 0 or value == float('inf'):
            raise ValueError(f'`{name}` must be a positive number, got {value!r}')
    if full['ensemble'] == 'npt':
        pressure = full['pressure']
        if not _is_number(pressure) or pressure != pressure or abs(pressure) == float('inf'):
            raise ValueError(f'`pressure` (bar) must be a finite number for npt, got {pressure!r}')
    return full


def _format_timeout(seconds: int) -> str:
    hours, rest = divmod(int(seconds), 3600)
    return f'{hours:d}:{rest // 60:02d}:{rest % 60:02d}'


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
    """
    p = check_restraint_md_parameters(parameters)
    if isinstance(seed, bool) or not isinstance(seed, int) or not 0 < seed <= MAX_SEED:
        raise ValueError(f'`seed` must be an integer in [1, {MAX_SEED}], got {seed!r}')
    if not type_map:
        raise ValueError('`type_map` must name at least one element')
    if timeout_seconds is not None and timeout_seconds < 1:
        raise ValueError(f'`timeout_seconds` must be at least 1 s, got {timeout_seconds!r}')

    temperature = p['temperature']
    t_damp, p_damp = p['thermostat_damping'] / 1000.0, p['barostat_damping'] / 1000.0
    if p['ensemble'] == 'npt':
        pressure = p['pressure']
        integrator = (
            f'fix md all npt temp {temperature} {temperature} {t_damp} '
            f'x {pressure} {pressure} {p_damp} y {pressure} {pressure} {p_damp} couple none'
        )
    else:
        integrator = f'fix md all nvt temp {temperature} {temperature} {t_damp}'

    lines = [
        '# aiida-lisei moving-restraint DeePMD MD (units metal: Å, eV, ps, K, bar)',
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
    lines += [
        f'pair_style deepmd {model_file}',
        f'pair_coeff * * {" ".join(type_map)}',
        f'timestep {p["timestep"] / 1000.0}',
    ]
    if restart_file is None:
        lines.append(f'velocity all create {temperature} {seed} dist gaussian mom yes')
    lines += [
        '# the restraint before the integrator: its virial reaches the barostat',
        f'fix {RESTRAINT_FIX_ID} all plumed plumedfile {plumed_file} outfile {plumed_log}',
        f'fix_modify {RESTRAINT_FIX_ID} energy yes virial yes',
        integrator,
        f'thermo_style custom {" ".join(THERMO_COLUMNS)}',
        'thermo_modify lost error flush yes norm no',
        f'thermo {p["thermo_stride"]}',
        f'dump traj all custom {p["dump_stride"]} {dump_file} id type x y z ix iy iz',
        'dump_modify traj sort id format float %.12g' + ('' if restart_file is None else ' append yes'),
    ]
    if p['restart_stride']:
        lines.append(f'restart {p["restart_stride"]} {RESTART_PATTERN}')
    if timeout_seconds is not None:
        lines.append(f'timer timeout {_format_timeout(timeout_seconds)} every {p["thermo_stride"]}')
    lines += [f'run {p["n_steps"]} upto', f'write_restart {RESTART_PATTERN}']
    return '\n'.join(lines) + '\n'
