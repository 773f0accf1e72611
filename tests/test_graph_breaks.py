"""graph_breaks: with the stand-ins registered, torch.compile traces Keras layer calls as one graph (torch only)."""

import json
import subprocess
import sys

import keras
import numpy as np
import pytest

from keras_ultimus.training.graph_breaks import _import_module

pytestmark = pytest.mark.multi_backend
torch_only = pytest.mark.skipif(
    keras.backend.backend() != "torch", reason="torch.compile is torch's"
)


def test_the_import_module_stand_in_returns_what_importlib_does(monkeypatch):
    import importlib

    monkeypatch.delitem(sys.modules, "colorsys", raising=False)  # not imported yet: the real import
    for name, package in [("colorsys", None), ("json", None), (".fields", "keras_ultimus")]:
        assert _import_module(name, package) is importlib.import_module(name, package)
    assert "colorsys" in sys.modules


# Traces a Normalization layer (the backend's module lookup; TensorFlow stays unimported, as the model tests
# import it) with fullgraph=True, which raises at any graph break; before and after registering the stand-ins.
PROBE = """
import json, keras, torch
from keras_ultimus.training.graph_breaks import keep_train_step_whole
layer = keras.layers.Normalization(mean=[1.0, 2.0], variance=[4.0, 9.0])
layer(torch.ones(3, 2))  # built eagerly, as in a model
def whole():
    torch._dynamo.reset()
    try:
        return torch.compile(layer, backend="eager", fullgraph=True)(torch.ones(3, 2)).numpy().tolist()
    except Exception as error:
        return f"{type(error).__name__}: {error}"[:2000]
before = whole()
keep_train_step_whole()
print(json.dumps({"before": before, "after": whole()}))
"""


@torch_only
def test_keras_layer_calls_break_the_trace_until_the_stand_ins_are_registered():
    done = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True, check=True)
    traced = json.loads(done.stdout.strip().splitlines()[-1])
    # The contract: Keras' layer call still breaks the trace at one of the calls the stand-ins replace.
    assert "import_module" in traced["before"]
    np.testing.assert_allclose(traced["after"], [[0.0, -1 / 3]] * 3, rtol=1e-6)


@torch_only
@pytest.mark.parametrize(
    "family",
    [
        {"conv_widths": (4, 4), "num_blocks": 1},
        {
            "stem": "resnet",
            "conv_widths": (4, 8),
            "num_blocks": 1,
            "pooling": "max",
            "whiten": True,
        },
    ],
    ids=["reference", "whitened-resnet"],
)
def test_the_models_forward_pass_in_training_traces_as_one_graph(family):
    import tensorflow  # noqa: F401  (as keras.utils.set_random_seed and tf.data pipelines import it)
    import torch

    from keras_ultimus.models.ultimus import build_model
    from keras_ultimus.training.graph_breaks import keep_train_step_whole

    keep_train_step_whole()
    model = build_model(**family)
    x = torch.tensor(np.random.default_rng(0).random((2, 32, 32, 3), dtype="float32"))
    torch._dynamo.reset()
    compiled = torch.compile(lambda t: model(t, training=True), backend="eager", fullgraph=True)
    np.testing.assert_allclose(
        compiled(x).detach().numpy(),
        model(x, training=True).detach().numpy(),
        rtol=1e-5,
        atol=1e-6,
    )
