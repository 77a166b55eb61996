"""``--crop cell``: find the stained white cell and crop a square around it at a fixed
multiple of its size, so 120-px, 300-px and 360-px crops of different labs put the cell at
the same scale.

Detection (on a copy at most 192 px on its long side): the haematoxylin channel of
scikit-image's HED deconvolution, Otsu's threshold over the non-black pixels (black
padding is ignored), a small opening (drops platelets and
noise), hole filling; the components are scored by area × a Gaussian weight of their
centroid's distance from the image centre (σ = half the short side) and the best one is
the cell; other components close to it (lobes of a segmented nucleus, a basophil's
granules) are merged into it. The crop is a square of side :data:`CELL_MULTIPLE` × the
longer side of the cell's bounding box, centred on the box; where it runs past the image
it is padded with the smear's background colour.

``--crop lab`` keeps the cell's *absolute* size instead: the images loaded together are one
lab (or, where a set's top folders each hold several classes, each top folder is one:
zheng2018's two sources), the lab's typical cell size is the median of its detected cells'
box sides, and every crop is a square of :data:`LAB_MULTIPLE` × that size centred on its own
cell. A monocyte stays larger than a lymphocyte of the same lab, while a lab imaged at another
magnification is brought to the source's scale (the per-cell crop makes every cell the same
size, which costs exactly the size cue between those two classes).
"""
from __future__ import annotations

import numpy as np

#: Crop side / longer side of the detected cell's bounding box. 1.8 leaves a ring of
#: background about 0.4 cell-widths wide: the whole cell with its context, at the same
#: scale in every dataset (on pbc-dev about the framing of the paper's 200-px crop).
CELL_MULTIPLE = 1.8
#: Crop side / the lab's median cell side for ``--crop lab``: on pbc-dev (median ~120 px in a
#: 360-px crop) a ~200-px square, the framing of the paper's crop.
LAB_MULTIPLE = 1.65
_WORK_SIDE = 192
_MIN_AREA, _MAX_AREA = 0.004, 0.85      # of the image: smaller = debris, larger = no contrast


class NoCell(Exception):
    """Carries why no cell was found (the loader then falls back to the default crop)."""


def cell_mask(rgb: np.ndarray) -> np.ndarray:
    """Boolean mask of the stained cell in an H×W×3 uint8 image (raises :class:`NoCell`)."""
    from skimage import color, filters, measure, morphology
    from scipy import ndimage as ndi

    h, w = rgb.shape[:2]
    hem = color.rgb2hed(rgb)[..., 0]
    lit = rgb.max(-1) > 40          # black padding (rotated/letterboxed crops) is not stain
    if lit.sum() < 0.2 * lit.size or float(np.ptp(hem[lit])) < 1e-3:
        raise NoCell("no stain contrast (blank image?)")
    thr = filters.threshold_otsu(hem[lit])
    mask = (hem > thr) & lit
    r = max(1, round(min(h, w) / 100))
    mask = ndi.binary_opening(mask, morphology.disk(r))
    mask = ndi.binary_fill_holes(mask)
    lab = measure.label(mask)
    props = measure.regionprops(lab)
    if not props:
        raise NoCell("no stained object above the Otsu threshold")
    cy, cx, sig = (h - 1) / 2, (w - 1) / 2, min(h, w) / 2
    score = [p.area * np.exp(-((p.centroid[0] - cy) ** 2 + (p.centroid[1] - cx) ** 2) / (2 * sig ** 2))
             for p in props]
    best = props[int(np.argmax(score))]
    y0, x0, y1, x1 = best.bbox
    side = max(y1 - y0, x1 - x0)
    keep = np.zeros_like(mask)
    for p in props:  # merge nearby pieces of the same cell (lobes, granule clusters)
        py0, px0, py1, px1 = p.bbox
        gap = max(y0 - py1, py0 - y1, x0 - px1, px0 - x1, 0)
        if p.label == best.label or (gap <= 0.15 * side and p.area >= 0.02 * best.area):
            keep |= lab == p.label
    frac = keep.mean()
    if frac < _MIN_AREA:
        raise NoCell(f"largest stained object is only {frac:.1%} of the image")
    if frac > _MAX_AREA:
        raise NoCell(f"stained area covers {frac:.0%} of the image (no distinct cell)")
    return ndi.binary_fill_holes(ndi.binary_closing(keep, morphology.disk(r)))


def cell_geometry(rgb: np.ndarray) -> tuple[float, float, float]:
    """(centre y, centre x, longer side) of the detected cell's bounding box in ``rgb``'s pixel
    coordinates. Raises :class:`NoCell`."""
    from PIL import Image

    h, w = rgb.shape[:2]
    scale = min(1.0, _WORK_SIDE / max(h, w))
    small = rgb if scale == 1.0 else np.asarray(
        Image.fromarray(rgb).resize((max(1, round(w * scale)), max(1, round(h * scale))), Image.Resampling.BILINEAR))
    mask = cell_mask(small)
    ys, xs = np.nonzero(mask)
    y0, y1, x0, x1 = ys.min() / scale, (ys.max() + 1) / scale, xs.min() / scale, (xs.max() + 1) / scale
    return (y0 + y1) / 2, (x0 + x1) / 2, max(y1 - y0, x1 - x0)


def square_box(cy: float, cx: float, side: float) -> tuple[int, int, int, int]:
    """(left, top, right, bottom) of the square of ``side`` centred on (cy, cx)."""
    left, top = round(cx - side / 2), round(cy - side / 2)
    s = max(8, round(side))
    return left, top, left + s, top + s


def cell_box(rgb: np.ndarray, multiple: float = CELL_MULTIPLE) -> tuple[int, int, int, int]:
    """(left, top, right, bottom) of the square cell crop in ``rgb``'s pixel coordinates
    (may extend past the image). Raises :class:`NoCell`."""
    h, w = rgb.shape[:2]
    cy, cx, cell = cell_geometry(rgb)
    if multiple * cell > 1.4 * max(h, w):
        raise NoCell(f"the stained region is {cell / max(h, w):.0%} of the image "
                     "(cells touching or cut by the border)")
    return square_box(cy, cx, multiple * cell)


def lab_side(cell_sides) -> float:
    """A lab's ``--crop lab`` square side from its detected cells' sides (px)."""
    return LAB_MULTIPLE * float(np.median(np.asarray(cell_sides, dtype=np.float64)))


def background(rgb: np.ndarray) -> tuple[int, int, int]:
    """The smear's background colour: the median of the brighter half of the lit pixels (black
    rotation / letterbox padding and the stained cells left out)."""
    px = rgb.reshape(-1, 3)
    px = px[px.max(-1) > 40] if (px.max(-1) > 40).any() else px
    light = px.astype(np.int32).sum(-1)
    return tuple(int(v) for v in np.median(px[light >= np.median(light)], 0))


def crop_square(im, box: tuple[int, int, int, int]):
    """``im`` (PIL RGB) cropped to ``box``, padded with the smear's :func:`background` colour
    where the box leaves the image."""
    from PIL import Image

    left, top, right, bottom = box
    w, h = im.size
    if left >= 0 and top >= 0 and right <= w and bottom <= h:
        return im.crop(box)
    out = Image.new("RGB", (right - left, bottom - top), background(np.asarray(im, dtype=np.uint8)))
    out.paste(im, (-left, -top))
    return out


def crop_cell(im, multiple: float = CELL_MULTIPLE):
    """A PIL RGB image → the square cell crop (PIL), padded with the background colour
    where the square leaves the image. Raises :class:`NoCell`."""
    return crop_square(im, cell_box(np.asarray(im, dtype=np.uint8), multiple))
