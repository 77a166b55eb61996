"""Per-class DCGAN generator and discriminator, in two families.

``paper``  — SPEC §3 / seed 001 §5: z(100) → Linear 8·8·256 → BatchNorm1d(16384) → four 5×5
             stride-2 transposed convs and two 5×5 convs (256→128→64→32→16→8→3), BN+ReLU after
             the hidden ones, sigmoid. D: six 5×5 convs 3→64→…→2048 (first five stride 2),
             LeakyReLU 0.2, dropout 0.6, Linear(4·4·2048 → 1) + sigmoid. Exactly 2,780,099 and
             69,878,401 trainable parameters.
``fast``   — modern practice: every ×2 upsampling is nearest-neighbour upsample + 3×3 conv (no
             checkerboard), computed as ONE equivalent stride-2 4×4 transposed conv whose kernel
             is derived from the 3×3 weights (2.25× fewer MACs, no upsampled intermediate).
             D: 4×4 stride-2 convs with spectral norm, LeakyReLU 0.2, minibatch-stddev.
``conditional`` (fast family) — one model for several classes: every BatchNorm of G is a
             class-conditional BatchNorm (shared statistics, per-class scale and shift), D is
             a projection discriminator, ``logit = ψ(φ(x)) + ⟨embed(y), φ(x)⟩`` (Miyato &
             Koyama 2018). ``G.for_class(name)`` is a one-class view that samples like a
             per-class generator.

G maps z to images in [0, 1]; D takes images in [-1, 1] and returns logits (the paper's
sigmoid is applied inside the loss, ``BCEWithLogits``, which is the same function, stabler).
"""
from __future__ import annotations

import copy
import dataclasses

import torch
import torch.nn as nn
import torch.nn.functional as F
from huggingface_hub import PyTorchModelHubMixin

from classifiers.hubcard import CARD_TEMPLATE, DOCS_URL, LIBRARY_NAME, REPO_URL, TAGS
from classifiers.runtime import UserError
from wbcgen.gan.config import GanConfig, load_config
from wbcgen.gan.layout import at as layout_at, pick as layout_pick
from wbcgen.gan.order import row_hashes
from wbcgen.gan.refiner import DetailStage


# 1-D map from the 3 taps of a conv applied after nearest ×2 upsampling to the 4 taps of
# the equivalent stride-2 transposed conv (kernel 4, padding 1); see UpConv2d.
_UP_TAPS = torch.tensor([[0.0, 0.0, 1.0], [0.0, 1.0, 1.0], [1.0, 1.0, 0.0], [1.0, 0.0, 0.0]])


class UpConv2d(nn.Conv2d):
    """``conv3x3(upsample_nearest_x2(x))`` evaluated as one transposed conv.

    Output pixel ``2i+a`` sees input rows ``i-1, i`` (a=0) or ``i, i+1`` (a=1) with the 3×3
    taps summed accordingly, which is a 4×4 stride-2 transposed conv with kernel
    ``K = T·W·Tᵀ``. Same function and gradients as the two-step version (checked in tests).

    ``padding_mode="zeros"``: zero padding, output exactly 2H×2W. ``"replicate"``: the
    low-res input is padded by 2 repeated border pixels and the output keeps ``margin``
    extra pixels per side (2H+2m), so the size-reducing ("valid") blur and last conv that
    follow need no padding at full resolution, where padding costs the most.
    """

    def __init__(self, in_channels: int, out_channels: int, padding_mode: str = "zeros", margin: int = 0):
        super().__init__(in_channels, out_channels, 3, padding=1, padding_mode=padding_mode)
        if padding_mode == "zeros" and margin:
            raise ValueError("a margin needs replicate padding")
        self.margin = margin

    def transposed_weight(self) -> torch.Tensor:
        t = _UP_TAPS.to(self.weight.device, self.weight.dtype)
        return torch.einsum("kd,oide,le->iokl", t, self.weight, t)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        return _up(x, self.transposed_weight(), self.bias, self.padding_mode, self.margin)


def _up(x: torch.Tensor, k: torch.Tensor, b: torch.Tensor | None, mode: str, margin: int) -> torch.Tensor:
    if mode == "zeros":
        return F.conv_transpose2d(x, k, b, stride=2, padding=1)
    # the padded input gives 2H+10-2p outputs: transposed-conv "padding" p = 5 - margin
    return F.conv_transpose2d(F.pad(x, (2, 2, 2, 2), mode=mode), k, b, stride=2, padding=5 - margin)


