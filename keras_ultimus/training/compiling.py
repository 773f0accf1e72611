"""Compile a model with the run's recipe: optimizer on the one-cycle schedule, loss, loss scaling, XLA."""

import sys

import keras

from keras_ultimus.config import RecipeOptions
from keras_ultimus.training.graph_breaks import keep_train_step_whole
from keras_ultimus.training.losses import SmoothedSparseCrossentropy
from keras_ultimus.training.schedules import OneCycle

# --jit flag value -> `jit_compile` of `Model.compile` ("auto": Keras' default for the backend, torch.compile on torch).
JIT = {"auto": "auto", "on": True, "off": False}
# Whether jit="auto" trains torch runs of TORCH_COMPILE_MIN_STEPS steps or more with torch.compile. On, by
# measurement (reports/speed-cpu/README.md, 2026-12-07 whole-graph section): once `graph_breaks` keeps Keras'
# train step one graph, the compiled step beats the eager one on the 2-core CPU (before, graph breaks at every
# layer made it no faster). It trains as eager does (benchmarks/jit_parity.py: float32, mixed_bfloat16 with EMA,
# mixed_float16). A GPU is unmeasured.
TORCH_COMPILE_ON_AUTO = True
# Below this many steps, compiling (35 s to minutes on the 2-core CPU) costs more than any speed-up repays.
TORCH_COMPILE_MIN_STEPS = 500


def resolve_jit(jit: str, model: keras.Model, total_steps: int) -> tuple[bool | str, str | None]:
    """`jit_compile` for `Model.compile`, and why jit="auto" can't use torch.compile where it can't (else None).

    On torch, "auto" compiles runs of `TORCH_COMPILE_MIN_STEPS` steps or more where `TORCH_COMPILE_ON_AUTO`
    says it pays; shorter runs (tests, quick tries) stay eager without a word.
    """
    if jit != "auto" or keras.backend.backend() != "torch":
        return JIT[jit], None
    return TORCH_COMPILE_ON_AUTO and total_steps >= TORCH_COMPILE_MIN_STEPS, None


@keras.saving.register_keras_serializable(package="keras_ultimus")
class LossScaleOptimizer(keras.optimizers.LossScaleOptimizer):
    """Keras' dynamic loss scaling, except that a skipped step still counts in `iterations`.

    Keras' `LossScaleOptimizer` skips the update when the scaled gradients
    overflow and leaves `iterations` alone, so a schedule driven by
    `iterations` (OneCycle) would fall one step behind per skip and never
    reach its end. PyTorch's `GradScaler` + `OneCycleLR` step the schedule
    anyway; so does this.
    """

    def _stateful_handle_non_finite_grads(self):
        super()._stateful_handle_non_finite_grads()
        self.inner_optimizer.iterations.assign_add(1)

    def _stateless_handle_non_finite_grads(self, optimizer_variables, trainable_variables):
        trainable_variables, new_variables = super()._stateless_handle_non_finite_grads(
            optimizer_variables, trainable_variables
        )
        i = next(i for i, v in enumerate(self.variables) if v is self.inner_optimizer.iterations)
        new_variables[i] = new_variables[i] + 1
        return trainable_variables, new_variables


def make_optimizer(
    schedule: keras.optimizers.schedules.LearningRateSchedule, options: RecipeOptions
) -> keras.optimizers.Optimizer:
    """Adam (the reference), AdamW when weight decay is set, or Nesterov SGD; with an EMA of the weights if asked.

    Weight decay skips BatchNorm's gamma and beta and every bias.
    """
    ema = {"use_ema": True, "ema_momentum": options.ema} if options.ema else {}
    if options.optimizer == "sgd":
        optimizer = keras.optimizers.SGD(
            schedule,
            momentum=options.momentum,
            nesterov=True,
            weight_decay=options.weight_decay or None,
            **ema,
        )
    elif options.weight_decay:
        optimizer = keras.optimizers.AdamW(schedule, weight_decay=options.weight_decay, **ema)
    else:
        optimizer = keras.optimizers.Adam(schedule, **ema)
    if options.weight_decay:
        optimizer.exclude_from_weight_decay(var_names=["gamma", "beta", "bias"])
    return optimizer


def compile_model(
    model: keras.Model,
    max_lr: float,
    total_steps: int,
    pct_start: float = 0.25,
    jit: str = "auto",
    options: RecipeOptions = RecipeOptions(),
    steps_per_execution: int = 1,
) -> None:
    """Compile with the recipe's optimizer on the one-cycle schedule, cross-entropy on logits, accuracy.

    A `mixed_float16` model gets dynamic loss scaling, as `compile` would add it. `jit` is resolved by
    `resolve_jit`.
    """
    optimizer = make_optimizer(OneCycle(max_lr, total_steps, pct_start), options)
    if model.dtype_policy.name == "mixed_float16":
        optimizer = LossScaleOptimizer(optimizer, name="loss_scale_optimizer")
    if options.label_smoothing:
        loss = SmoothedSparseCrossentropy(options.label_smoothing)
    else:
        loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    jit_compile, eager_because = resolve_jit(jit, model, total_steps)
    if eager_because:
        print(f"jit='auto': torch.compile off: {eager_because}", file=sys.stderr)
    if jit_compile is True and keras.backend.backend() == "torch":
        keep_train_step_whole()
    model.compile(
        optimizer=optimizer,
        loss=loss,
        metrics=["accuracy"],
        jit_compile=jit_compile,
        steps_per_execution=steps_per_execution,
    )
