"""One-cycle learning-rate schedule with PyTorch OneCycleLR semantics."""

import math

import keras
from keras import ops


@keras.saving.register_keras_serializable(package="keras_ultimus")
class OneCycle(keras.optimizers.schedules.LearningRateSchedule):
    """Warm up from `max_lr / div_factor` to `max_lr`, then anneal to the floor.

    Matches `torch.optim.lr_scheduler.OneCycleLR` (two phases): the peak is
    reached at step `pct_start * total_steps - 1`, and the last step,
    `total_steps - 1`, ends at `max_lr / (div_factor * final_div_factor)`.
    Steps past the end stay at that floor. Short cycles work as in PyTorch:
    `total_steps=1` is one step at the floor, and a peak at or before step 0
    means no warm-up (where PyTorch divides 0 by 0 at a peak of exactly 0,
    step 0 here is the peak).

    Args:
        max_lr: float. Peak learning rate.
        total_steps: int. Number of optimizer steps in the whole cycle.
        pct_start: float. Fraction of the cycle spent warming up.
            Defaults to `0.25`.
        div_factor: float. Initial LR is `max_lr / div_factor`.
            Defaults to `25.0`.
        final_div_factor: float. Final LR is initial LR / `final_div_factor`.
            Defaults to `1e4`.
        anneal: str. `"cos"` or `"linear"`. Defaults to `"cos"`.
    """

    def __init__(
        self,
        max_lr: float,
        total_steps: int,
        pct_start: float = 0.25,
        div_factor: float = 25.0,
        final_div_factor: float = 1e4,
        anneal: str = "cos",
    ):
        if anneal not in ("cos", "linear"):
            raise ValueError(f"`anneal` must be 'cos' or 'linear', got {anneal!r}.")
        if total_steps < 1:
            raise ValueError(f"`total_steps` must be at least 1, got {total_steps}.")
        if not 0 <= pct_start < 1:
            raise ValueError(f"`pct_start` must be in [0, 1), got {pct_start}.")
        self.max_lr = max_lr
        self.total_steps = total_steps
        self.pct_start = pct_start
        self.div_factor = div_factor
        self.final_div_factor = final_div_factor
        self.anneal = anneal

    def _anneal(self, start, end, pct):
        if self.anneal == "cos":
            return end + (start - end) / 2.0 * (ops.cos(math.pi * pct) + 1.0)
        return start + (end - start) * pct

    def __call__(self, step):
        step = ops.cast(step, "float32")
        initial_lr = self.max_lr / self.div_factor
        final_lr = initial_lr / self.final_div_factor
        peak_step = float(self.pct_start * self.total_steps) - 1.0
        last_step = float(self.total_steps - 1)
        warm_pct = ops.clip(step / peak_step, 0.0, 1.0) if peak_step > 0 else 1.0
        decay_pct = ops.clip((step - peak_step) / (last_step - peak_step), 0.0, 1.0)
        return ops.where(
            step <= peak_step,
            self._anneal(initial_lr, self.max_lr, warm_pct),
            self._anneal(self.max_lr, final_lr, decay_pct),
        )

    def get_config(self):
        return {
            "max_lr": self.max_lr,
            "total_steps": self.total_steps,
            "pct_start": self.pct_start,
            "div_factor": self.div_factor,
            "final_div_factor": self.final_div_factor,
            "anneal": self.anneal,
        }
