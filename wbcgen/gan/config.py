"""GAN configurations: the presets (``fast64x2`` = the default, ``fast64``, ``fast``, ``cond``, ``proj``,
``paper``, ``tiny``) and TOML/JSON files.

A config is one flat dataclass (model + training settings). Files may group keys in
``[model]`` / ``[train]`` tables and may start from a preset with ``base = "fast"``;
``recipes/dcgan-*.toml`` mirror the presets (a test keeps them equal).
"""
from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib  # type: ignore[no-redef]

from classifiers.runtime import UserError


@dataclass
class GanConfig:
    name: str = "fast"
    description: str = ""
    # ---------------------------------------------------------------- generator
    arch: str = "fast"              # "paper" (SPEC §3 layers, exact counts) | "fast"
    conditional: bool = False       # one model for several classes: class-conditional BN in G,
                                    # projection D (Miyato & Koyama 2018); fast family only
    cond_from: int = 0              # conditional: transitional conditioning (Shahbazi et al. 2022, "collapse by
    cond_full: int = 0              # conditioning"): an UNCONDITIONAL model of every class before step cond_from,
                                    # the class blended in linearly (G's class-BN offsets and z embedding, D's
                                    # projection) until step cond_full; 0 = conditional from step 0
    z_dim: int = 128
    g_embed_z: bool = False         # conditional: add a learnt N(0, 1)-initialised class embedding to z, so the class
                                    # moves G's input from step 0 (cBN scales start at 1 and move ~lr per step)
    g_base: int = 8                 # spatial size after the first Linear
    g_widths: list[int] = field(default_factory=lambda: [128, 64, 32, 16, 8])
    g_dropout: float = 0.0          # dropout after hidden G blocks
    g_padding: str = "zeros"        # "zeros" | "replicate" (fast family; zeros made G paint a frame)
    g_blur: bool = False            # fast family: [1,2,1] blur after each upsampling (= bilinear) ...
    g_blur_last: bool = True        # ... including the last one (to 128 px)
    g_noise: int = 0                # fast family: per-pixel noise (StyleGAN/FastGAN noise injection, learnt per-channel
                                    # strength starting at 0) after the BN of G's last N blocks, for stochastic detail
                                    # (granules) that z alone draws as deterministic patterns; the noise is a seeded
                                    # function of z, so sampling stays reproducible
    g_sle: bool = False             # fast family: FastGAN's skip-layer excitation (Liu et al. 2021): the features two
                                    # upsamplings below gate a block's output channel by channel (x · σ(conv(pool4(low)))),
                                    # so the coarse layout steers the fine stages from step 0
    layout: int = 0                 # fast family, per-class pixel D: > 0 = G draws a real training cell's LAYOUT (the
                                    # area fractions of the run's K dominant stain colours, a CIELAB k-means palette,
                                    # on a layout_size grid) and D judges (image, layout) pairs: structure from real
                                    # cells, appearance from G (wbcgen/gan/layout.py); the maps travel with the weights
    layout_size: int = 16           # the layout grid (px), a power of two below the training size
    refine_steps: int = 0           # > 0: a DETAIL REFINER after G (wbcgen/gan/refiner.py): a small image-to-image GAN
                                    # trained after the GAN, on the run's real training cells only, to put fine detail
                                    # back into a cell whose detail was removed; applied to G's cells (0 = off)
    refine_factor: int = 4          # its degradation: factor x factor area average at 64 px (4: detail above 16 px)
    refine_blur: float = 0.0        # > 0: the refiner also trains on inputs blurred further (Gaussian, sigma ~
                                    # U(0, this) px at 64 px): a generator's cells are blurrier than the degradation
    refine_mode: str = "paired"     # "paired": R learns from real cells with their detail removed (L1 + patch GAN);
                                    # "stochastic": the same pairs, a noise map in, only the coarse cell held (band-
                                    # limited L1), so detail is drawn rather than regressed; "unpaired": R learns to
                                    # turn G's OWN cells (+ noise) into cells like the real ones (SimGAN-style)
    refine_share: float = 0.15      # with a --minutes budget: this fraction of a run's budget is kept for the
                                    # refiner (which stops at refine_steps or the run's end, whichever comes first)
    # ------------------------------------------------------------ discriminator
    d_widths: list[int] = field(default_factory=lambda: [16, 32, 64, 128, 256])
    d_dropout: float = 0.0
    d_norm: str = "spectral"        # "spectral" | "none"
    d_mbstd: bool = True            # minibatch-stddev feature before the last conv
    d_head: str = "flatten"         # fast family: "flatten" = Linear (and projection) on the flattened last
                                    # feature map; "pool" = on its spatial sum (SNGAN/BigGAN), so no class term
                                    # can be a fixed spatial template for G to copy
    d_recon: float = 0.0            # fast family, pixel D: weight of FastGAN's self-supervised reconstruction loss
                                    # (Liu et al. 2021): small decoders rebuild each REAL input from D's features, the
                                    # whole image from the 1/8-size stage and a random quarter from the 1/4-size stage
                                    # (L1 at half the input size), so D must learn what a cell is made of, not only what
                                    # tells real from fake in a few hundred images (0 = off)
    r1_gamma: float = 0.0           # R1 penalty weight on D's gradient at real images (0 = off)
    r1_every: int = 4               # lazy regularisation: apply (scaled) every N steps
    d_blur: bool = False            # fast family: anti-aliasing blur before each stride-2 conv ...
    d_blur_first: bool = True       # ... including the first one (on the image itself)
    d_arch: str = "pixel"           # "pixel" (a conv D on the image) | "projected" (conditional only: heads on the
                                    # frozen features of a small classifier trained first on the run's own images)
    feat_steps: int = 300           # projected: training steps of that feature network (counted in --minutes)
    feat_widths: list[int] = field(default_factory=lambda: [16, 32, 64, 128])  # its stages, 64 -> 8 px
    proj_width: int = 64            # projected: channels of the random cross-channel mix and of each head
    cls_weight: float = 0.0         # weight of an auxiliary loss on G (AC-GAN style): a frozen classifier's cross-
                                    # entropy of the asked class on the fakes as drawn. Projected D: its feature net;
                                    # per-class runs: the classifier of every class of the training data that the
                                    # learnt proxy uses (trained first, feat_steps; never a test image)
    fm_weight: float = 0.0          # weight of a feature-statistics loss on G (feature matching, Salimans et al. 2016,
                                    # in a frozen classifier instead of D): per stage of the cls_weight classifier, the
                                    # squared distance of the fakes' per-channel mean and std to the real batch's,
                                    # over the real batch's mean channel variance — texture statistics at 4 scales
    ms_weight: float = 0.0          # mode-seeking loss on G (MSGAN, Mao et al. 2019): weight × 1 / (|G(z1)-G(z2)| /
                                    # |z1-z2|) over consecutive same-class pairs of fakes, against one cell per class
    spec_weight: float = 0.0        # per-class: weight of a spectral loss on G (Durall et al. 2020): squared distance of
                                    # the fakes' log power spectrum (batch mean; per 2-D frequency, opponent colours)
                                    # to the run's training cells' (wbcgen/gan/spectrum.py) — how much fine detail
                                    # (granules, edges) of each scale, not where
    ed_weight: float = 0.0          # per-class: weight of a coverage term on G (wbcgen/gan/coverage.py): the energy
                                    # distance between the fakes and the real batch area-downsampled to ed_size px,
                                    # over the real batch's mean distance — the class's spread of layout, size and
                                    # colour, not only its centre (0 = off)
    ed_size: int = 16               # its size in px (4 to the training size; at 16 only layout, size and colour are left)
    # ------------------------------------------------------------------ training
    batch_size: int = 64
    class_group: int = 1            # conditional: batches are runs of this many images of one class (4 = the
                                    # minibatch-stddev group, so D sees the variety within a class; 1 = interleaved)
    lr_g: float = 2e-4
    lr_d: float = 2e-4
    beta1: float = 0.5
    beta2: float = 0.999
    diffaug: str = "color,translation,cutout"   # DiffAugment policy ("" = off)
    real_d4: bool = False           # each real training cell shown under one of the 8 flips / quarter turns, drawn
                                    # per cell and step: a blood cell has no orientation, so the class's real
                                    # distribution is unchanged while D sees 8x as many distinct real images (less
                                    # to memorise from a few hundred cells); real images only, like a data set
                                    # augmentation, so nothing of it leaks into G's cells (layout runs do it anyway)
    ada_target: float = 0.0         # > 0: adaptive augmentation (ADA, Karras et al. 2020): each transform
                                    # applied with probability p, steered so E[sign(D(real))] -> target
    ada_interval: int = 4           # adjust p every N steps ...
    ada_kimg: float = 20.0          # ... at a speed that can move p from 0 to 1 in this many thousand images
    ema_decay: float = 0.999        # 0 = no EMA (sample the raw G)
    steps: int = 0                  # default length (0 = use epochs)
    epochs: float = 0.0
    max_steps: int = 0              # a --minutes budget (without --steps/--epochs) stops at this step at the latest
                                    # (0 = no cap): for configs whose quality peaks early (fast64: ~400-450 steps)
    log_every: int = 10
    sample_every: int = 100         # fixed-z grid to samples/step_XXXXXX.png
    eval_every: int = 100           # quality proxy (Fréchet distance) -> best checkpoint
    ckpt_every: int = 100           # checkpoints/latest.safetensors
    eval_n: int = 256               # generated images per quality evaluation
    select: str = "random"          # checkpoint-selection proxy: "random" = FD in fixed random conv features (all
                                    # classes pooled); "learnt" = (mean per-class) FD in the features of a small
                                    # classifier of every class of the training data, trained first (feat_steps;
                                    # once per process for the runs of --cls all), which also reports how often it
                                    # sees the run's class in the fakes ("class_acc"); one class only: random
    collapse_ratio: float = 0.35    # warn when sample diversity < this × real diversity
    export: str = "best"            # generator/ from the "best" checkpoint or the "final" one
    pretrain: float = 0.0           # per-class runs of several classes (--cls all): first ONE unconditional model
                                    # on every class's images pooled, for this fraction of --minutes (with --steps/
                                    # --epochs: as long as one class's run); its last weights start every class's
                                    # run (transfer: the shared background, red cells and stain are learnt once)
    members: int = 1                # > 1: an ENSEMBLE per class (Eilertsen et al. 2021): this many generators trained
                                    # independently (seeds seed, seed+1, ...; the budget split between them), each
                                    # cell drawn by one of them (wbcgen/gan/ensemble.py)
    audition: int = 0               # ensembles: first train this many candidate generators (seeds seed, seed+1, ...)
                                    # for audition_steps each, score each with the selection proxy at that step, and
                                    # continue only the `members` best on what is left of the budget (0 = off: the
                                    # members are the first `members` seeds). GAN seed moves a class by more than
                                    # any config does (bench/RESULTS.md, session 15); this picks the good draws
    audition_steps: int = 100
    amp: bool = True                # bf16 autocast on CUDA (CPU: fp32, bit-reproducible, unless cpu_bf16)
    cpu_bf16: bool = False          # bf16 autocast on CPUs with native bf16 (AVX512-BF16 / AMX): 1.3-1.4x the GAN steps
                                    # per CPU second (bench/RESULTS.md, session 29); deterministic on one machine,
                                    # not bit-equal to fp32; ignored (fp32) on CPUs without it, as in classifier recipes
    compile: bool = False           # torch.compile G and D on CUDA
    image_size: int = 128
    train_size: int = 0             # fast family, pixel D: G's learnt layers end at this size and a fixed bilinear
                                    # upsample gives image_size; D sees every image (real and fake) area-downsampled
                                    # to it. 64 = ~4x cheaper steps for the global shapes (0 = image_size)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def replace(self, **kw: Any) -> "GanConfig":
        return validate(dataclasses.replace(self, **kw))

    @property
    def guided(self) -> bool:
        """Whether G also trains on a frozen classifier (``cls_weight`` and/or ``fm_weight``)."""
        return self.cls_weight > 0 or self.fm_weight > 0


