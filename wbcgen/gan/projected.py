"""Projected discriminator (after Sauer et al., NeurIPS 2021) on features learnt from the GAN's
own training images.

Projected GANs judge images in the feature space of a frozen pretrained network and converge
many times faster than a discriminator that learns its own features from pixels. No ImageNet
network can be downloaded on an air-gapped lab machine, and ImageNet features are not cell
features, so wbcgen trains the feature network itself, before the GAN loop, on exactly the
images the GAN trains on (the run's ``train_images.csv``; never a test image, never the
evaluation W-Net):

``FeatureNet``  a small CNN (four stride-2 stages, 64 → 32 → 16 → 8 px) trained as a classifier
                of the run's classes for ``feat_steps`` steps (flips, 90° rotations and
                translations), then frozen: its weights become buffers, so neither optimiser
                nor ``requires_grad_`` can touch them, and they travel in the checkpoint.
``ProjectedDiscriminator``  per stage a fixed random 1×1 cross-channel mix (CCM) and a small
                spectral-norm conv head down to 4×4 patch logits, class-conditioned by
                projection; the output is every patch logit of every scale (B×K), which the
                trainer's losses average.

Its pooled stage features also give the checkpoint-selection proxy (:meth:`embed`): a
Fréchet distance in features of a classifier of these very cells instead of random ones.
"""
from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from wbcgen.gan.config import GanConfig


def _freeze(module: nn.Module) -> nn.Module:
    """Turn every parameter into a buffer (kept in state_dict, invisible to optimisers)."""
    for m in module.modules():
        for name, p in list(m._parameters.items()):
            if p is not None:
                del m._parameters[name]
                m.register_buffer(name, p.detach().clone())
    return module.eval()


class FeatureNet(nn.Module):
    """Images B×3×128×128 in [-1, 1] → four feature maps (64, 32, 16, 8 px) or class logits."""

    def __init__(self, widths: list[int], n_classes: int, input_size: int = 128):
        super().__init__()
        self.input_size = input_size  # images are area-resized to this before the first stage
        stages, cin = [], 3
        for i, c in enumerate(widths):
            layers = [nn.Conv2d(cin, c, 3, 2, 1, bias=False), nn.BatchNorm2d(c), nn.LeakyReLU(0.2)]
            if i > 0:  # one more 3x3 conv below full resolution, where it is cheap
                layers += [nn.Conv2d(c, c, 3, 1, 1, bias=False), nn.BatchNorm2d(c), nn.LeakyReLU(0.2)]
            stages.append(nn.Sequential(*layers))
            cin = c
        self.stages = nn.ModuleList(stages)
        self.fc = nn.Linear(cin, n_classes)

    def stage_features(self, x: torch.Tensor) -> list[torch.Tensor]:
        out = []
        for s in self.stages:
            x = s(x)
            out.append(x)
        return out

    def head(self, feats: list[torch.Tensor]) -> torch.Tensor:
        """Class logits from :meth:`stage_features`' output (a caller that needs both computes them once)."""
        return self.fc(feats[-1].mean(dim=[2, 3]))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.stage_features(x))


def moment_loss(fake: list[torch.Tensor], real: list[torch.Tensor]) -> torch.Tensor:
    """Feature matching in a frozen classifier (``fm_weight``): per stage, the squared distance of
    the fakes' per-channel mean and standard deviation (over batch and space) to the real batch's,
    divided by the real batch's mean channel variance so that every stage weighs alike; averaged
    over the stages. Gradients flow to ``fake`` only."""
    out = []
    for f, r in zip(fake, real):
        f, r = f.float(), r.detach().float()
        fv, fm = torch.var_mean(f, dim=[0, 2, 3])
        rv, rm = torch.var_mean(r, dim=[0, 2, 3])
        dist = (fm - rm).square() + (fv.add(1e-8).sqrt() - rv.add(1e-8).sqrt()).square()
        out.append(dist.mean() / (rv.mean() + 1e-8))
    return torch.stack(out).mean()


