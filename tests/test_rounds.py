"""The bench's interleaved rounds: workers warm up one at a time, then take turns each round; ratios per round."""

import sys

import pytest

from keras_ultimus.benchmark.rounds import ratios, run_rounds

# A worker serving two paths whose speeds are set by how long they sleep; it logs each path it runs.
WORKER = """
import sys, time
from keras_ultimus.benchmark.rounds import serve
log = open(sys.argv[2], "a")
def path(name, seconds):
    def run():
        log.write(name + "\\n"); log.flush(); time.sleep(seconds)
    return run
serve({f"{sys.argv[1]}-fast": path(f"{sys.argv[1]}-fast", 0.01),
       f"{sys.argv[1]}-slow": path(f"{sys.argv[1]}-slow", 0.04)},
      {sys.argv[1]: 0.5}, steps=1, batch_size=10, versions={"python": sys.version.split()[0]})
"""


def test_workers_take_turns_each_round_and_ratios_compare_within_rounds(tmp_path):
    log = tmp_path / "log"
    workers = [(name, [sys.executable, "-c", WORKER, name, str(log)], None) for name in ("a", "b")]
    result = run_rounds(workers, rounds=3, log=lambda line: None)
    assert len(result["rounds"]) == 3 and result["warmup_s"] == {"a": 0.5, "b": 0.5}
    assert set(result["versions"]) == {"a", "b"}
    order = log.read_text().split()
    # Each round runs every path once; the worker that starts a round rotates.
    assert order == [
        "a-fast",
        "a-slow",
        "b-fast",
        "b-slow",
        "b-fast",
        "b-slow",
        "a-fast",
        "a-slow",
        "a-fast",
        "a-slow",
        "b-fast",
        "b-slow",
    ]
    table = {row["path"]: row for row in ratios(result, "a-fast")}
    assert table["a-fast"]["ratio"] == 1.0
    assert table["a-slow"]["ratio"] < 0.7 and table["b-slow"]["ratio_max"] < 0.7
    assert table["a-slow"]["img_s"] < table["a-fast"]["img_s"] <= 1000


def test_a_worker_that_dies_is_reported_by_name(tmp_path):
    workers = [("broken", [sys.executable, "-c", "import sys; sys.exit(3)"], None)]
    with pytest.raises(RuntimeError, match="broken exited with code 3"):
        run_rounds(workers, rounds=1, log=lambda line: None)
