"""Stain maths as batched tensor ops: scikit-image's HED colour deconvolution
(``rgb2hed``/``hed2rgb``, Ruifrok & Johnston 2001) and colour normalisers fitted on a
reference set and applied at load time — Reinhard (LAB mean/std matching), Macenko
(optical-density stain vectors) and MKL (the optimal-transport map of optical-density
moments) per image, or ``mkl-lab``: one MKL map per lab, fitted on the lab's unlabelled
images. Images are float N×3×H×W in [0, 1] (augmentation) or uint8 N×3×H×W (normalisers).
A normaliser is a small JSON-able dict stored in the run's config.json, so inference applies
exactly the transform training used.
"""
from __future__ import annotations

import math

import torch

#: skimage.color.rgb_from_hed and its inverse hed_from_rgb (rows: haematoxylin, eosin, DAB).
RGB_FROM_HED = ((0.65, 0.70, 0.29), (0.07, 0.99, 0.11), (0.27, 0.57, 0.78))
HED_FROM_RGB = ((1.8779827368521356, -1.0076786862855642, -0.5561158181996246),
                (-0.06590806222356334, 1.1347303724996625, -0.13552179862837116),
                (-0.6019073634392891, -0.4804141884970579, 1.5735880719641926))
_LOG_ADJUST = math.log(1e-6)
METHODS = ("reinhard", "macenko", "mkl", "mkl-lab")


def _mat(rows, x: torch.Tensor) -> torch.Tensor:
    return torch.tensor(rows, dtype=x.dtype, device=x.device)


def rgb_to_hed(x: torch.Tensor, clamp: bool = True) -> torch.Tensor:
    """``skimage.color.rgb2hed`` for a float N×3×H×W batch in [0, 1] (stains clamped at 0
    like skimage's; ``clamp=False`` keeps the negative parts so that ``hed_to_rgb`` inverts
    it exactly — skimage's clamped round trip shifts the pale background by about 5 %)."""
    od = x.clamp_min(1e-6).log() / _LOG_ADJUST
    s = torch.einsum("nchw,cd->ndhw", od, _mat(HED_FROM_RGB, x))
    return s.clamp_min_(0) if clamp else s


def hed_to_rgb(s: torch.Tensor) -> torch.Tensor:
    """``skimage.color.hed2rgb`` for a N×3×H×W stain batch; RGB clipped to [0, 1]."""
    log_rgb = torch.einsum("nchw,cd->ndhw", s * _LOG_ADJUST, _mat(RGB_FROM_HED, s))
    return log_rgb.exp().clamp_(0, 1)


# ------------------------------------------------------------------------------ normalisers
def _lab(x_u8: torch.Tensor):
    from skimage.color import rgb2lab

    return rgb2lab(x_u8.permute(0, 2, 3, 1).numpy())           # N×H×W×3 float64


def _foreground(lab) -> "object":
    """Pixels that are not bright background (L < 90): the cell, whose stain matters."""
    return lab[..., 0] < 90


def fit(method: str, images_u8: torch.Tensor, max_images: int = 256, seed: int = 0) -> dict:
    """Fit a normaliser on a reference set (uint8 N×3×H×W; a seeded sample of at most
    ``max_images`` is used)."""
    from classifiers.runtime import UserError

    if method not in METHODS:
        raise UserError(f"--stain-norm must be {', '.join(METHODS[:-1])} or {METHODS[-1]}, not {method!r}")
    if len(images_u8) == 0:
        raise UserError("the stain reference holds no images")
    if len(images_u8) > max_images:
        idx = torch.randperm(len(images_u8), generator=torch.Generator().manual_seed(seed))[:max_images]
        images_u8 = images_u8[idx.sort().values]
    if method == "reinhard":
        lab = _lab(images_u8).reshape(-1, 3)
        return {"method": "reinhard", "lab_mean": lab.mean(0).tolist(), "lab_std": lab.std(0).tolist(),
                "n_reference": len(images_u8)}
    x = images_u8.float()
    backs = torch.stack([_background(img) for img in x])
    if method in ("mkl", "mkl-lab"):
        moments = [_od_moments(img, b) for img, b in zip(x, backs)]
        n = sum(k for _, _, k in moments)
        if n == 0:
            raise UserError("the stain reference has no stained pixels")
        second = sum(m * k for _, m, k in moments) / n
        return {"method": method, "od_second_moment": second.tolist(), "background": backs.median(0).values.tolist(),
                "n_reference": len(images_u8)}
    od = torch.cat([_od(img, b)[:, _lit(img)] for img, b in zip(x, backs)], 1)
    he = _macenko_vectors(od)
    conc = _concentrations(od, he)
    return {"method": "macenko", "stain_matrix": he.T.tolist(),
            "max_conc": torch.quantile(_sample(conc), 0.99, dim=1).tolist(),
            "background": backs.median(0).values.tolist(), "n_reference": len(images_u8)}


