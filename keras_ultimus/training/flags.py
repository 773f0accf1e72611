"""Command-line flags shared by the CLIs that build a model (train, lr_find, the tuner); imports no Keras.

The model flags map one-to-one onto `build_model` arguments (their dests are its
argument names), so a run config or a tuner's best.json rebuilds the same model.
Their values are checked by `keras_ultimus.models.ultimus` (which imports Keras) once the
CLI has called `backend.prepare`.
"""

import argparse

from keras_ultimus.errors import UserError

# Kept equal to keras_ultimus.models.layers.ATTENTION and keras_ultimus.models.ultimus.STEMS / POOLING (tested), without Keras.
ATTENTION = ("sample", "batch", "elementwise")
STEMS = ("plain", "resnet")
POOLING = ("avg", "max")


def add_model_flags(parser: argparse.ArgumentParser) -> list[argparse.Action]:
    """Add the `build_model` flags (dest = argument name) as a "model" group; return their actions."""
    g = parser.add_argument_group("model")
    return [
        g.add_argument("--blocks", dest="num_blocks", type=int, default=4, help="number of Ultimus blocks"),
        g.add_argument("--key-dim", type=int, default=8, help="size of the q, k and v projections"),
        g.add_argument("--scale", choices=("pre", "post"), default="pre", help="scale before or after softmax"),
        g.add_argument("--residual", action="store_true", help="x + block(x) (a variant, not the reference)"),
        g.add_argument("--conv-widths", default=[32, 256, 48],
                       help="comma-separated conv widths, one per conv (default: 32,256,48)"),
        g.add_argument("--downsample", help="comma-separated none|pool|stride, one per gap between convs "
                       "(default: none everywhere, the reference)"),
        g.add_argument("--bn-momentum", type=float, default=0.9, help="BatchNorm momentum (0.9: PyTorch's default)"),
        g.add_argument("--stem", choices=STEMS, default="plain", help="plain: 3x3 valid convs (the reference); "
                       "resnet: one residual stage per --conv-widths entry"),
        g.add_argument("--pooling", choices=POOLING, default="avg", help="global pooling between stem and blocks"),
        g.add_argument("--whiten", action="store_true", help="a frozen 2x2 conv and GELU before the stem; the conv "
                       "whitens the training set's patches (airbench)"),
        g.add_argument("--attention", choices=ATTENTION, default="sample",
                       help="sample: per-sample 8x8 map (the reference); batch or elementwise: the original code's "
                       "two readings"),
    ]


def check_model_flags(args: argparse.Namespace) -> None:
    """Parse --conv-widths/--downsample in place and check every model flag with `build_model`'s own checks.

    Imports Keras: call it after `backend.prepare`. Bad values raise a one-line UserError.
    """
    from keras_ultimus.models.ultimus import parse_conv_widths, parse_downsample, trainable_params
    from keras_ultimus.training.recipe import model_kwargs

    try:
        if isinstance(args.conv_widths, str):
            args.conv_widths = parse_conv_widths(args.conv_widths)
        if isinstance(args.downsample, str):
            args.downsample = parse_downsample(args.downsample)
        trainable_params(**model_kwargs(vars(args)))
    except (ValueError, TypeError) as e:
        raise UserError(f"model flags: {e}") from None
