"""Provenance: the git commit recorded in run.json and bench.json."""

import re
import subprocess

from keras_ultimus.provenance import git_state


def test_a_checkout_gives_its_commit_and_dirty_flag():
    state = git_state()
    head = subprocess.run(
        ["git", "rev-parse", "HEAD"], capture_output=True, text=True
    ).stdout.strip()
    if not head:  # an installed copy outside a checkout
        assert state == {"commit": None, "dirty": None}
        return
    assert re.fullmatch(r"[0-9a-f]{40}", state["commit"]) and state["commit"] == head
    assert isinstance(state["dirty"], bool)


def test_outside_git_there_is_no_commit(tmp_path):
    assert git_state(tmp_path) == {"commit": None, "dirty": None}
