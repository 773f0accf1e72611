"""The GPU driver's experiments as data: each stage's runs (folder name, backend, `train` flags) and settings.

Nothing here starts a process or reads a file; `benchmarks.stages` and `benchmarks.confirm` hand these to the
runner (`benchmarks.runner`), which adds the dry run's tiny limits and a `--config` file where a run names one.
"""

import re
from dataclasses import dataclass
from pathlib import Path

from benchmarks.original import TRAIN_FLAGS
from keras_ultimus.config import BEST_FAMILY

STAGES = ("bench", "train", "bf16", "seeds", "recipe", "repro", "ablation", "search", "confirm")
PIPELINE = "device"  # the uint8 training set on the GPU, each batch cropped and flipped there
# The faithful model's candidate recipe (71.61% on seed 0, CPU).
RECIPE = ["--batch-size", "256", "--max-lr", "0.002"]
# The best variant so far (reports/whiten-bs256-avgpool-cpu/) as a train --config, and the ablation's arms: one
# change each.
BEST_VARIANT = {**BEST_FAMILY, "batch_size": 256}
ARMS = {
    "base": {},
    "no-whiten": {"whiten": False},
    "max-pooling": {"pooling": "max"},
    "batch-512": {"batch_size": 512},
    "no-label-smoothing": {"label_smoothing": 0.0},
    "weight-decay": {"weight_decay": 0.04},
    "ema": {"ema": 0.99},
    "sgd": {"optimizer": "sgd", "max_lr": 0.1},
    "no-ultimus-block": {"num_blocks": 0},
}  # SGD's peak LR is a guess, not tuned
ATTENTIONS = (
    "sample",
    "batch",
    "elementwise",
)  # keras_ultimus.models.layers' readings, without Keras
PRECISIONS = ("float32", "mixed_bfloat16")
SEEDS = (0, 1, 2)
CONFIRM_EPOCHS = 24
# The bench's flags on the GPU and in the dry run (its data is synthetic).
BENCH_FLAGS = {
    "gpu": "--steps 20 --repeats 3 --matmul-size 8192 --precisions float32,mixed_bfloat16,mixed_float16",
    "dry run": "--steps 1 --repeats 1 --batch-size 8 --matmul-size 64 --precisions float32",
}
TINY = "--epochs 1 --limit-train 64 --limit-test 32 --batch-size 16"  # every dry-run training run
SEARCH_COLUMNS = (
    "trial_id num_blocks key_dim scale residual conv_widths downsample stem pooling whiten label_smoothing "
    "weight_decay ema max_lr tuner/epochs trainable_params best_val_accuracy"
).split()  # the search summary's table


@dataclass(frozen=True)
class Run:
    """One `train` run: its folder under --work, its flags, the stage's --config file it reads, its backend."""

    name: str
    flags: tuple[str, ...] = ()
    config: str | None = None
    backend: str = "torch"


TIMED = (Run("train-torch"), Run("train-jax", backend="jax"))  # the default, each alone on the GPU
BF16 = tuple(
    Run(f"bf16-{p}", ("--seed", "0", "--epochs", "8", "--precision", p)) for p in PRECISIONS
)
DEFAULT_SEEDS = tuple(Run(f"seed-{seed}", ("--seed", str(seed))) for seed in SEEDS)
RECIPE_SEEDS = tuple(Run(f"recipe-{seed}", (*RECIPE, "--seed", str(seed))) for seed in SEEDS)
# The original's schedule; the dry run's --epochs 1 comes after its --epochs 24, so it wins.
REPRO = tuple(
    Run(f"repro-{a}", (*TRAIN_FLAGS, "--attention", a, "--seed", "0")) for a in ATTENTIONS
)


def ablation_runs(seeds: list[int]) -> tuple[dict[str, dict], list[Run]]:
    """The arms' configs (the best variant with one change) and their runs, every arm's first seed first."""
    configs = {arm: {**BEST_VARIANT, **change} for arm, change in ARMS.items()}
    runs = [
        Run(f"ablation-{arm}-s{seed}", ("--seed", str(seed)), config=arm)
        for seed in seeds
        for arm in ARMS
    ]
    return configs, runs


def confirm_name(k: int, seed: int) -> str:
    """The run folder of top-k configuration's `seed` (seed 0 keeps the earlier sessions' name, confirm-k)."""
    return f"confirm-{k}" if seed == 0 else f"confirm-{k}-s{seed}"


def depth_name(blocks: int, residual: bool) -> str:
    """The run folder of the best configuration at `blocks` blocks, the residual on or off."""
    return f"depth-{blocks}-{'residual' if residual else 'plain'}"


def confirm_runs(
    top: list[dict], depths: list[int], seeds: list[int]
) -> tuple[dict[str, dict], list[Run], dict[tuple[int, bool], str]]:
    """The confirmations: the top configs (flip TTA on) at each seed, and the best at each depth, residual on and off.

    Returns the configs by name, the runs (every configuration's seed 0 first) and the depth chart's run of each
    (blocks, residual); the best's own depth is confirm-1, not trained twice.
    """
    configs = {f"top{k}": {**c, "tta": "flip"} for k, c in enumerate(top, 1)}  # val_accuracy: plain
    best, depth_runs = configs["top1"], {}
    for d in depths:
        for residual in (False, True):
            if (d, residual) == (best["num_blocks"], bool(best.get("residual"))):
                depth_runs[d, residual] = confirm_name(1, 0)
                continue
            depth_runs[d, residual] = depth_name(d, residual)
            configs[depth_name(d, residual)] = {**best, "num_blocks": d, "residual": residual}
    epochs = ("--epochs", str(CONFIRM_EPOCHS))
    runs = [
        Run(confirm_name(k, seed), ("--seed", str(seed), *epochs), config=f"top{k}")
        for seed in seeds
        for k in range(1, len(top) + 1)
    ]
    runs += [
        Run(name, ("--seed", "0", *epochs), config=name)
        for name in depth_runs.values()
        if name not in {r.name for r in runs}
    ]
    return configs, runs, depth_runs


def model_rank(path: Path) -> int:
    """The models the README cites first: the timed runs, the seeds, the best confirmation; then the others."""
    run = path.parent.name
    if re.fullmatch(r"train-\w+|seed-\d+|confirm-1", run):
        return 0
    return 1 if run.startswith("confirm-") else 2 if run.startswith("bf16-") else 3
