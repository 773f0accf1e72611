"""Save matplotlib figures as small PNGs, so the charts committed under reports/ keep the tree light."""

import io
from pathlib import Path

from matplotlib.figure import Figure
from PIL import Image

COLORS = 256


def save_png(fig: Figure, path: Path, **savefig_kwargs) -> None:
    """Write `fig` to `path` as a 256-colour palette PNG, about a third of matplotlib's full-colour file."""
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", **savefig_kwargs)
    buffer.seek(0)
    image = Image.open(buffer).convert("RGB").quantize(COLORS)
    partial = Path(path).with_name(f".{Path(path).name}.partial")
    image.save(partial, format="PNG", optimize=True)
    partial.replace(path)
