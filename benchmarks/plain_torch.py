"""The external speed reference: the Ultimus net in plain PyTorch, trained eagerly with Adam.

Usage: python benchmarks/plain_torch.py [--batch-size 512] [--steps 5] [--repeats 3] [--json OUT] [--compile]
       python benchmarks/plain_torch.py --rounds-worker [--batch-size 256] [--steps 5]

The same layers as `keras_ultimus.build_model()` (exact GELU, BatchNorm
momentum 0.1 in PyTorch's convention, per-sample 8×8 attention), in PyTorch's
default NCHW layout and default threading, eager (or `torch.compile`d with
`--compile`). It prints the training img/s of each timed repeat (after one
warm-up repeat); `--json` writes them for `python -m keras_ultimus.bench`.
`--rounds-worker` serves the eager and the compiled model to the bench's
interleaved rounds (`keras_ultimus.benchmark.rounds`).
"""

import argparse
import json
import math
import os
import statistics
import time

import torch
from torch import nn

MEAN = (125.307, 122.950, 113.865)
STD = (62.993, 62.089, 66.705)


class Ultimus(nn.Module):
    """q, k, v = Linear(8) each; AM = softmax(q ⊗ k / √8) per sample; out = Linear(48)(v · AM)."""

    def __init__(self, features: int = 48, key_dim: int = 8):
        super().__init__()
        self.q, self.k, self.v = (nn.Linear(features, key_dim) for _ in range(3))
        self.out = nn.Linear(key_dim, features)
        self.norm = math.sqrt(key_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        q, k, v = self.q(x), self.k(x), self.v(x)
        attention = torch.softmax(q[:, :, None] * k[:, None, :] / self.norm, dim=-1)
        return self.out(torch.einsum("bi,bij->bj", v, attention))


def build(widths=(32, 256, 48), blocks: int = 4) -> nn.Sequential:
    """The reference Ultimus model, taking normalised NCHW images."""
    layers, c_in = [], 3
    for width in widths:
        layers += [
            nn.Conv2d(c_in, width, 3, bias=False),
            nn.GELU(),
            nn.BatchNorm2d(width, eps=1e-3, momentum=0.1),
        ]
        c_in = width
    layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten()]
    layers += [Ultimus(c_in) for _ in range(blocks)]
    return nn.Sequential(*layers, nn.Linear(c_in, 10))


def training_flops(widths=(32, 256, 48), blocks: int = 4, key_dim: int = 8) -> int:
    """FLOPs per training image, counted by hand: 3 × (convs + dense + attention matmuls) forward."""
    size, c_in, forward = 32, 3, 0
    for width in widths:
        size -= 2
        forward += 2 * size * size * width * 9 * c_in
        c_in = width
    forward += (
        blocks * (3 * 2 * c_in * key_dim + 2 * key_dim * c_in + 3 * key_dim**2) + 2 * c_in * 10
    )
    return 3 * forward


def trainer(batch_size: int, steps: int, compile: bool):
    """A function running `steps` eager Adam steps of a fresh model (its forward `torch.compile`d if asked)."""
    torch.manual_seed(0)
    model = build()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    forward = torch.compile(model) if compile else model
    loss_fn = nn.CrossEntropyLoss()
    mean, std = torch.tensor(MEAN).view(1, 3, 1, 1), torch.tensor(STD).view(1, 3, 1, 1)
    images = torch.randint(0, 256, (batch_size, 32, 32, 3), dtype=torch.uint8)
    labels = torch.randint(0, 10, (batch_size,))

    def run(count: int = steps) -> None:
        for _ in range(count):
            x = (images.permute(0, 3, 1, 2).float() - mean) / std
            optimizer.zero_grad(set_to_none=True)
            loss = loss_fn(forward(x), labels)
            loss.backward()
            optimizer.step()
        loss.item()

    return run


def rounds_worker(batch_size: int, steps: int) -> None:
    """Warm up the eager and compiled paths, then time both in each round the bench asks for."""
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from keras_ultimus.benchmark.rounds import serve

    paths, warmups = {}, {}
    for name, compile in (("eager", False), ("compiled", True)):
        run = trainer(batch_size, steps, compile)
        start = time.perf_counter()
        run(1)
        warmups[f"plain-torch-{name}"] = time.perf_counter() - start
        paths[f"plain-torch-{name}"] = run
    serve(
        paths,
        warmups,
        steps,
        batch_size,
        {"torch": torch.__version__, "threads": str(torch.get_num_threads())},
    )


def main() -> None:
    """Time eager Adam training steps on random images and print img/s per repeat."""
    p = argparse.ArgumentParser(prog="python benchmarks/plain_torch.py", description=main.__doc__)
    p.add_argument("--batch-size", type=int, default=512)
    p.add_argument("--steps", type=int, default=5, help="training steps per timed repeat")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--json", help="write the figures here")
    p.add_argument("--compile", action="store_true", help="torch.compile the model")
    p.add_argument(
        "--rounds-worker", action="store_true", help="serve the bench's interleaved rounds"
    )
    args = p.parse_args()
    if args.rounds_worker:
        return rounds_worker(args.batch_size, args.steps)
    run = trainer(args.batch_size, args.steps, args.compile)
    speeds = []
    for repeat in range(args.repeats + 1):  # the first repeat warms up
        start = time.perf_counter()
        run()
        if repeat:
            speeds.append(args.steps * args.batch_size / (time.perf_counter() - start))
    result = {
        "train_img_s": speeds,
        "training_flops": training_flops(),
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "load_after": os.getloadavg()[0],
    }
    print(
        f"plain PyTorch {torch.__version__}, {torch.get_num_threads()} threads: median "
        f"{statistics.median(speeds):.0f} img/s ({', '.join(f'{s:.0f}' for s in speeds)})"
    )
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f)


if __name__ == "__main__":
    main()