def apply(norm: dict | None, images_u8: torch.Tensor, chunk: int = 256) -> torch.Tensor:
    """Apply a fitted normaliser to a uint8 N×3×H×W tensor (``None``: unchanged). ``mkl-lab``
    without a fixed map (:func:`for_set`) treats ``images_u8`` as one lab's images."""
    if not norm:
        return images_u8
    norm = for_set(norm, images_u8)
    out = torch.empty_like(images_u8)
    fn = {"reinhard": _reinhard, "macenko": _macenko, "mkl": _mkl, "mkl-lab": _mkl}[norm["method"]]
    for i in range(0, len(images_u8), chunk):
        out[i:i + chunk] = fn(norm, images_u8[i:i + chunk])
    return out


def _reinhard(norm: dict, x_u8: torch.Tensor) -> torch.Tensor:
    """Per image: every LAB channel shifted/scaled to the reference mean and std."""
    import numpy as np
    from skimage.color import lab2rgb

    lab = _lab(x_u8)
    mean = lab.reshape(len(lab), -1, 3).mean(1)[:, None, None, :]
    std = lab.reshape(len(lab), -1, 3).std(1)[:, None, None, :]
    ref_m, ref_s = np.asarray(norm["lab_mean"]), np.asarray(norm["lab_std"])
    lab = (lab - mean) / np.maximum(std, 1e-6) * ref_s + ref_m
    lab[..., 0] = lab[..., 0].clip(0, 100)
    rgb = lab2rgb(lab)
    return torch.from_numpy((rgb * 255 + 0.5).clip(0, 255).astype(np.uint8)).permute(0, 3, 1, 2)


# Macenko et al. 2009: optical density, the plane of the two main OD directions, the extreme
# angles (1st/99th percentile) as the two stain vectors, concentrations by least squares,
# their 99th percentile scaled to the reference's. One departure for blood smears: the
# light that reaches the camera (I0) is each image's own background colour, not white —
# a CellaVision background is beige, another lab's yellow; with I0 = 255 that tint counts
# as stain, gets mapped onto the stain vectors and turns the background purple. Dividing by
# the image's background (the median colour of its brightest 10 %) and rebuilding with the
# reference's background white-balances the image as part of the normalisation.
_IO, _BETA = 255.0, 0.15
#: An image's own stain vectors are used only if each lies within ~37° of the reference's
#: (cosine 0.8); otherwise its stains are unmixed with the reference vectors.
_MIN_COS = 0.8


def _background(img: torch.Tensor) -> torch.Tensor:
    """The per-channel colour (0..255) of an image's background: the median of its
    brightest 10 % of pixels (black padding is never among them)."""
    flat = img.reshape(3, -1)
    lum = flat.mean(0)
    bright = lum >= torch.quantile(_sample(lum[None])[0], 0.9)
    return flat[:, bright].median(1).values.clamp(30.0, _IO)


def _lit(img: torch.Tensor) -> torch.Tensor:
    """Pixels (flattened) that are not black padding of a rotated or letterboxed crop."""
    return img.reshape(3, -1).amax(0) > 40


def _od(x: torch.Tensor, background: torch.Tensor | None = None) -> torch.Tensor:
    """3×P optical density of a 3×H×W image relative to ``background`` (white if None)."""
    io = torch.full((3,), _IO) if background is None else background
    return (-torch.log((x.reshape(3, -1) + 1) / (io.view(3, 1) + 1))).clamp_min(0)


def _sample(t: torch.Tensor, n: int = 200_000) -> torch.Tensor:
    """At most n columns (quantile() has a size limit), evenly spaced."""
    return t if t.shape[1] <= n else t[:, torch.linspace(0, t.shape[1] - 1, n).long()]


def _macenko_vectors(od: torch.Tensor, white: bool = False) -> torch.Tensor:
    """3×2 unit stain vectors (haematoxylin first) from 3×P optical densities: of the
    pixels whose OD norm exceeds β (``white``: every channel's, as runs saved before the
    per-image background did)."""
    keep = (od > _BETA).all(0) if white else od.norm(dim=0) > _BETA
    v = od[:, keep] if int(keep.sum()) >= 50 else od
    v = _sample(v.double())
    _, vecs = torch.linalg.eigh(torch.cov(v))
    plane = vecs[:, 1:3]                                   # the two largest eigenvalues
    plane = plane * torch.where(plane[0] < 0, -1.0, 1.0).to(plane)   # point into positive OD
    proj = plane.T @ v
    phi = torch.atan2(proj[1], proj[0])
    lo, hi = torch.quantile(phi, 0.01), torch.quantile(phi, 0.99)
    a = plane @ torch.stack([torch.cos(lo), torch.sin(lo)])
    b = plane @ torch.stack([torch.cos(hi), torch.sin(hi)])
    he = torch.stack([a, b], 1) if a[0] > b[0] else torch.stack([b, a], 1)
    return (he / he.norm(dim=0, keepdim=True)).float()


def _concentrations(od: torch.Tensor, he: torch.Tensor) -> torch.Tensor:
    return torch.linalg.lstsq(he, od).solution                 # 2×P


