"""Training speed of several paths in interleaved rounds: one long-lived process per backend, taking turns.

This machine's speed drifts from minute to minute, so paths timed one after
the other compare badly. Here every worker first builds and warms up its paths
(compilation, timed apart), then waits; each round asks every worker in turn
(in a rotating order) to time `steps` training steps of each of its paths, so a
slow minute hits all of them. The protocol is one JSON line per message on the
worker's stdin/stdout.
"""

import json
import statistics
import subprocess
import sys
import time
from collections.abc import Callable

import numpy as np

# Keras' `jit_compile` per Keras path timed on a backend; "default" is what `--jit auto` gives.
KERAS_PATHS = {"eager": "off", "compiled": "on", "default": "auto"}


def serve(
    paths: dict[str, Callable[[], None]],
    warmups: dict[str, float],
    steps: int,
    batch_size: int,
    versions: dict[str, str],
) -> None:
    """The worker's side: announce the warm-up times, then time each path's `steps` steps per round asked."""
    print(json.dumps({"ready": True, "warmup_s": warmups, "versions": versions}), flush=True)
    for line in sys.stdin:
        if line.strip() != "round":
            break
        speeds = {}
        for name, run in paths.items():
            start = time.perf_counter()
            run()
            speeds[name] = steps * batch_size / (time.perf_counter() - start)
        print(json.dumps(speeds), flush=True)


def keras_worker(backend: str, batch_size: int, steps: int, jit_modes: dict[str, str]) -> None:
    """Serve Keras paths on this process's backend: the reference model, fp32, fit on in-memory random images."""
    import keras

    from keras_ultimus.benchmark.results import versions
    from keras_ultimus.models.ultimus import build_model
    from keras_ultimus.training.compiling import compile_model

    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, (steps * batch_size, 32, 32, 3)).astype("float32")
    y = rng.integers(0, 10, steps * batch_size).astype("int32")
    paths, warmups, resolved = {}, {}, {}
    for name, jit in jit_modes.items():
        keras.utils.set_random_seed(0)
        model = build_model()
        compile_model(model, 1e-3, total_steps=10**6, jit=jit)

        def run(model=model):
            model.fit(x, y, batch_size=batch_size, epochs=1, shuffle=False, verbose=0)

        start = time.perf_counter()
        # Two steps: a compiled torch step compiles again on the second (its gradients exist from then on).
        warm = min(2, steps) * batch_size
        model.fit(x[:warm], y[:warm], batch_size=batch_size, epochs=1, verbose=0)
        warmups[name] = time.perf_counter() - start
        resolved[name] = bool(model.jit_compile)
        paths[f"keras-{backend}-{name}"] = run
    warmups = {f"keras-{backend}-{k} (jit_compile={resolved[k]})": v for k, v in warmups.items()}
    serve(paths, warmups, steps, batch_size, versions())


class Worker:
    """The parent's handle on one worker process."""

    def __init__(self, name: str, command: list[str], env: dict[str, str]):
        self.name = name
        self.process = subprocess.Popen(
            command,
            env=env,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
        )

    def read(self) -> dict:
        line = self.process.stdout.readline()
        if not line:
            self.process.wait()
            raise RuntimeError(
                f"bench worker {self.name} exited with code {self.process.returncode}"
            )
        return json.loads(line)

    def ask(self, message: str) -> dict:
        self.process.stdin.write(message + "\n")
        self.process.stdin.flush()
        return self.read()

    def close(self) -> None:
        if self.process.poll() is None:
            self.process.stdin.write("quit\n")
            self.process.stdin.close()
            self.process.wait(timeout=60)


def run_rounds(
    workers: list[tuple[str, list[str], dict[str, str]]],
    rounds: int,
    log: Callable[[str], None] = print,
) -> dict:
    """Start the workers one at a time (each warms up alone), then run `rounds` interleaved rounds."""
    started, warmups, per_round, found = [], {}, [], {}
    try:
        for name, command, env in workers:
            log(f"warming up {name} ...")
            worker = Worker(name, command, env)
            ready = worker.read()
            warmups.update(ready["warmup_s"])
            found[name] = ready["versions"]
            started.append(worker)
        for r in range(rounds):
            speeds = {}
            for worker in started[r % len(started) :] + started[: r % len(started)]:
                speeds.update(worker.ask("round"))
            log(f"round {r + 1}/{rounds}: " + ", ".join(f"{k} {v:.0f}" for k, v in speeds.items()))
            per_round.append(speeds)
    finally:
        for worker in started:
            worker.close()
    return {"warmup_s": warmups, "rounds": per_round, "versions": found}


def ratios(result: dict, reference: str) -> list[dict]:
    """Per path: median img/s, and the median, min and max over rounds of its ratio to `reference`'s."""
    rows = []
    for path in result["rounds"][0]:
        speeds = [r[path] for r in result["rounds"]]
        row = {"path": path, "img_s": statistics.median(speeds)}
        if reference in result["rounds"][0]:
            ratio = [r[path] / r[reference] for r in result["rounds"]]
            row.update(ratio=statistics.median(ratio), ratio_min=min(ratio), ratio_max=max(ratio))
        rows.append(row)
    return rows
