"""``DpTestParser``: errors and parity data of a ``lisei.dp_test`` job from ``dp test``'s detail files.

The errors are computed here from the per-frame reference/prediction pairs, not copied from the log:
energy per atom (eV/atom) and virial per atom (eV/atom) over frames, forces (eV/Å) over all Cartesian
components of all atoms. "Overall" pools every frame of every system (so a system weighs by its number of
frames for energies and virials, by its number of atoms x frames for forces).
"""

from __future__ import annotations

import re
from typing import Any

import numpy as np
from aiida import orm
from aiida.engine import ExitCode

from aiida_lisei.parsers.base import LiseiParser

__all__ = ('DpTestParser', 'error_summary', 'parse_test_log', 'read_detail')


_SYSTEM = re.compile(r'# testing system : (\S+)')
_NFRAMES = re.compile(r'# number of test data : (\d+)')
_NSYSTEMS = re.compile(r'# number of systems : (\d+)')
_CLOSING = re.compile(r'# -{20,}\s*$')


def read_detail(text: str) -> tuple[np.ndarray, np.ndarray]:
    """Return ``(reference, predicted)`` rows of a ``detail.*.out`` file (the two halves of each row).

    ``dp test`` writes one header for the first system only and appends the rows of the next systems, so
    the rows are split into systems with :func:`parse_test_log`. Raises ``ValueError`` on ragged rows.
    """
    rows = [line.split() for line in text.splitlines() if line.strip() and not line.startswith('#')]
    if not rows or len({len(row) for row in rows}) != 1 or len(rows[0]) % 2:
        raise ValueError('no rows, or rows with different or odd numbers of columns')
    table = np.array(rows, dtype=float)
    half = table.shape[1] // 2
    return table[:, :half], table[:, half:]


def parse_test_log(text: str) -> list[tuple[str, int]]:
    """Return ``(system path, number of frames tested)`` in the order ``dp test`` tested them.

    Raises ``ValueError`` on a log cut short: dp test's closing ``# ----`` line must follow the last system's
    results, and the weighted average over all systems when there are several.
    """
    systems = _SYSTEM.findall(text)
    counts = [int(count) for count in _NFRAMES.findall(text)]
    if len(systems) != len(counts):
        raise ValueError(f'{len(systems)} systems but {len(counts)} frame counts in the log')
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    closing = [index for index, line in enumerate(lines) if _CLOSING.search(line)]
    blocks = [index for index, line in enumerate(lines) if _NFRAMES.search(line) or _NSYSTEMS.search(line)]
    # lines of other programs may follow (e.g. a CUDA loader's warnings on a CPU machine): dp test's closing
    # line must come after its last block of results (a system's, or the weighted average)
    if not closing or (blocks and closing[-1] < blocks[-1]):
        raise ValueError('the log has no closing `# ----` line of dp test after its last results: truncated')
    if len(systems) > 1:
        average = _NSYSTEMS.findall(text)
        if not average or int(average[-1]) != len(systems):
            raise ValueError(f'no weighted average over the {len(systems)} systems at the end: truncated')
    return list(zip(systems, counts, strict=True))


def _errors(reference: np.ndarray, predicted: np.ndarray) -> dict[str, float]:
    """Return ``{'rmse': ..., 'mae': ...}`` of ``predicted - reference`` over all entries."""
    difference = np.asarray(predicted) - np.asarray(reference)
    return {'rmse': float(np.sqrt(np.mean(difference**2))), 'mae': float(np.mean(np.abs(difference)))}


def error_summary(
    energies: tuple[np.ndarray, np.ndarray, np.ndarray],
    forces: tuple[np.ndarray, np.ndarray],
    virials: tuple[np.ndarray, np.ndarray] | None = None,
) -> dict[str, Any]:
    """Return energy (eV/atom), force (eV/Å) and virial (eV/atom) errors of pooled frames.

    :param energies: ``(reference eV, predicted eV, natoms)`` per frame.
    :param forces: ``(reference, predicted)`` eV/Å, any shape.
    :param virials: ``(reference, predicted)`` eV, ``(nframes, 9)``, or ``None``.
    """
    reference, predicted, natoms = energies
    summary: dict[str, Any] = {'nframes': len(natoms)}
    energy = _errors(reference / natoms, predicted / natoms)
    summary.update(rmse_e_per_atom=energy['rmse'], mae_e_per_atom=energy['mae'])
    force = _errors(*forces)
    summary.update(rmse_f=force['rmse'], mae_f=force['mae'])
    if virials is not None:
        virial = _errors(virials[0] / natoms[:, None], virials[1] / natoms[:, None])
        summary.update(rmse_v_per_atom=virial['rmse'], mae_v_per_atom=virial['mae'])
    return summary