def _fit(x: torch.Tensor, size: int) -> torch.Tensor:
    """Float images at the net's input size (area-averaged when smaller: a 64-px proxy judges
    real and generated cells at the resolution the generator learns at)."""
    return x if x.shape[-1] == size else F.interpolate(x, size=(size, size), mode="area")


def _augment(x: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    """Cell images have no orientation: random flips and 90° rotations, plus a small shift."""
    b = len(x)
    k = int(torch.randint(4, (1,), generator=g))
    x = torch.rot90(x, k, dims=(2, 3))
    flip = torch.rand(b, generator=g) < 0.5
    x = torch.where(flip[:, None, None, None], x.flip(3), x)
    dx, dy = (int(v) for v in torch.randint(-8, 9, (2,), generator=g))
    return torch.roll(x, shifts=(dx, dy), dims=(2, 3))


def train_feature_net(real: torch.Tensor, labels: torch.Tensor, cfg: GanConfig, n_classes: int, seed: int,
                      device: torch.device) -> tuple[FeatureNet, dict]:
    """Train the feature network on ``real`` (uint8) / ``labels`` for ``cfg.feat_steps`` steps
    (class-balanced batches of 64, Adam 2e-3, cosine decay). Every tenth image is held out to
    report how well the features separate the classes; the net then trains on all of them."""
    g = torch.Generator().manual_seed(seed + 4049)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed + 4049)
        net = FeatureNet(list(cfg.feat_widths), n_classes, _input_size(cfg)).to(device, memory_format=torch.channels_last)
    held = torch.arange(len(real)) % 10 == 9
    opt = torch.optim.Adam(net.parameters(), lr=2e-3, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, max(1, cfg.feat_steps))
    weights = (1.0 / torch.bincount(labels, minlength=n_classes).clamp(min=1).float())[labels]

    def batch(mask: torch.Tensor, n: int) -> tuple[torch.Tensor, torch.Tensor]:
        idx = torch.multinomial(weights * mask, n, replacement=True, generator=g)
        x = _fit(real[idx].float() / 127.5 - 1, net.input_size).to(device).contiguous(memory_format=torch.channels_last)
        return _augment(x, g), labels[idx].to(device)

    net.train()
    for step in range(cfg.feat_steps):
        x, y = batch(~held if step < cfg.feat_steps // 2 else torch.ones_like(held), 64)
        loss = F.cross_entropy(net(x), y, label_smoothing=0.1)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        if step == cfg.feat_steps // 2 - 1:  # half-way: score the held-out tenth, then train on everything
            info = _held_out_accuracy(net, real[held], labels[held], n_classes, device)
    if cfg.feat_steps < 2:
        info = _held_out_accuracy(net, real[held], labels[held], n_classes, device)
    info |= {"steps": cfg.feat_steps, "n_images": len(real), "final_loss": round(float(loss.detach()), 4) if cfg.feat_steps else None}
    return _freeze(net), info


@torch.no_grad()
def _held_out_accuracy(net: FeatureNet, x: torch.Tensor, y: torch.Tensor, n_classes: int, device) -> dict:
    net.eval()
    pred = torch.cat([net(_fit(b.float() / 127.5 - 1, net.input_size).to(device)).argmax(1).cpu()
                      for b in x.split(256)]) if len(x) \
        else torch.empty(0, dtype=torch.long)
    net.train()
    rec = [float((pred[y == k] == k).float().mean()) for k in range(n_classes) if (y == k).any()]
    return {"held_out_balanced_accuracy": round(sum(rec) / len(rec), 4) if rec else None,
            "held_out_images": len(x), "held_out_note": "scored half-way, before training on the held-out tenth"}


class _Head(nn.Module):
    """CCM (fixed random 1×1) → stride-2 spectral-norm convs to 4×4 → patch logits (+ projection)."""

    def __init__(self, cin: int, res: int, width: int, n_classes: int, g: torch.Generator):
        super().__init__()
        sn = nn.utils.parametrizations.spectral_norm
        ccm = nn.Conv2d(cin, width, 1)
        nn.init.kaiming_normal_(ccm.weight, generator=g)
        nn.init.zeros_(ccm.bias)
        self.ccm = _freeze(ccm)
        blocks = []
        while res > 4:
            blocks += [sn(nn.Conv2d(width, width, 4, 2, 1)), nn.LeakyReLU(0.2)]
            res //= 2
        blocks += [sn(nn.Conv2d(width, width, 3, 1, 1)), nn.LeakyReLU(0.2)]
        self.blocks = nn.Sequential(*blocks)
        self.out = sn(nn.Conv2d(width, 1, 1))
        self.embed = sn(nn.Embedding(n_classes, width)) if n_classes else None
        self.scale = 1 / math.sqrt(width)

    def forward(self, f: torch.Tensor, y: torch.Tensor | None) -> torch.Tensor:
        h = self.blocks(self.ccm(f))
        out = self.out(h)
        if self.embed is not None:
            out = out + (self.embed(y).to(h.dtype)[:, :, None, None] * h).sum(1, keepdim=True) * self.scale
        return out.flatten(1)


class ProjectedDiscriminator(nn.Module):
    """Images in [-1, 1] (and class indices) → B×K patch logits over the four feature scales."""

    def __init__(self, cfg: GanConfig, n_classes: int, feature_net: FeatureNet | None = None, seed: int = 0):
        super().__init__()
        self.config = cfg.to_dict()
        self.features = feature_net if feature_net is not None else frozen_feature_net(cfg, n_classes)
        g = torch.Generator().manual_seed(seed + 6007)
        res = [cfg.image_size // 2 ** (i + 1) for i in range(len(cfg.feat_widths))]
        self.heads = nn.ModuleList(_Head(c, r, cfg.proj_width, n_classes if cfg.conditional else 0, g)
                                   for c, r in zip(cfg.feat_widths, res))

    def forward(self, x: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        feats = self.features.stage_features(x)
        return torch.cat([h(f, y) for h, f in zip(self.heads, feats)], dim=1)

    def embed(self, images: torch.Tensor, batch_size: int = 128) -> torch.Tensor:
        """Images (uint8 or float in [0, 1]) → float64 pooled stage features (the selection proxy)."""
        return embed(self.features, images, batch_size)[0]


@torch.inference_mode()
def embed(net: FeatureNet, images: torch.Tensor, batch_size: int = 128) -> tuple[torch.Tensor, torch.Tensor]:
    """Images (uint8 or float in [0, 1]) → (float64 pooled stage features, class predictions) of a
    frozen feature net: the learnt checkpoint-selection proxy."""
    out, pred = [], []
    dev = next(net.buffers()).device
    for i in range(0, len(images), batch_size):
        x = images[i:i + batch_size].to(dev)
        x = x.float() / 255 if x.dtype == torch.uint8 else x.float()
        fs = net.stage_features(_fit(x * 2 - 1, net.input_size))
        out.append(torch.cat([f.float().mean(dim=[2, 3]) for f in fs[1:]], dim=1).double().cpu())
        pred.append(net.fc(fs[-1].float().mean(dim=[2, 3])).argmax(1).cpu())
    return torch.cat(out), torch.cat(pred)


def frozen_feature_net(cfg: GanConfig, n_classes: int) -> FeatureNet:
    """An untrained, frozen feature net of ``cfg``'s shape (a checkpoint's buffers load into it), in
    the channels-last layout :func:`train_feature_net` trains in: the same weights in another layout
    take other conv kernels, whose sums differ in the last bits (a resumed run's proxy scores must
    equal the uninterrupted run's)."""
    net = FeatureNet(list(cfg.feat_widths), max(1, n_classes), _input_size(cfg))
    return _freeze(net.to(memory_format=torch.channels_last))


def _input_size(cfg: GanConfig) -> int:
    """The feature net's input size: the GAN's training size (a projected D: always image_size)."""
    return cfg.train_size or cfg.image_size
