"""The GAN training step and its state: :class:`Trainer` (G, D, EMA, optimisers, data order,
quality proxy, checkpoints) and the image/step helpers the loop in :mod:`wbcgen.gan.train` uses.

Per step: D sees ``cat([aug(real), aug(G(z))])`` in one forward (non-saturating logistic
loss), then G is updated through D on the same fakes; an EMA copy of G is kept for
sampling. A conditional config feeds both networks the batch's class indices (fakes get
the real batch's classes) and draws class-balanced batches.
"""
from __future__ import annotations

import copy
import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from classifiers.runtime import UserError, autocast, rng_state, seed_everything, set_rng_state
from wbcgen.gan import ddp, quality
from wbcgen.gan.config import GanConfig
from wbcgen.gan.coverage import energy_loss
from wbcgen.gan.diffaug import diff_augment
from wbcgen.gan.layout import at as layout_at, build_bank, d4
from wbcgen.gan.models import Discriminator, Generator, cond_mix_at, set_cond_mix
from wbcgen.gan.order import BalancedOrder, DataOrder
from wbcgen.gan.projected import _fit as at_size, embed, frozen_feature_net, moment_loss, train_feature_net
from wbcgen.gan.spectrum import real_log_power, spectral_loss

CKPT_FORMAT = "wbcgen-gan-checkpoint-1"


@dataclass
class ClassProxy:
    """A per-class run's learnt selection proxy: a frozen classifier of EVERY class of the training data
    (trained once, shared by the runs of ``--cls all``) and the index of the run's class in it."""
    net: torch.nn.Module
    target: int
    info: dict


class TrainingDiverged(UserError):
    """A loss became NaN/Inf; the last good checkpoint is kept."""


def class_images(cells, cls: str) -> torch.Tensor:
    """uint8 N×3×128×128 images of one class (resized when the data set has another size)."""
    if cls not in cells.classes:
        raise UserError(f"unknown class {cls!r}; choose from {', '.join(cells.classes)}")
    imgs = cells.of_class(cls).images
    if len(imgs) == 0:
        raise UserError(f"the data set {cells.source or '(in memory)'} has no {cls} images to train on")
    if tuple(imgs.shape[-2:]) != (128, 128):
        x = F.interpolate(imgs.float(), size=(128, 128), mode="bilinear", antialias=True, align_corners=False)
        imgs = x.round().clamp(0, 255).to(torch.uint8)
    return imgs.contiguous()