class DpTestParser(LiseiParser):
    """Parser of ``DpTestCalculation`` (entry point ``lisei.dp_test``)."""

    _MISSING = 'ERROR_DETAIL_MISSING'
    _UNREADABLE = 'ERROR_DETAIL_UNREADABLE'

    def parse_outputs(self, **kwargs: Any) -> ExitCode | None:
        """Attach ``parity`` and ``output_parameters``; fail on a missing detail file or lost frames."""
        texts = {name: self.read(name) for name in ('test.log', 'detail.e.out', 'detail.f.out')}
        test_set = self.node.inputs.test_set
        try:
            tested = parse_test_log(texts['test.log'])
            energies = read_detail(texts['detail.e.out'])
            forces = read_detail(texts['detail.f.out'])
            virial_text = self.read('detail.v.out', required=False)
            virials = read_detail(virial_text) if virial_text is not None else None
        except ValueError as exception:
            return self.exit_codes.ERROR_DETAIL_UNREADABLE.format(exception=exception)
        labels = [path.rstrip('/').rsplit('/', 1)[-1] for path, _ in tested]
        nframes = sum(count for _, count in tested)
        if sorted(labels) != sorted(test_set.system_labels) or nframes != test_set.nframes:
            return self.exit_codes.ERROR_FRAMES_MISSING.format(tested=nframes, expected=test_set.nframes)
        counts = [count for _, count in tested]
        natoms = np.repeat([test_set.get_system(label).natoms for label in labels], counts)
        if len(energies[0]) != nframes or len(forces[0]) != natoms.sum():
            return self.exit_codes.ERROR_DETAIL_UNREADABLE.format(
                exception=f'{len(energies[0])} energy and {len(forces[0])} force rows for {nframes} frames'
            )
        systems = zip(labels, counts, strict=True)
        with_virials = sum(count for label, count in systems if test_set.get_system(label).has_virials)
        if virials is not None and len(virials[0]) != nframes:  # some systems without virials
            if len(virials[0]) != with_virials:  # not the rows of the systems with virials: cut short
                return self.exit_codes.ERROR_DETAIL_UNREADABLE.format(
                    exception=f'{len(virials[0])} virial rows for {with_virials} frames with virials'
                )
            virials = None

        arrays = {
            'energy_reference': energies[0][:, 0],
            'energy_predicted': energies[1][:, 0],
            'natoms': natoms,
            'system_index': np.repeat(np.arange(len(labels)), counts),
            'force_reference': forces[0],
            'force_predicted': forces[1],
        }
        if virials is not None:
            arrays.update(virial_reference=virials[0], virial_predicted=virials[1])
        parity = orm.ArrayData()
        for name, values in arrays.items():
            parity.set_array(name, values)
        parity.base.attributes.set('systems', labels)
        self.out('parity', parity)

        atom_system = np.repeat(arrays['system_index'], natoms)
        per_system = {}
        for index, label in enumerate(labels):
            frames, atoms = arrays['system_index'] == index, atom_system == index
            per_system[label] = error_summary(
                (energies[0][frames, 0], energies[1][frames, 0], natoms[frames]),
                (forces[0][atoms], forces[1][atoms]),
                None if virials is None else (virials[0][frames], virials[1][frames]),
            )
        overall = error_summary((energies[0][:, 0], energies[1][:, 0], natoms), forces, virials)
        units = {'e_per_atom': 'eV/atom', 'f': 'eV/Å', 'v_per_atom': 'eV/atom'}
        self.out('output_parameters', orm.Dict({**overall, 'systems': per_system, 'units': units}))
        return None