DEFAULT = "fast64x2"  # what `wbcgen train-gan` trains without --config (the benchmark's best; README)

PRESETS: dict[str, dict[str, Any]] = {
    # Faithful to seed 001 §5 / SPEC §3: 2,780,099 G and 69,878,401 D parameters.
    "paper": dict(
        name="paper", arch="paper", z_dim=100, g_base=8, g_widths=[256, 128, 64, 32, 16, 8],
        d_widths=[64, 128, 256, 512, 1024, 2048], d_dropout=0.6, d_norm="none", d_mbstd=False,
        batch_size=1, lr_g=1e-5, lr_d=1e-5, beta1=0.9, beta2=0.999, diffaug="", ema_decay=0.0,
        epochs=10000.0, steps=0, log_every=100, sample_every=5000, eval_every=5000, ckpt_every=5000,
        description="The W-Net paper's DCGAN (5x5 kernels, batch 1, lr 1e-5, beta1 0.9, 10,000 epochs).",
    ),
    # Modern DCGAN practice; widths chosen for quality per unit of CPU time (see readme).
    "fast": dict(
        name="fast", arch="fast", z_dim=128, g_base=8, g_widths=[128, 64, 32, 32, 16], g_padding="replicate",
        g_blur=True, g_blur_last=False, d_widths=[16, 32, 64, 128, 256], d_dropout=0.0, d_norm="spectral",
        d_mbstd=True, d_blur=True, d_blur_first=False, r1_gamma=0.1, r1_every=4,
        batch_size=64, lr_g=2e-4, lr_d=2e-4, beta1=0.5, beta2=0.999,
        diffaug="color,translation,cutout", ema_decay=0.999, steps=200, epochs=0.0,
        log_every=10, sample_every=100, eval_every=100, ckpt_every=100,
        description="Upsample+conv G with BN (bilinear below 128 px), spectral-norm D with minibatch-stddev and "
                    "lazy R1, DiffAugment, EMA.",
    ),
    # One class-conditional model for all classes (train-gan --cls all --config cond): the fast
    # networks with class-conditional BatchNorm in G and a projection discriminator.
    "cond": dict(
        name="cond", arch="fast", conditional=True, z_dim=128, g_base=8, g_widths=[128, 64, 32, 32, 16],
        g_padding="replicate", g_blur=True, g_blur_last=False, d_widths=[16, 32, 64, 128, 256], d_dropout=0.0,
        d_norm="spectral", d_mbstd=True, d_blur=True, d_blur_first=False, r1_gamma=0.1, r1_every=4,
        batch_size=64, lr_g=2e-4, lr_d=2e-4, beta1=0.5, beta2=0.999,
        diffaug="color,translation,cutout", ema_decay=0.999, steps=1000, epochs=0.0,
        log_every=10, sample_every=100, eval_every=100, ckpt_every=100,
        description="The fast networks as ONE model for all classes: class-conditional BatchNorm in G, "
                    "projection discriminator, class-balanced batches.",
    ),
    # cond's generator judged by a projected discriminator (Sauer et al. 2021) whose frozen features come
    # from a small classifier trained first on the run's own training images (wbcgen/gan/projected.py).
    "proj": dict(
        name="proj", arch="fast", conditional=True, z_dim=128, g_base=8, g_widths=[128, 64, 32, 32, 16],
        g_padding="replicate", g_blur=True, g_blur_last=False, d_blur=True, d_blur_first=False, d_arch="projected",
        feat_steps=300,
        feat_widths=[16, 32, 64, 128], proj_width=64, d_norm="spectral", d_mbstd=False, r1_gamma=0.0,
        batch_size=64, lr_g=2e-4, lr_d=2e-4, beta1=0.0, beta2=0.99,
        diffaug="color,translation,cutout", ema_decay=0.999, steps=1000, epochs=0.0,
        log_every=10, sample_every=100, eval_every=100, ckpt_every=100,
        description="The cond generator with a projected discriminator on the frozen features of a small classifier "
                    "trained first on the run's own training images.",
    ),
    # For tests and quick CPU demos: same family, very narrow.
    "tiny": dict(
        name="tiny", arch="fast", z_dim=32, g_base=8, g_widths=[32, 16, 8, 8, 4], g_padding="replicate",
        g_blur=True, d_widths=[8, 16, 16, 32, 32], d_dropout=0.0, d_norm="spectral", d_mbstd=True, d_blur=True,
        r1_gamma=0.1, r1_every=4,
        batch_size=8, lr_g=2e-4, lr_d=2e-4, beta1=0.5, beta2=0.999,
        diffaug="color,translation,cutout", ema_decay=0.99, steps=20, epochs=0.0,
        log_every=2, sample_every=5, eval_every=5, ckpt_every=5, eval_n=32,
        description="A very small model of the fast family for tests and demos.",
    ),
}


