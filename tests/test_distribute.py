"""Data-parallel training on Keras's own engines: refusals, sharding, 2 replicas == 1 device, multi-process runs.

The distributed runs happen in child processes (`python tests/test_distribute.py PROBE ...`): logical
devices and the JAX multi-process runtime can only be set up in a fresh process.
"""

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

HERE = Path(__file__).resolve()
ROOT = HERE.parents[1]
EPOCHS, N_TRAIN, N_TEST, BATCH = 3, 64, 32, 16  # 4 steps per epoch
HEARTBEAT = 10  # seconds; JAX's default heartbeat timeout is 100


# --------------------------------------------------------------------------------------------- in-process


def test_every_refusal_is_one_user_error(monkeypatch):
    import keras

    from keras_ultimus.errors import UserError
    from keras_ultimus.training import distribute

    def refusal(backend, *args):
        monkeypatch.setattr(keras.backend, "backend", lambda: backend)
        with pytest.raises(UserError) as e:
            distribute.setup(*args)
        assert "\n" not in str(e.value)
        return str(e.value)

    assert "no distribution engine for torch" in refusal("torch", "data-parallel")
    assert "no distribution engine for torch" in refusal("torch", "mirrored")
    assert "use distribute='data-parallel' on jax" in refusal("jax", "mirrored")
    assert "use distribute='mirrored' on tensorflow" in refusal("tensorflow", "data-parallel")
    assert "keras-team/keras/issues/20585" in refusal("tensorflow", "multi-worker")
    assert "data-parallel" in refusal("tensorflow", "multi-worker")
    assert "devices=2 needs" in refusal("tensorflow", "none", 2)
    assert "must be one of" in refusal("tensorflow", "ring-allreduce")
    # Multi-process settings are checked before JAX's runtime starts.
    monkeypatch.setenv("KERAS_DISTRIBUTION_NUM_PROCESSES", "2")
    assert "needs KERAS_DISTRIBUTION_JOB_ADDRESSES, KERAS_DISTRIBUTION_PROCESS_ID" in refusal(
        "jax", "data-parallel"
    )
    monkeypatch.setenv("KERAS_DISTRIBUTION_JOB_ADDRESSES", "127.0.0.1:1")
    monkeypatch.setenv("KERAS_DISTRIBUTION_PROCESS_ID", "2")
    assert "must be in 0..1, got 2" in refusal("jax", "data-parallel")
    monkeypatch.setenv("KERAS_DISTRIBUTION_PROCESS_ID", "1")
    monkeypatch.setenv("ULTIMUS_HEARTBEAT_SECONDS", "soon")
    assert "whole number of seconds" in refusal("jax", "data-parallel")
    monkeypatch.setattr(keras.backend, "backend", lambda: "tensorflow")
    assert distribute.setup("none").record() == {"mode": "none", "replicas": 1, "processes": 1}


