"""Read a CP2K 2023.1 ``ENERGY_FORCE`` output (``PRINT_LEVEL MEDIUM``) into plain Python and numpy.

No AiiDA here: :func:`parse_cp2k_output` takes the text of the main output and returns a dict. Units of
the result: energy in eV, forces in eV/Å, stress in GPa with CP2K's sign (positive under compression,
as a pressure; :func:`cp2k_stress_to_ase` converts it to ASE's eV/Å³ and sign), time in s. Conversion
factors are CODATA 2006, the ones CP2K 2023.1 itself uses.

The quantities are read from the blocks that ``&FORCE_EVAL / &PRINT / &FORCES ON`` and
``&STRESS_TENSOR ON`` (with ``STRESS_TENSOR ANALYTICAL``) print; the last block of each kind wins.
A run whose SCF did not converge still prints forces and stress: they are returned, with
``scf_converged = False``, and the caller decides what to do with them.
"""

from __future__ import annotations

import re
from typing import Any

import numpy as np

__all__ = (
    'BOHR_TO_ANGSTROM',
    'EV_PER_ANGSTROM3_TO_GPA',
    'HARTREE_TO_EV',
    'Cp2kOutputError',
    'cp2k_stress_to_ase',
    'fortran_float',
    'parse_cp2k_mo_summary',
    'parse_cp2k_output',
    'parse_cp2k_pdos',
)

#: Hartree in eV and Bohr in Å as in CP2K 2023.1 (``common/physcon.F``, CODATA 2006).
HARTREE_TO_EV = 27.21138386
BOHR_TO_ANGSTROM = 0.52917720859
#: 1 eV/Å³ in GPa.
EV_PER_ANGSTROM3_TO_GPA = 160.21766208

_VERSION = re.compile(r'^\s*CP2K\|\s+version string:\s+CP2K version\s+(\S+)', re.MULTILINE)
_ENERGY = re.compile(r'^\s*ENERGY\|\s+Total FORCE_EVAL \( \w+ \) energy \[a\.u\.\]:\s+(\S+)', re.MULTILINE)
_SCF_CONVERGED = re.compile(r'\*\*\* SCF run converged in\s+(\d+) steps \*\*\*')
_SCF_NOT_CONVERGED = 'SCF run NOT converged'
_SCF_STEP = re.compile(r'^\s*\d+\s+[A-Za-z].*\s-?\d+\.\d+\s+-?\d\.\d+E[+-]\d+\s*$', re.MULTILINE)
_FORCES_HEADER = 'ATOMIC FORCES in [a.u.]'
_FORCE_LINE = re.compile(r'^\s*(\d+)\s+\d+\s+[A-Za-z]+\s+(\S+)\s+(\S+)\s+(\S+)\s*$')
_STRESS_HEADER = 'STRESS| Analytical stress tensor [GPa]'
_STRESS_ROW = re.compile(r'^\s*STRESS\|\s+([xyz])\s+(\S+)\s+(\S+)\s+(\S+)\s*$')
_TOTAL_TIME = re.compile(r'^\s*CP2K\s+1\s+1\.0\s+\S+\s+\S+\s+\S+\s+(\S+)\s*$', re.MULTILINE)
_WALLTIME_MARKER = 'exceeded requested execution time'
_ENDED_MARKER = 'PROGRAM ENDED AT'
_ABORT = re.compile(r'\[ABORT\]\s*\*\s*\n\s*\*\s*\\___/\s+(.*?)\s*\*\s*$', re.MULTILINE)


class Cp2kOutputError(ValueError):
    """The text is not a CP2K output, or one of its blocks is malformed."""


def fortran_float(text: str) -> float:
    """Parse a Fortran real (``1.0D-03`` or ``1.0E-03``); a Fortran overflow field (``****``) or any other
    non-number raises :class:`Cp2kOutputError`."""
    try:
        return float(text.replace('D', 'E').replace('d', 'e'))
    except ValueError:
        raise Cp2kOutputError(f'not a number: {text!r} (a Fortran overflow field?)') from None


_float = fortran_float


def _last_forces(lines: list[str]) -> np.ndarray | None:
    """Return the last ``ATOMIC FORCES`` block in Hartree/Bohr, shape (natoms, 3), or ``None``."""
    starts = [index for index, line in enumerate(lines) if line.strip() == _FORCES_HEADER]
    if not starts:
        return None
    forces = []
    for line in lines[starts[-1] + 3 :]:  # header, blank line, column titles
        match = _FORCE_LINE.match(line)
        if not match:
            break
        if int(match.group(1)) != len(forces) + 1:
            raise Cp2kOutputError(f'ATOMIC FORCES block: atom {match.group(1)} out of order')
        forces.append([_float(value) for value in match.groups()[1:]])
    if not forces:
        raise Cp2kOutputError('empty ATOMIC FORCES block')
    return np.array(forces)


def _last_stress(lines: list[str]) -> np.ndarray | None:
    """Return the last analytical stress tensor in GPa (CP2K sign), shape (3, 3), or ``None``."""
    starts = [index for index, line in enumerate(lines) if line.strip() == _STRESS_HEADER]
    if not starts:
        return None
    rows = [_STRESS_ROW.match(line) for line in lines[starts[-1] + 2 : starts[-1] + 5]]
    if not all(rows) or [row.group(1) for row in rows] != ['x', 'y', 'z']:
        raise Cp2kOutputError('malformed analytical STRESS block')
    return np.array([[_float(value) for value in row.groups()[1:]] for row in rows])