# THE DEFAULT: fast at a 64-px training size (a fixed bilinear upsample to 128 px), D with a pooled head
# and an anti-aliasing blur before every stride-2 conv, TTUR. Best of the benchmark at 60 CPU minutes
# (bench/RESULTS.md, session 6).
PRESETS["fast64"] = PRESETS["fast"] | dict(
    name="fast64", g_widths=[128, 64, 32, 32], train_size=64, d_widths=[32, 64, 128, 256], d_blur_first=True,
    d_head="pool", lr_g=1e-4, lr_d=4e-4,
    description="fast learnt at 64 px (fixed bilinear upsample to 128), pooled-head D blurred before every "
                "stride-2 conv, TTUR (lr_d 4e-4, lr_g 1e-4).",
)


# THE DEFAULT since session 13: fast64 as an ENSEMBLE of two generators per class (Eilertsen et al. 2021),
# each trained on half the budget with its own seed; every sampled cell comes from one of them. Its two
# hours beat fast64's on both TSTR nets (bench/RESULTS.md, sessions 12-13).
# A --minutes budget stops each member at step 450 at the latest: fast64's cells are best at ~400-450 steps
# and degrade after (the half-hour sets beat the hour's; session 6 / 12).
# cpu_bf16 since session 29: on CPUs with native bf16, 1.3-1.4x the steps per CPU second, so every member reaches
# step 450 inside its share (TSTR W-Net 78.4 / WBCsNet 86.6 % against 76.2 / 82.0 at the same GAN seeds, 9 % less
# CPU; row fast64x2-bf16-cpu118); fp32 on other CPUs, bf16 on CUDA as before.
PRESETS["fast64x2"] = PRESETS["fast64"] | dict(
    name="fast64x2", members=2, max_steps=450, cpu_bf16=True,
    description="fast64 as an ensemble: two generators per class trained independently (seeds s, s+1) on half "
                "the budget each (a --minutes budget stops each at step 450 at most), every cell drawn by one of them.",
)


