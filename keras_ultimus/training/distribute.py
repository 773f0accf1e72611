"""Spread one training run over several devices or processes with the engines Keras ships.

- `mirrored` (TensorFlow): `tf.distribute.MirroredStrategy` over the GPUs, or over
  `--devices N` logical CPU devices.
- `data-parallel` (JAX): `keras.distribution.DataParallel` over every device; several
  processes join through `keras.distribution.initialize`, configured by Keras's own
  `KERAS_DISTRIBUTION_JOB_ADDRESSES` / `_NUM_PROCESSES` / `_PROCESS_ID`.
- `multi-worker` (TensorFlow): refused with a pointer to the upstream bug (see `setup`).

`setup` runs after `backend.prepare(devices=N)` and before any tensor exists.
"""

import atexit
import contextlib
import os
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import keras
import numpy as np

from keras_ultimus.constants import DISTRIBUTE_MODES
from keras_ultimus.errors import UserError

MODES = DISTRIBUTE_MODES
ENGINES = {"mirrored": "tensorflow", "data-parallel": "jax", "multi-worker": "tensorflow"}
PROCESS_VARS = (
    "KERAS_DISTRIBUTION_JOB_ADDRESSES",
    "KERAS_DISTRIBUTION_NUM_PROCESSES",
    "KERAS_DISTRIBUTION_PROCESS_ID",
)
# JAX's own default is 100 s; the coordinator declares a silent process dead after this long.
HEARTBEAT_VAR = "ULTIMUS_HEARTBEAT_SECONDS"
MULTI_WORKER_ISSUE = "https://github.com/keras-team/keras/issues/20585"


