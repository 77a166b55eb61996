"""Standard Inception-v3 features for FID/KID (torchmetrics' extractor), loaded safely.

The FID protocol is pinned: torchmetrics' ``NoTrainInceptionV3`` (the torch-fidelity
port of the TF1 "2015-12-05" FID network), 2048-d pool features, uint8 RGB input,
resized to 299×299 with the TF1-compatible bilinear resize (``antialias=False``), as
torch-fidelity does, so numbers agree with it.

The weights are never downloaded here. They are used when present: an explicit file
(``--inception-weights PATH`` or ``WBCGEN_INCEPTION_WEIGHTS``), else torch's hub cache
(``$TORCH_HOME/hub/checkpoints/weights-inception-2015-12-05-6726825d.pth``). They are read
with ``torch.load(weights_only=True)`` (or safetensors) and handed to the extractor; the
extractor's own loader (which unpickles) is bypassed.
"""
from __future__ import annotations

import contextlib
import hashlib
import os
import threading
from pathlib import Path

import torch

from classifiers.runtime import UserError

WEIGHTS_FILE = "weights-inception-2015-12-05-6726825d.pth"
FEATURE_DIM = 2048
INPUT_SIZE = 299
_lock = threading.Lock()


def find_inception_weights(path: str | os.PathLike | None = None) -> Path | None:
    """The weights file to use: ``path``, ``$WBCGEN_INCEPTION_WEIGHTS``, or the hub cache; None if absent."""
    if path is not None:
        p = Path(path)
        if not p.is_file():
            raise UserError(f"Inception weights file {p} does not exist")
        return p
    env = os.environ.get("WBCGEN_INCEPTION_WEIGHTS")
    if env:
        return find_inception_weights(env)
    cached = Path(torch.hub.get_dir()) / "checkpoints" / WEIGHTS_FILE
    return cached if cached.is_file() else None


def _read_state_dict(path: Path) -> dict:
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file
            return load_file(str(path))
        sd = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - any unreadable file is a user problem
        raise UserError(f"cannot read Inception weights {path} ({type(e).__name__}); "
                        "give a state-dict file (.pth or .safetensors)") from None
    if not isinstance(sd, dict) or not all(isinstance(v, torch.Tensor) for v in sd.values()):
        raise UserError(f"Inception weights {path} are not a plain state dict of tensors")
    return sd


def load_inception(path: str | os.PathLike | None = None):
    """``(extractor, info)``: torchmetrics' NoTrainInceptionV3 (2048-d, antialias=False), or
    ``(None, info)`` with ``info["note"]`` saying why FID/KID on Inception are not computed."""
    found = find_inception_weights(path)
    if found is None:
        return None, {"available": False, "note": (
            "Inception-v3 FID weights are not available offline (no --inception-weights file and none in "
            f"{Path(torch.hub.get_dir()) / 'checkpoints'}), so FID/KID on Inception features were not computed.")}
    try:
        import torch_fidelity.feature_extractor_inceptionv3 as tfi
        from torchmetrics.image.fid import NoTrainInceptionV3
    except ImportError:
        return None, {"available": False, "note": "torch-fidelity is not installed (pip install 'torchmetrics[image]'), "
                                                   "so FID/KID on Inception features were not computed."}
    sd = _read_state_dict(found)
    with _lock, _patched(tfi, "load_state_dict_from_url", lambda *a, **k: sd):
        try:
            net = NoTrainInceptionV3(name="inception-v3-compat", features_list=[str(FEATURE_DIM)], antialias=False)
        except RuntimeError as e:
            raise UserError(f"{found} does not hold the FID Inception-v3 weights ({str(e).splitlines()[0]})") from None
    h = hashlib.sha256(found.read_bytes()).hexdigest()
    return net, {"available": True, "weights": str(found), "weights_sha256": h}


@contextlib.contextmanager
def _patched(module, name, value):
    old = getattr(module, name)
    setattr(module, name, value)
    try:
        yield
    finally:
        setattr(module, name, old)


@torch.inference_mode()
def inception_features(net, images_u8: torch.Tensor, batch_size: int = 50, progress: bool = False,
                       device=None) -> torch.Tensor:
    """2048-d pool features (float64 on the CPU, N×2048) of uint8 N×3×H×W images; the
    network runs on ``device`` (default: where its weights are)."""
    from tqdm.auto import tqdm

    if images_u8.dtype != torch.uint8:
        raise ValueError("inception_features expects uint8 images")
    device = torch.device(device) if device is not None else next(net.parameters()).device
    net = net.to(device)
    out = []
    for i in tqdm(range(0, len(images_u8), batch_size), disable=not progress, desc="inception features", unit="batch"):
        out.append(net(images_u8[i:i + batch_size].to(device)).double().cpu())
    return torch.cat(out) if out else torch.zeros(0, FEATURE_DIM, dtype=torch.float64)


def protocol(info: dict) -> dict:
    """The pinned FID/KID protocol, recorded in results.json."""
    import torchmetrics

    try:
        import torch_fidelity
        tf_version = torch_fidelity.__version__
    except ImportError:
        tf_version = None
    return {
        "feature_extractor": "torchmetrics NoTrainInceptionV3 ('inception-v3-compat', TF1 FID weights 2015-12-05)",
        "feature_dim": FEATURE_DIM, "input": "uint8 RGB N×3×H×W",
        "resize": f"{INPUT_SIZE}×{INPUT_SIZE}, TF1-compatible bilinear (antialias=False, torch-fidelity parity)",
        "torchmetrics": torchmetrics.__version__, "torch_fidelity": tf_version,
        "weights_sha256": info.get("weights_sha256"),
        "fd": "float64, tr√(S1S2) by symmetric eigen-decomposition / nuclear norm (never complex)",
        "kid": "unbiased MMD², kernel (xᵀy/d + 1)³, subsets drawn as torch-fidelity",
    }


class FeatureBank(torch.nn.Module):
    """Identity 'feature extractor' so torchmetrics' FID/KID can run on precomputed features."""

    def __init__(self, dim: int):
        super().__init__()
        self.num_features = int(dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x


def torchmetrics_fid(f_real: torch.Tensor, f_fake: torch.Tensor) -> float:
    """torchmetrics' own FrechetInceptionDistance on precomputed features (a cross-check)."""
    from torchmetrics.image.fid import FrechetInceptionDistance

    m = FrechetInceptionDistance(feature=FeatureBank(f_real.shape[1]))
    m.set_dtype(torch.float64)
    m.update(torch.as_tensor(f_real, dtype=torch.float64), real=True)
    m.update(torch.as_tensor(f_fake, dtype=torch.float64), real=False)
    return float(m.compute())
