"""Tests of the nucleation figures of `aiida_lisei.reporting.plots`: PNG bytes, colours where they belong."""

from __future__ import annotations

import io

import numpy as np
import pytest
from matplotlib.colors import to_rgb

from aiida_lisei.reporting.plots import (
    CLUSTER_COLOUR,
    PNG_SIGNATURE,
    ChargePanel,
    charge_histograms_png,
    cluster_growth_png,
    png_size,
    rdf_png,
    snapshot_png,
)


def decode(png: bytes) -> np.ndarray:
    """RGB image (floats in [0, 1]) of PNG bytes."""
    import matplotlib.image

    return matplotlib.image.imread(io.BytesIO(png), format='png')[..., :3]


def has_colour(image: np.ndarray, colour: str, tolerance: float = 0.02) -> bool:
    """Whether some pixel of ``image`` has ``colour``."""
    return bool(np.any(np.all(np.abs(image - np.array(to_rgb(colour))) < tolerance, axis=-1)))


@pytest.fixture
def slab() -> tuple[np.ndarray, np.ndarray, list[str]]:
    """A toy slab: 40 Li below z = 10 Å, 20 S above; cell 10 x 10 x 40 Å."""
    rng = np.random.default_rng(0)
    li = np.column_stack([rng.uniform(0, 10, 40), rng.uniform(0, 10, 40), rng.uniform(0, 10, 40)])
    s = np.column_stack([rng.uniform(0, 10, 20), rng.uniform(0, 10, 20), rng.uniform(12, 20, 20)])
    return np.vstack([li, s]), np.diag([10.0, 10.0, 40.0]), ['Li'] * 40 + ['S'] * 20


def test_charge_histograms(slab) -> None:
    """One panel per time; the cluster's filled wine bars appear only when the cluster has atoms."""
    edges = np.linspace(-1.5, 1.5, 61)
    anode = np.histogram(np.full(30, 0.02), edges)[0]
    electrolyte = np.histogram(np.full(30, 0.55), edges)[0]
    cluster = np.histogram(np.full(12, 0.1), edges)[0]
    panels = [
        ChargePanel(100.0, {'anode': anode, 'electrolyte': electrolyte, 'cluster': np.zeros(60)}),
        ChargePanel(
            125.0, {'anode': anode, 'electrolyte': electrolyte, 'cluster': cluster}, {'cluster': 0.1}
        ),
    ]
    png = charge_histograms_png(edges, panels, title='test')
    assert png.startswith(PNG_SIGNATURE)
    width, height = png_size(png)
    assert width > height
    assert width > png_size(charge_histograms_png(edges, panels[:1]))[0]
    assert has_colour(decode(png), CLUSTER_COLOUR, 0.15)  # the filled bars are drawn with alpha 0.6
    assert not has_colour(decode(charge_histograms_png(edges, panels[:1])), CLUSTER_COLOUR, 0.15)
    with pytest.raises(ValueError, match='bins'):
        charge_histograms_png(edges, [ChargePanel(0.0, {'anode': anode[:10]})])
    with pytest.raises(ValueError, match='no charge panels'):
        charge_histograms_png(edges, [])


def test_rdf() -> None:
    """Both curves and the paper's peaks; an empty cluster RDF leaves only the anode curve."""
    r = np.arange(0.0, 6.0, 0.01)
    peak = lambda r0: np.exp(-0.5 * ((r - r0) / 0.05) ** 2)  # noqa: E731
    png = rdf_png(r, peak(2.75), peak(2.96), cluster_nn=2.75, reference_nn=2.96, title='t')
    image = decode(png)
    assert has_colour(image, CLUSTER_COLOUR) and has_colour(image, 'tab:blue')
    empty = decode(rdf_png(r, np.zeros_like(r), peak(2.96), paper_cluster_nn=None))
    assert not has_colour(empty, CLUSTER_COLOUR)
    with pytest.raises(ValueError, match='radii'):
        rdf_png(r, peak(2.75)[:-1], peak(2.96))


def test_cluster_growth() -> None:
    """Cluster size with the CV on a second axis (purple line only with a CV)."""
    time = np.arange(7) * 25.0
    sizes = [0, 0, 2, 3, 4, 14, 16]
    with_cv = cluster_growth_png(
        time,
        sizes,
        onset_size=10,
        onset_time=125.0,
        cv_time=np.linspace(0, 150, 31),
        cv=np.linspace(0, 5, 31),
    )
    without = cluster_growth_png(time, sizes, onset_size=10, onset_time=125.0)
    assert has_colour(decode(with_cv), 'tab:purple') and not has_colour(decode(without), 'tab:purple')
    assert png_size(with_cv)[0] > png_size(without)[0] - 1
    with pytest.raises(ValueError, match='equal non-empty'):
        cluster_growth_png(time, sizes[:-1])
    with pytest.raises(ValueError, match='same shape'):
        cluster_growth_png(time, sizes, cv_time=[0.0, 1.0], cv=[1.0])


def test_snapshot(slab) -> None:
    """The cluster is drawn in wine; charges add a second panel (a wider figure)."""
    positions, cell, species = slab
    plain = snapshot_png(positions, cell, species)
    cluster = snapshot_png(positions, cell, species, highlight=[0, 1, 2], boundary_z=10.5)
    charged = snapshot_png(positions, cell, species, highlight=[0, 1, 2], charges=np.linspace(0, 1, 60))
    assert not has_colour(decode(plain), CLUSTER_COLOUR)
    assert has_colour(decode(cluster), CLUSTER_COLOUR)
    assert png_size(charged)[0] > png_size(cluster)[0]
    with pytest.raises(ValueError, match='charges must be'):
        snapshot_png(positions, cell, species, charges=np.zeros(3))
    with pytest.raises(ValueError, match='positions must be'):
        snapshot_png(positions[:5], cell, species)
