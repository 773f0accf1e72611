"""Measure serving speed: `python -m keras_ultimus.benchmark --help`.

For each MODEL (anything `keras_ultimus.predict` loads), times in-process
calls from a uint8 NumPy batch to NumPy probabilities: batch-1 latency
(median and 90th percentile) and batch-256 throughput (images per second).
"""

import argparse
import sys
import time

import numpy as np

from keras_ultimus.errors import UserError
from keras_ultimus.predict import Predictor, load_predictor


def measure(predictor: Predictor, calls: int = 200, batches: int = 20, batch_size: int = 256, warmup: int = 5) -> dict:
    """Batch-1 latency in ms (median, p90) and batch-`batch_size` throughput in images/s."""
    images = np.random.default_rng(0).integers(0, 256, (batch_size, 32, 32, 3), np.uint8)
    one = images[:1]
    for _ in range(warmup):
        predictor(one)
        predictor(images)
    latencies = []
    for _ in range(calls):
        start = time.perf_counter()
        predictor(one)
        latencies.append(time.perf_counter() - start)
    start = time.perf_counter()
    for _ in range(batches):
        predictor(images)
    seconds = time.perf_counter() - start
    return {
        "latency_ms_median": 1000 * float(np.median(latencies)),
        "latency_ms_p90": 1000 * float(np.percentile(latencies, 90)),
        "throughput_img_s": batches * batch_size / seconds,
    }


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command-line flags."""
    p = argparse.ArgumentParser(prog="python -m keras_ultimus.benchmark", description=__doc__.split(":")[0] + ".")
    p.add_argument("models", metavar="MODEL", nargs="+", help="SavedModel folder, .onnx, .keras or run folder")
    p.add_argument("--calls", type=int, default=200, help="batch-1 calls timed (default: 200)")
    p.add_argument("--batches", type=int, default=20, help="batch-256 calls timed (default: 20)")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    """Time each model and print one table row per model."""
    args = parse_args(argv)
    if args.calls < 1 or args.batches < 1:
        print("error: --calls and --batches must be positive", file=sys.stderr)
        return 2
    try:
        predictors = {m: load_predictor(m) for m in args.models}
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"{'model':40s} {'b1 median ms':>12s} {'b1 p90 ms':>10s} {'b256 img/s':>11s}")
    for name, predictor in predictors.items():
        r = measure(predictor, args.calls, args.batches)
        print(f"{name:40s} {r['latency_ms_median']:12.2f} {r['latency_ms_p90']:10.2f} {r['throughput_img_s']:11.0f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
