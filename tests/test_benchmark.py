"""Tests for keras_ultimus.benchmark: the timing loop and its CLI."""

import time

import keras
import numpy as np

from keras_ultimus import benchmark
from keras_ultimus.model import build_model


def test_measure_times_batch_1_and_batch_256_calls():
    shapes = []

    def slow(images):
        shapes.append(images.shape)
        time.sleep(0.002 if len(images) == 1 else 0.02)
        return np.zeros((len(images), 10), np.float32)

    r = benchmark.measure(slow, calls=10, batches=3, warmup=1)
    assert shapes.count((1, 32, 32, 3)) == 1 + 10 and shapes.count((256, 32, 32, 3)) == 1 + 3
    assert 2 <= r["latency_ms_median"] <= r["latency_ms_p90"] < 50
    assert 256 / 0.2 < r["throughput_img_s"] <= 256 / 0.02


def test_cli_prints_a_row_per_model(tmp_path, capsys):
    keras.utils.set_random_seed(0)
    build_model().save(tmp_path / "model.keras")
    assert benchmark.main([str(tmp_path / "model.keras"), "--calls", "2", "--batches", "1"]) == 0
    header, row = capsys.readouterr().out.splitlines()
    assert header.split()[0] == "model" and row.split()[0] == str(tmp_path / "model.keras")
    median, p90, throughput = map(float, row.split()[1:])
    assert 0 < median <= p90 and throughput > 0


def test_cli_bad_input_exits_2(tmp_path, capsys):
    assert benchmark.main([str(tmp_path / "nothing")]) == 2
    assert capsys.readouterr().err == f"error: {tmp_path / 'nothing'}: no such file or folder\n"
    assert benchmark.main([str(tmp_path), "--calls", "0"]) == 2
