"""CalcJob monitors (aiida-core's monitor interface): read an engine's output while the job runs, report
its progress, and stop a run that has gone wrong instead of letting it burn its walltime.

Give one to any CalcJob through its ``monitors`` input, e.g. ``builder.monitors = {'md': orm.Dict(
{'entry_point': 'lisei.md_divergence', 'minimum_poll_interval': 60, 'kwargs': {'max_temperature': 2000}})}``.
A monitor that stops a job ends it with aiida-core's exit status 150 ``STOPPED_BY_MONITOR``, its message
saying why.
"""

from __future__ import annotations

import math
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

from aiida_lisei.formats.lammps import parse_log

if TYPE_CHECKING:
    from aiida.orm import CalcJobNode
    from aiida.transports import Transport

__all__ = ('md_divergence', 'training_divergence')


def _remote_text(node: CalcJobNode, transport: Transport, filename: str) -> str | None:
    """Return the text of ``filename`` in the job's remote working directory, or ``None`` if not there yet."""
    workdir = node.get_remote_workdir()
    if workdir is None:
        return None
    remote = str(Path(workdir) / filename)
    if not transport.isfile(remote):
        return None
    with tempfile.TemporaryDirectory() as folder:
        local = Path(folder) / filename
        transport.getfile(remote, str(local))
        return local.read_text(errors='replace')


def md_divergence(
    node: CalcJobNode, transport: Transport, max_temperature: float = 3000.0, log_file: str = 'log.lammps'
) -> str | None:
    """Stop a LAMMPS run whose thermo shows NaN/inf, a temperature above ``max_temperature`` (K), or whose
    log reports lost atoms; report the last step reached otherwise."""
    text = _remote_text(node, transport, log_file)
    if text is None:
        return None
    if 'Lost atoms' in text:
        return f'{log_file}: LAMMPS lost atoms: the run has blown up'
    log = parse_log(text)
    steps, temperatures = log.thermo.get('Step'), log.thermo.get('Temp')
    if steps is None or not len(steps):
        return None
    for name, values in log.thermo.items():
        bad = [index for index, value in enumerate(values) if not math.isfinite(value)]
        if bad:
            return f'{log_file}: `{name}` is not finite at step {int(steps[bad[0]])}: the run has blown up'
    if temperatures is not None:
        hot = [index for index, value in enumerate(temperatures) if value > max_temperature]
        if hot:
            return (
                f'{log_file}: temperature {temperatures[hot[0]]:.0f} K at step {int(steps[hot[0]])} exceeds '
                f'{max_temperature:g} K: the run diverges'
            )
    node.base.extras.set('progress', f'step {int(steps[-1])}')
    return None


def training_divergence(
    node: CalcJobNode, transport: Transport, lcurve_file: str = 'lcurve.out'
) -> str | None:
    """Stop a ``dp train`` whose learning curve has NaN/inf losses; report the last step reached otherwise."""
    text = _remote_text(node, transport, lcurve_file)
    if text is None:
        return None
    rows = [line.split() for line in text.splitlines() if line.strip() and not line.lstrip().startswith('#')]
    for row in rows:
        try:
            values = [float(value) for value in row]
        except ValueError:
            continue  # a line being written
        if any(not math.isfinite(value) for value in values[1:]):
            return f'{lcurve_file}: a loss is not finite at step {row[0]}: the training diverges'
    if rows:
        node.base.extras.set('progress', f'step {rows[-1][0]}')
    return None