def cp2k_stress_to_ase(stress_gpa: np.ndarray) -> np.ndarray:
    """Return ASE's stress (eV/Å³, negative under compression) from CP2K's (GPa, positive if compressed)."""
    return -np.asarray(stress_gpa, dtype=float) / EV_PER_ANGSTROM3_TO_GPA


def parse_cp2k_output(text: str) -> dict[str, Any]:
    """Parse the main output of a CP2K ``ENERGY_FORCE`` run.

    Returns a dict with ``version`` (str), ``energy`` (eV, the last ``ENERGY| Total FORCE_EVAL``; with
    smearing this is CP2K's free energy, whose derivatives the forces are), ``forces`` (eV/Å, numpy
    array or ``None``), ``stress`` (GPa, CP2K sign, or ``None``), ``scf_converged`` (bool),
    ``n_scf_steps`` (all SCF iterations printed, outer loops included), ``walltime_exceeded``,
    ``completed`` (``PROGRAM ENDED`` printed), ``abort`` (the ``[ABORT]`` message or ``None``) and
    ``wall_time_seconds`` (from the timing report, or ``None``). Missing quantities are ``None``;
    :class:`Cp2kOutputError` is raised for text that is not a CP2K output or has malformed blocks.
    """
    version = _VERSION.search(text)
    if version is None:
        raise Cp2kOutputError('no `CP2K| version string` line: not a CP2K output')
    lines = text.splitlines()
    energies = _ENERGY.findall(text)
    forces = _last_forces(lines)
    stress = _last_stress(lines)
    converged = _SCF_CONVERGED.findall(text)
    not_converged = _SCF_NOT_CONVERGED in text
    total_time = _TOTAL_TIME.findall(text)
    abort = _ABORT.search(text)
    return {
        'version': version.group(1),
        'energy': _float(energies[-1]) * HARTREE_TO_EV if energies else None,
        'forces': None if forces is None else forces * HARTREE_TO_EV / BOHR_TO_ANGSTROM,
        'stress': stress,
        'scf_converged': bool(converged) and not not_converged,
        'n_scf_steps': len(_SCF_STEP.findall(text)),
        'walltime_exceeded': _WALLTIME_MARKER in text,
        'completed': _ENDED_MARKER in text,
        'abort': abort.group(1) if abort else None,
        'wall_time_seconds': _float(total_time[-1]) if total_time else None,
    }


_PDOS_HEADER = re.compile(
    r'^#\s*Projected DOS for atomic kind\s+(?P<kind>\S+)\s+at iteration step i =\s*\d+,\s*'
    r'E\(Fermi\)\s*=\s*(?P<fermi>\S+)\s*a\.u\.'
)
_MO_FERMI = re.compile(r'^\s*MO\|\s*E\(Fermi\):\s+\S+\s+a\.u\.\s+(\S+)\s+eV', re.MULTILINE)
_MO_GAP = re.compile(r'^\s*MO\|\s*Band gap:\s+\S+\s+a\.u\.\s+(\S+)\s+eV', re.MULTILINE)


def parse_cp2k_pdos(text: str) -> dict[str, Any]:
    """Parse one ``<project>-k<n>-1.pdos`` file of CP2K's ``&PDOS`` print (one atomic kind, Gamma point).

    Returns ``kind`` (the kind name), ``fermi`` (eV), ``energies`` (eV, one per MO), ``occupations`` (per MO,
    0 to 2 without spin polarisation) and ``weights`` (the kind's projection of each MO, summed over the
    angular-momentum columns). Raises :class:`Cp2kOutputError` on a malformed file.
    """
    lines = text.splitlines()
    header = _PDOS_HEADER.match(lines[0]) if lines else None
    if header is None:
        raise Cp2kOutputError('not a CP2K PDOS file: no `Projected DOS for atomic kind` header')
    rows = [line.split() for line in lines[2:] if line.strip() and not line.startswith('#')]
    try:
        table = np.array(rows, dtype=float)
    except ValueError as exception:
        raise Cp2kOutputError(f'malformed PDOS table: {exception}') from None
    if table.ndim != 2 or table.shape[1] < 4:
        raise Cp2kOutputError(
            f'PDOS table of shape {table.shape}: expected MO, energy, occupation, projections'
        )
    return {
        'kind': header['kind'],
        'fermi': _float(header['fermi']) * HARTREE_TO_EV,
        'energies': table[:, 1] * HARTREE_TO_EV,
        'occupations': table[:, 2],
        'weights': table[:, 3:].sum(axis=1),
    }


def parse_cp2k_mo_summary(text: str) -> dict[str, float | None]:
    """The last ``MO| E(Fermi)`` and ``MO| Band gap`` (eV) CP2K printed (``&PRINT &MO``), else ``None``."""
    fermi, gap = _MO_FERMI.findall(text), _MO_GAP.findall(text)
    return {
        'fermi': _float(fermi[-1]) if fermi else None,
        'band_gap': _float(gap[-1]) if gap else None,
    }
