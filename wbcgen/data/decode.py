"""Safe image decoding and preprocessing (crop → resize → RGB uint8).

Every failure becomes a *reason* string; nothing here raises for a bad file.
"""
from __future__ import annotations

import io
import warnings

import numpy as np
from PIL import Image, ImageFile

from classifiers.runtime import UserError

ImageFile.LOAD_TRUNCATED_IMAGES = False  # a truncated file is an error, not a grey image

#: Refuse images above this many pixels before decoding (decompression-bomb guard).
MAX_PIXELS = 40_000_000
#: Refuse images smaller than this on either side.
MIN_SIDE = 16
#: W-Net crop of 360×361 Sysmex images (top, bottom, left, right).
PAPER_CROP = (80, 81, 80, 80)
IMAGE_EXTS = {".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".gif", ".webp"}
#: The only decoders Pillow may use (whatever the file name says): the formats of IMAGE_EXTS.
#: Never EPS/PS (Ghostscript) or any other plugin Pillow would otherwise try.
DECODE_FORMATS = ("PNG", "JPEG", "BMP", "TIFF", "GIF", "WEBP")


class BadImage(Exception):
    """Carries the one-line reason why a file was skipped."""


def parse_crop(crop: str | None) -> tuple:
    """``auto`` | ``paper`` | ``center:SIZE`` | ``cell`` | ``lab`` | ``none`` → a normalised tuple."""
    c = (crop or "none").strip().lower()
    if c in ("auto", "paper", "none", "cell", "lab"):
        return (c,)
    if c.startswith("center:"):
        try:
            s = int(c.split(":", 1)[1])
        except ValueError:
            s = 0
        if s > 0:
            return ("center", s)
    raise UserError(f"--crop must be auto, paper, center:SIZE, cell, lab or none, got {crop!r}")


def to_rgb(im: Image.Image) -> Image.Image:
    """Grayscale, RGBA/LA (composited on white), palette, CMYK and 16-bit → 8-bit RGB."""
    if im.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I"):
        a = np.asarray(im, dtype=np.float64)
        hi = 65535.0 if a.max(initial=0) > 255 else 255.0
        a = np.clip(a / hi * 255.0 + 0.5, 0, 255).astype(np.uint8)
        return Image.fromarray(a, "L").convert("RGB")
    if im.mode == "F":
        a = np.asarray(im, dtype=np.float64)
        a = np.clip(a * (255.0 if a.max(initial=0) <= 1.0 else 1.0) + 0.5, 0, 255).astype(np.uint8)
        return Image.fromarray(a, "L").convert("RGB")
    if im.mode == "P":
        im = im.convert("RGBA")
    if im.mode in ("RGBA", "LA", "PA"):
        im = im.convert("RGBA")
        bg = Image.new("RGBA", im.size, (255, 255, 255, 255))
        return Image.alpha_composite(bg, im).convert("RGB")
    if im.mode != "RGB":
        return im.convert("RGB")
    return im


def crop_box(w: int, h: int, crop: tuple) -> tuple[int, int, int, int] | None:
    """PIL crop box (left, top, right, bottom) for ``crop`` on a ``w×h`` image, or None."""
    kind = crop[0]
    if kind == "auto":  # the paper crop fits Sysmex/CellaVision ~360-px crops; leave others whole
        kind = "paper" if 340 <= min(w, h) and max(w, h) <= 400 else "none"
    if kind == "none":
        return None
    if kind == "paper":
        t, b, l, r = PAPER_CROP
        if w - l - r < MIN_SIDE or h - t - b < MIN_SIDE:
            raise BadImage(f"{w}×{h} is too small for the paper crop (80/81/80/80); use --crop none or center:SIZE")
        return (l, t, w - r, h - b)
    s = crop[1]
    if s > min(w, h):
        raise BadImage(f"{w}×{h} is smaller than the center crop {s}")
    left, top = (w - s) // 2, (h - s) // 2
    return (left, top, left + s, top + s)


def open_rgb(data: bytes) -> tuple[Image.Image, tuple[int, int]]:
    """Bytes → (8-bit RGB PIL image, original (width, height)); :class:`BadImage` for anything unusable."""
    if not data:
        raise BadImage("empty file (0 bytes)")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            im = Image.open(io.BytesIO(data), formats=DECODE_FORMATS)
            w, h = im.size
            if w * h > MAX_PIXELS:
                raise BadImage(f"image is {w}×{h} pixels, over the {MAX_PIXELS:,}-pixel limit (decompression bomb?)")
            if min(w, h) < MIN_SIDE:
                raise BadImage(f"image is only {w}×{h} pixels (minimum side {MIN_SIDE})")
            im.load()
    except BadImage:
        raise
    except Image.DecompressionBombError:
        raise BadImage("image is over Pillow's decompression-bomb limit") from None
    except Exception as e:  # UnidentifiedImageError, OSError (truncated), SyntaxError (bad PNG chunk), ...
        msg = str(e).split("\n")[0]
        if "cannot identify image file" in msg:
            msg = "not a readable image (unknown format or not an image at all)"
        elif "truncated" in msg.lower():
            msg = "truncated image data"
        else:
            msg = f"corrupt image ({type(e).__name__}: {msg[:80]})"
        raise BadImage(msg) from None
    try:
        if getattr(im, "n_frames", 1) > 1:
            im.seek(0)
        return to_rgb(im), (w, h)
    except Exception as e:
        raise BadImage(f"corrupt image ({type(e).__name__}: {str(e)[:80]})") from None


def decode(data: bytes, crop: tuple, size: int | None, info: dict | None = None) -> tuple[np.ndarray, tuple[int, int]]:
    """Bytes → (H×W×3 uint8 array after crop/resize, original (width, height)).

    Raises :class:`BadImage` with a one-line reason for anything unusable. With
    ``crop=("cell",)`` the square cell crop of :mod:`wbcgen.data.cellcrop` is used; when no
    cell is found the ``auto`` crop is, and ``info["crop_fallback"]`` gets the reason.
    ``("box", left, top, right, bottom)`` is an explicit square (padded where it leaves the
    image): what :func:`wbcgen.data.load.load_cells` makes of ``lab`` once it knows the lab's
    scale; ``("lab",)`` alone treats the image as its own lab.
    """
    im, (w, h) = open_rgb(data)
    try:
        if crop[0] == "box":
            from .cellcrop import crop_square

            im = crop_square(im, tuple(crop[1:]))
        elif crop[0] in ("cell", "lab"):
            im = _cell_or_fallback(im, w, h, info, crop[0])
        else:
            box = crop_box(w, h, crop)
            if box is not None:
                im = im.crop(box)
        if size:
            im = im.resize((size, size), Image.Resampling.BICUBIC, reducing_gap=None)
        return np.asarray(im, dtype=np.uint8), (w, h)
    except BadImage:
        raise
    except Exception as e:
        raise BadImage(f"corrupt image ({type(e).__name__}: {str(e)[:80]})") from None


def _cell_or_fallback(im: Image.Image, w: int, h: int, info: dict | None, kind: str = "cell") -> Image.Image:
    from .cellcrop import CELL_MULTIPLE, LAB_MULTIPLE, NoCell, crop_cell

    try:
        return crop_cell(im, CELL_MULTIPLE if kind == "cell" else LAB_MULTIPLE)
    except NoCell as e:
        if info is not None:
            info["crop_fallback"] = f"no cell found ({e}); used --crop auto"
        box = crop_box(w, h, ("auto",))
        return im.crop(box) if box is not None else im
