"""What a LAMMPS executable was built with, read from the ``Installed packages`` section of ``lmp -h``."""

from __future__ import annotations

import functools
import subprocess
from pathlib import Path

__all__ = ('installed_packages', 'parse_installed_packages')

#: Seconds ``lmp -h`` may take before the probe gives up (and says nothing).
HELP_TIMEOUT = 30.0


def parse_installed_packages(help_text: str) -> frozenset[str] | None:
    """Return the package names listed under ``Installed packages:`` in ``lmp -h`` output; ``None`` when the
    text has no such section (not a LAMMPS, or a LAMMPS that failed to start)."""
    lines = help_text.splitlines()
    try:
        start = next(index for index, line in enumerate(lines) if line.strip() == 'Installed packages:')
    except StopIteration:
        return None
    names: list[str] = []
    for line in lines[start + 1 :]:
        if not line.strip():
            if names:
                break
            continue
        names.extend(line.split())
    return frozenset(names)


@functools.lru_cache(maxsize=32)
def _probe(executable: str, _mtime: float) -> frozenset[str] | None:
    try:
        result = subprocess.run(
            [executable, '-h'],
            capture_output=True,
            text=True,
            errors='replace',
            stdin=subprocess.DEVNULL,
            timeout=HELP_TIMEOUT,
            check=False,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return parse_installed_packages(result.stdout)


def installed_packages(executable: str | Path) -> frozenset[str] | None:
    """Return the packages of the LAMMPS ``executable`` (run once per file version: cached on its mtime);
    ``None`` when that cannot be told (missing file, not a LAMMPS, no answer within :data:`HELP_TIMEOUT`)."""
    path = Path(executable)
    try:
        mtime = path.stat().st_mtime
    except OSError:
        return None
    return _probe(str(path), mtime)
