"""OneCycle: values worked out by hand, PyTorch OneCycleLR semantics."""

import math

import keras
import numpy as np
import pytest

from keras_ultimus.training.schedules import OneCycle

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
    assert lr(s, 7.25) == pytest.approx(
        0.01 + (4e-4 - 0.01) / 2 * (math.cos(math.pi / 4) + 1), rel=1e-5
    )
    assert lr(s, 500) == pytest.approx(4e-8, rel=1e-3)


def test_linear_values_by_hand():
    s = OneCycle(
        max_lr=1.0,
        total_steps=11,
        pct_start=0.5,
        div_factor=10,
        final_div_factor=10,
        anneal="linear",
    )
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


def numpy_one_cycle(max_lr, total_steps, pct_start, step, div=25.0, final_div=1e4):
    """PyTorch OneCycleLR's two-phase cosine loop, in plain Python; a zero-length warm-up ends at its peak."""
    initial, final = max_lr / div, max_lr / div / final_div
    phases = [
        (float(pct_start * total_steps) - 1, initial, max_lr),
        (total_steps - 1.0, max_lr, final),
    ]
    start = 0.0
    for i, (end, lo, hi) in enumerate(phases):
        if step <= end or i == len(phases) - 1:
            pct = (step - start) / (end - start) if end != start else 1.0
            pct = min(max(pct, 0.0), 1.0)
            return hi + (lo - hi) / 2.0 * (np.cos(np.pi * pct) + 1)
        start = end


@pytest.mark.parametrize("total_steps", [1, 2, 3, 4, 5, 8, 13])
@pytest.mark.parametrize("pct_start", [0.0, 0.25, 0.3, 0.9])
def test_short_cycles_match_numpy_one_cycle(total_steps, pct_start):
    s = OneCycle(max_lr=0.003, total_steps=total_steps, pct_start=pct_start)
    got = [lr(s, step) for step in range(total_steps + 2)]
    expected = [
        numpy_one_cycle(0.003, total_steps, pct_start, min(step, total_steps - 1))
        for step in range(total_steps + 2)
    ]
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-12)


def test_one_step_cycle_runs_at_the_floor_like_pytorch():
    torch = pytest.importorskip("torch")
    param = torch.nn.Parameter(torch.zeros(1))
    optimizer = torch.optim.Adam([param])
    torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=0.003, total_steps=1)
    assert lr(OneCycle(0.003, 1), 0) == pytest.approx(optimizer.param_groups[0]["lr"], rel=1e-5)


def test_invalid_arguments_raise():
    with pytest.raises(ValueError, match="anneal"):
        OneCycle(0.1, 10, anneal="exp")
    with pytest.raises(ValueError, match="total_steps"):
        OneCycle(0.1, 0)
    with pytest.raises(ValueError, match="pct_start"):
        OneCycle(0.1, 10, pct_start=1.0)