def labelled_images(cells, classes: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
    """uint8 images of several classes and their indices into ``classes``."""
    parts = [class_images(cells, c) for c in classes]
    labels = torch.cat([torch.full((len(p),), k, dtype=torch.long) for k, p in enumerate(parts)])
    return torch.cat(parts), labels


def total_steps(cfg: GanConfig, n: int, batch: int, steps: int | None, epochs: float | None) -> int:
    if steps is not None and epochs is not None:
        raise UserError("give either --steps or --epochs, not both")
    if steps is not None:
        out = steps
    elif epochs is not None:
        out = math.ceil(epochs * n / batch)
    else:
        out = cfg.steps or math.ceil(cfg.epochs * n / batch)
    if out < 1:
        raise UserError(f"the number of training steps must be positive (got {out})")
    return int(out)


class Trainer:
    def __init__(self, cfg: GanConfig, real: torch.Tensor, seed: int, dist: ddp.Dist,
                 labels: torch.Tensor | None = None, classes: list[str] | None = None, resume: bool = False,
                 proxy: "ClassProxy | None" = None):
        self.cfg, self.seed, self.dist, self.dev = cfg, seed, dist, dist.device
        if cfg.conditional and (labels is None or not classes):
            raise UserError("a conditional GAN config trains one model for several classes (use --cls all)")
        self.classes = list(classes) if cfg.conditional else []
        if cfg.batch_size % dist.world:
            raise UserError(f"batch size {cfg.batch_size} is not divisible by the {dist.world} processes")
        self.mf = torch.channels_last  # faster with oneDNN on CPU too (measured), and on CUDA
        seed_everything(seed)  # same initial weights on every rank
        # a layout run: one layout map per training cell (computed here; a resume loads them with G)
        self.g_extra = ({"classes": self.classes} if self.classes else {}) | (
            {"layout_n": len(real)} if cfg.layout else {})
        self.G = Generator(cfg.to_dict() | self.g_extra).to(self.dev, memory_format=self.mf)
        if cfg.layout and not resume:
            self.G.layout_bank.copy_(build_bank(real, cfg.layout, cfg.layout_size, cfg.train_size, seed))
        self.feature_net_info, self.proxy_net, fnet = None, None, None
        if (cfg.d_arch == "projected" or (cfg.select == "learnt" and self.classes)) and not resume:
            # features learnt first from these very images (a resume loads them from the checkpoint)
            fnet, self.feature_net_info = train_feature_net(real, labels, cfg, len(self.classes), seed, self.dev)
        if cfg.d_arch == "projected":
            from wbcgen.gan.projected import ProjectedDiscriminator

            self.D = ProjectedDiscriminator(cfg, len(self.classes), fnet, seed).to(self.dev, memory_format=self.mf)
        else:
            self.D = Discriminator(cfg, len(self.classes)).to(self.dev, memory_format=self.mf)
        self.proxy_target = None  # per-class learnt proxy: the index of this run's class in its classifier
        if cfg.select == "learnt" and self.classes:
            self.proxy_net = (self.D.features if cfg.d_arch == "projected"
                              else (fnet if fnet is not None else frozen_feature_net(cfg, len(self.classes))).to(self.dev))
        elif proxy is not None:  # per-class: a classifier of every class of the data (proxy and/or guide)
            self.proxy_target = proxy.target
            self.feature_net_info = proxy.info
            if cfg.select == "learnt":
                self.proxy_net = proxy.net.to(self.dev)
        # cls_weight / fm_weight: the frozen classifier whose verdict on (and features of) the fakes G is
        # also trained on
        self.guide_net = (self.D.features if cfg.d_arch == "projected" else proxy.net.to(self.dev)
                          if proxy is not None else None) if cfg.guided else None
        self.ema = copy.deepcopy(self.G).eval().requires_grad_(False) if cfg.ema_decay > 0 else None
        betas = (cfg.beta1, cfg.beta2)
        self.opt_g = torch.optim.Adam(self.G.parameters(), lr=cfg.lr_g, betas=betas)
        self.opt_d = torch.optim.Adam(self.D.parameters(), lr=cfg.lr_d, betas=betas)
        self.scaler = torch.amp.GradScaler(self.dev.type, enabled=False)  # bf16 needs no scaling
        self.g_run, self.d_run = self.G, self.D
        if dist.active:
            from torch.nn.parallel import DistributedDataParallel as DDP

            ids = [self.dev.index] if self.dev.type == "cuda" else None
            self.g_run, self.d_run = DDP(self.G, device_ids=ids), DDP(self.D, device_ids=ids)
        self.d_plain, self.d_r1 = self.D, self.d_run
        if cfg.compile and self.dev.type == "cuda":  # R1's double backward stays eager (compiled graphs have none)
            self.g_run, self.d_run = torch.compile(self.g_run), torch.compile(self.d_run)
            self.d_plain = torch.compile(self.D)
        self.real = real.to(self.dev)
        self.labels = labels.to(self.dev) if self.classes else None
        self.order = (BalancedOrder(labels, len(self.classes), seed, cfg.class_group) if self.classes
                      else DataOrder(len(real), seed))
        self.step, self.best = 0, {"fd": None, "step": None}
        # ADA state: augmentation probability (1 = plain DiffAugment), last r_t, sign sum / count
        self.ada_p, self.ada_rt, self.ada_acc = (0.0 if cfg.ada_target else 1.0), None, torch.zeros(2)
        # a different random stream per rank for z / augmentation / dropout
        torch.manual_seed(seed + 7919 * dist.rank)
        g = torch.Generator().manual_seed(seed)
        self.eval_z = torch.randn(max(cfg.eval_n, 64), cfg.z_dim, generator=g)
        k = len(self.classes)
        # conditional: eval images cycle through the classes; the real reference is balanced too
        self.eval_y = torch.arange(len(self.eval_z)) % k if k else None
        if not k:
            self.ref, self.ref_y = real[:2000], None
        else:
            per = [real[labels == c][:2000 // k] for c in range(k)]
            self.ref = torch.cat(per)
            self.ref_y = torch.cat([torch.full((len(r),), c) for c, r in enumerate(per)])
        self._real_feats = self._ed_ref = None
        # spectral loss: the training cells' log power spectrum, through G's own 64-px path (a fixed target)
        self.spec_target = (real_log_power(real, cfg.train_size or cfg.image_size, cfg.image_size).to(self.dev)
                            if cfg.spec_weight else None)

    # ------------------------------------------------------------------ one step
    def train_step(self) -> dict[str, float]:
        cfg, dev, w = self.cfg, self.dev, self.dist.world
        if cfg.cond_full:  # transitional conditioning: how much the class counts at this step
            mix = cond_mix_at(cfg, self.step)
            set_cond_mix(self.G, mix)
            set_cond_mix(self.D, mix)
        idx = self.order.next(cfg.batch_size).chunk(w)[self.dist.rank]
        real = (self.real[idx].float() / 127.5 - 1).contiguous(memory_format=self.mf)
        b = len(idx)
        lay, up = None, None
        if cfg.real_d4 or cfg.layout:  # a cell has no orientation: each real cell under a random flip / quarter turn
            t = torch.randint(0, 8, (b,), device=dev)
            real = d4(real, t).contiguous(memory_format=self.mf)
        if cfg.layout:  # the fakes paint the real batch's layouts, each under its cell's orientation
            lay = d4(self.G.layout_bank[idx.to(dev)].float() / 255.0, t)
            up = layout_at(lay, cfg.image_size) * 2 - 1

        def with_lay(x: torch.Tensor) -> torch.Tensor:  # a layout D judges the (image, layout) pair
            return x if up is None else torch.cat([x, up.to(x.dtype)], 1).contiguous(memory_format=self.mf)
        z = torch.randn(b, cfg.z_dim, device=dev)
        y = (self.labels[idx.to(dev)],) if self.classes else ()  # fakes get the real batch's classes
        yy = (torch.cat([y[0], y[0]]),) if y else ()
        r1 = cfg.r1_gamma > 0 and self.step % cfg.r1_every == 0  # lazy R1 (StyleGAN2)
        with autocast(dev, cfg.amp, cpu=cfg.cpu_bf16):
            fake = (self.g_run(z, *y, layout=lay) if lay is not None else self.g_run(z, *y)) * 2 - 1
            real_in = diff_augment(with_lay(real), cfg.diffaug, self.ada_p)
            if r1:
                real_in = real_in.detach().requires_grad_(True)
            d_in = torch.cat([real_in, diff_augment(with_lay(fake.detach()), cfg.diffaug, self.ada_p)])
            d = self.d_r1 if r1 else self.d_run
            logits, rec = d(d_in, *yy, recon=b) if cfg.d_recon else (d(d_in, *yy), None)
            logits = logits.float()
        loss_d = F.softplus(-logits[:b]).mean() + F.softplus(logits[b:]).mean()
        if rec is not None:  # FastGAN's self-supervised D: rebuild the real inputs from its features
            loss_d = loss_d + cfg.d_recon * rec
        if r1:  # penalise D's gradient on (augmented) real images: a smoother D, fewer artefacts
            (grad,) = torch.autograd.grad(logits[:b].sum(), real_in, create_graph=True)
            loss_d = loss_d + grad.float().square().sum(dim=[1, 2, 3]).mean() * (cfg.r1_gamma / 2 * cfg.r1_every)
        self.opt_d.zero_grad(set_to_none=True)
        loss_d.backward()
        self.opt_d.step()
        self.D.requires_grad_(False)
        with autocast(dev, cfg.amp, cpu=cfg.cpu_bf16):
            logits_g = self.d_plain(diff_augment(with_lay(fake), cfg.diffaug, self.ada_p), *y)
            # AC-GAN-style: the frozen feature classifier must see the asked class — on the fakes as
            # drawn: colour augmentation alone drops its accuracy on real cells from 99 % to 32 %
            # (none in a pooled pre-training run: it has no class to ask for; its class runs have)
            feats = (self.guide_net.stage_features(at_size(fake, self.guide_net.input_size))
                     if self.guide_net is not None else None)
            cls_logits = self.guide_net.head(feats) if feats and cfg.cls_weight else None
            if feats and cfg.fm_weight:  # feature matching: the real batch's statistics, as drawn too
                with torch.no_grad():
                    real_feats = self.guide_net.stage_features(at_size(real, self.guide_net.input_size))
        loss_g = F.softplus(-logits_g.float()).mean()
        if cfg.ms_weight:  # mode seeking (Mao et al. 2019): consecutive pairs share a class
            m = b - b % 2
            lz = (fake[0:m:2] - fake[1:m:2]).float().abs().mean() / (z[0:m:2] - z[1:m:2]).abs().mean()
            loss_g = loss_g + cfg.ms_weight / (lz + 1e-5)
        if self.spec_target is not None:
            loss_g = loss_g + cfg.spec_weight * spectral_loss(fake, self.spec_target, cfg.train_size or cfg.image_size)
        if cfg.ed_weight:  # coverage: the fakes spread over the real batch's coarse layouts (per-class runs)
            loss_g = loss_g + cfg.ed_weight * energy_loss(fake, real, cfg.ed_size)
        if cls_logits is not None:
            target = y[0] if y else torch.full((b,), self.proxy_target, device=dev)
            loss_g = loss_g + cfg.cls_weight * F.cross_entropy(cls_logits.float(), target)
        if feats and cfg.fm_weight:
            loss_g = loss_g + cfg.fm_weight * moment_loss(feats, real_feats)
        self.opt_g.zero_grad(set_to_none=True)
        loss_g.backward()
        self.opt_g.step()
        self.D.requires_grad_(True)
        self.step += 1
        if cfg.ada_target:
            self._ada(logits[:b].detach(), b)
        if self.ema is not None:
            self._update_ema()
        return {"loss_d": loss_d.detach(), "loss_g": loss_g.detach(),
                "d_real": torch.sigmoid(logits[:b].detach()).mean(), "d_fake": torch.sigmoid(logits[b:].detach()).mean()
                } | ({"d_recon": rec.detach()} if rec is not None else {})

    @torch.no_grad()
    def _ada(self, real_logits: torch.Tensor, b: int) -> None:
        """ADA: r_t = E[sign(D(real))] over ``ada_interval`` steps (all ranks); p moves towards
        more augmentation when r_t > target (D overfits the reals), less when below."""
        self.ada_acc += torch.stack([real_logits.sign().sum().float().cpu(), torch.tensor(float(b))])
        if self.step % self.cfg.ada_interval:
            return
        tot = sum(ddp.gather(self.ada_acc, self.dist))
        self.ada_rt = float(tot[0] / tot[1])
        step = float(tot[1]) / (self.cfg.ada_kimg * 1000)
        self.ada_p = min(1.0, max(0.0, self.ada_p + (step if self.ada_rt > self.cfg.ada_target else -step)))
        self.ada_acc = torch.zeros(2)

    @torch.no_grad()
    def _update_ema(self) -> None:
        decay = min(self.cfg.ema_decay, (1 + self.step) / (10 + self.step))  # warm-up for short runs
        # fused over the lists: per-tensor calls cost a kernel launch each, and a small GAN is launch-bound on CUDA
        torch._foreach_lerp_(list(self.ema.parameters()), list(self.G.parameters()), 1 - decay)
        torch._foreach_copy_(list(self.ema.buffers()), list(self.G.buffers()))

    def sampler(self) -> torch.nn.Module:
        return self.ema if self.ema is not None else self.G

    # ----------------------------------------------------------------- quality
    @torch.inference_mode()
    def generate_eval(self, n: int, y: torch.Tensor | None = None, z: torch.Tensor | None = None) -> torch.Tensor:
        """Fixed-z images from the EMA generator (conditional: classes ``y``, default
        ``eval_y``); uses no global randomness."""
        g = self.sampler()
        was_training = g.training
        g.eval()
        z_all = self.eval_z[:n] if z is None else z
        if not self.classes:
            f = g.folded().to(self.dev, memory_format=self.mf)
            out = torch.cat([f(z.to(self.dev)).float().cpu() for z in z_all.split(128)])
        else:
            y = self.eval_y[:n] if y is None else y
            out = torch.empty(len(z_all), 3, self.cfg.image_size, self.cfg.image_size)
            for k in y.unique().tolist():  # one BN-folded generator per class
                f = g.folded(k).to(self.dev, memory_format=self.mf)
                sel = torch.nonzero(y == k).flatten()
                out[sel] = torch.cat([f(z.to(self.dev)).float().cpu() for z in z_all[sel].split(128)])
        g.train(was_training)
        return out

    def grid_images(self) -> tuple[torch.Tensor, int]:
        """The fixed-z sample grid: 64 images, or 8 per class (one row each) when conditional."""
        if not self.classes:
            return self.generate_eval(64), 8
        k = len(self.classes)
        # the same 8 latents in every row: columns show what the class label changes
        return self.generate_eval(8 * k, torch.arange(k).repeat_interleave(8), self.eval_z[:8].repeat(k, 1)), 8

    def features(self, images: torch.Tensor) -> torch.Tensor:
        """The selection proxy's features: learnt cell features (``select = "learnt"``, or the
        projected D's own), else the fixed random ones of :mod:`wbcgen.gan.quality`."""
        if self.proxy_net is not None:
            return embed(self.proxy_net, images)[0]
        return self.D.embed(images) if self.cfg.d_arch == "projected" else quality.features(images)

    @property
    def real_feats(self) -> torch.Tensor:
        if self._real_feats is None:
            self._real_feats = self.features(self.ref)
        return self._real_feats

    @property
    def ed_ref(self) -> torch.Tensor:
        """The run's training cells at ``ed_size`` px in [-1, 1], pooled once (each evaluation's ``ed``)."""
        if self._ed_ref is None:
            self._ed_ref = F.adaptive_avg_pool2d(self.ref.float() / 127.5 - 1, self.cfg.ed_size)
        return self._ed_ref

    def evaluate(self) -> dict:
        imgs = self.generate_eval(self.cfg.eval_n)
        # the learnt proxy's one pass gives the features and the class predictions
        feats, pred = embed(self.proxy_net, imgs) if self.proxy_net is not None else (self.features(imgs), None)
        fd = quality.frechet_distance(*quality.stats(feats), *quality.stats(self.real_feats))
        y = self.eval_y[:len(imgs)] if self.classes else None
        extra = {}
        if pred is not None and y is not None:  # learnt: each class against its own real cells, recognised as itself
            per = [quality.frechet_distance(*quality.stats(feats[y == c]),
                                            *quality.stats(self.real_feats[self.ref_y == c])) for c in y.unique().tolist()]
            extra = {"fd_all": round(fd, 6), "class_acc": round(float((pred == y).float().mean()), 4)}
            fd = sum(per) / len(per)
        elif pred is not None:  # per-class learnt: how often the classifier of all classes sees this class
            extra = {"class_acc": round(float((pred == self.proxy_target).float().mean()), 4)}
        if y is None:
            div = quality.diversity(feats) / max(quality.diversity(self.real_feats), 1e-12)
        else:  # within each class, the worst class: a mix of five collapsed classes still looks diverse
            div = min(quality.diversity(feats[y == c]) / max(quality.diversity(self.real_feats[self.ref_y == c]), 1e-12)
                      for c in y.unique().tolist())
        if self.spec_target is not None:  # the spectral loss of the EMA G's fixed-z images (0 = real cells' detail)
            size = self.cfg.train_size or self.cfg.image_size
            extra["spec"] = round(float(spectral_loss(imgs * 2 - 1, self.spec_target.cpu(), size)), 4)
        if self.cfg.ed_weight:  # the coverage term of the EMA G's images against every training cell of the run
            extra["ed"] = round(float(energy_loss(imgs * 2 - 1, self.ed_ref, self.cfg.ed_size)), 4)
        return {"fd": round(fd, 6), "diversity_ratio": round(div, 4), "collapsed": div < self.cfg.collapse_ratio} | extra

    # -------------------------------------------------------------- checkpoints
    def state_dict(self, gather: bool = True) -> dict:
        """Everything needed to continue. ``gather`` collects every rank's RNG (a collective:
        all ranks must call it); without it only this rank's RNG is stored."""
        rngs = ddp.gather(torch.get_rng_state(), self.dist) if gather else [torch.get_rng_state()]
        state = {
            "format": CKPT_FORMAT, "step": self.step, "seed": self.seed, "config": self.cfg.to_dict(),
            "G": self.G.state_dict(), "D": self.D.state_dict(),
            "ema": self.ema.state_dict() if self.ema is not None else {},
            "opt_g": self.opt_g.state_dict(), "opt_d": self.opt_d.state_dict(), "scaler": self.scaler.state_dict(),
            "rng": rng_state(), "rng_ranks": rngs, "world": len(rngs),
            "data": self.order.state_dict(), "best": dict(self.best),
            "ada": {"p": self.ada_p, "rt": self.ada_rt, "acc": self.ada_acc.clone()},
        }
        if self._own_classifier() is not None:  # (a projected D carries its feature net)
            state["proxy"] = self._own_classifier().state_dict()
        if self.dev.type == "cuda":
            cuda = torch.cuda.get_rng_state(self.dev)
            state["cuda_rng_ranks"] = ddp.gather(cuda, self.dist) if gather else [cuda]
        return state

    def _own_classifier(self) -> torch.nn.Module | None:
        """The frozen classifier a checkpoint must carry beside D: the learnt proxy and/or the
        cls_weight guide (one network), unless it is a projected D's own feature net."""
        if self.cfg.d_arch == "projected":
            return None
        return self.proxy_net if self.proxy_net is not None else self.guide_net

    def load_weights(self, s: dict, source: str) -> None:
        """Start from another run's networks (``G``, ``D``, ``ema``): transfer, not resume — the
        optimisers, data order, step and RNG stay this run's own."""
        try:
            self.G.load_state_dict(s["G"])
            self.D.load_state_dict(s["D"])
            if self.ema is not None:
                self.ema.load_state_dict(s["ema"] or s["G"])
        except (KeyError, RuntimeError, ValueError) as e:
            raise UserError(f"cannot start from {source}: its networks do not fit the {self.cfg.name!r} config "
                            f"({type(e).__name__})") from None

    def load_state_dict(self, s: dict) -> None:
        if s.get("format") != CKPT_FORMAT:
            raise UserError("the checkpoint is not a wbcgen GAN training checkpoint")
        try:
            self.G.load_state_dict(s["G"])
            self.D.load_state_dict(s["D"])
            if self.ema is not None:
                self.ema.load_state_dict(s["ema"])
            if self._own_classifier() is not None:
                self._own_classifier().load_state_dict(s["proxy"])
            self.opt_g.load_state_dict(s["opt_g"])
            self.opt_d.load_state_dict(s["opt_d"])
            if s["scaler"]:
                self.scaler.load_state_dict(s["scaler"])
        except (KeyError, RuntimeError, ValueError) as e:
            raise UserError(f"the checkpoint does not fit this GAN config ({type(e).__name__})") from None
        self.order.load_state_dict(s["data"])
        self.step, self.best = int(s["step"]), dict(s["best"])
        self._real_feats = None  # a projected D's feature net came with the checkpoint
        if "ada" in s:
            self.ada_p, self.ada_rt, self.ada_acc = float(s["ada"]["p"]), s["ada"]["rt"], s["ada"]["acc"].clone()
        if int(s["world"]) == self.dist.world:
            set_rng_state(s["rng"])
            torch.set_rng_state(s["rng_ranks"][self.dist.rank])
            if self.dev.type == "cuda" and "cuda_rng_ranks" in s:
                torch.cuda.set_rng_state(s["cuda_rng_ranks"][self.dist.rank], self.dev)
        else:  # a different number of processes: continue, but not bit-identically
            torch.manual_seed(self.seed + 7919 * self.dist.rank + 104729 * self.step)