class Blur(nn.Module):
    """Fixed depthwise [1, 2, 1]ᵀ[1, 2, 1]/16 low-pass filter.

    After a nearest-neighbour ×2 upsampling it makes it a bilinear one (G stops drawing
    blocky grid textures); before a stride-2 conv it anti-aliases what D sees (G cannot hide
    aliasing patterns in D's blind spots). ``pad=True`` keeps the size (border repeated, so
    constants pass unchanged); ``pad=False`` is "valid" and removes one pixel per side.
    """

    def __init__(self, pad: bool = True):
        super().__init__()
        k = torch.tensor([1.0, 2.0, 1.0])
        self.register_buffer("k", (k[:, None] * k[None, :] / 16).view(1, 1, 3, 3), persistent=False)
        self.pad = pad

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.pad:
            x = F.pad(x, (1, 1, 1, 1), mode="replicate")
        return F.conv2d(x, self.k.to(x.dtype).expand(x.shape[1], 1, 3, 3), groups=x.shape[1])


class NoiseInject(nn.Module):
    """``x + strength · noise``: one N(0, 1) map per image broadcast over channels, scaled by a
    learnt per-channel strength that starts at 0 (StyleGAN's noise inputs; FastGAN has them too).
    The map is drawn from a generator seeded by the image's latent (see :func:`noise_seeds`), so
    G stays a deterministic function of z: a sample's noise does not depend on its batch."""

    def __init__(self, channels: int, salt: int):
        super().__init__()
        self.strength = nn.Parameter(torch.zeros(channels))
        self.salt = int(salt)

    def forward(self, x: torch.Tensor, seeds: list[int]) -> torch.Tensor:
        g = torch.Generator()
        maps = [torch.randn(1, *x.shape[-2:], generator=g.manual_seed((s + self.salt) % 2 ** 63)) for s in seeds]
        noise = torch.stack(maps).to(device=x.device, dtype=x.dtype)
        return x + self.strength.view(1, -1, 1, 1).to(x.dtype) * noise


class SkipExcite(nn.Module):
    """FastGAN's skip-layer excitation (Liu et al. 2021): a low-resolution feature map gates the channels
    of a higher-resolution one, ``high · σ(conv1×1(swish(conv4×4(pool4(low)))))`` — one gate per image
    and channel, so it works on any size of ``high`` (a replicate margin included)."""

    def __init__(self, c_low: int, c_high: int):
        super().__init__()
        self.squeeze = nn.Conv2d(c_low, c_high, 4)
        self.excite = nn.Conv2d(c_high, c_high, 1)

    def forward(self, high: torch.Tensor, low: torch.Tensor) -> torch.Tensor:
        gate = self.excite(F.silu(self.squeeze(F.adaptive_avg_pool2d(low, 4))))
        return high * torch.sigmoid(gate).to(high.dtype)


def noise_seeds(z: torch.Tensor) -> list[int]:
    """One 63-bit seed per latent row, a hash of its float32 bytes (the same z gives the same noise)."""
    return [h >> 1 for h in row_hashes(z)]


def _run_block(blk: nn.Sequential, x: torch.Tensor, y, seeds) -> torch.Tensor:
    for m in blk:
        if isinstance(m, NoiseInject):
            x = m(x, seeds)
        elif isinstance(m, CondBatchNorm2d):
            x = m(x, y)
        else:
            x = m(x)
    return x


class _FoldedUp(nn.Module):
    """Inference form of UpConv2d + BatchNorm: a fixed transposed-conv kernel."""

    def __init__(self, k: torch.Tensor, b: torch.Tensor, mode: str, margin: int):
        super().__init__()
        self.register_buffer("k", k.contiguous())
        self.register_buffer("b", b.contiguous())
        self.mode, self.margin = mode, margin

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return _up(x, self.k, self.b, self.mode, self.margin)