def preset(name: str) -> GanConfig:
    if name not in PRESETS:
        raise UserError(f"unknown GAN config {name!r}; use one of {', '.join(PRESETS)} or a .toml/.json file")
    return validate(GanConfig(**PRESETS[name]))


def from_dict(d: dict[str, Any], *, source: str = "config") -> GanConfig:
    d = dict(d)
    for table in ("model", "train"):
        if isinstance(d.get(table), dict):
            d.update(d.pop(table))
    base = d.pop("base", None)
    cfg = preset(base) if base else GanConfig()
    known = {f.name for f in dataclasses.fields(GanConfig)}
    unknown = sorted(set(d) - known)
    if unknown:
        raise UserError(f"{source}: unknown GAN setting(s) {', '.join(unknown)}")
    try:
        return validate(dataclasses.replace(cfg, **d))
    except TypeError as e:
        raise UserError(f"{source}: {e}") from None


def load_config(config: "str | Path | GanConfig | dict | None") -> GanConfig:
    """A preset name, a TOML/JSON path, a dict or a :class:`GanConfig` → validated config."""
    if config is None:
        return preset(DEFAULT)
    if isinstance(config, GanConfig):
        return validate(dataclasses.replace(config))
    if isinstance(config, dict):
        return from_dict(config)
    s = str(config)
    if s in PRESETS:
        return preset(s)
    path = Path(s)
    if not path.is_file():
        raise UserError(f"GAN config {s!r} is neither a preset ({', '.join(PRESETS)}) nor an existing file")
    try:
        text = path.read_text(encoding="utf-8")
        d = json.loads(text) if path.suffix.lower() == ".json" else tomllib.loads(text)
    except (ValueError, UnicodeDecodeError) as e:
        raise UserError(f"cannot parse GAN config {path}: {e}") from None
    return from_dict(d, source=str(path))


