"""Probe what reproduces the PyTorch original's fast first epoch (53.46%) and its collapse (8.21% at epoch 4).

Usage: python benchmarks/repro_probes.py --head stem --init torch [--epochs 1] [--json OUT]

Trains the reference model (192,778 trainable parameters) on the original's schedule: batch 512, Adam, one cycle
over 24 epochs peaking at 0.0061 after 5 (the LR it printed), our crop + flip augmentation unless --no-augment.
Only the first --epochs of the 24 run. Each variant changes one thing the original's code may have done:
`--head stem` has the logits read the pooled stem, as a forward that dropped the blocks' output would (their
weights then take no part, so the model trains 186,346 of the reference's 192,778 parameters),
`--init torch` draws every conv and dense weight and bias as PyTorch's defaults do, U(±1/sqrt(fan_in)).
After each epoch the test accuracy is taken twice: as Keras evaluates (BatchNorm on its moving statistics) and
with BatchNorm on each test batch's own statistics, as a test loop that forgot `model.eval()` would.
"""

import argparse
import json
import shlex
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import keras  # noqa: E402
import numpy as np  # noqa: E402

from benchmarks.original import SCHEDULE  # noqa: E402
from keras_ultimus.datasets.cifar10 import load_cifar10  # noqa: E402
from keras_ultimus.models.ultimus import build_model  # noqa: E402
from keras_ultimus.training import evaluation  # noqa: E402
from keras_ultimus.training.compiling import compile_model  # noqa: E402
from keras_ultimus.training.fitting import fit_arrays  # noqa: E402
from keras_ultimus.training.recipe import environment  # noqa: E402


def torch_init(model: keras.Model, seed: int) -> None:
    """Redraw each conv and dense kernel and bias from U(±1/sqrt(fan_in)), PyTorch's default initialisation."""
    rng = np.random.default_rng(seed)
    kernels = {
        v.path.rsplit("/", 1)[0]: v for v in model.trainable_weights if v.path.endswith("/kernel")
    }
    for weight in model.trainable_weights:
        layer, name = weight.path.rsplit("/", 1)
        if name in ("kernel", "bias"):
            fan_in = int(np.prod(kernels[layer].shape[:-1]))
            weight.assign(rng.uniform(-1, 1, weight.shape).astype("float32") / np.sqrt(fan_in))


def probe_model(head: str, attention: str) -> keras.Model:
    """The reference model; with `head="stem"` its logits read the pooled stem, so the blocks take no part."""
    model = build_model(attention=attention)
    if head == "blocks":
        return model
    return keras.Model(
        model.input, model.get_layer("logits")(model.get_layer("gap").output), name="head_on_stem"
    )


def accuracy(
    model: keras.Model, images: np.ndarray, labels: np.ndarray, bn_batch_stats: bool
) -> float:
    """Test accuracy in batches of 512; `bn_batch_stats` normalises each batch by its own statistics."""
    if not bn_batch_stats:
        return float(
            np.mean(evaluation.logits(model, images, SCHEDULE["batch_size"]).argmax(-1) == labels)
        )
    hits, state = (
        0,
        (
            [v.value for v in model.trainable_variables],
            [v.value for v in model.non_trainable_variables],
        ),
    )
    for start in range(0, len(images), SCHEDULE["batch_size"]):
        x = images[start : start + SCHEDULE["batch_size"]].astype("float32")
        logits, _ = model.stateless_call(
            *state, x, training=True
        )  # the model's own variables stay unchanged
        hits += int(
            np.sum(
                keras.ops.convert_to_numpy(keras.ops.argmax(logits, axis=-1))
                == labels[start : start + len(x)]
            )
        )
    return hits / len(images)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument(
        "--head", choices=("blocks", "stem"), default="blocks", help="what the logits read"
    )
    p.add_argument(
        "--init", choices=("keras", "torch"), default="keras", help="weight initialisation"
    )
    p.add_argument("--attention", choices=("sample", "batch", "elementwise"), default="sample")
    p.add_argument("--no-augment", dest="augment", action="store_false")
    p.add_argument(
        "--epochs", type=int, default=1, help="how many of the schedule's 24 epochs to run"
    )
    p.add_argument("--limit", type=int, help="first N training and test images (a dry run)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", help="write the per-epoch figures here")
    args = p.parse_args()

    (x, y), (xt, yt) = load_cifar10()
    if args.limit:
        x, y, xt, yt = x[: args.limit], y[: args.limit], xt[: args.limit], yt[: args.limit]
    keras.utils.set_random_seed(args.seed)
    model = probe_model(args.head, args.attention)
    if args.init == "torch":
        torch_init(model, args.seed)
    steps = -(-len(x) // SCHEDULE["batch_size"])
    compile_model(model, SCHEDULE["max_lr"], SCHEDULE["epochs"] * steps, SCHEDULE["pct_start"])
    rows = []
    for epoch in range(args.epochs):
        fit_arrays(
            model,
            x,
            y,
            batch_size=SCHEDULE["batch_size"],
            seed=args.seed,
            augment=args.augment,
            pipeline="numpy",
            initial_epoch=epoch,
            epochs=epoch + 1,
            verbose=2,
        )
        rows.append(
            {
                "epoch": epoch + 1,
                "lr": float(model.optimizer.learning_rate),
                "test_accuracy": accuracy(model, xt, yt, bn_batch_stats=False),
                "test_accuracy_bn_batch_stats": accuracy(model, xt, yt, bn_batch_stats=True),
            }
        )
        print(json.dumps(rows[-1]), flush=True)
    result = {
        "command": shlex.join(["python", *sys.argv]),
        "args": vars(args),
        **environment(),
        "trainable_params": sum(int(np.prod(w.shape)) for w in model.trainable_weights),
        "epochs": rows,
    }
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=1) + "\n")


if __name__ == "__main__":
    main()
