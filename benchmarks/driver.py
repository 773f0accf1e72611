"""The speed and accuracy work on a GPU machine (PyTorch and JAX, no TensorFlow or network): `python -m benchmarks.gpu`.

Stages, run in the order given: bench (keras_ultimus.bench on torch and jax), train (the 24-epoch default on torch
and jax, each alone and timed), bf16 (seed 0, 8 epochs, float32 against mixed_bfloat16), seeds (seeds 0, 1, 2),
recipe (the reference model on the candidate recipe RECIPE, seeds 0, 1, 2), repro (the PyTorch original's schedule
with each --attention reading, 24 epochs, charted beside its log), ablation (the best variant, BEST_VARIANT, with
one recipe or model option changed per arm, at --seeds seeds), search (Hyperband over --space on the 45,000 /
5,000 split), confirm (the search's top 3 configurations at 24 epochs on the test split with flip TTA, each at
--seeds seeds, and the best one at every --depths with the residual on and off).
The runs of each stage are data (benchmarks/experiments.py), trained by benchmarks/runner.py; the transport to
and from the machine is tools/transport/. $ULTIMUS_GPU_STATE (default /tmp/keras-ultimus-gpu) keeps the data and
the run folders between the calls of a session; every stage resumes (a finished run folder is kept, a partial
one --resume'd, a search resumed by KerasTuner). .gpu-carry/ (an earlier session's run folders) is merged into
--work, .whl/ installed into /tmp/site when Keras is missing, .data-parts/ reassembled and md5-checked. Without
test_batch.bin, the runs are scored on a split carved from the training files, and every figure is called a
held-out accuracy. After every stage the results are packed into --out: gpu-results.tar.gz (no backups,
TensorBoard logs or checkpoints), gpu-models-extra.tar.gz (models over the first 15 MiB), summary.txt, steps.txt,
versions.txt, data.txt.
How to prepare and which device calls to make: DEVELOPERS.md ("GPU runs").
"""

import argparse
import re
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable

from benchmarks import confirm, stages
from benchmarks.experiments import STAGES, model_rank
from benchmarks.runner import NO_TENSORFLOW, ROOT, Session, say, stop_children
from keras_ultimus.constants import SPACES
from keras_ultimus.datasets.fake_data import write_fake_tarball
from keras_ultimus.errors import ArgumentParser, UserError, cli
from tools.transport.packing import pack
from tools.transport.parts import assemble_data, gather_parts, split_into_parts
from tools.transport.wheels import SITE, merge_carry

STAGE_FUNCTIONS: dict[str, Callable[[Session], None]] = {
    "bench": stages.stage_bench,
    "train": stages.stage_train,
    "bf16": stages.stage_bf16,
    "seeds": stages.stage_seeds,
    "recipe": stages.stage_recipe,
    "repro": stages.stage_repro,
    "ablation": stages.stage_ablation,
    "search": confirm.stage_search,
    "confirm": confirm.stage_confirm,
}


def parse_stages(text: str) -> list[str]:
    """Comma-separated stage names, each one of STAGES."""
    names = [name.strip() for name in text.split(",")]
    unknown = [name for name in names if name not in STAGES]
    if unknown or not names:
        raise argparse.ArgumentTypeError(
            f"unknown stage '{unknown[0] if unknown else text}' (stages: {','.join(STAGES)})"
        )
    return names


def parse_depths(text: str) -> list[int]:
    """Comma-separated block counts from 1 to 8."""
    if not re.fullmatch(r"[1-8](,[1-8])*", text):
        raise argparse.ArgumentTypeError(f"block counts 1-8, comma-separated, got '{text}'")
    return [int(d) for d in text.split(",")]


def positive(text: str) -> int:
    """A positive integer."""
    if not re.fullmatch(r"[1-9][0-9]*", text):
        raise argparse.ArgumentTypeError(f"a positive integer, got '{text}'")
    return int(text)


