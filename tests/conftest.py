"""Shared test helpers."""

import numpy as np
import pytest


def check_plot(path, size: tuple[int, int] | None = None, min_size: tuple[int, int] = (300, 200)):
    """A PNG that is a real plot: it decodes, has `size` (width, height) pixels (or at least
    `min_size`), and is neither blank nor a solid fill: some pixels are ink, some are coloured.
    Returns the decoded image (float RGB(A) in [0, 1])."""
    import matplotlib.image as mpimg

    img = mpimg.imread(str(path))
    h, w = img.shape[:2]
    if size is not None:
        assert (w, h) == size, f"{path}: {w}×{h} pixels, expected {size[0]}×{size[1]}"
    else:
        assert w >= min_size[0] and h >= min_size[1], f"{path}: only {w}×{h} pixels"
    rgb = img[..., :3].astype(float)
    ink = np.any(rgb < 0.9, axis=-1).mean()  # axes, ticks, text, data
    colour = ((rgb.max(axis=-1) - rgb.min(axis=-1)) > 0.25).mean()  # lines and markers drawn in colour
    assert 0.005 < ink < 0.95, f"{path}: {ink:.1%} of the pixels are ink (blank or a solid fill)"
    assert colour > 0.0005, f"{path}: no coloured pixels (no data drawn)"
    return img


@pytest.fixture
def plot_check():
    return check_plot


@pytest.fixture
def one_thread(monkeypatch):
    """Train with one intra-op thread (DELPHI_THREADS=1) and restore torch's count afterwards:
    the same thread count everywhere keeps float reductions, and so runs, reproducible."""
    import torch

    threads = torch.get_num_threads()
    monkeypatch.setenv("DELPHI_THREADS", "1")
    yield
    torch.set_num_threads(threads)
