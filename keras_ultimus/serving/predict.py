"""Reading images to classify, in bounded memory, and ranking a model's class probabilities.

An input is an image file of any size, mode and format Pillow reads (resized to 32x32 RGB), a `.npy` uint8 batch of
shape (N, 32, 32, 3), or a folder of them. `batches` streams them, so memory stays about one batch for any number.
"""

import os
import warnings
from collections.abc import Callable, Iterable, Iterator

import numpy as np
from PIL import Image

from keras_ultimus.errors import one_line

BATCH_SIZE = 256
TOP_K = 3
# 16-bit and 32-bit integer modes: Pillow's convert("RGB") clips them at 255 instead of scaling.
WIDE_MODES = {"I;16": 65535, "I;16L": 65535, "I;16B": 65535, "I;16N": 65535, "I": 65535, "F": 255}


class ImageError(Exception):
    """An input that isn't a readable image; its message is one line naming the file."""


def to_rgb8(image: Image.Image) -> Image.Image:
    """Any Pillow mode as 8-bit RGB: wide integer modes scaled down, palettes through RGBA."""
    if image.mode in WIDE_MODES:
        pixels = np.asarray(image, np.float64) * (255 / WIDE_MODES[image.mode])
        image = Image.fromarray(np.clip(np.rint(pixels), 0, 255).astype(np.uint8), "L")
    elif image.mode == "P":
        image = image.convert("RGBA")  # applies the palette's transparency without a warning
    return image.convert("RGB")


def read_image(path: str | os.PathLike) -> np.ndarray:
    """Pixels (32, 32, 3) uint8 of one image file, resized with Pillow's antialiasing bilinear filter."""
    with warnings.catch_warnings():
        # Pillow warns above MAX_IMAGE_PIXELS and refuses (DecompressionBombError) above twice that.
        # Between the two the image is valid, just big: read it quietly.
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        with Image.open(path) as image:
            image = to_rgb8(image).resize((32, 32), Image.Resampling.BILINEAR)
    return np.asarray(image, np.uint8)


class NpyImages:
    """The images of a `.npy` uint8 (N, 32, 32, 3) file, read from disk one slice at a time.

    Not memory-mapped: the pages of a mapped file count as the process's memory once read, all N of them.
    """

    def __init__(self, path: str):
        self.path = path
        with open(path, "rb") as f:
            major, _ = np.lib.format.read_magic(f)
            if major not in (1, 2):
                raise ValueError(f".npy format version {major} (re-save it with numpy.save)")
            reader = (
                np.lib.format.read_array_header_1_0
                if major == 1
                else np.lib.format.read_array_header_2_0
            )
            shape, fortran_order, dtype = reader(f)
            self.offset = f.tell()
        shape = (1, *shape) if len(shape) == 3 else shape
        if dtype != np.uint8 or tuple(shape[1:]) != (32, 32, 3) or fortran_order:
            order = " (Fortran order)" if fortran_order else ""
            raise ImageError(
                f"{path}: .npy must be uint8 (N, 32, 32, 3), got {dtype} {tuple(shape)}{order}"
            )
        self.shape = tuple(shape)
        if os.path.getsize(path) < self.offset + np.prod(self.shape):
            raise ValueError("the file is shorter than its header says")

    def __len__(self) -> int:
        return self.shape[0]

    def __getitem__(self, rows: slice) -> np.ndarray:
        start, stop, _ = rows.indices(len(self))
        size = 32 * 32 * 3
        with open(self.path, "rb") as f:
            f.seek(self.offset + start * size)
            data = f.read(max(0, stop - start) * size)
        return np.frombuffer(data, np.uint8).reshape(-1, 32, 32, 3)


def read_units(path: str) -> Iterator[tuple[list[str], np.ndarray]]:
    """(names, uint8 pixels) of one image file, or of a `.npy` batch in slices of at most BATCH_SIZE."""
    if os.path.isfile(path) and os.path.getsize(path) == 0:
        raise ImageError(f"{path}: empty file, not an image")
    try:
        if path.endswith(".npy"):
            batch = NpyImages(path)
            for i in range(0, len(batch), BATCH_SIZE):
                part = batch[i : i + BATCH_SIZE]
                yield [f"{path}[{j}]" for j in range(i, i + len(part))], part
            return
        pixels = read_image(path)[None]
    except ImageError:
        raise
    except Image.DecompressionBombError as e:
        raise ImageError(f"{path}: too large to decode safely ({one_line(e)})") from None
    except Exception as e:  # a decoder fed arbitrary bytes can raise almost any type
        raise ImageError(
            f"{path}: not a readable image ({getattr(e, 'strerror', None) or one_line(e)})"
        ) from None
    yield [path], pixels


def input_files(path: str) -> Iterator[str]:
    """`path` itself, or the files of folder `path` in name order (not its subfolders).

    Plain strings, not `Path`s: pathlib interns every name it parses, which grows with the number of files.
    """
    if not os.path.isdir(path):
        return iter([path])
    with os.scandir(path) as entries:
        names = sorted(e.name for e in entries if e.is_file() and not e.name.startswith("."))
    if not names:
        raise ImageError(f"{path}: a folder with no files to classify")
    return (os.path.join(path, name) for name in names)


def readable_units(
    paths: Iterable[str | os.PathLike], on_error: Callable[[ImageError], None]
) -> Iterator[tuple[list[str], np.ndarray]]:
    """(names, pixels) of every readable input in order, read as needed; each unreadable one goes to `on_error`."""
    for path in map(os.fspath, paths):
        try:
            files = input_files(path)
        except ImageError as e:
            on_error(e)
            continue
        for file in files:
            try:
                yield from read_units(file)
            except ImageError as e:
                on_error(e)


def batches(
    paths: Iterable[str | os.PathLike],
    on_error: Callable[[ImageError], None],
    size: int = BATCH_SIZE,
) -> Iterator[tuple[list[str], np.ndarray]]:
    """(names, pixels) batches of `size` images over every readable input, read only as they are needed.

    A `.npy` is read a slice at a time and a folder is listed, not loaded: memory stays about one batch, however many
    images there are. Each unreadable input goes to `on_error` and is skipped.
    """
    names, buffer, count = [], np.empty((size, 32, 32, 3), np.uint8), 0
    for unit_names, unit in readable_units(paths, on_error):
        start = 0
        while start < len(unit):
            take = min(size - count, len(unit) - start)
            buffer[count : count + take] = unit[start : start + take]
            names += unit_names[start : start + take]
            count, start = count + take, start + take
            if count == size:
                yield names, buffer
                names, buffer, count = [], np.empty_like(buffer), 0
    if count:
        yield names, buffer[:count]


def read_images(path: str | os.PathLike) -> tuple[list[str], np.ndarray]:
    """Names and uint8 pixels (N, 32, 32, 3) of one input, all in memory; raises ImageError on an unreadable one."""

    def fail(error: ImageError) -> None:
        raise error

    parts = list(batches([path], fail))
    names = [name for part_names, _ in parts for name in part_names]
    return names, np.concatenate([p for _, p in parts]) if parts else np.zeros(
        (0, 32, 32, 3), np.uint8
    )


def top_classes(probabilities: np.ndarray, k: int = TOP_K) -> list[list[dict]]:
    """The `k` most likely classes per row, most likely first."""
    from keras_ultimus.constants import CLASS_NAMES

    order = np.argsort(-probabilities, axis=-1, kind="stable")[:, :k]
    return [
        [
            {"class_id": int(c), "class_name": CLASS_NAMES[c], "probability": float(row[c])}
            for c in top
        ]
        for row, top in zip(probabilities, order)
    ]
