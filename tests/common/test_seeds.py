"""Tests of the one seeds module: range, stability, the two key encodings."""

from __future__ import annotations

import pytest

from aiida_lisei.common.seeds import MAX_SEED, check_seed, derive_label_seed, derive_seed


def test_derive_seed_is_stable_distinct_and_in_range():
    """Seeds depend on root and path only, differ between models/iterations and suit LAMMPS and DeePMD."""
    assert derive_seed(1, 'train', 1, 1) == derive_seed(1, 'train', 1, 1) == 427810028
    seeds = {derive_seed(root, 'train', it, m) for root in (1, 2) for it in (1, 2) for m in range(1, 5)}
    assert len(seeds) == 16
    assert derive_seed(1, 'explore', 1, 'bcc_lithium', 300) != derive_seed(1, 'select', 1, 'bcc_lithium', 300)
    assert all(1 <= seed <= 2**31 - 2 for seed in seeds)


def test_derive_label_seed() -> None:
    """Stable, in 1 .. 2**31 - 2, different per label and per root."""
    assert derive_label_seed(1, 'a') == derive_label_seed(1, 'a')
    seeds = {derive_label_seed(root, label) for root in (1, 2) for label in ('a', 'b', 'c')}
    assert len(seeds) == 6 and all(1 <= seed <= MAX_SEED for seed in seeds)


def test_check_seed() -> None:
    """LAMMPS takes 0 < seed < 2**31 - 1."""
    assert MAX_SEED == 2**31 - 2
    assert check_seed(1) == 1 and check_seed(MAX_SEED) == MAX_SEED
    for bad in (0, MAX_SEED + 1, True, 1.0):
        with pytest.raises(ValueError, match='seed'):
            check_seed(bad)
