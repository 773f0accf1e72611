"""OneCycle: values worked out by hand, PyTorch OneCycleLR semantics."""

import math

import numpy as np
import pytest

import keras
from keras_ultimus.schedules import OneCycle

pytestmark = pytest.mark.multi_backend


def lr(schedule, step):
    return float(keras.ops.convert_to_numpy(schedule(step)))


def test_cosine_values_by_hand():
    # 100 steps, peak at step 0.3*100-1 = 29; initial 0.01/25 = 4e-4; final 4e-4/1e4 = 4e-8.
    s = OneCycle(max_lr=0.01, total_steps=100, pct_start=0.3)
    assert lr(s, 0) == pytest.approx(4e-4, rel=1e-5)
    assert lr(s, 29) == pytest.approx(0.01, rel=1e-5)
    assert lr(s, 99) == pytest.approx(4e-8, rel=1e-3)
    # Half-way up: cos(pi/2) = 0, so the mean of the two ends.
    assert lr(s, 14.5) == pytest.approx((0.01 + 4e-4) / 2, rel=1e-5)
    # Half-way down, step 29 + 35 = 64.
    assert lr(s, 64) == pytest.approx((0.01 + 4e-8) / 2, rel=1e-5)
    # A quarter of the way up, step 7.25: end + (start-end)/2 * (cos(pi/4) + 1).
    assert lr(s, 7.25) == pytest.approx(0.01 + (4e-4 - 0.01) / 2 * (math.cos(math.pi / 4) + 1), rel=1e-5)
    assert lr(s, 500) == pytest.approx(4e-8, rel=1e-3)


def test_linear_values_by_hand():
    s = OneCycle(max_lr=1.0, total_steps=11, pct_start=0.5, div_factor=10, final_div_factor=10, anneal="linear")
    # Peak at step 4.5; 0.1 -> 1.0 linearly, then 1.0 -> 0.01 at step 10.
    assert lr(s, 0) == pytest.approx(0.1)
    assert lr(s, 2.25) == pytest.approx(0.55)
    assert lr(s, 4.5) == pytest.approx(1.0)
    assert lr(s, 10) == pytest.approx(0.01)
    assert lr(s, 7.25) == pytest.approx((1.0 + 0.01) / 2)


def test_rises_then_falls_monotonically():
    s = OneCycle(max_lr=0.003, total_steps=2352)
    values = np.array([lr(s, i) for i in range(0, 2352, 7)])
    peak = values.argmax()
    assert np.all(np.diff(values[: peak + 1]) > 0)
    assert np.all(np.diff(values[peak:]) < 0)
    assert values.max() <= 0.003 + 1e-9


def test_serializes_and_drives_an_optimizer(tmp_path):
    s = OneCycle(max_lr=0.02, total_steps=50, pct_start=0.2, anneal="linear")
    clone = OneCycle.from_config(s.get_config())
    assert clone.get_config() == s.get_config()
    optimizer = keras.optimizers.Adam(s)
    restored = keras.optimizers.Adam.from_config(optimizer.get_config())
    restored.build([keras.Variable(1.0)])
    restored.iterations.assign(9)  # the peak step: 0.2 * 50 - 1
    assert float(keras.ops.convert_to_numpy(restored.learning_rate)) == pytest.approx(0.02)


def test_invalid_arguments_raise():
    with pytest.raises(ValueError, match="anneal"):
        OneCycle(0.1, 10, anneal="exp")
    with pytest.raises(ValueError, match="total_steps"):
        OneCycle(0.1, 1)