class CondBatchNorm2d(nn.Module):
    """BatchNorm2d with shared statistics and one learned (γ, β) per class.

    ``blend`` (transitional conditioning, Shahbazi et al. 2022): a shared (γ, β) plus per-class
    offsets that start at 0 and count ``mix`` times, γ_y = γ + mix·Δγ_y — at ``mix = 0`` the layer
    is unconditional (the offsets get no gradient), at 1 a plain conditional BN."""

    def __init__(self, num_features: int, n_classes: int, blend: bool = False):
        super().__init__()
        self.bn = nn.BatchNorm2d(num_features, affine=False)
        self.weight = nn.Parameter(torch.ones(n_classes, num_features))
        self.bias = nn.Parameter(torch.zeros(n_classes, num_features))
        self.shared_weight = self.shared_bias = None
        if blend:
            self.shared_weight = nn.Parameter(torch.ones(num_features))
            self.shared_bias = nn.Parameter(torch.zeros(num_features))
            self.register_buffer("mix", torch.zeros(()))

    def gamma_beta(self, y: "torch.Tensor | int") -> tuple[torch.Tensor, torch.Tensor]:
        if self.shared_weight is None:
            return self.weight[y], self.bias[y]
        return self.shared_weight + self.mix * self.weight[y], self.shared_bias + self.mix * self.bias[y]

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        g, b = self.gamma_beta(y)
        return self.bn(x) * g[:, :, None, None] + b[:, :, None, None]

    def affine(self, y: int) -> tuple[torch.Tensor, torch.Tensor]:
        """The eval-mode per-channel ``(scale, shift)`` of class index ``y``."""
        g, b = self.gamma_beta(y)
        s = g / torch.sqrt(self.bn.running_var + self.bn.eps)
        return s, b - self.bn.running_mean * s


def _cfg(config) -> tuple[GanConfig, dict]:
    if isinstance(config, dict):
        names = {f.name for f in dataclasses.fields(GanConfig)}
        extra = {k: v for k, v in config.items() if k not in names}
        return load_config({k: v for k, v in config.items() if k in names}), extra
    return load_config(config), {}