def validate(cfg: GanConfig) -> GanConfig:
    def bad(msg: str) -> None:
        raise UserError(f"invalid GAN config {cfg.name!r}: {msg}")

    cfg.g_widths = [int(w) for w in cfg.g_widths]
    cfg.d_widths = [int(w) for w in cfg.d_widths]
    cfg.feat_widths = [int(w) for w in cfg.feat_widths]
    if cfg.arch not in ("paper", "fast"):
        bad(f"arch must be 'paper' or 'fast', not {cfg.arch!r}")
    if cfg.g_noise and (cfg.arch != "fast" or not 0 < cfg.g_noise <= len(cfg.g_widths) - 1):
        bad(f"g_noise needs the fast family and at most {len(cfg.g_widths) - 1} blocks (got {cfg.g_noise})")
    if cfg.g_sle and (cfg.arch != "fast" or len(cfg.g_widths) < 3):
        bad("g_sle needs the fast family and at least 2 upsampling blocks (3 g_widths)")
    if cfg.d_recon < 0 or (cfg.d_recon and (cfg.arch != "fast" or cfg.d_arch != "pixel" or len(cfg.d_widths) < 3)):
        bad("d_recon must be >= 0 and needs the fast family's pixel D with at least 3 stages")
    if cfg.g_embed_z and not cfg.conditional:
        bad("g_embed_z needs a conditional config")
    if cfg.cond_full and (not cfg.conditional or cfg.d_arch != "pixel" or not 0 <= cfg.cond_from < cfg.cond_full):
        bad("cond_from/cond_full need a conditional config with a pixel D and 0 <= cond_from < cond_full")
    if cfg.cond_from and not cfg.cond_full:
        bad("cond_from needs cond_full (the step where the class counts fully)")
    if cfg.conditional and cfg.arch != "fast":
        bad("conditional models use the fast family (arch = 'fast')")
    if cfg.image_size != 128:
        bad("image_size must be 128 (the W-Net input size)")
    size = cfg.train_size or cfg.image_size
    if cfg.train_size and (cfg.arch != "fast" or cfg.d_arch != "pixel" or cfg.image_size % cfg.train_size
                           or cfg.train_size & (cfg.train_size - 1)):
        bad("train_size needs the fast family with a pixel D and must be a power-of-two divisor of image_size")
    ups = (size // cfg.g_base).bit_length() - 1
    if cfg.g_base * 2 ** ups != size or ups < 1:
        bad("g_base must be a power-of-two divisor of train_size (or image_size), smaller than it")
    need = ups + (2 if cfg.arch == "paper" else 1)
    if len(cfg.g_widths) != need:
        bad(f"g_widths needs {need} entries for g_base {cfg.g_base} (got {len(cfg.g_widths)})")
    if len(cfg.d_widths) < 2 or any(w <= 0 for w in cfg.g_widths + cfg.d_widths):
        bad("widths must be positive and d_widths needs at least 2 entries")
    if cfg.g_padding not in ("zeros", "replicate") or (cfg.arch == "paper" and cfg.g_padding != "zeros"):
        bad("g_padding must be 'zeros' or 'replicate' (paper: 'zeros')")
    if cfg.g_blur and cfg.arch == "fast" and cfg.g_padding != "replicate":
        bad("g_blur needs g_padding = 'replicate'")
    if cfg.d_arch not in ("pixel", "projected"):
        bad(f"d_arch must be 'pixel' or 'projected', not {cfg.d_arch!r}")
    if cfg.d_arch == "projected" and (not cfg.conditional or cfg.r1_gamma):
        bad("a projected discriminator needs a conditional config (its feature net learns the classes) and "
            "r1_gamma = 0")
    for key in ("cls_weight", "fm_weight"):  # the two losses on G in the frozen classifier
        w = getattr(cfg, key)
        if w < 0 or (w and cfg.conditional and cfg.d_arch != "projected"):
            bad(f"{key} must be >= 0; a conditional model needs a projected discriminator for it (its feature net "
                "is the classifier; per-class runs train one of every class)")
    feat = cfg.d_arch == "projected" or cfg.select == "learnt" or cfg.guided
    if feat and (len(cfg.feat_widths) != 4 or cfg.feat_steps < 0 or cfg.proj_width < 1
                 or any(w < 1 for w in cfg.feat_widths)):
        bad("a projected discriminator, a learnt proxy, cls_weight or fm_weight needs four positive feat_widths, "
            "feat_steps >= 0 and proj_width >= 1")
    if cfg.select not in ("random", "learnt"):
        bad("select must be 'random' or 'learnt'")
    if cfg.d_head not in ("flatten", "pool") or (cfg.d_head == "pool" and cfg.arch != "fast"):
        bad("d_head must be 'flatten' or (fast family) 'pool'")
    if cfg.d_norm not in ("spectral", "none"):
        bad("d_norm must be 'spectral' or 'none'")
    if not 0 <= cfg.pretrain < 1 or (cfg.pretrain and cfg.conditional):
        bad("pretrain must be in [0, 1) (a fraction of the budget), and 0 for a conditional config")
    if cfg.refine_steps < 0 or cfg.refine_factor not in (2, 4, 8) or not 0 <= cfg.refine_share < 1 \
            or not 0 <= cfg.refine_blur <= 8 or cfg.refine_mode not in ("paired", "stochastic", "unpaired") \
            or (cfg.refine_mode == "unpaired" and cfg.refine_blur):
        bad("refine_steps must be >= 0, refine_factor 2, 4 or 8, refine_share in [0, 1), refine_blur in [0, 8] and "
            "refine_mode 'paired', 'stochastic' or 'unpaired' (refine_blur not with 'unpaired')")
    if cfg.export not in ("best", "final"):
        bad("export must be 'best' or 'final'")
    if cfg.real_d4 and cfg.layout:
        bad("real_d4: a layout run already shows every real cell (and its layout) under a random flip / quarter turn")
    if cfg.layout and (cfg.arch != "fast" or cfg.conditional or cfg.d_arch != "pixel" or cfg.pretrain
                       or not 2 <= cfg.layout <= 8 or cfg.layout_size & (cfg.layout_size - 1)
                       or not 4 <= cfg.layout_size < size):
        bad("layout needs a per-class fast config with a pixel D and no pretrain, 2 <= layout <= 8 colours, and "
            "layout_size a power of two from 4 to below the training size")
    if cfg.members < 1 or (cfg.members > 1 and cfg.pretrain):
        bad("members must be >= 1, and 1 with pretrain (the members are independent runs)")
    if cfg.audition and (cfg.members < 2 or cfg.audition <= cfg.members or cfg.audition_steps < 1):
        bad("audition must be 0 (off) or more candidates than members (an ensemble, members >= 2), with "
            "audition_steps >= 1")
    if cfg.max_steps < 0:
        bad("max_steps must be >= 0 (0 = no cap on a --minutes run)")
    if cfg.batch_size < 1 or cfg.z_dim < 1:
        bad("batch_size and z_dim must be positive")
    if cfg.class_group < 1 or (cfg.class_group > 1 and (not cfg.conditional or cfg.batch_size % cfg.class_group)):
        bad("class_group must be 1, or (conditional configs) a divisor of batch_size")
    if cfg.ms_weight < 0 or (cfg.ms_weight and cfg.conditional and cfg.class_group % 2):
        bad("ms_weight must be >= 0; a conditional config needs an even class_group with it (pairs of one class)")
    if cfg.spec_weight < 0 or (cfg.spec_weight and cfg.conditional):
        bad("spec_weight must be >= 0 and needs a per-class config (one spectrum target per run)")
    if cfg.ed_weight < 0 or (cfg.ed_weight and cfg.conditional) or not 4 <= cfg.ed_size <= size:
        bad("ed_weight must be >= 0 and needs a per-class config (the real batch is the run's class); ed_size "
            "from 4 px to the training size")
    if not 0 <= cfg.ema_decay < 1:
        bad("ema_decay must be in [0, 1)")
    if not 0 <= cfg.ada_target < 1 or cfg.ada_kimg <= 0 or (cfg.ada_target and not cfg.diffaug):
        bad("ada_target must be in [0, 1) (0 = off) with a diffaug policy, ada_kimg positive")
    if cfg.r1_gamma < 0:
        bad("r1_gamma must be >= 0")
    for k in ("log_every", "sample_every", "eval_every", "ckpt_every", "r1_every", "ada_interval"):
        if getattr(cfg, k) < 1:
            bad(f"{k} must be at least 1")
    from wbcgen.gan.diffaug import POLICIES

    for p in filter(None, (s.strip() for s in cfg.diffaug.split(","))):
        if p not in POLICIES:
            bad(f"unknown diffaug policy {p!r} (known: {', '.join(POLICIES)})")
    return cfg