@dataclass
class Plan:
    """How this process takes part in training: the mode, its replicas and processes."""

    mode: str = "none"
    replicas: int = 1
    processes: int = 1
    process_id: int = 0
    strategy: object | None = field(default=None, repr=False)  # a tf.distribute.Strategy

    @property
    def is_chief(self) -> bool:
        """Only the first process writes the run folder."""
        return self.process_id == 0

    def scope(self) -> contextlib.AbstractContextManager:
        """Build, compile, fit and save the model inside this."""
        return self.strategy.scope() if self.strategy is not None else contextlib.nullcontext()

    def local_batch_size(self, batch_size: int) -> int:
        """This process's share of the global batch (the engine splits it further over local devices)."""
        return batch_size // self.processes

    def shard(self, images: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """This process's slice of a split, the same size on every process.

        Under data-parallel the split is first cut to a multiple of the replica count, so every
        batch (the last, short one too) divides evenly over the devices; at most
        `replicas - 1` images are dropped.
        """
        if self.mode != "data-parallel":
            return images, labels
        n = len(images) - len(images) % self.replicas
        return images[self.process_id : n : self.processes], labels[
            self.process_id : n : self.processes
        ]

    def output_dir(self, out: Path) -> Path:
        """Where this process writes the run folder `out`: `out` itself on the chief.

        Every other process gets a scratch copy of `out` (its backup, to resume from) that is
        deleted when the process exits. They must still save whatever the chief saves: on JAX,
        saving a model creates and assigns variables, which are collective across processes.
        """
        if self.is_chief:
            return out
        scratch = Path(tempfile.mkdtemp(prefix=f"ultimus-process{self.process_id}-")) / out.name
        if out.is_dir():
            shutil.copytree(out, scratch)
        atexit.register(shutil.rmtree, scratch.parent, ignore_errors=True)
        return scratch

    def on_every_replica(self, fn: Callable) -> Callable:
        """`fn` run once per replica, side by side in one TensorFlow graph; returns every replica's result."""
        import tensorflow as tf

        strategy = self.strategy

        @tf.function
        def run(*args):
            return strategy.experimental_local_results(strategy.run(fn, args=args))

        return run

    def record(self) -> dict:
        """The fields for run.json."""
        return {"mode": self.mode, "replicas": self.replicas, "processes": self.processes}


def setup(mode: str = "none", devices: int | None = None, batch_size: int | None = None) -> Plan:
    """Start the engine for `mode` on the current backend and return this process's Plan.

    Call it before any tensor is made (before loading data through TF): logical CPU
    devices and the multi-process runtime can only be set up while the runtimes are fresh.
    """
    backend = keras.backend.backend()
    if mode not in MODES:
        raise UserError(f"distribute={mode!r}: must be one of {', '.join(MODES)}")
    if devices is not None and devices < 1:
        raise UserError(f"devices={devices}: must be at least 1")
    if mode == "none":
        if devices and devices > 1:
            raise UserError(
                f"devices={devices} needs distribute='mirrored' (TensorFlow) or 'data-parallel' (JAX)"
            )
        return Plan()
    if ENGINES[mode] != backend:
        hint = {"tensorflow": "mirrored", "jax": "data-parallel"}.get(backend)
        raise UserError(
            f"distribute={mode!r} needs the {ENGINES[mode]} backend, not {backend}; "
            + (
                f"use distribute={hint!r} on {backend}"
                if hint
                else f"Keras {keras.__version__} has no distribution engine for {backend}: "
                "use KERAS_BACKEND=jax with data-parallel or tensorflow with mirrored"
            )
        )
    plan = {"mirrored": _mirrored, "data-parallel": _data_parallel, "multi-worker": _multi_worker}[
        mode
    ](devices)
    if batch_size is not None and batch_size % plan.replicas:
        raise UserError(
            f"batch_size={batch_size} must be a multiple of the {plan.replicas} replicas"
        )
    return plan


def _mirrored(devices: int | None) -> Plan:
    """MirroredStrategy over the GPUs (the first `devices` of them), else over logical CPUs."""
    import tensorflow as tf

    gpus = tf.config.list_physical_devices("GPU")
    if gpus:
        names = [f"/gpu:{i}" for i in range(len(gpus))][:devices]
    else:
        _split_cpu(tf, devices or 1)
        names = [d.name for d in tf.config.list_logical_devices("CPU")]
    strategy = tf.distribute.MirroredStrategy(devices=names)
    return Plan("mirrored", strategy.num_replicas_in_sync, strategy=strategy)


def _split_cpu(tf, count: int) -> None:
    """Make `count` logical CPU devices, each with its share of the cores; TensorFlow allows this only before it starts.

    Each replica gets cores // count intra-op threads and the replicas run side by
    side on `count` inter-op threads, rather than queueing for one shared pool
    (README, Speed, has the measurement). TF_NUM_INTRAOP_THREADS and
    TF_NUM_INTEROP_THREADS, when set, win.
    """
    cpu = tf.config.list_physical_devices("CPU")[0]
    wanted = [tf.config.LogicalDeviceConfiguration() for _ in range(count)]
    current = tf.config.get_logical_device_configuration(cpu)
    if current and len(current) == count:
        return
    try:
        tf.config.set_logical_device_configuration(cpu, wanted)
        if count > 1 and "TF_NUM_INTRAOP_THREADS" not in os.environ:
            tf.config.threading.set_intra_op_parallelism_threads(
                max(1, (os.cpu_count() or 1) // count)
            )
        if count > 1 and "TF_NUM_INTEROP_THREADS" not in os.environ:
            tf.config.threading.set_inter_op_parallelism_threads(count)
    except RuntimeError:
        raise UserError(
            f"devices={count} must be set before TensorFlow starts; run it in a fresh process"
        ) from None


def _data_parallel(devices: int | None) -> Plan:
    """DataParallel over every device of every process; joins the other processes first."""
    import jax

    processes, process_id = 1, 0
    if any(os.environ.get(v) for v in PROCESS_VARS):
        processes, process_id = _join_processes(jax)
    local = jax.local_devices()
    if devices and len(local) != devices:
        raise UserError(
            f"--devices {devices} but JAX sees {len(local)} devices; "
            "--devices must reach backend.prepare before JAX starts"
        )
    distribution = keras.distribution.DataParallel(devices=jax.devices(), auto_shard_dataset=False)
    keras.distribution.set_distribution(distribution)
    return Plan("data-parallel", len(jax.devices()), processes, process_id)


def _join_processes(jax) -> tuple[int, int]:
    """Start or join the JAX coordination service the way keras.distribution.initialize does."""
    missing = [v for v in PROCESS_VARS if not os.environ.get(v)]
    if missing:
        raise UserError(f"multi-process data-parallel needs {', '.join(missing)} set as well")
    try:
        count = int(os.environ["KERAS_DISTRIBUTION_NUM_PROCESSES"])
        index = int(os.environ["KERAS_DISTRIBUTION_PROCESS_ID"])
    except ValueError:
        raise UserError(
            "KERAS_DISTRIBUTION_NUM_PROCESSES and _PROCESS_ID must be integers"
        ) from None
    if not 0 <= index < count:
        raise UserError(f"KERAS_DISTRIBUTION_PROCESS_ID must be in 0..{count - 1}, got {index}")
    heartbeat = os.environ.get(HEARTBEAT_VAR)
    if heartbeat:
        if not heartbeat.isdigit() or int(heartbeat) < 1:
            raise UserError(f"{HEARTBEAT_VAR} must be a whole number of seconds, got {heartbeat!r}")
        # keras.distribution.initialize passes no heartbeat, so shorten JAX's default the same way.
        jax.distributed.initialize = _with_heartbeat(jax.distributed.initialize, int(heartbeat))
    try:
        keras.distribution.initialize()
    except (ValueError, RuntimeError) as e:
        raise UserError(f"joining the {count} processes failed: {e}") from None
    return jax.process_count(), jax.process_index()


def _with_heartbeat(initialize, seconds: int):
    """`jax.distributed.initialize` with a heartbeat timeout of `seconds`."""

    def wrapped(*args, **kwargs):
        kwargs.setdefault("heartbeat_timeout_seconds", seconds)
        kwargs.setdefault("shutdown_timeout_seconds", seconds)
        return initialize(*args, **kwargs)

    return wrapped


def _multi_worker(devices: int | None) -> Plan:
    """MultiWorkerMirroredStrategy from TF_CONFIG, refused: Keras 3's fit fails under it."""
    raise UserError(
        f"--distribute multi-worker: Keras {keras.__version__}'s fit fails under "
        f"MultiWorkerMirroredStrategy ({MULTI_WORKER_ISSUE}); for several hosts use "
        "KERAS_BACKEND=jax with --distribute data-parallel and KERAS_DISTRIBUTION_* variables"
    )
