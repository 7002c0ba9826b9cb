"""VASP outputs (as parsed by aiida-vasp into ``misc``) to DeePMD training frames, and the level of theory.

No AiiDA nodes are created here: :func:`vasp_training_frames` works on plain arrays and the
``misc`` dict, so the ``VaspLabelWorkChain`` calcfunction and the tests use the same conversion.

Units and signs:

* energy (eV): ``misc['total_energies'][energy_type]``. The default ``energy_free`` is VASP's
  ``free energy TOTEN`` (Mermin free energy F = E - TS), the quantity whose derivatives are the
  forces VASP reports, and the energy DP-GEN/dpdata (``vasp/outcar``) label with; ``energy_extrapolated``
  (E(sigma -> 0)) is the other choice (see :data:`ENERGY_TYPES`);
* forces (eV/Å): ``misc['forces']``, Cartesian, same atom order as the POSCAR (= the input structure);
* virial (eV): VASP's stress in ``misc['stress']`` is in kBar and positive under compression (the
  ``in kB`` line of OUTCAR); ASE's stress is ``-0.1 GPa * that``, so DeePMD's virial
  ``-stress_ASE * V`` is ``+0.1 GPa * stress_VASP * V``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from ase.units import GPa

from aiida_lisei.data.frames import FrameSystem, TrainingFrames

__all__ = (
    'ENERGY_TYPES',
    'HAMILTONIAN_TAGS',
    'KBAR_TO_EV_PER_A3',
    'VaspOutputError',
    'parse_vasprun_electronic',
    'vasp_level_of_theory',
    'vasp_method',
    'vasp_training_frames',
    'vasp_virial',
)

#: 1 kBar = 0.1 GPa, in eV/Å³.
KBAR_TO_EV_PER_A3 = 0.1 * GPa

#: Energies of ``misc['total_energies']`` that can label frames (aiida-vasp names).
ENERGY_TYPES = ('energy_free', 'energy_extrapolated', 'energy_no_entropy')

#: INCAR tags that change the Hamiltonian or its discretisation everywhere in a set, hence the energy
#: zero: they enter the level of theory. k-points, LREAL, EDIFF, NELM, ALGO and parallelisation are
#: per-system numerics (converged per system) and are recorded as frame tags or not at all.
HAMILTONIAN_TAGS = (
    'addgrid',
    'encut',
    'gga',
    'hfscreen',
    'ismear',
    'ispin',
    'ivdw',
    'lasph',
    'ldau',
    'lhfcalc',
    'metagga',
    'prec',
    'sigma',
)

_GGA_NAMES = {'pe': 'PBE', 'ps': 'PBEsol', 'rp': 'RPBE', '91': 'PW91', 'am': 'AM05', 'ca': 'LDA'}


class VaspOutputError(ValueError):
    """A VASP output lacks a quantity needed for a label, or has the wrong shape."""


def _normalized(value: Any) -> Any:
    """Lower-case strings (VASP tags are case-insensitive); numbers and booleans unchanged."""
    return value.strip().lower() if isinstance(value, str) else value


def vasp_method(incar: Mapping[str, Any]) -> str:
    """Name of the exchange-correlation functional set by ``incar`` (lower-case tag names).

    ``GGA = PE`` → ``PBE``, ``PS`` → ``PBEsol``; ``METAGGA`` wins over ``GGA``; hybrids get a ``hybrid-``
    prefix. Without ``GGA``/``METAGGA`` VASP takes the functional of the POTCARs: ``GGA-from-POTCAR``.
    """
    incar = {key.lower(): _normalized(value) for key, value in incar.items()}
    if incar.get('metagga'):
        method = str(incar['metagga']).upper()
    elif incar.get('gga') is not None:
        method = _GGA_NAMES.get(str(incar['gga']), f'GGA={str(incar["gga"]).upper()}')
    else:
        method = 'GGA-from-POTCAR'
    return f'hybrid-{method}' if incar.get('lhfcalc') is True else method


def vasp_level_of_theory(
    incar: Mapping[str, Any],
    potential_family: str,
    potential_mapping: Mapping[str, str],
    energy_type: str,
) -> dict[str, Any]:
    """Return the level of theory of VASP labels: engine, method, PAW set, energy type, Hamiltonian tags.

    Only the tags present in ``incar`` are recorded (VASP's defaults otherwise), string values lower-case.
    """
    if energy_type not in ENERGY_TYPES:
        raise ValueError(f'energy_type must be one of {ENERGY_TYPES}, got {energy_type!r}')
    incar = {key.lower(): _normalized(value) for key, value in incar.items()}
    return {
        'engine': 'vasp',
        'method': vasp_method(incar),
        'basis': 'PAW',
        'potential_family': potential_family,
        'potential_mapping': dict(potential_mapping),
        'energy_type': energy_type,
        'incar': {key: incar[key] for key in HAMILTONIAN_TAGS if key in incar},
    }


def vasp_virial(stress_kbar: Any, cell: Any) -> np.ndarray:
    """DeePMD virial (eV, positive under compression) from VASP's stress (kBar) and the cell rows (Å)."""
    stress = np.asarray(stress_kbar, dtype=float)
    if stress.shape != (3, 3):
        raise VaspOutputError(f'stress has shape {stress.shape}, expected (3, 3)')
    volume = abs(np.linalg.det(np.asarray(cell, dtype=float)))
    return stress * KBAR_TO_EV_PER_A3 * volume


def _energy(misc: Mapping[str, Any], energy_type: str) -> float:
    """Return ``misc['total_energies'][energy_type]`` (eV) or raise naming the parser setting to add."""
    energies = misc.get('total_energies') or {}
    if energy_type not in energies:
        raise VaspOutputError(
            f'misc has no total_energies[{energy_type!r}] (it has {sorted(energies)}): add {energy_type!r} '
            "to settings['parser_settings']['energy_type']"
        )
    return float(energies[energy_type])


def vasp_training_frames(
    symbols: Sequence[str],
    positions: Any,
    cell: Any,
    misc: Mapping[str, Any],
    *,
    system_label: str,
    level_of_theory: Mapping[str, Any],
    type_map: Sequence[str] | None = None,
    labelled_by: Any = None,
    tags: Mapping[str, Any] | None = None,
) -> TrainingFrames:
    """Return one labelled frame from a VASP run: geometry (Å) plus energy, forces and virial from ``misc``.

    ``positions`` (natoms, 3) Cartesian Å and ``cell`` rows (Å) are those the forces were computed at (the
    input structure of a single point). ``level_of_theory['energy_type']`` picks the energy.
    ``type_map`` defaults to the elements in order of first appearance.
    """
    symbols = [str(symbol) for symbol in symbols]
    type_map = list(dict.fromkeys(symbols)) if type_map is None else list(type_map)
    missing = sorted(set(symbols) - set(type_map))
    if missing:
        raise VaspOutputError(f'elements {missing} are not in type_map {type_map}')
    energy = _energy(misc, level_of_theory['energy_type'])
    for key in ('forces', 'stress'):
        if misc.get(key) is None:
            raise VaspOutputError(
                f'misc has no {key!r}: remove it from settings["parser_settings"]["exclude_quantity"]'
            )
    forces = np.asarray(misc['forces'], dtype=float)
    if forces.shape != (len(symbols), 3):
        raise VaspOutputError(f'forces have shape {forces.shape}, expected ({len(symbols)}, 3)')
    system = FrameSystem(
        system_label,
        [type_map.index(symbol) for symbol in symbols],
        [positions],
        [cell],
        [energy],
        [forces],
        [vasp_virial(misc['stress'], cell)],
        labelled_by,
        dict(tags or {}),
    )
    return TrainingFrames(type_map, dict(level_of_theory), [system])


def _rows(element: Any, tag: str = 'r') -> np.ndarray:
    """The ``<r>`` (or ``<v>``) rows under ``element`` as a float array (rows, columns)."""
    return np.array([row.text.split() for row in element.iter(tag)], dtype=float)


def parse_vasprun_electronic(text: str) -> dict[str, Any]:
    """Orbital energies, occupations and the total DOS of a ``vasprun.xml`` (the last ``<eigenvalues>`` and
    ``<dos>`` blocks).

    Returns ``efermi`` (eV), ``eigenvalues`` and ``occupations`` (spin, k-point, band; eV and 0-1 per spin),
    ``kpoint_weights`` (k-point), ``kpoints`` (fractional), ``ispin``, ``ismear`` and ``sigma`` (eV) from the
    INCAR parameters, and ``dos`` (``energy`` eV, ``total`` states/eV with the spin channels summed,
    ``integrated``).
    Raises :class:`VaspOutputError` when a block is missing or malformed.
    """
    import xml.etree.ElementTree as ElementTree

    try:
        root = ElementTree.fromstring(text)
    except ElementTree.ParseError as exception:
        raise VaspOutputError(f'vasprun.xml is not valid XML: {exception}') from None
    blocks = root.findall('.//eigenvalues')
    dos = root.find('.//dos')
    kpoints = root.find('kpoints')
    if not blocks or dos is None or kpoints is None:
        raise VaspOutputError('vasprun.xml lacks <eigenvalues>, <dos> or <kpoints>')
    spins = blocks[-1].find('array/set').findall('set')
    table = np.array([[_rows(kpoint) for kpoint in spin.findall('set')] for spin in spins])
    if table.ndim != 4 or table.shape[-1] != 2:
        raise VaspOutputError(f'<eigenvalues> of shape {table.shape}: expected (spin, k-point, band, 2)')
    total = dos.find('total/array/set')
    channels = [_rows(spin) for spin in total.findall('set')]
    parameters = {item.get('name'): item.text for item in root.iter('i') if item.get('name')}
    efermi = dos.find("i[@name='efermi']")
    return {
        'efermi': float(efermi.text),
        'eigenvalues': table[..., 0],
        'occupations': table[..., 1],
        'kpoints': _rows(kpoints.find("varray[@name='kpointlist']"), 'v'),
        'kpoint_weights': _rows(kpoints.find("varray[@name='weights']"), 'v')[:, 0],
        'ispin': len(spins),
        'ismear': int(float(parameters.get('ISMEAR', 1))),
        'sigma': float(parameters.get('SIGMA', 0.2)),
        'dos': {
            'energy': channels[0][:, 0],
            'total': sum(channel[:, 1] for channel in channels),
            'integrated': sum(channel[:, 2] for channel in channels),
        },
    }
