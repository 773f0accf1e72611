"""Train the Ultimus model on CIFAR-10: `python -m keras_ultimus.train --help`."""

import argparse
import json
import os
import platform
import shlex
import sys
import time
from datetime import datetime
from pathlib import Path

import keras
import numpy as np
import pandas as pd

from keras_ultimus.data import DataError, load_cifar10, make_dataset
from keras_ultimus.model import build_model
from keras_ultimus.schedules import OneCycle

CSV_NAME = "log.csv"
MODEL_ARGS = ("num_blocks", "key_dim", "scale", "residual", "conv_widths", "bn_momentum")


class EpochStats(keras.callbacks.Callback):
    """Add the learning rate and the epoch's wall time to the logs for CSVLogger."""

    def on_epoch_begin(self, epoch, logs=None):
        self._start = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        lr = self.model.optimizer.learning_rate
        logs["learning_rate"] = float(keras.ops.convert_to_numpy(lr))
        logs["epoch_seconds"] = round(time.perf_counter() - self._start, 2)


class TrimLog(keras.callbacks.Callback):
    """After BackupAndRestore, drop CSV rows of epochs that will run again."""

    def __init__(self, csv_path: Path, steps_per_epoch: int, checkpoint: keras.callbacks.ModelCheckpoint):
        super().__init__()
        self.csv_path, self.steps_per_epoch, self.checkpoint = csv_path, steps_per_epoch, checkpoint

    def on_train_begin(self, logs=None):
        done = int(keras.ops.convert_to_numpy(self.model.optimizer.iterations)) // self.steps_per_epoch
        if done and self.csv_path.exists():
            log = pd.read_csv(self.csv_path)
            log = log[log["epoch"] < done]
            log.to_csv(self.csv_path, index=False)
            self.checkpoint.best = float(log["val_accuracy"].max())
            print(f"Resumed after epoch {done}.")


def compile_model(model: keras.Model, max_lr: float, total_steps: int, pct_start: float = 0.25) -> None:
    """Compile with Adam on the one-cycle schedule, sparse CE on logits, accuracy."""
    model.compile(
        optimizer=keras.optimizers.Adam(OneCycle(max_lr, total_steps, pct_start)),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
    )


def model_kwargs(config: dict) -> dict:
    """Pick the `build_model` arguments out of a run config."""
    return {k: config[k] for k in MODEL_ARGS if k in config}


def environment() -> dict:
    """Backend, library versions and machine, for run.json."""
    versions = {"python": platform.python_version(), "keras": keras.__version__, "numpy": np.__version__}
    for name in ("tensorflow", "torch", "jax"):
        if name in sys.modules:
            versions[name] = sys.modules[name].__version__
    return {
        "backend": keras.backend.backend(),
        "versions": versions,
        "machine": {
            "platform": platform.platform(),
            "processor": platform.processor() or platform.machine(),
            "cpu_count": os.cpu_count(),
        },
    }


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Flags map one-to-one onto `build_model` and `fit` arguments."""
    p = argparse.ArgumentParser(prog="python -m keras_ultimus.train", description=__doc__.split(":")[0] + ".")
    p.add_argument("--config", help="JSON file of flag values to use as defaults (e.g. a tuner's best.json)")
    p.add_argument("--data", help="local CIFAR-10 copy: cifar-10-binary.tar.gz or cifar-10-batches-bin/ "
                   "(default: $CIFAR10_PATH, else TFDS)")
    p.add_argument("--out", help="new run folder (default: runs/ultimus-<time>)")
    p.add_argument("--resume", metavar="RUN", help="continue an interrupted run folder from its last epoch")
    p.add_argument("--epochs", type=int, default=24)
    p.add_argument("--batch-size", type=int, default=512)
    p.add_argument("--max-lr", type=float, default=0.003, help="one-cycle peak LR for Adam")
    p.add_argument("--pct-start", type=float, default=0.25, help="fraction of steps spent warming up")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--no-augment", dest="augment", action="store_false", help="no crop/flip augmentation")
    p.add_argument("--limit-train", type=int, help="use only the first N training images")
    p.add_argument("--limit-test", type=int, help="use only the first N test images")
    g = p.add_argument_group("model")
    g.add_argument("--blocks", dest="num_blocks", type=int, default=4, help="number of Ultimus blocks")
    g.add_argument("--key-dim", type=int, default=8)
    g.add_argument("--scale", choices=("pre", "post"), default="pre", help="scale before or after softmax")
    g.add_argument("--residual", action="store_true", help="x + block(x) (a variant, not the reference)")
    g.add_argument("--conv-widths", type=lambda s: [int(w) for w in s.split(",")], default=[32, 256, 48],
                   help="comma-separated conv widths (default: 32,256,48)")
    g.add_argument("--bn-momentum", type=float, default=0.9)
    args = p.parse_args(argv)
    if args.config:
        try:
            p.set_defaults(**json.loads(Path(args.config).read_text()))
        except (OSError, ValueError, TypeError) as e:
            p.error(f"--config {args.config}: {e}")
        args = p.parse_args(argv)
    for flag in ("epochs", "batch_size", "num_blocks", "key_dim", "limit_train", "limit_test"):
        value = getattr(args, flag)
        if value is not None and value < 1:
            p.error(f"--{flag.replace('_', '-')} must be at least 1, got {value}")
    if not args.max_lr > 0 or not 0 < args.pct_start < 1:
        p.error("--max-lr must be positive and --pct-start between 0 and 1")
    return args


def write_atomic(path: Path, text: str) -> None:
    """Write `text` through a temporary file, so a kill never leaves half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    tmp.replace(path)


