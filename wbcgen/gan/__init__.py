"""Per-class DCGAN for white-blood-cell images: models, the training loop, sampling.

    G, D = create_gan()                           # the default fast64x2 (2 members); or "fast", "paper", "tiny", a .toml/.json, a GanConfig
    run = train_gan(cells, "basophil")            # -> runs/gan/basophil/<run-id>/
    run = train_gan(cells, "all", config="cond", minutes=60)   # one conditional model -> runs/gan/all/<id>/
    runs = train_gans(cells, ["basophil", "monocyte"], minutes=30)   # {class: run}, sharing the budget
    G = load_generator(run)                       # eval-mode generator
    imgs = generate(G, 1000, seed=0)              # uint8 1000×3×128×128
    sample_to_folder({"basophil": run}, 1000, "synthetic", seed=0)
"""
from wbcgen.gan.config import PRESETS, GanConfig, load_config
from wbcgen.gan.models import Discriminator, Generator, count_params, create_gan
from wbcgen.gan.runs import find_runs
from wbcgen.gan.sample import generate, load_generator, sample_to_folder
from wbcgen.gan.train import TrainingDiverged, train_gan
from wbcgen.gan.schedule import train_gans

__all__ = ["GanConfig", "PRESETS", "load_config", "Generator", "Discriminator", "create_gan", "count_params",
           "train_gan", "train_gans", "TrainingDiverged", "load_generator", "generate", "sample_to_folder", "find_runs"]
