"""Command-line flags shared by the CLIs that build a model (train, lr_find, the tuner); imports no Keras.

The model flags map one-to-one onto `build_model` arguments (their dests are its
argument names), so a run config or a tuner's best.json rebuilds the same model.
Their values are checked by `keras_ultimus.model` (which imports Keras) once the
CLI has called `backend.prepare`.
"""

import argparse


def add_model_flags(parser: argparse.ArgumentParser) -> None:
    """Add the `build_model` flags (dest = argument name) as a "model" group."""
    g = parser.add_argument_group("model")
    g.add_argument("--blocks", dest="num_blocks", type=int, default=4, help="number of Ultimus blocks")
    g.add_argument("--key-dim", type=int, default=8)
    g.add_argument("--scale", choices=("pre", "post"), default="pre", help="scale before or after softmax")
    g.add_argument("--residual", action="store_true", help="x + block(x) (a variant, not the reference)")
    g.add_argument("--conv-widths", default=[32, 256, 48],
                   help="comma-separated conv widths, one per conv (default: 32,256,48)")
    g.add_argument("--downsample", help="comma-separated none|pool|stride, one per gap between convs "
                   "(default: none everywhere, the reference)")
    g.add_argument("--bn-momentum", type=float, default=0.9)