def build_parser() -> ArgumentParser:
    """The driver's flags."""
    p = ArgumentParser(
        prog="python -m benchmarks.gpu",
        description=__doc__.split("\n")[0],
        epilog="Stages and state: see benchmarks/driver.py's docstring and DEVELOPERS.md ('GPU runs').",
    )
    p.add_argument(
        "--stages",
        type=parse_stages,
        default=["bench", "train"],
        help=f"comma-separated, run in this order: {','.join(STAGES)}",
    )
    p.add_argument(
        "--jobs",
        type=positive,
        default=1,
        help="runs of a stage at once on the one GPU (bf16, seeds, recipe, repro, ablation, confirm; the "
        "search: a KerasTuner chief and N workers); the timed train runs always run alone",
    )
    p.add_argument(
        "--time-limit",
        type=positive,
        metavar="S",
        help="start no run in the last 30 s before S seconds and interrupt the running ones at S (they "
        "resume); set it under the call's timeout (no default)",
    )
    p.add_argument(
        "--out", help="where the results are packed (default: $OUT, else runs/gpu-<time>)"
    )
    p.add_argument(
        "--work",
        help="run folders kept between calls (default: $ULTIMUS_GPU_STATE/runs, "
        "/tmp/keras-ultimus-gpu/runs; with --dry-run OUT.work)",
    )
    p.add_argument(
        "--depths",
        type=parse_depths,
        help="block counts of the depth chart, each with the residual on and off (default: 1,2,3,4; "
        "dry run 1,2)",
    )
    p.add_argument(
        "--seeds",
        type=positive,
        default=3,
        help="seeds 0 .. N-1 of each top configuration (confirm) and each arm (ablation)",
    )
    p.add_argument(
        "--space",
        choices=SPACES,
        default="wide",
        help="the search space (default: wide, the residual stem, pooling, whitening and the recipe "
        "options beside the reference's axes)",
    )
    p.add_argument(
        "--search-epochs",
        type=positive,
        default=24,
        help="Hyperband's most epochs for one trial; 24 is the confirmations' length, so the last rung is "
        "scored on their schedule (dry run: 2)",
    )
    p.add_argument(
        "--dry-run",
        action="store_true",
        help="every stage on this CPU: a fake tarball, tiny limits, TensorFlow made unimportable",
    )
    p.add_argument(
        "--data-only",
        action="store_true",
        help="only gather, reassemble and check the data, and print its --data (on a CPU machine: the "
        "same partial data, for a comparison run)",
    )
    return p


def bring_data(s: Session) -> None:
    """This call's data parts into the cache (the dry run: a fake tarball in 3 parts, the last withheld)."""
    parts = s.cache / "parts"
    parts.mkdir(parents=True, exist_ok=True)
    if s.dry_run:  # "ac" withheld, to exercise the partial-data path
        split_into_parts(write_fake_tarball(s.cache / "fake.tar.gz"), parts, count=3, keep=2)
    sources = [] if s.dry_run else sorted((ROOT / ".data-parts").glob("cifar.part-*"))
    say(s, f"data parts here: {' '.join(gather_parts(sources, parts))}")


def use_data(s: Session) -> None:
    """Reassemble the data, say what the runs use, and copy data.txt into --out."""
    try:
        data = assemble_data(s.cache, s.work / "data.txt", check_md5=not s.dry_run)
    except ValueError as e:
        raise UserError(str(e)) from None
    s.data, s.held_out = data.path, data.held_out
    if (s.work / "data.txt").is_file():
        say(s, (s.work / "data.txt").read_text().strip())
        shutil.copy(s.work / "data.txt", s.out / "data.txt")


def prepare(s: Session) -> subprocess.Popen:
    """Merge .gpu-carry/ into --work; start versions.txt (with the packages from .whl/ when installed)."""
    if not s.dry_run:  # an earlier session's finished work: what is here wins
        merge_carry(ROOT / ".gpu-carry", s.work)
    if str(SITE) in sys.path:
        say(s, f"packages: the wheels of .whl/, installed in {SITE}")
    if s.dry_run:  # this process too, when the confirm stage imports the tuner
        sys.path.insert(0, str(NO_TENSORFLOW))
    code = "from keras_ultimus.provenance import versions; print(*versions(), sep='\\n')"
    with open(s.out / "versions.txt", "w") as f:
        return subprocess.Popen(
            [sys.executable, "-c", code], stdout=f, stderr=subprocess.STDOUT, env=s.env, cwd=ROOT
        )


def pack_work(s: Session) -> None:
    """Pack --work into --out, the models the README cites first."""
    pack(s.work, s.out, model_rank)


@cli
def main(argv: list[str] | None = None) -> int:
    """Run the selected stages, packing the results after each one and at the end."""
    args = build_parser().parse_args(argv)
    s = Session(args)
    call = " ".join(sys.argv[1:] if argv is None else argv)
    say(s, f"call: python -m benchmarks.gpu {call} (work {s.work})")
    bring_data(s)
    if args.data_only:
        use_data(s)
        print(f"--data {s.data}")
        return 0
    signal.signal(signal.SIGTERM, signal.default_int_handler)  # a stop packs too, as Ctrl-C does
    versions = prepare(s)
    try:
        for stage in args.stages:
            if stage != "bench" and s.data is None:
                use_data(s)
            start = time.time()
            say(s, f"stage {stage}: start")
            STAGE_FUNCTIONS[stage](s)
            say(s, f"stage {stage}: end ({time.time() - start:.0f} s)")
            pack_work(s)  # after every stage: a call cut off later still brings these back
    finally:
        stop_children(s)
        try:
            versions.wait(60)
        except subprocess.TimeoutExpired:
            versions.kill()
        pack_work(s)
    if s.failed:
        problems = "; ".join(s.failed)
        say(
            s,
            f"done with problems: {problems}; the run folders are in {s.work}, the results in {s.out}",
        )
        return 1
    say(s, f"done: the run folders are in {s.work}, the results in {s.out}")
    return 0
