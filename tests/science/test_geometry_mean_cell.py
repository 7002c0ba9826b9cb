"""``mean_cell_frame``: the last NPT frame in the mean box of the run's second half."""

from __future__ import annotations

import numpy as np
import pytest

from aiida_lisei.science.geometry import mean_cell_frame


def test_last_frame_in_the_mean_cell_of_the_second_half():
    """Fractional coordinates of the last frame are kept; the box is the mean of the last half of frames."""
    rng = np.random.default_rng(3)
    lengths = np.array([[10.0 + 0.3 * np.sin(i), 10.0 - 0.2 * np.cos(i), 30.0] for i in range(10)])
    cells = np.array([np.diag(length) for length in lengths])
    fractional = rng.random((5, 3))
    positions = np.array([fractional @ cell for cell in cells])
    cell, scaled = mean_cell_frame(cells, positions)
    assert np.allclose(cell, cells[5:].mean(axis=0))
    assert np.allclose(np.linalg.solve(cell.T, scaled.T).T, fractional)
    assert np.allclose(mean_cell_frame(cells, positions, fraction=0.01)[0], cells[-1])  # one frame: its own
    with pytest.raises(ValueError, match='fraction'):
        mean_cell_frame(cells, positions, fraction=0.0)
    with pytest.raises(ValueError, match='expected'):
        mean_cell_frame(cells[:, :2], positions)
