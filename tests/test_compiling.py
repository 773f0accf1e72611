"""compiling.resolve_jit: what --jit gives `Model.compile` on each backend; torch.compile for long torch runs."""

import keras
import pytest

from keras_ultimus.training.compiling import (
    JIT,
    TORCH_COMPILE_MIN_STEPS,
    TORCH_COMPILE_ON_AUTO,
    compile_model,
    resolve_jit,
)

pytestmark = pytest.mark.multi_backend


@pytest.mark.parametrize("jit", ["on", "off"])
def test_on_and_off_are_passed_through_on_every_backend(jit):
    assert resolve_jit(jit, None, 10**6) == (JIT[jit], None)


def test_auto_compiles_only_long_torch_runs_where_it_pays_and_keeps_keras_default_elsewhere():
    short, long = (
        resolve_jit("auto", None, TORCH_COMPILE_MIN_STEPS - 1),
        resolve_jit("auto", None, 10**5),
    )
    if keras.backend.backend() == "torch":
        assert (short, long) == ((False, None), (TORCH_COMPILE_ON_AUTO, None))
    else:
        assert short == long == ("auto", None)


def test_compile_model_applies_the_resolved_jit():
    from keras_ultimus.models.ultimus import build_model

    model, reference = (
        build_model(conv_widths=(4, 4), num_blocks=1),
        build_model(conv_widths=(4, 4), num_blocks=1),
    )
    compile_model(model, 1e-3, total_steps=10**5, jit="auto")
    reference.compile(
        optimizer="adam", loss="mse", jit_compile="auto"
    )  # Keras' own default on this backend
    torch = keras.backend.backend() == "torch"
    assert model.jit_compile is (TORCH_COMPILE_ON_AUTO if torch else reference.jit_compile)
