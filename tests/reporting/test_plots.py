"""Tests of :mod:`aiida_lisei.reporting.plots`: PNG bytes from arrays, RMSE, PNG header checks (no AiiDA)."""

from __future__ import annotations

import io
import subprocess
import sys

import numpy as np
import pytest

from aiida_lisei.reporting.plots import (
    PNG_SIGNATURE,
    ParityPanel,
    energy_force_parity_png,
    parity_png,
    png_size,
    rmse,
)


@pytest.fixture
def arrays() -> dict[str, np.ndarray]:
    """Parity data of 6 frames of 16 atoms: energies (eV), forces (eV/Å) with known errors."""
    rng = np.random.default_rng(3)
    energy = -190.0 * 16 + rng.normal(scale=2.0, size=6)
    force = rng.normal(size=(6 * 16, 3))
    return {
        'energy_reference': energy,
        'energy_predicted': energy + 16 * 0.005,  # 5 meV/atom everywhere
        'force_reference': force,
        'force_predicted': force + 0.1,  # 100 meV/Å on every component
    }


def decode(png: bytes) -> np.ndarray:
    """Decode PNG bytes into an RGBA image array with matplotlib's reader."""
    import matplotlib.image

    return matplotlib.image.imread(io.BytesIO(png), format='png')


def test_rmse():
    """RMSE over all entries; shapes must match and be non-empty."""
    assert rmse(np.zeros(4), np.array([1.0, -1.0, 1.0, -1.0])) == pytest.approx(1.0)
    assert rmse(np.zeros((2, 3)), np.full((2, 3), 0.5)) == pytest.approx(0.5)
    with pytest.raises(ValueError, match='shapes differ'):
        rmse(np.zeros(3), np.zeros(4))
    with pytest.raises(ValueError, match='no values'):
        rmse(np.zeros(0), np.zeros(0))


def test_parity_panel_scales_the_error_and_annotates():
    """The panel flattens its arrays, prints its RMSE in the error unit and the paper's next to it."""
    panel = ParityPanel(
        np.zeros((2, 3)),
        np.full((2, 3), 0.0939),
        quantity='Force',
        unit='eV/Å',
        error_scale=1000.0,
        error_unit='meV/Å',
        paper_rmse=93.9,
    )
    assert panel.reference.shape == (6,) and panel.rmse == pytest.approx(93.9)
    assert panel.annotation() == 'RMSE = 93.9 meV/Å\npaper: 93.9 meV/Å\nn = 6'
    with pytest.raises(ValueError, match='3 reference values but 2 predicted'):
        ParityPanel(np.zeros(3), np.zeros(2), quantity='E', unit='eV')
    with pytest.raises(ValueError, match='non-finite'):
        ParityPanel(np.array([0.0, np.nan]), np.zeros(2), quantity='E', unit='eV')
    with pytest.raises(ValueError, match='no values'):
        ParityPanel(np.zeros(0), np.zeros(0), quantity='E', unit='eV')


def test_energy_force_parity_png_is_a_two_panel_png(arrays):
    """A valid PNG, wider than tall (two square panels), that decodes to a non-blank image."""
    png = energy_force_parity_png(
        arrays['energy_reference'],
        arrays['energy_predicted'],
        16,
        arrays['force_reference'],
        arrays['force_predicted'],
        paper_energy_rmse=5.45,
        paper_force_rmse=93.9,
        title='demo',
    )
    assert png.startswith(PNG_SIGNATURE)
    width, height = png_size(png)
    image = decode(png)
    assert image.shape[:2] == (height, width)
    assert 1.6 < width / height < 2.2
    assert np.unique(image.reshape(-1, image.shape[-1]), axis=0).shape[0] > 10  # not a blank canvas


def test_parity_png_depends_on_the_data(arrays):
    """Other data give another image; the same data give the same bytes (deterministic)."""
    panel = ParityPanel(arrays['force_reference'], arrays['force_predicted'], quantity='F', unit='eV/Å')
    first = parity_png([panel])
    assert parity_png([panel]) == first
    moved = ParityPanel(arrays['force_reference'], -arrays['force_predicted'], quantity='F', unit='eV/Å')
    assert parity_png([moved]) != first
    one_panel, three_panels = png_size(first), png_size(parity_png([panel, panel, panel]))
    assert three_panels[0] > 2.5 * one_panel[0]
    with pytest.raises(ValueError, match='no panels'):
        parity_png([])


def test_energy_panel_is_per_atom(arrays):
    """Energies are divided by the atoms per frame (a number or one per frame) before plotting."""
    natoms = np.full(6, 16)
    assert energy_force_parity_png(
        arrays['energy_reference'], arrays['energy_predicted'], natoms,
        arrays['force_reference'], arrays['force_predicted'],
    ) == energy_force_parity_png(
        arrays['energy_reference'], arrays['energy_predicted'], 16,
        arrays['force_reference'], arrays['force_predicted'],
    )  # fmt: skip
    with pytest.raises(ValueError, match='natoms must be positive'):
        energy_force_parity_png(np.zeros(2), np.zeros(2), 0, np.zeros(3), np.zeros(3))


def test_png_size_refuses_other_bytes():
    """Bytes without the PNG signature and IHDR chunk are refused."""
    with pytest.raises(ValueError, match='not a PNG'):
        png_size(b'GIF89a' + bytes(30))
    with pytest.raises(ValueError, match='not a PNG'):
        png_size(PNG_SIGNATURE)


def test_module_imports_no_aiida():
    """The plotting module stays pure: importing it leaves ``aiida`` out of ``sys.modules``."""
    code = 'import sys, aiida_lisei.reporting.plots; sys.exit(1 if "aiida" in sys.modules else 0)'
    result = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stderr[-2000:]
