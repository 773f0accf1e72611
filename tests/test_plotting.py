"""Charts are saved as small palette PNGs that keep what matplotlib drew."""

import numpy as np
from matplotlib.figure import Figure
from PIL import Image

from keras_ultimus.plotting import save_png


def test_save_png_writes_a_palette_png_close_to_the_full_colour_figure(tmp_path):
    fig = Figure(figsize=(3, 2))
    ax = fig.add_subplot()
    ax.plot(np.arange(10), np.arange(10) ** 2, color="tab:red")
    ax.set_title("squares")
    fig.savefig(tmp_path / "full.png", dpi=80)
    save_png(fig, tmp_path / "small.png", dpi=80)
    small = Image.open(tmp_path / "small.png")
    assert small.mode == "P"
    assert (tmp_path / "small.png").stat().st_size < (tmp_path / "full.png").stat().st_size
    full = np.asarray(Image.open(tmp_path / "full.png").convert("RGB"), dtype=float)
    assert np.abs(np.asarray(small.convert("RGB"), dtype=float) - full).mean() < 2.0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["full.png", "small.png"]