def train(config: dict, out: Path, data: tuple, resume: bool = False, command: str = "") -> dict:
    """Fit the model described by `config` on `data` into run folder `out`; return run.json."""
    keras.utils.set_random_seed(config["seed"])
    (x_train, y_train), (x_test, y_test) = data
    x_train, y_train = x_train[: config["limit_train"]], y_train[: config["limit_train"]]
    x_test, y_test = x_test[: config["limit_test"]], y_test[: config["limit_test"]]
    train_ds = make_dataset(x_train, y_train, config["batch_size"], True, config["augment"], config["seed"])
    test_ds = make_dataset(x_test, y_test, config["batch_size"])
    steps = -(-len(x_train) // config["batch_size"]) * config["epochs"]

    model = build_model(**model_kwargs(config))
    compile_model(model, config["max_lr"], steps, config["pct_start"])
    csv_path = out / CSV_NAME
    best = keras.callbacks.ModelCheckpoint(
        out / "best.keras", monitor="val_accuracy", mode="max", save_best_only=True
    )
    # double_checkpoint keeps the previous backup, in case a kill lands mid-write.
    backup = keras.callbacks.BackupAndRestore(out / "backup", double_checkpoint=True)
    run_info = json.loads((out / "run.json").read_text()) if resume else {
        "config": config, "command": command, **environment(),
        "started": datetime.now().isoformat(timespec="seconds"), "segments_seconds": [],
    }
    if not resume:
        with open(out / "summary.txt", "w") as f:
            model.summary(print_fn=lambda line, **_: f.write(line + "\n"))
        model.summary()
    write_atomic(out / "run.json", json.dumps(run_info, indent=2))

    start = time.perf_counter()
    model.fit(
        train_ds,
        validation_data=test_ds,
        epochs=config["epochs"],
        # On each epoch's end the CSV row is written before the backup, and on resume
        # TrimLog drops rows the restored state hasn't seen, so every epoch is logged once.
        callbacks=[
            EpochStats(),
            keras.callbacks.CSVLogger(csv_path, append=True),
            best,
            backup,
            TrimLog(csv_path, steps // config["epochs"], best),
        ],
    )
    model.save(out / "model.keras")
    run_info["segments_seconds"].append(round(time.perf_counter() - start, 1))
    run_info["wall_seconds"] = round(sum(run_info["segments_seconds"]), 1)
    run_info["finished"] = datetime.now().isoformat(timespec="seconds")
    run_info["final"] = pd.read_csv(csv_path).iloc[-1].to_dict()
    write_atomic(out / "run.json", json.dumps(run_info, indent=2))
    return run_info


def main(argv: list[str] | None = None) -> int:
    """Parse flags, make or reopen the run folder, and train."""
    args = parse_args(argv)
    if args.resume:
        out = Path(args.resume)
        if not (out / "run.json").is_file():
            print(f"error: {out}: not a run folder (no run.json)", file=sys.stderr)
            return 2
        info = json.loads((out / "run.json").read_text())
        if "finished" in info:
            print(f"error: {out}: run already finished at {info['finished']}", file=sys.stderr)
            return 2
        config = info["config"]
    else:
        out = Path(args.out or f"runs/ultimus-{datetime.now():%Y%m%d-%H%M%S}")
        if out.exists() and any(out.iterdir()):
            print(f"error: {out}: run folder exists; pick a new --out or --resume it", file=sys.stderr)
            return 2
        config = {k: v for k, v in vars(args).items() if k not in ("resume", "out", "config")}
        config["data"] = args.data or os.environ.get("CIFAR10_PATH")
    try:
        data = load_cifar10(config["data"])  # before the run folder exists
    except DataError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    out.mkdir(parents=True, exist_ok=True)
    command = shlex.join(["python", "-m", "keras_ultimus.train", *(sys.argv[1:] if argv is None else argv)])
    try:
        info = train(config, out, data, resume=bool(args.resume), command=command)
    except KeyboardInterrupt:
        print(f"\ninterrupted: continue with python -m keras_ultimus.train --resume {out}", file=sys.stderr)
        return 130
    print(f"Run folder: {out}  final: {info['final']}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