class Generator(nn.Module, PyTorchModelHubMixin, library_name=LIBRARY_NAME, repo_url=REPO_URL, docs_url=DOCS_URL,
                pipeline_tag="unconditional-image-generation", tags=TAGS + ["gan", "dcgan", "synthetic-data"],
                model_card_template=CARD_TEMPLATE):
    """z (B×z_dim) → images B×3×128×128 in [0, 1].

    ``config`` is a JSON-able dict (a :class:`GanConfig` as dict plus optional metadata such
    as ``cls``), so ``save_pretrained``/``from_pretrained`` round-trip it.
    """

    def __init__(self, config: dict):
        super().__init__()
        cfg, extra = _cfg(config)
        self.config = cfg.to_dict() | extra
        self.z_dim, self.arch = cfg.z_dim, cfg.arch
        self.classes: list[str] = [str(c) for c in extra.get("classes") or []] if cfg.conditional else []
        if cfg.conditional and len(self.classes) < 1:
            raise ValueError("a conditional generator needs its class list (config 'classes')")
        self.members: nn.ModuleList | None = None
        self.refiner: DetailStage | None = None
        if cfg.members > 1:  # an ensemble of independently trained generators (wbcgen/gan/ensemble.py)
            one = self.config | {"members": 1, "audition": 0, "refine_steps": 0}
            self.members = nn.ModuleList(Generator(one) for _ in range(cfg.members))
            self._add_refiner(cfg)
            return
        k_cls = len(self.classes)
        lk = self.layout_k = cfg.layout  # layout channels concatenated to every block's input and to the last conv
        if lk:
            n = int(extra.get("layout_n") or 0)
            if n < 1:
                raise ValueError("a layout generator needs the size of its layout bank (config 'layout_n')")
            self.register_buffer("layout_bank", torch.zeros(n, lk, cfg.layout_size, cfg.layout_size, dtype=torch.uint8))

        blend = bool(cfg.cond_full)  # transitional conditioning: the class is blended in over training

        def bn2d(c: int) -> nn.Module:
            return CondBatchNorm2d(c, k_cls, blend) if k_cls else nn.BatchNorm2d(c)

        w, b = cfg.g_widths, cfg.g_base
        self.base = b
        self.fc = nn.Linear(cfg.z_dim, w[0] * b * b)
        self.z_embed = nn.Embedding(k_cls, cfg.z_dim) if cfg.g_embed_z else None  # N(0, 1), like z
        self.bn0 = nn.BatchNorm1d(w[0] * b * b) if cfg.arch == "paper" else bn2d(w[0])
        blocks = []
        n_up = ((cfg.train_size or cfg.image_size) // b).bit_length() - 1
        self.out_size = cfg.image_size if cfg.train_size else 0  # > 0: fixed bilinear upsample to it
        rep = cfg.arch != "paper" and cfg.g_padding == "replicate"
        for i, (ci, co) in enumerate(zip(w[:-1], w[1:])):
            last = i == len(w) - 2
            if cfg.arch == "paper":
                conv = (nn.ConvTranspose2d(ci, co, 5, 2, 2, output_padding=1) if i < n_up
                        else nn.Conv2d(ci, co, 5, padding=2))
            blur = cfg.arch != "paper" and cfg.g_blur and (cfg.g_blur_last or not last)
            if cfg.arch != "paper":  # replicate: one border pixel for the valid blur, one for the last conv
                conv = UpConv2d(ci + lk, co, cfg.g_padding, margin=(int(blur) + int(last)) if rep else 0)
            layers = [conv]
            if blur:
                layers.append(Blur(pad=not rep))
            layers.append(bn2d(co))
            if cfg.arch != "paper" and i >= len(w) - 1 - cfg.g_noise:
                layers.append(NoiseInject(co, salt=i))
            layers.append(nn.ReLU(inplace=True))
            if cfg.g_dropout > 0:
                layers.append(nn.Dropout(cfg.g_dropout))
            blocks.append(nn.Sequential(*layers))
        self.blocks = nn.ModuleList(blocks)
        # g_sle: block i's output gated by the features two upsamplings below (index 0 = the first features)
        self.sle = nn.ModuleList(SkipExcite(w[j], w[j + 2]) for j in range(len(w) - 2)) if cfg.g_sle else None
        self.noisy = any(isinstance(m, NoiseInject) for blk in blocks for m in blk)
        k = 5 if cfg.arch == "paper" else 3
        self.out = nn.Conv2d(w[-1] + lk, 3, k, padding=0 if rep else k // 2)
        if blend:  # how much the class counts (0 = unconditional); set by set_cond_mix, saved with the weights
            self.register_buffer("cond_mix", torch.zeros(()))
        _init(self, cfg.arch)
        if self.z_embed is not None:
            nn.init.normal_(self.z_embed.weight, 0.0, 1.0)
        self._add_refiner(cfg)

    def _add_refiner(self, cfg: GanConfig) -> None:
        """``refine_steps > 0``: the detail refiner after G (wbcgen/gan/refiner.py), the identity until
        ``train-gan`` has trained it; built without touching the global RNG (G's initial weights are those of
        the same config without it) and frozen (G's optimiser and DDP leave it alone)."""
        if cfg.refine_steps:
            with torch.random.fork_rng(devices=[]):
                self.refiner = DetailStage(cfg.refine_factor, cfg.refine_mode).requires_grad_(False)

    @torch.no_grad()
    def set_cond_mix(self, mix: float) -> None:
        """Transitional conditioning: how much the class counts, in [0, 1], everywhere in G."""
        set_cond_mix(self, mix)

    def _z_class(self, y: "torch.Tensor | int") -> torch.Tensor:
        """What a class adds to z (``g_embed_z``), scaled by the blend when there is one."""
        e = self.z_embed.weight[y]
        return e * self.cond_mix if hasattr(self, "cond_mix") else e

    def forward(self, z: torch.Tensor, y: torch.Tensor | None = None, layout: torch.Tensor | None = None) -> torch.Tensor:
        """``y``: class indices (B,) into ``self.classes``; required by a conditional generator.
        ``layout`` (a layout generator): B×K×S×S maps in [0, 1]; default: the bank's maps of z."""
        x = self._draw(z, y, layout)
        return x if self.refiner is None else self.refiner(x, z)

    def _draw(self, z: torch.Tensor, y: torch.Tensor | None, layout: torch.Tensor | None) -> torch.Tensor:
        if self.members is not None:
            return _by_member(self.members, z, y)
        if self.classes:
            if y is None:
                raise ValueError("a conditional generator needs class indices y (or use G.for_class(name))")
            if self.z_embed is not None:
                z = z + self._z_class(y).to(z.dtype)
            x = self.fc(z).view(z.shape[0], -1, self.base, self.base)
            return _render(self, F.relu(self.bn0(x, y)), z, y)
        x = self.fc(z)
        if self.arch == "paper":
            if self.training and z.shape[0] == 1:  # the paper's batch 1: no batch statistics to use
                bn = self.bn0
                x = F.batch_norm(x, bn.running_mean, bn.running_var, bn.weight, bn.bias, False, 0.0, bn.eps)
            else:
                x = self.bn0(x)
            x = F.relu(x).view(z.shape[0], -1, self.base, self.base)
        else:
            x = F.relu(self.bn0(x.view(z.shape[0], -1, self.base, self.base)))
        return _render(self, x, z, None, layout)

    @torch.no_grad()
    def folded(self, y: int | None = None) -> "FoldedGenerator":
        """An inference-only copy with every BatchNorm folded into the layer before it and every
        upsample+conv as a transposed conv: same images (eval mode), far less memory traffic.
        ``y``: the class index of a conditional generator (its BNs fold per class).
        Building it leaves the global RNG untouched (training resumes bit-identically)."""
        if bool(self.classes) != (y is not None):
            raise ValueError("folded(y): give a class index exactly when the generator is conditional")
        with torch.random.fork_rng(devices=[]):
            f = (FoldedEnsemble([FoldedGenerator(m, y) for m in self.members], self.config)
                 if self.members is not None else FoldedGenerator(self, y))
            if self.refiner is not None and bool(self.refiner.trained):
                f = Refined(f, copy.deepcopy(self.refiner))
            return f

    def class_index(self, cls: str) -> int:
        if cls not in self.classes:
            raise ValueError(f"this generator makes {', '.join(self.classes) or 'one class'}, not {cls!r}")
        return self.classes.index(cls)

    def for_class(self, cls: str) -> "ClassGenerator":
        """A one-class view of a conditional generator (shares its weights)."""
        return ClassGenerator(self, cls)


class ClassGenerator(nn.Module):
    """One class of a conditional :class:`Generator`, usable wherever a per-class generator is:
    ``forward(z)``, ``folded()``, ``z_dim`` and ``config`` (with ``cls`` set to the class)."""

    def __init__(self, g: Generator, cls: str):
        super().__init__()
        self.g, self.cls, self.y = g, cls, g.class_index(cls)
        self.z_dim, self.config = g.z_dim, g.config | {"cls": cls}
        for attr in ("weights_sha256", "source"):
            if hasattr(g, attr):
                setattr(self, attr, getattr(g, attr))

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.g(z, torch.full((z.shape[0],), self.y, dtype=torch.long, device=z.device))

    def folded(self) -> "FoldedGenerator":
        return self.g.folded(self.y)


class FoldedGenerator(nn.Module):
    """Eval-mode generator with BN folded in (built by :meth:`Generator.folded`)."""

    def __init__(self, g: Generator, y: int | None = None):
        super().__init__()
        self.z_dim, self.base, self.config, self.out_size = g.z_dim, g.base, g.config, g.out_size

        def affine(bn: nn.Module) -> tuple[torch.Tensor, torch.Tensor]:
            return bn.affine(y) if isinstance(bn, CondBatchNorm2d) else _bn_affine(bn)

        s, t = affine(g.bn0)
        fc = nn.Linear(g.fc.in_features, g.fc.out_features)
        if g.arch != "paper":  # BN2d over channels of the reshaped output: one scale per channel
            s, t = (v.repeat_interleave(g.base * g.base) for v in (s, t))
        fc.weight.copy_(g.fc.weight * s[:, None])
        bias = g.fc.bias if g.z_embed is None else g.fc.bias + g.fc.weight @ g._z_class(y)  # fc(z + e_y)
        fc.bias.copy_(bias * s + t)
        self.fc = fc
        blocks = []
        for blk in g.blocks:
            conv, bn = blk[0], next(m for m in blk if isinstance(m, (nn.BatchNorm2d, CondBatchNorm2d)))
            blur = [m for m in blk if isinstance(m, Blur)]  # linear and per-channel: commutes with BN
            s, t = affine(bn)
            if isinstance(conv, UpConv2d):
                new = _FoldedUp(conv.transposed_weight() * s[None, :, None, None], conv.bias * s + t,
                                conv.padding_mode, conv.margin)
            elif isinstance(conv, nn.ConvTranspose2d):
                new = nn.ConvTranspose2d(conv.in_channels, conv.out_channels, conv.kernel_size, conv.stride,
                                         conv.padding, output_padding=conv.output_padding)
                new.weight.copy_(conv.weight * s[None, :, None, None])
            else:
                new = nn.Conv2d(conv.in_channels, conv.out_channels, conv.kernel_size, padding=conv.padding)
                new.weight.copy_(conv.weight * s[:, None, None, None])
            if not isinstance(new, _FoldedUp):
                new.bias.copy_(conv.bias * s + t)
            noise = [copy.deepcopy(m) for m in blk if isinstance(m, NoiseInject)]  # after BN: not folded
            blocks.append(nn.Sequential(new, *blur, *noise, nn.ReLU(inplace=True)))
        self.blocks = nn.ModuleList(blocks)
        self.sle = copy.deepcopy(g.sle)  # no BatchNorm inside: used as it is
        self.noisy, self.layout_k = g.noisy, g.layout_k
        if self.layout_k:
            self.register_buffer("layout_bank", g.layout_bank.clone())
        self.out = nn.Conv2d(g.out.in_channels, 3, g.out.kernel_size, padding=g.out.padding)
        self.out.load_state_dict(g.out.state_dict())
        self.eval().requires_grad_(False)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return _render(self, F.relu(self.fc(z)).view(z.shape[0], -1, self.base, self.base), z)


class FoldedEnsemble(nn.Module):
    """The folded members of an ensemble generator, dispatched like :meth:`Generator.forward`."""

    def __init__(self, members: list[FoldedGenerator], config: dict):
        super().__init__()
        self.members, self.config, self.z_dim = nn.ModuleList(members), config, members[0].z_dim

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return _by_member(self.members, z, None)


class Refined(nn.Module):
    """A folded generator followed by its trained detail refiner (built by :meth:`Generator.folded`)."""

    def __init__(self, inner: nn.Module, stage: "DetailStage"):
        super().__init__()
        self.inner, self.stage, self.config, self.z_dim = inner, stage.eval(), inner.config, inner.z_dim

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.stage(self.inner(z), z)


def member_index(z: torch.Tensor, k: int) -> torch.Tensor:
    """Which of an ensemble's ``k`` members draws each latent: a salted hash of the row's float32
    bytes, so a cell's member (and so the cell) does not depend on its batch or on ``n``."""
    return torch.tensor([h % k for h in row_hashes(z, salt=b"members")], dtype=torch.long)


def _by_member(members: nn.ModuleList, z: torch.Tensor, y: torch.Tensor | None) -> torch.Tensor:
    idx = member_index(z, len(members)).to(z.device)
    out = None
    for j, g in enumerate(members):
        rows = torch.nonzero(idx == j).flatten()
        if len(rows) == 0:
            continue
        x = g(z[rows]) if y is None else g(z[rows], y[rows])
        if out is None:
            out = x.new_empty((z.shape[0], *x.shape[1:]))
        out[rows] = x
    return out


def _render(g: nn.Module, x: torch.Tensor, z: torch.Tensor, y: torch.Tensor | None = None,
            layout: torch.Tensor | None = None) -> torch.Tensor:
    """The blocks and the output conv of a :class:`Generator` or :class:`FoldedGenerator` (``x``: the
    first features): per-sample noise seeded by ``z`` and the layout maps (``layout``, default the
    bank's maps of z) when the model has them; ``y``: a conditional G's class indices."""
    seeds = noise_seeds(z) if g.noisy else None
    lay = (layout_pick(g.layout_bank, z) if layout is None else layout) if g.layout_k else None
    feats = [x]  # g.sle: every stage's features, for the gates two stages up
    for i, blk in enumerate(g.blocks):
        x = _run_block(blk, _with_layout(x, lay), y, seeds)
        if g.sle is not None:
            if i >= 1:
                x = g.sle[i - 1](x, feats[i - 1])
            feats.append(x)
    return _upsample(torch.sigmoid(g.out(_with_layout(x, lay))), g.out_size)


def _with_layout(x: torch.Tensor, layout: torch.Tensor | None) -> torch.Tensor:
    """G's features with the layout (resized to them) as extra channels (a layout generator)."""
    return x if layout is None else torch.cat([x, layout_at(layout, x.shape[-1]).to(x.dtype)], 1)


def _upsample(x: torch.Tensor, size: int) -> torch.Tensor:
    """The fixed bilinear upsample of a ``train_size`` generator (identity when ``size`` is 0)."""
    return F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False) if size else x


def _bn_affine(bn: nn.modules.batchnorm._BatchNorm) -> tuple[torch.Tensor, torch.Tensor]:
    s = bn.weight / torch.sqrt(bn.running_var + bn.eps)
    return s, bn.bias - bn.running_mean * s


class MinibatchStd(nn.Module):
    """Append the mean feature stddev over groups of ``group`` consecutive samples.

    Groups are consecutive, so when D scores ``cat([real, fake])`` with a group size that
    divides each half, real and generated images never share a group.
    """

    def __init__(self, group: int = 4):
        super().__init__()
        self.group = group

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        g = self.group if b % self.group == 0 else 1
        y = x.float().reshape(b // g, g, c, h, w)
        y = (y.var(dim=1, unbiased=False) + 1e-8).sqrt().mean(dim=[1, 2, 3])  # b/g
        y = y.repeat_interleave(g).view(b, 1, 1, 1).expand(b, 1, h, w).to(x.dtype)
        return torch.cat([x, y], dim=1)


class Discriminator(nn.Module):
    """Images B×3×128×128 in [-1, 1] (and class indices for a projection D) → logits B×1."""

    def __init__(self, config: dict | GanConfig | str, n_classes: int = 0):
        super().__init__()
        cfg, _ = _cfg(config)
        if cfg.conditional and n_classes < 1:
            raise ValueError("a conditional discriminator needs n_classes")
        self.config = cfg.to_dict()
        sn = nn.utils.parametrizations.spectral_norm if cfg.d_norm == "spectral" else (lambda m: m)
        layers: list[nn.Module] = []
        chans = [3 + cfg.layout] + cfg.d_widths  # a layout D sees the (image, layout) pair
        res = cfg.train_size or cfg.image_size
        self.pool = cfg.image_size // res  # train_size: images are area-downsampled by this factor first
        for i, (ci, co) in enumerate(zip(chans[:-1], chans[1:])):
            if cfg.arch == "paper":
                stride = 2 if i < 5 else 1
                conv = nn.Conv2d(ci, co, 5, stride, 2)
            else:
                stride = 2
                conv = nn.Conv2d(ci, co, 4, 2, 1)
                if cfg.d_blur and (i > 0 or cfg.d_blur_first):
                    layers.append(Blur(pad=True))
            res //= stride
            layers += [sn(conv), nn.LeakyReLU(0.2, inplace=True)]
            if cfg.d_dropout > 0:
                layers.append(nn.Dropout(cfg.d_dropout))
        if res < 1:
            raise ValueError("too many discriminator layers for the image size")
        if cfg.d_mbstd:
            c = chans[-1]
            layers += [MinibatchStd(4), sn(nn.Conv2d(c + 1, c, 3, padding=1)), nn.LeakyReLU(0.2, inplace=True)]
        self.features = nn.Sequential(*layers)
        self.decoders = None
        if cfg.d_recon:  # FastGAN's self-supervision: the whole input from the 1/8 stage, a quarter from the 1/4 stage
            self.decoders = nn.ModuleDict({"whole": _decoder(cfg.d_widths[2]), "part": _decoder(cfg.d_widths[1])})
        self.pooled = cfg.d_head == "pool"
        dim = chans[-1] * (1 if self.pooled else res * res)
        self.head = sn(nn.Linear(dim, 1))
        # projection: the class embedding's inner product with the (flattened or summed) last features
        self.embed = sn(nn.Embedding(n_classes, dim)) if cfg.conditional else None
        if cfg.conditional and cfg.cond_full:  # transitional conditioning: the projection term counts this much
            self.register_buffer("cond_mix", torch.zeros(()))
        _init(self, cfg.arch)

    def forward(self, x: torch.Tensor, y: torch.Tensor | None = None, recon: int = 0):
        """Logits; with ``recon = n`` (a ``d_recon`` D) also the reconstruction loss of the first ``n``
        inputs (the real ones), as ``(logits, loss)``."""
        if self.pool > 1:  # D always takes image_size inputs
            x = F.avg_pool2d(x, self.pool)
        if recon:
            if self.decoders is None:
                raise ValueError("this discriminator has no decoders (d_recon = 0)")
            h, taps = _tapped(self.features, x)
            rec = _recon_loss(self.decoders, x[:recon, :3].detach(), [t[:recon] for t in taps])
        else:
            h = self.features(x)
        h = h.sum(dim=[2, 3]) if self.pooled else torch.flatten(h, 1)
        out = self.head(h)
        if self.embed is not None:
            if y is None:
                raise ValueError("a projection discriminator needs class indices y")
            proj = (self.embed(y).to(h.dtype) * h).sum(1, keepdim=True)
            out = out + (proj * self.cond_mix if hasattr(self, "cond_mix") else proj)
        return (out, rec) if recon else out


def _decoder(c: int) -> nn.Sequential:
    """A d_recon decoder: features S×S×c → an RGB image 4S×4S in [-1, 1] (two nearest ×2 + 3×3 conv stages; narrow:
    at 64 px a d_recon step costs 4-10 % more, measured)."""
    return nn.Sequential(nn.Upsample(scale_factor=2.0), nn.Conv2d(c, 32, 3, padding=1), nn.LeakyReLU(0.2, inplace=True),
                         nn.Upsample(scale_factor=2.0), nn.Conv2d(32, 16, 3, padding=1), nn.LeakyReLU(0.2, inplace=True),
                         nn.Conv2d(16, 3, 3, padding=1), nn.Tanh())


def _tapped(features: nn.Sequential, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """``features(x)`` and its activations at 1/4 and 1/8 of the input size (after their LeakyReLU)."""
    size, taps = x.shape[-1], {}
    for m in features:
        x = m(x)
        if isinstance(m, nn.LeakyReLU) and x.shape[-1] in (size // 4, size // 8):
            taps.setdefault(x.shape[-1], x)
    return x, [taps[size // 4], taps[size // 8]]


def _recon_loss(dec: nn.ModuleDict, img: torch.Tensor, taps: list[torch.Tensor]) -> torch.Tensor:
    """FastGAN's reconstruction terms, L1 instead of LPIPS (no pretrained network here): the whole image at half
    size from the 1/8 stage, and a random quarter of it (one per batch) at full size from that quarter of the
    1/4 stage."""
    quarter, eighth = taps
    s, h = img.shape[-1] // 2, quarter.shape[-1] // 2
    q = int(torch.randint(4, (1,)))
    r, c = divmod(q, 2)
    whole = dec["whole"](eighth).float()
    part = dec["part"](quarter[:, :, r * h:(r + 1) * h, c * h:(c + 1) * h]).float()
    target = img.float()
    return (F.l1_loss(whole, F.avg_pool2d(target, 2)) +
            F.l1_loss(part, target[:, :, r * s:(r + 1) * s, c * s:(c + 1) * s]))


def set_cond_mix(model: nn.Module, mix: float) -> None:
    """Set every transitional-conditioning weight (``cond_mix`` / ``mix`` buffers) in ``model``."""
    for mod in model.modules():
        for name in ("cond_mix", "mix"):
            if name in mod._buffers:
                mod._buffers[name].fill_(mix)


def cond_mix_at(cfg: GanConfig, step: int) -> float:
    """Transitional conditioning: 0 before step ``cond_from``, rising linearly to 1 at ``cond_full``."""
    if not cfg.cond_full or step >= cfg.cond_full:
        return 1.0
    return max(0.0, (step - cfg.cond_from) / (cfg.cond_full - cfg.cond_from))


def _init(model: nn.Module, arch: str) -> None:
    """DCGAN init (N(0, 0.02) weights, BN γ ~ N(1, 0.02)) for ``fast``; Glorot-uniform (the
    Keras default the paper's code used) for ``paper``."""
    for m in model.modules():
        if isinstance(m, nn.Embedding):
            nn.init.normal_(m.parametrizations.weight.original if hasattr(m, "parametrizations") else m.weight,
                            0.0, 0.02)
        elif isinstance(m, CondBatchNorm2d):
            if m.shared_weight is not None:  # blended: shared γ ~ N(1, 0.02), per-class offsets 0
                nn.init.normal_(m.shared_weight, 1.0, 0.02)
                nn.init.zeros_(m.shared_bias)
                nn.init.zeros_(m.weight)
            else:
                nn.init.normal_(m.weight, 1.0, 0.02)
            nn.init.zeros_(m.bias)
        elif isinstance(m, (nn.Conv2d, nn.ConvTranspose2d, nn.Linear)):
            weight = m.parametrizations.weight.original if hasattr(m, "parametrizations") else m.weight
            if arch == "paper":
                nn.init.xavier_uniform_(weight)
            else:
                nn.init.normal_(weight, 0.0, 0.02)
            nn.init.zeros_(m.bias)
        elif isinstance(m, nn.modules.batchnorm._BatchNorm) and m.affine:
            if arch != "paper":
                nn.init.normal_(m.weight, 1.0, 0.02)
            nn.init.zeros_(m.bias)


def create_gan(config: "str | dict | GanConfig | None" = None,
               classes: list[str] | None = None) -> tuple[Generator, Discriminator]:
    """Build ``(G, D)`` for a preset name, a TOML/JSON path, a dict or a :class:`GanConfig`
    (``classes``: the class list of a conditional config)."""
    cfg = load_config(config)
    if cfg.layout:
        raise UserError(f"{cfg.name!r} is a layout config: its generator holds the layouts of its training cells, so "
                        "it is made by train_gan (or loaded with from_pretrained), not by create_gan")
    if cfg.conditional and not classes:
        from wbcgen.data.cellset import CLASSES

        classes = list(CLASSES)
    extra = {"classes": list(classes)} if cfg.conditional else {}
    if cfg.d_arch == "projected":  # its feature net is untrained here: train_gan trains it on the run's images
        from wbcgen.gan.projected import ProjectedDiscriminator

        return Generator(cfg.to_dict() | extra), ProjectedDiscriminator(cfg, len(classes or []))
    return Generator(cfg.to_dict() | extra), Discriminator(cfg, len(classes or []) if cfg.conditional else 0)


def count_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad)
