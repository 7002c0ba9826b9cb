"""Fixtures of the atomic-model tests."""

import pytest


@pytest.fixture
def small_sandwich() -> dict:
    """Parameters of a small sandwich of the paper's shape (1x1x2 cells, 6 + 3 Li layers, Å)."""
    return {
        'electrolyte_repeat_xy': 1,
        'electrolyte_repeat_z': 2,
        'anode_layers': 6,
        'source_layers': 3,
        'vacuum': 10.0,
    }