def _macenko(norm: dict, x_u8: torch.Tensor) -> torch.Tensor:
    ref_he = torch.tensor(norm["stain_matrix"]).T              # 3×2
    ref_max = torch.tensor(norm["max_conc"])
    per_image = "background" in norm   # runs saved before 2026-12-01 used a white I0
    ref_io = torch.tensor(norm["background"]) if per_image else torch.full((3,), _IO)
    out = []
    for img in x_u8.float():
        od = _od(img, _background(img) if per_image else None)
        lit = _lit(img) if per_image else torch.ones(od.shape[1], dtype=torch.bool)
        he = _macenko_vectors(od[:, lit], white=not per_image)
        if per_image and float((he * ref_he).sum(0).min()) < _MIN_COS:
            he = ref_he  # implausible estimate (e.g. RBCs and a blue nucleus as the extremes)
        c = _concentrations(od, he).clamp_min(0)
        c = c * (ref_max / torch.quantile(_sample(c[:, lit]), 0.99, dim=1).clamp_min(1e-6)).view(2, 1)
        rgb = (ref_io.view(3, 1) + 1) * torch.exp(-(ref_he @ c)) - 1
        out.append(rgb.reshape(img.shape).round_().clamp_(0, 255).to(torch.uint8))
    return torch.stack(out)


# MKL: the Monge-Kantorovich linear colour map (Pitie & Kokaram 2007) in optical density. Each
# image's OD (against its own background, as above) is mapped by the linear map that carries the
# second moments E[od odᵀ] of its stained pixels onto the reference's: the optimal-transport map
# between the two zero-mean Gaussians, A = M⁻½ (M½ R M½)½ M⁻½. Uncentred moments keep OD 0 at 0, so the
# background stays background; all three OD directions survive, so an eosinophil's orange granules
# stay distinct from a neutrophil's lilac ones (a two-stain Macenko model cannot represent them).
def _psd_power(m: torch.Tensor, power: float) -> torch.Tensor:
    w, v = torch.linalg.eigh(m)
    return (v * w.clamp_min(1e-8) ** power) @ v.T


def _od_moments(img: torch.Tensor, background: torch.Tensor | None = None):
    """(od 3×P of every pixel, E[od odᵀ] of the stained non-padding pixels (float64), their count);
    the OD is against ``background`` (default: the image's own, :func:`_background`)."""
    od = _od(img, _background(img) if background is None else background)
    f = od[:, _lit(img) & (od.norm(dim=0) > _BETA)].double()
    return od, f @ f.T / max(1, f.shape[1]), f.shape[1]


def _ot_map(m: torch.Tensor, k: int, ref: torch.Tensor) -> torch.Tensor:
    """The 3×3 map carrying second moment ``m`` (of ``k`` stained pixels) onto ``ref``."""
    if k < 50:              # no stain to match (a blank frame): white balance only
        return torch.eye(3, dtype=torch.float64)
    half, inv_half = _psd_power(m, 0.5), _psd_power(m, -0.5)
    return inv_half @ _psd_power(half @ ref @ half, 0.5) @ inv_half


# mkl-lab: ONE map per lab, from the second moment of all its images' stained pixels pooled. A lab's stain
# is a property of the lab; what differs from image to image within a lab is mostly the cell (a basophil
# is dark all over, a lymphocyte small) — per-image MKL maps that class content onto the reference's mean
# too, which costs the source lab's own accuracy. Pooled over a lab, the cells average out and only the
# lab's stain is corrected (on the reference lab's images the map is ~the identity). Each image keeps its
# own background (brightness / white balance still per image). Transductive: the lab's images are used
# without labels; a single image is its own "lab" (= per-image MKL).
def for_set(norm: dict | None, images_u8: torch.Tensor, refit: bool = False) -> dict | None:
    """``mkl-lab``: the normaliser with the map of this set of one lab's images fixed
    (``lab_matrix``); any other normaliser, or one whose map is fixed already (unless ``refit``), unchanged."""
    if not norm or norm["method"] != "mkl-lab" or ("lab_matrix" in norm and not refit):
        return norm
    total, n = torch.zeros(3, 3, dtype=torch.float64), 0
    for img in images_u8.float():
        _, m, k = _od_moments(img)
        total, n = total + m * k, n + k
    ref = torch.tensor(norm["od_second_moment"], dtype=torch.float64)
    return norm | {"lab_matrix": _ot_map(total / max(n, 1), n, ref).tolist(), "lab_images": len(images_u8)}


def _mkl(norm: dict, x_u8: torch.Tensor) -> torch.Tensor:
    ref = torch.tensor(norm["od_second_moment"], dtype=torch.float64)
    ref_io = torch.tensor(norm["background"])
    fixed = torch.tensor(norm["lab_matrix"], dtype=torch.float64) if "lab_matrix" in norm else None
    out = []
    for img in x_u8.float():
        if fixed is not None:   # the lab's map: this image's own moments are not needed
            od, a = _od(img, _background(img)), fixed
        else:
            od, m, k = _od_moments(img)
            a = _ot_map(m, k, ref)
        rgb = (ref_io.view(3, 1) + 1) * torch.exp(-(a.float() @ od).clamp_min(0)) - 1
        out.append(rgb.reshape(img.shape).round_().clamp_(0, 255).to(torch.uint8))
    return torch.stack(out)