def test_processes_get_disjoint_equal_shards_that_cover_the_split():
    from keras_ultimus.training.distribute import Plan

    x, y = np.arange(103 * 2).reshape(103, 2), np.arange(103)
    plans = [Plan("data-parallel", replicas=4, processes=2, process_id=i) for i in range(2)]
    shards = [plan.shard(x, y) for plan in plans]
    # 103 cut to 100 (a multiple of the 4 replicas), 50 per process, each label once.
    assert [len(s[1]) for s in shards] == [50, 50]
    assert sorted(np.concatenate([s[1] for s in shards]).tolist()) == list(range(100))
    for xs, ys in shards:
        np.testing.assert_array_equal(xs[:, 1] // 2, ys)
    assert plans[0].is_chief and not plans[1].is_chief
    assert plans[1].local_batch_size(512) == 256
    # mirrored splits each batch itself: no sharding of the arrays.
    assert Plan("mirrored", replicas=2).shard(x, y)[1] is y


# ------------------------------------------------------------------------------------- child processes


def probe(
    name: str, *args: str, env: dict | None = None, timeout: int = 240
) -> subprocess.CompletedProcess:
    """Run a probe of this file in a fresh Python; fail with its output if it fails."""
    result = subprocess.run(
        [sys.executable, str(HERE), name, *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=ROOT,
        env={**os.environ, **(env or {})},
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return result


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


CLI = [sys.executable, "-m", "keras_ultimus.train"]
TINY = ["--epochs", str(EPOCHS), "--conv-widths", "4,8,8", "--batch-size", str(BATCH)]


def launch(
    n: int, run: Path, *flags: str, logs: Path, env: dict | None = None
) -> list[subprocess.Popen]:
    """Start the training CLI as `n` processes of one data-parallel run on loopback; output to logs/.

    Process i's TMPDIR is logs/tmp<i>, where a non-chief process keeps its scratch copy of the run.
    """
    common = {
        **os.environ,
        "KERAS_BACKEND": "jax",
        "ULTIMUS_HEARTBEAT_SECONDS": str(HEARTBEAT),
        "KERAS_DISTRIBUTION_JOB_ADDRESSES": f"127.0.0.1:{free_port()}",
        "KERAS_DISTRIBUTION_NUM_PROCESSES": str(n),
        **(env or {}),
    }
    procs = []
    for i in range(n):
        (logs / f"tmp{i}").mkdir(parents=True)
        with open(logs / f"process{i}.txt", "w") as log:
            procs.append(
                subprocess.Popen(
                    [
                        *CLI,
                        *(
                            ["--resume", str(run)]
                            if "--resume" in flags
                            else ["--out", str(run), *flags]
                        ),
                    ],
                    cwd=ROOT,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                    env={
                        **common,
                        "KERAS_DISTRIBUTION_PROCESS_ID": str(i),
                        "TMPDIR": str(logs / f"tmp{i}"),
                    },
                )
            )
    return procs


def backed_up(run: Path) -> bool:
    """The first epoch's backup is written (after its log row): a kill now resumes from epoch 1 or later."""
    return any(run.glob("backup/epoch-*/training_metadata.json"))


def epochs_logged(run: Path) -> int:
    path = run / "log.csv"
    return max(0, len(path.read_text().splitlines()) - 1) if path.exists() else 0


def finish(
    procs: list[subprocess.Popen],
    logs: Path,
    timeout: float,
    kill_after_epoch: Path | None = None,
    kill: tuple[int, ...] = (),
) -> tuple[list, list[str], list[float], set]:
    """Wait for every process; SIGKILL the `kill` ones once run folder `kill_after_epoch` has a backup.

    Returns return codes, outputs, exit times, and the names seen in process 1's scratch folder.
    Whatever is left after `timeout` is killed (the test then fails on its None return code).
    """
    start, ended, scratch = time.monotonic(), {}, set()
    try:
        while len(ended) < len(procs) and time.monotonic() - start < timeout:
            if kill and backed_up(kill_after_epoch):
                for i in kill:
                    os.killpg(procs[i].pid, signal.SIGKILL)
                kill = ()
            for i, p in enumerate(procs):
                if i not in ended and p.poll() is not None:
                    ended[i] = time.monotonic()
            scratch |= {p.name for p in (logs / "tmp1").glob("*/*/*")}
            time.sleep(0.05)
    finally:
        for p in procs:
            if p.poll() is None:
                os.killpg(p.pid, signal.SIGKILL)
                p.wait()
    outputs = [(logs / f"process{i}.txt").read_text() for i in range(len(procs))]
    codes = [p.returncode if i in ended else None for i, p in enumerate(procs)]
    return codes, outputs, [ended.get(i, float("inf")) for i in range(len(procs))], scratch


@pytest.fixture(scope="module")
def mirrored(tmp_path_factory):
    """One child (once per test run): 1 device, then MirroredStrategy over 2 logical CPUs with and without sync BN."""
    from tests.helpers import (
        computed_once,
    )  # this file also runs as a script (its probes), without `tests`

    return computed_once(
        tmp_path_factory,
        "mirrored",
        lambda out: probe(
            "equivalence", str(out), "tensorflow", env={"KERAS_BACKEND": "tensorflow"}
        ),
    )


def max_weight_difference(a: dict, b: dict) -> float:
    return max(float(np.abs(a[k] - b[k]).max()) for k in a.files)


@pytest.mark.slow
def test_mirrored_two_replicas_with_sync_bn_match_one_device(mirrored):
    single, sync, local = (np.load(mirrored / f"{n}.npz") for n in ("single", "sync", "local"))
    # 12 Adam steps at lr 1e-2 from the same seed, data and global batch of 16. With --sync-bn the two
    # runs differ only in float32 summation order (gradients summed over 2 replicas); measured: losses
    # within 2.4e-6, weights within 1.2e-4 (Adam divides by sqrt(v), so tiny gradient entries amplify).
    np.testing.assert_allclose(sync["loss"], single["loss"], atol=1e-5)
    assert max_weight_difference(single, sync) < 1e-3
    # Per-replica BN (the default) normalises each half-batch by its own statistics: a different
    # model, not rounding. Measured: weights 0.13 apart, 100x past the tolerance above.
    assert max_weight_difference(single, local) > 2e-2
    assert np.abs(local["loss"] - single["loss"]).max() > 1e-4


@pytest.mark.slow
def test_jax_data_parallel_on_two_devices_matches_one_device(tmp_path):
    probe(
        "equivalence",
        str(tmp_path),
        "jax",
        env={"KERAS_BACKEND": "jax", "XLA_FLAGS": "--xla_force_host_platform_device_count=2"},
    )
    single, parallel = np.load(tmp_path / "single.npz"), np.load(tmp_path / "sync.npz")
    # No sync-bn needed: DataParallel jits one program over the global batch, so GSPMD computes BN
    # statistics over all of it (all-reduce between the devices). Measured: weights within 5e-7.
    np.testing.assert_allclose(parallel["loss"], single["loss"], atol=1e-5)
    assert max_weight_difference(single, parallel) < 1e-4


@pytest.mark.slow
def test_a_sync_bn_model_saves_a_keras_file_that_loads_on_every_backend(mirrored):
    path = mirrored / "sync.keras"
    for backend in ("jax", "torch", "tensorflow"):
        result = probe("load", str(path), env={"KERAS_BACKEND": backend})
        logits = np.array(json.loads(result.stdout.strip().splitlines()[-1]))
        np.testing.assert_allclose(logits, np.load(mirrored / "sync_logits.npy"), atol=1e-4)


def assert_finished(run: Path, processes: int, replicas: int, mode: str) -> None:
    """Every epoch logged exactly once (two writers, or a replayed epoch, would repeat rows)."""
    epochs = [line.split(",")[0] for line in (run / "log.csv").read_text().splitlines()[1:]]
    assert epochs == [str(e) for e in range(EPOCHS)], epochs
    info = json.loads((run / "run.json").read_text())
    assert info["distribute"] == {"mode": mode, "replicas": replicas, "processes": processes}
    assert (
        info["finished"] and (run / "model.keras").is_file() and not (run / "best.keras").exists()
    )


@pytest.mark.slow
def test_a_killed_mirrored_sync_bn_run_resumes_and_logs_every_epoch_once(
    tmp_path, fake_cifar_tarball
):
    # data-parallel's kill and resume is tested with 2 processes below.
    run, env = tmp_path / "run", {**os.environ, "KERAS_BACKEND": "tensorflow"}
    proc = subprocess.Popen(
        [
            *CLI,
            "--data",
            str(fake_cifar_tarball),
            "--out",
            str(run),
            *TINY,
            "--distribute",
            "mirrored",
            "--devices",
            "2",
            "--sync-bn",
        ],
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    deadline = time.monotonic() + 240
    while proc.poll() is None and not backed_up(run) and time.monotonic() < deadline:
        time.sleep(0.05)
    proc.kill()
    stderr = proc.communicate()[1]
    assert 1 <= epochs_logged(run) < EPOCHS, stderr[-3000:]
    result = subprocess.run(
        [*CLI, "--resume", str(run)], cwd=ROOT, capture_output=True, text=True, timeout=240, env=env
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "Resumed after epoch" in result.stdout
    assert_finished(run, processes=1, replicas=2, mode="mirrored")
    assert json.loads((run / "run.json").read_text())["config"]["sync_bn"] is True


@pytest.mark.slow
def test_two_processes_train_to_the_end_resume_after_a_kill_and_only_process_0_writes(
    tmp_path, fake_cifar_tarball
):
    run = tmp_path / "run"
    flags = ["--data", str(fake_cifar_tarball), *TINY, "--distribute", "data-parallel"]
    codes, outputs, _, _ = finish(
        launch(2, run, *flags, logs=tmp_path / "killed"),
        tmp_path / "killed",
        timeout=240,
        kill_after_epoch=run,
        kill=(0, 1),
    )
    assert codes == [-signal.SIGKILL, -signal.SIGKILL], outputs[0][-3000:] + outputs[1][-3000:]
    assert 1 <= epochs_logged(run) < EPOCHS
    logs = tmp_path / "resumed"
    codes, outputs, _, scratch = finish(launch(2, run, "--resume", logs=logs), logs, timeout=240)
    assert codes == [0, 0], outputs[0][-3000:] + outputs[1][-3000:]
    assert "Resumed after epoch" in outputs[0] and "Resumed after epoch" in outputs[1]
    assert_finished(run, processes=2, replicas=2, mode="data-parallel")
    # Process 1 wrote into its scratch copy (JAX saving is collective), which is gone after it exits.
    # Polling sees its log for the whole run, but model.keras only in the moment between the final
    # save and the exit, so only the log is required (model.keras was missed once on a busy machine).
    assert "log.csv" in scratch, scratch
    assert list((logs / "tmp1").iterdir()) == []


@pytest.mark.slow
@pytest.mark.parametrize("dying", [1, 0])
def test_a_dead_process_makes_the_other_fail_within_the_heartbeat(
    tmp_path, fake_cifar_tarball, dying
):
    run, logs = tmp_path / "run", tmp_path / "logs"
    flags = [
        "--data",
        str(fake_cifar_tarball),
        *TINY,
        "--epochs",
        "20",
        "--distribute",
        "data-parallel",
    ]
    codes, outputs, ended, _ = finish(
        launch(2, run, *flags, logs=logs), logs, timeout=240, kill_after_epoch=run, kill=(dying,)
    )
    survivor = outputs[1 - dying]
    assert codes[dying] == -signal.SIGKILL
    assert codes[1 - dying] not in (0, None), survivor[-3000:]
    # The survivor's next all-reduce fails at once (Gloo: connection reset by peer); JAX's coordination
    # service then ends the process (SIGABRT) within the heartbeat timeout.
    assert "Gloo" in survivor or "JAX distributed service detected fatal errors" in survivor, (
        survivor[-3000:]
    )
    print(f"survivor exited {ended[1 - dying] - ended[dying]:.1f} s after process {dying} died")
    assert ended[1 - dying] - ended[dying] < HEARTBEAT + 20


# ------------------------------------------------------------------------------------------------ probes


def data(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Blocky images (they move an untrained model's logits, unlike pixel noise) and cycling labels."""
    low = np.random.default_rng(seed).integers(0, 256, (n, 4, 4, 3))
    return low.repeat(8, 1).repeat(8, 2).astype("float32"), np.arange(n) % 10


def small_model(sync_bn: bool = False):
    import keras

    from keras_ultimus.models.ultimus import build_model

    keras.utils.set_random_seed(0)
    model = build_model(conv_widths=(4, 8, 8), residual=True)
    if sync_bn:

        def clone(layer):
            config = layer.get_config()
            if isinstance(layer, keras.layers.BatchNormalization):
                config["synchronized"] = True
            return layer.__class__.from_config(config)

        synced = keras.models.clone_model(model, clone_function=clone)
        synced.set_weights(model.get_weights())  # clones start from fresh initial weights
        model = synced
    model.compile(
        keras.optimizers.Adam(1e-2),
        keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
    )
    return model


def probe_equivalence(out: str, backend: str) -> None:
    """Train the same model on the same batches on 1 device, then on 2 replicas; save losses and weights."""
    import keras
    import tensorflow as tf

    from keras_ultimus.training import checkpoints, distribute

    out = Path(out)
    mode = {"tensorflow": "mirrored", "jax": "data-parallel"}[backend]
    x, y = data(N_TRAIN, 0)

    def fit(model, name):
        history = model.fit(
            tf.data.Dataset.from_tensor_slices((x, y)).batch(BATCH), epochs=EPOCHS, verbose=0
        )
        weights = [np.asarray(keras.ops.convert_to_numpy(w)) for w in model.weights]
        np.savez(out / f"{name}.npz", *weights, loss=np.array(history.history["loss"]))
        return model

    if backend == "tensorflow":
        plan = distribute.setup(mode, 2, BATCH)  # logical devices first, before TF runs anything
        if not {"TF_NUM_INTRAOP_THREADS", "TF_NUM_INTEROP_THREADS"} & set(
            os.environ
        ):  # a share of the cores each
            assert tf.config.threading.get_intra_op_parallelism_threads() == max(
                1, (os.cpu_count() or 1) // 2
            )
            assert tf.config.threading.get_inter_op_parallelism_threads() == 2
        fit(small_model(), "single")  # outside the scope: the default strategy, one device
        with plan.scope():
            model = fit(small_model(sync_bn=True), "sync")
            fit(small_model(), "local")
            with checkpoints.portable_batchnorm(model):
                model.save(out / "sync.keras")
            assert all(
                layer.synchronized for layer in model.layers if "bn" in layer.name
            )  # restored
            np.save(
                out / "sync_logits.npy", keras.ops.convert_to_numpy(model(x[:8], training=False))
            )
    else:
        fit(small_model(), "single")  # before any distribution is set: device 0 only
        plan = distribute.setup(mode, 2, BATCH)
        with plan.scope():
            fit(small_model(), "sync")
    assert plan.replicas == 2


def probe_load(path: str) -> None:
    """Print a saved model's logits on the probe images as JSON."""
    import keras

    import keras_ultimus.models.layers  # noqa: F401  registers UltimusLayer

    model = keras.saving.load_model(path)
    print(json.dumps(keras.ops.convert_to_numpy(model(data(8, 0)[0], training=False)).tolist()))


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    {"equivalence": probe_equivalence, "load": probe_load}[sys.argv[1]](*sys.argv[2:])
