"""Seeds of every random process of the study: one range, one digest (no AiiDA imports).

Every seed handed to an engine lies in ``[1, MAX_SEED]``: LAMMPS' Park-Miller generator needs
``0 < seed < 2**31 - 1``, and DeePMD-kit, NumPy, ASE and CP2K accept that range too. Derived seeds are
the first 8 bytes of a SHA-256 digest of a text key, reduced to that range, so they are stable across
Python versions and machines and do not depend on the order in which they are derived.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

__all__ = ('MAX_SEED', 'check_seed', 'derive_label_seed', 'derive_seed')

#: Largest seed handed out: LAMMPS needs ``0 < seed < 2**31 - 1``.
MAX_SEED = 2**31 - 2


def check_seed(seed: Any) -> int:
    """Return ``seed`` if it is an integer in ``[1, MAX_SEED]``; raise ``ValueError`` otherwise."""
    if isinstance(seed, bool) or not isinstance(seed, int) or not 0 < seed <= MAX_SEED:
        raise ValueError(f'`seed` must be an integer in [1, {MAX_SEED}], got {seed!r}')
    return seed


def _seed_of(key: str) -> int:
    """Return the seed of the text ``key``: SHA-256, first 8 bytes big-endian, in ``[1, MAX_SEED]``."""
    digest = hashlib.sha256(key.encode()).digest()
    return int.from_bytes(digest[:8], 'big') % MAX_SEED + 1


def derive_seed(root: int, *path: int | str) -> int:
    """Return the seed of ``path`` under the root seed ``root`` (key: the JSON of ``[root, *path]``).

    E.g. ``derive_seed(2024, 'explore', 1, 'bcc_lithium', 300)``: the concurrent-learning and
    validation work chains derive every training, exploration and selection seed this way.
    """
    return _seed_of(json.dumps([int(root), *path]))


def derive_label_seed(root: int, label: str) -> int:
    """Return the seed of ``label`` under ``root`` (key: ``'<root>:<label>'``).

    The key encoding of ``lisei.initial_data``'s per-system seeds (``derive_seeds``), kept so that the
    initial datasets already recorded reproduce; new code uses :func:`derive_seed`.
    """
    return _seed_of(f'{int(root)}:{label}')
