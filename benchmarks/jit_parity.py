"""Keras on torch, compiled (torch.compile via jit_compile=True) against eager, on the same batches.

Usage: KERAS_BACKEND=torch python benchmarks/jit_parity.py PRECISION EMA   (e.g. float32 0, mixed_bfloat16 0.99)

Trains the reference model 2 epochs of 3 steps (batch 32) with validation, then evaluates, once with jit off and
once on; prints the losses, evaluation and the largest weight difference between the two, and the wall time of
each (the compiled one includes compiling the train and test steps).
"""

import sys
import time

import keras
import numpy as np

from keras_ultimus.config import RecipeOptions
from keras_ultimus.models.ultimus import build_model
from keras_ultimus.training.compiling import compile_model

prec, ema = sys.argv[1], float(sys.argv[2])
keras.mixed_precision.set_dtype_policy(prec)
rng = np.random.default_rng(0)
x = rng.integers(0, 256, (32 * 3, 32, 32, 3)).astype("float32")
y = rng.integers(0, 10, 32 * 3)
out = {}
for jit in ["off", "on"]:
    keras.utils.set_random_seed(0)
    m = build_model()
    compile_model(m, 3e-3, 30, jit=jit, options=RecipeOptions(ema=ema))
    t = time.perf_counter()
    try:
        h = m.fit(
            x,
            y,
            batch_size=32,
            epochs=2,
            verbose=0,
            shuffle=False,
            validation_data=(x[:32], y[:32]),
        )
        ev = m.evaluate(x[:64], y[:64], verbose=0)
        out[jit] = (h.history["loss"], ev, [keras.ops.convert_to_numpy(w) for w in m.weights])
        print(
            prec, ema, jit, "s", round(time.perf_counter() - t), h.history["loss"], ev, flush=True
        )
    except Exception as e:
        print(prec, ema, jit, "FAIL", type(e).__name__, str(e)[:300].replace("\n", " "), flush=True)
if len(out) == 2:
    d = max(
        float(np.max(np.abs(a.astype("float32") - b.astype("float32"))))
        for a, b in zip(out["off"][2], out["on"][2])
    )
    print(
        prec,
        ema,
        "RESULT loss off/on",
        out["off"][0],
        out["on"][0],
        "max weight diff",
        d,
        flush=True,
    )
