#!/usr/bin/env bash
# The speed and accuracy work on a GPU machine with PyTorch and JAX but no TensorFlow, Keras or network.
#
# Usage (from the repo root):
#   benchmarks/gpu.sh [--stages LIST] [--jobs N] [--time-limit S] [--out DIR] [--work DIR] [--depths LIST]
#                     [--search-epochs N] [--dry-run] [--data-only]
#   --stages   comma-separated, run in this order (default: bench,train):
#              bench    python -m keras_ultimus.bench on torch and jax (synthetic data, NumPy pipeline)
#              train    the 24-epoch default on torch and on jax, each timed from start until its run folder is written
#              bf16     seed 0, 8 epochs, float32 against mixed_bfloat16 (torch): both test accuracies, the difference
#              seeds    the 24-epoch default with seeds 0, 1, 2 (torch): each, and mean ± std
#              search   Hyperband on the 45,000 / 5,000 split (torch), --search-epochs per trial at most (default 24)
#              confirm  the search's top 3 distinct configurations, 24 epochs each, scored on the test set, and the
#                       best one at every --depths (default 1..8) for the depth chart
#   --jobs N   train up to N runs of a stage at once on the one GPU (bf16, seeds, confirm; the search: a KerasTuner
#              chief and N workers; default 1). The train stage's timed runs always run alone.
#   --time-limit S  start no run in the last 30 s before S seconds, and interrupt running ones at S (they resume):
#              set it a minute under the call's timeout, so that the results are packed before the call ends.
#   --work DIR run folders, kept between calls on a warm machine (default $STATE/runs); a carried .gpu-carry/ (the
#              run folders of an earlier session) is merged into it, keeping what is there
#   --out DIR  what comes back (default $OUT, else runs/gpu-<time>): gpu-results.tar.gz (the run folders without
#              backups, TensorBoard logs or checkpoints; unpack into .gpu-runs/), gpu-models-extra.tar.gz (only
#              when the models don't fit the first archive's 15 MiB), summary.txt, steps.txt, versions.txt, data.txt.
#   --dry-run  every stage end to end on this CPU: a fake tarball, tiny limits, TensorFlow made unimportable.
#   --data-only  only reassemble and check the data (on a CPU machine: the same partial data, for a comparison run).
# $STATE (default /tmp/keras-ultimus-gpu, or $ULTIMUS_GPU_STATE) holds the run folders and the data between the
# calls of one session: a call replaces the checkout, ignored folders included, but /tmp stays while the machine is warm.
# Every stage resumes: a finished run folder (run.json has "finished") is kept, a partial one is --resume'd, a
# search folder is resumed by KerasTuner. How to prepare .whl/ (the wheels) and .data-parts/ (the data in parts),
# the sequence of device calls, and how to turn the results into reports/: DEVELOPERS.md ("GPU runs"). The folders
# that travel or stay on the machine are ignored through .git/info/exclude, not .gitignore:
#   printf "/.whl/\n/.data-parts/\n/.data-cache/\n/.gpu-runs/\n/.gpu-carry/\n" >> .git/info/exclude
set -euo pipefail

ALL_STAGES=(bench train bf16 seeds search confirm)
usage="usage: benchmarks/gpu.sh [--stages LIST] [--jobs N] [--time-limit S] [--out DIR] [--work DIR] [--depths LIST] [--search-epochs N] [--dry-run] [--data-only]"
dry_run=0
data_only=0
stages=bench,train
jobs=1
time_limit=
work=
depths=
# Hyperband's most epochs for one trial. 24 = the confirmations' length, so the last rung's trials are scored on
# exactly the schedule that the confirmations (and the README's 24-epoch figures) use: a shorter budget ranks
# configurations by how fast they learn in a short one-cycle run, which favours shallow, high-LR ones. With
# factor 3 it is 30 trials and 308 trial-epochs (about 13 default 24-epoch runs; pooled stems train faster).
search_epochs=24
out=${OUT:-runs/gpu-$(date +%Y%m%d-%H%M%S)}
while [ $# -gt 0 ]; do
    case $1 in
        --dry-run) dry_run=1 ;;
        --data-only) data_only=1 ;;
        --out|--stages|--jobs|--time-limit|--work|--depths|--search-epochs)
            [ $# -ge 2 ] || { echo "error: $1 needs a value ($usage)" >&2; exit 2; }
            case $1 in
                --out) out=$2 ;; --stages) stages=$2 ;; --jobs) jobs=$2 ;; --time-limit) time_limit=$2 ;;
                --work) work=$2 ;; --depths) depths=$2 ;; --search-epochs) search_epochs=$2 ;;
            esac
            shift ;;
        *) echo "error: unknown argument $1 ($usage)" >&2; exit 2 ;;
    esac
    shift
done
IFS=, read -r -a stage_list <<<"$stages"
for stage in "${stage_list[@]}"; do
    [[ " ${ALL_STAGES[*]} " == *" $stage "* ]] \
        || { echo "error: unknown stage '$stage' in --stages $stages (stages: $(IFS=,; echo "${ALL_STAGES[*]}"))" >&2; exit 2; }
done
for value in "$jobs" "$search_epochs" ${time_limit:+"$time_limit"}; do
    [[ $value =~ ^[1-9][0-9]*$ ]] || { echo "error: --jobs, --time-limit and --search-epochs take a positive integer, got '$value'" >&2; exit 2; }
done
if [ $dry_run = 1 ]; then
    depths=${depths:-1,2}
    search_epochs=2
else
    depths=${depths:-1,2,3,4,5,6,7,8}
fi
[[ $depths =~ ^[1-8](,[1-8])*$ ]] || { echo "error: --depths takes block counts 1-8, comma-separated, got '$depths'" >&2; exit 2; }

mkdir -p "$out"
out=$(cd "$out" && pwd)
state=${ULTIMUS_GPU_STATE:-/tmp/keras-ultimus-gpu}
# The dry run keeps its run folders beside --out, so it never touches $state.
work=${work:-$([ $dry_run = 1 ] && echo "$out.work" || echo "$state/runs")}
mkdir -p "$work/logs"
work=$(cd "$work" && pwd)
if [ $dry_run = 0 ] && [ -d .gpu-carry ]; then  # finished work of an earlier session, carried in this call
    (cd .gpu-carry && tar -cf - .) | (cd "$work" && tar -xf - --skip-old-files)
fi
py=${PYTHON:-python3}
export KERAS_BACKEND=${KERAS_BACKEND:-torch}  # the GPU machine has no TensorFlow
export PYTHONUNBUFFERED=1
start_epoch=$(date +%s)
deadline=$((start_epoch + ${time_limit:-315360000}))
failed=$work/.failed-$$
: >"$failed"
say() { echo "[gpu.sh $(date +%H:%M:%S)] $*" | tee -a "$out/steps.txt" "$work/steps.txt" >&2; }
say "call: benchmarks/gpu.sh $([ $data_only = 1 ] && echo "--data-only" || echo "--stages $stages --jobs $jobs")${time_limit:+ --time-limit $time_limit}$([ $dry_run = 1 ] && echo " --dry-run") (work $work)"

# Pack what matters of $work into $out: six files at most, none in a folder, each under 16 MiB.
pack() {
    cp -f "$work/data.txt" "$out/data.txt" 2>/dev/null || true
    [ $data_only = 1 ] && return 0
    "$py" - "$work" "$out" <<'PY' || echo "[gpu.sh] packing failed" >&2
import io, os, re, sys, tarfile
from pathlib import Path

work, out = Path(sys.argv[1]), Path(sys.argv[2])
LIMIT = 15 * 2**20  # under the 16 MiB that one file may be when it comes back
LOG_TAIL = 100_000  # a log's last bytes: Keras' progress bars make a 24-epoch log a few hundred kB
KEEP = {".csv", ".json", ".md", ".png", ".txt", ".log", ".keras"}
SKIP_DIRS = {"backup", "tensorboard", "dry-run-data", "lr_find_scratch"}
files, models = [], []
for root, dirs, names in os.walk(work):
    dirs[:] = sorted(d for d in dirs if d not in SKIP_DIRS)
    for name in sorted(names):
        path = Path(root) / name
        if path.suffix not in KEEP or name.startswith(".") or name == "best.keras":
            continue
        (models if path.suffix == ".keras" else files).append(path)

def rank(path: Path) -> int:
    """The models the README cites first: the timed runs, the seeds, the best confirmation."""
    run = path.parent.name
    if re.fullmatch(r"train-\w+|seed-\d+|confirm-1", run):
        return 0
    return 1 if run.startswith("confirm-") else 2 if run.startswith("bf16-") else 3

def stored(path: Path) -> int:
    return min(path.stat().st_size, LOG_TAIL) if path.suffix == ".log" else path.stat().st_size

main, extra, dropped = list(files), [], []
size = base = sum(stored(p) for p in files)
extra_size = 0
for model in sorted(models, key=lambda p: (rank(p), str(p))):
    n = model.stat().st_size
    if size + n <= LIMIT:
        main.append(model); size += n
    elif extra_size + n <= LIMIT:
        extra.append(model); extra_size += n
    else:
        dropped.append(model)
manifest = [f"gpu-results.tar.gz: {len(main)} files, {size / 2**20:.1f} MiB before compression"]
if extra:
    manifest.append("gpu-models-extra.tar.gz (did not fit the first archive): "
                    + " ".join(str(p.relative_to(work)) for p in extra))
if dropped:
    manifest.append("DROPPED (over 2 x 15 MiB), still on the machine under the work folder: "
                    + " ".join(str(p.relative_to(work)) for p in dropped))
if base > LIMIT:
    manifest.append("WARNING: the logs and tables alone are over 15 MiB")

def write(name: str, paths: list[Path], note: str | None = None) -> None:
    tmp = out / f".{name}.tmp"
    with tarfile.open(tmp, "w:gz") as tar:
        for p in paths:
            if p.suffix == ".log" and p.stat().st_size > LOG_TAIL:
                with open(p, "rb") as f:
                    f.seek(-LOG_TAIL, os.SEEK_END)
                    body = b"[gpu.sh: the log's last %d bytes]\n" % LOG_TAIL + f.read()
                info = tarfile.TarInfo(str(p.relative_to(work)))
                info.size, info.mtime = len(body), int(p.stat().st_mtime)
                tar.addfile(info, io.BytesIO(body))
            else:
                tar.add(p, arcname=str(p.relative_to(work)))
        if note is not None:
            info = tarfile.TarInfo("packed.txt")
            info.size = len(note.encode())
            tar.addfile(info, io.BytesIO(note.encode()))
    if tmp.stat().st_size > 16 * 2**20:
        manifest.append(f"WARNING: {name} is {tmp.stat().st_size / 2**20:.1f} MiB, over 16 MiB: it won't come back")
    os.replace(tmp, out / name)

write("gpu-results.tar.gz", main, "\n".join(manifest) + "\n")
if extra:
    write("gpu-models-extra.tar.gz", extra)
else:
    (out / "gpu-models-extra.tar.gz").unlink(missing_ok=True)
summaries = sorted((work / "summary").glob("*.txt")) if (work / "summary").is_dir() else []
text = "".join(f"== {p.stem}\n{p.read_text()}" for p in summaries) + "== packed\n" + "\n".join(manifest) + "\n"
(out / "summary.txt").write_text(text)
PY
}
packed=0  # 1 once the last stage's results are packed: the exit need not pack them again
trap 'status=$?; trap - EXIT; [ $packed = 1 ] || pack; rm -f "$failed"; exit $status' EXIT
trap 'exit 130' INT TERM

# 1. Python packages that travel in .whl/, installed once per machine where Keras and KerasTuner are missing.
# The dry run, and a CPU machine with its own Keras, use their own packages: .whl/ holds the GPU machine's wheels.
if [ $dry_run = 0 ] && [ -f /tmp/site/.installed ]; then  # installed by an earlier call
    export PYTHONPATH=/tmp/site${PYTHONPATH:+:$PYTHONPATH}
fi
if [ $dry_run = 0 ] && ls .whl/*.whl >/dev/null 2>&1 && ! "$py" -c "import keras, keras_tuner" 2>/dev/null; then
    say "installing $(ls .whl/*.whl | wc -l) wheels from .whl/ into /tmp/site"
    "$py" -m pip install --quiet --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
    touch /tmp/site/.installed
    export PYTHONPATH=/tmp/site${PYTHONPATH:+:$PYTHONPATH}
fi
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}
if [ $dry_run = 1 ]; then
    export PYTHONPATH=$PWD/tests/no_tensorflow:$PYTHONPATH  # as on the GPU machine: no TensorFlow
fi
"$py" - <<'PY' 2>&1 | tee "$out/versions.txt" >"$work/versions.txt"
import importlib, platform
print("python", platform.python_version(), platform.machine())
for name in ("keras", "keras_tuner", "torch", "jax", "numpy", "pandas", "matplotlib", "tensorflow"):
    try:
        module = importlib.import_module(name)
        print(name, getattr(module, "__version__", "?"))
    except Exception as e:
        print(name, "missing:", type(e).__name__, str(e).splitlines()[0] if str(e) else "")
try:
    import torch
    print("cuda", torch.cuda.is_available(), torch.cuda.get_device_name(0) if torch.cuda.is_available() else "")
except Exception:
    pass
PY

# 2. The data: reassemble the parts, check md5s, or fall back to the complete batch files we have.
cache=$state/data
if [ $dry_run = 1 ]; then
    cache=$work/dry-run-data
    mkdir -p "$cache/parts"
    say "dry run: writing a fake CIFAR-10 tarball (20 records per batch) in 3 parts, the last one withheld"
    "$py" - "$cache" <<'PY'
import io, sys, tarfile, numpy as np
from pathlib import Path
cache = Path(sys.argv[1])
buffer = io.BytesIO()
with tarfile.open(fileobj=buffer, mode="w:gz", compresslevel=9) as tar:
    for i, name in enumerate([*(f"data_batch_{k}.bin" for k in range(1, 6)), "test_batch.bin"]):
        records = np.random.default_rng(i).integers(0, 256, (20, 3073), dtype=np.uint8)
        records[:, 0] = np.arange(20) % 10
        info = tarfile.TarInfo(f"cifar-10-batches-bin/{name}")
        info.size, info.mtime = records.nbytes, 0
        tar.addfile(info, io.BytesIO(records.tobytes()))
data = buffer.getvalue()
third = -(-len(data) // 3)
for i, suffix in enumerate(("aa", "ab")):  # "ac" withheld, to exercise the partial-data path
    (cache / "parts" / f"cifar.part-{suffix}").write_bytes(data[i * third:(i + 1) * third])
PY
else
    mkdir -p "$cache/parts"
    for part in .data-parts/cifar.part-*; do  # parts that earlier calls brought are already there
        if [ -f "$part" ] && [ ! -e "$cache/parts/${part##*/}" ]; then cp "$part" "$cache/parts/"; fi
    done
fi
say "data parts here: $(ls "$cache/parts" 2>/dev/null | tr '\n' ' ')"
needs_data=$data_only
for stage in "${stage_list[@]}"; do [ "$stage" = bench ] || needs_data=1; done
data_path=
if [ $needs_data = 1 ]; then
data_path=$("$py" - "$cache" "$work" "$dry_run" <<'PY'
import hashlib, io, sys, tarfile, zlib
from pathlib import Path
import numpy as np

cache, out, dry_run = Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3] == "1"
TARBALL_MD5 = "8a7d4dca7a6b931d53ebf9c593972fdc"  # the project's tarball (see the data's SOURCE.md)
OFFICIAL = {  # official per-file md5s of the binary release
    "data_batch_1.bin": "5dd7e06a14cb22eb9f671a540d1b7c25", "data_batch_2.bin": "5ea93a67294ea407fff1d09f752e9692",
    "data_batch_3.bin": "942cd6a4bcdd0dd3c604fbe906cb4421", "data_batch_4.bin": "ae636b3ba5c66a11e91e8cb52e771fcb",
    "data_batch_5.bin": "53f37980c15c3d472c316c40844f3f0d", "test_batch.bin": "803d5f7f4d78ea53de84dbe85f74fb6d",
}
note = out / "data.txt"
whole = cache / "cifar-10-binary.tar.gz"
if whole.is_file() and hashlib.md5(whole.read_bytes()).hexdigest() == TARBALL_MD5:  # checked on an earlier call
    print(whole)
    raise SystemExit
parts = sorted((cache / "parts").glob("cifar.part-*"))
joined = b"".join(p.read_bytes() for p in parts)
# The parts are contiguous only from "aa" on; a gap means we can read up to it.
names = [p.name[-2:] for p in parts]
expected = [a + b for a in "abcdefghijklmnopqrstuvwxyz" for b in "abcdefghijklmnopqrstuvwxyz"][: len(names)]
if names != expected:
    joined = b"".join(p.read_bytes() for p, n, e in zip(parts, names, expected) if n == e)
raw = zlib.decompressobj(16 + zlib.MAX_WBITS).decompress(joined)
members = {}
with tarfile.open(fileobj=io.BytesIO(raw), mode="r|") as tar:
    try:
        for member in tar:
            f = tar.extractfile(member)
            body = f.read() if f else b""
            if member.isfile() and len(body) == member.size:
                members[Path(member.name).name] = body
    except (tarfile.ReadError, EOFError, OSError, zlib.error):
        pass  # the tarball ends early: keep the members read whole
complete = hashlib.md5(joined).hexdigest() == TARBALL_MD5
checked = {n: hashlib.md5(b).hexdigest() == OFFICIAL[n] for n, b in members.items() if n in OFFICIAL}
if complete and (dry_run or all(checked.values())) and len(checked) == 6:
    whole.write_bytes(joined)
    note.write_text(f"full data: {whole}, md5 {hashlib.md5(joined).hexdigest()}; batch md5s official: {checked}\n")
    print(whole)
    raise SystemExit
bad = [n for n, ok in checked.items() if not ok and not dry_run]
train = [members[n] for n in sorted(members) if n.startswith("data_batch") and n not in bad]
if not train:
    sys.exit(f"error: no complete training batch file in the parts {names}; bring part aa first")
records = np.frombuffer(b"".join(train), np.uint8).reshape(-1, 3073)
if "test_batch.bin" in members and "test_batch.bin" not in bad:
    test = np.frombuffer(members["test_batch.bin"], np.uint8).reshape(-1, 3073)
else:  # hold out the last sixth of what we have as the test split
    n_test = len(records) // 6
    test, records = records[len(records) - n_test:], records[: len(records) - n_test]
per_file = len(records) // 5
folder = cache / "partial" / "cifar-10-batches-bin"
folder.mkdir(parents=True, exist_ok=True)
for k in range(5):
    (folder / f"data_batch_{k + 1}.bin").write_bytes(records[k * per_file:(k + 1) * per_file].tobytes())
(folder / "test_batch.bin").write_bytes(test.tobytes())
note.write_text(
    f"PARTIAL data: parts {names} of the tarball; complete batch files {sorted(members)} "
    f"(official md5: {checked}). Training on {5 * per_file} train and {len(test)} test images in {folder} "
    "(the test split is the held-out end of the training files when test_batch.bin is missing).\n"
    "Not comparable with the committed full-data CPU run. For the CPU comparison, put the same parts in "
    ".data-parts/ on the CPU machine, run `benchmarks/gpu.sh --data-only`, then "
    "`python -m keras_ultimus.train --data PATH` with the path it prints.\n")
print(folder)
PY
)
say "$(cat "$work/data.txt")"
fi
[ $data_only = 1 ] && { echo "--data $data_path"; exit 0; }

# 3. Helpers: time-limited commands, resumable run folders, a few runs at once.
if [ $dry_run = 1 ]; then
    tiny=(--epochs 1 --limit-train 64 --limit-test 32 --batch-size 16)
    bench_flags=(--steps 1 --repeats 1 --batch-size 8 --matmul-size 64 --precisions float32)
else
    tiny=()
    bench_flags=(--steps 20 --repeats 3 --precisions float32,mixed_bfloat16,mixed_float16 --matmul-size 8192)
fi
left() { echo $((deadline - $(date +%s))); }
# limited CMD...: run CMD unless the time limit is near (exit 99); interrupt it (Ctrl-C: resumable) at the limit
# (exit 124).
limited() {
    local seconds; seconds=$(left)
    [ "$seconds" -ge 30 ] || return 99
    timeout -s INT -k 30 "$seconds" "$@"
}
# interrupted NAME RC SECONDS: say why a run stopped early, and remember it; false for other exit codes.
interrupted() {
    case $2 in
        99) say "$1: not started, the time limit is reached (rerun the same command to go on)" ;;
        124|130) say "$1: interrupted at the time limit after $3 s (it resumes on the next call)" ;;
        *) return 1 ;;
    esac
    echo "$1 (time limit)" >>"$failed"
}
finished() { [ -f "$1/run.json" ] && grep -q '"finished"' "$1/run.json"; }
final_accuracy() {  # the last epoch's test accuracy (train validates on the test split)
    "$py" -c 'import json, sys; print("%.4f" % json.load(open(sys.argv[1]))["final"]["val_accuracy"])' "$1/run.json"
}
# train_run NAME BACKEND FLAGS...: train into $work/NAME, or keep it if finished, or resume it if partial.
train_run() {
    local name=$1 backend=$2; shift 2
    local dir=$work/$name log=$work/logs/$name.log
    if finished "$dir"; then say "$name: finished on an earlier call, kept (test accuracy $(final_accuracy "$dir"))"; return 0; fi
    local cmd
    if [ -f "$dir/run.json" ]; then
        cmd=(-m keras_ultimus.train --resume "$dir" --data "$data_path")
    else
        rm -rf "$dir"
        cmd=(-m keras_ultimus.train --data "$data_path" --pipeline numpy "$@" --out "$dir")
    fi
    [ "$(left)" -ge 30 ] || { interrupted "$name" 99 0; return 0; }
    say "$name: start on $backend: python ${cmd[*]}"
    local t0 rc=0
    t0=$(date +%s.%N)
    KERAS_BACKEND=$backend limited "$py" "${cmd[@]}" >>"$log" 2>&1 || rc=$?
    local seconds
    seconds=$("$py" -c "import time; print(f'{time.time() - $t0:.1f}')")
    if [ $rc = 0 ] && finished "$dir"; then
        say "$name: done in $seconds s, test accuracy $(final_accuracy "$dir")"
        [ "${cmd[2]}" = --resume ] || echo "$seconds" >"$dir/seconds.txt"
    elif interrupted "$name" $rc "$seconds"; then
        :
    else
        say "$name: FAILED (exit $rc): $(tail -1 "$log")"
        echo "$name (exit $rc)" >>"$failed"
    fi
}
# CPU threads per run when --jobs runs share the machine's cores (the NumPy pipeline and torch's CPU side).
threads=$(( $(nproc) / jobs > 0 ? $(nproc) / jobs : 1 ))
# launch CMD...: run CMD in the background, at most --jobs at a time; `wait` collects them.
launch() {
    while [ "$(jobs -rp | wc -l)" -ge "$jobs" ]; do wait -n || true; done
    if [ "$jobs" -gt 1 ]; then (export OMP_NUM_THREADS=$threads; "$@") & else "$@" & fi
}
mkdir -p "$work/summary"
summary() { tee "$work/summary/$1.txt" >&2; }

# 4. The stages.
stage_bench() {
    if [ -f "$work/bench/bench.json" ]; then say "bench: done on an earlier call, kept"; return 0; fi
    rm -rf "$work/bench"
    say "bench: python -m keras_ultimus.bench --backends torch,jax --pipeline numpy ${bench_flags[*]}"
    local rc=0
    KERAS_BACKEND=torch limited "$py" -m keras_ultimus.bench --backends torch,jax --pipeline numpy \
        "${bench_flags[@]}" --out "$work/bench" >"$work/logs/bench.log" 2>&1 || rc=$?
    if [ $rc = 0 ]; then
        cat "$work/bench/bench.md" | summary bench || say "summary failed (see above)"
    elif interrupted bench $rc "?"; then
        rm -rf "$work/bench"  # the bench does not resume: it starts over on the next call
    else
        say "bench: FAILED (exit $rc): $(tail -1 "$work/logs/bench.log")"
        echo "bench (exit $rc)" >>"$failed"
    fi
}

stage_train() {  # alone on the GPU: these are the timed runs
    local backend
    for backend in torch jax; do
        train_run "train-$backend" "$backend" "${tiny[@]}"
    done
    for backend in torch jax; do
        local dir=$work/train-$backend
        if finished "$dir"; then
            echo "$backend: test accuracy $(final_accuracy "$dir"), $(cat "$dir/seconds.txt" 2>/dev/null || echo "?") s from start until the run folder was written$([ -f "$dir/seconds.txt" ] || echo " (resumed: not timed)")"
        else
            echo "$backend: not finished"
        fi
    done | summary train || say "summary failed (see above)"
}

stage_bf16() {
    local precision
    for precision in float32 mixed_bfloat16; do
        launch train_run "bf16-$precision" torch --seed 0 --epochs 8 --precision "$precision" "${tiny[@]}"
    done
    wait
    "$py" - "$work" <<'PY' | summary bf16 || say "summary failed (see above)"
import json, sys
from pathlib import Path
acc = {}
for p in ("float32", "mixed_bfloat16"):
    info = json.loads((Path(sys.argv[1]) / f"bf16-{p}" / "run.json").read_text()) if (Path(sys.argv[1]) / f"bf16-{p}" / "run.json").is_file() else {}
    acc[p] = info["final"]["val_accuracy"] if "finished" in info else None
    print(f"{p}: seed 0, {info.get('config', {}).get('epochs', '?')} epochs, final test accuracy "
          + (f"{100 * acc[p]:.2f}%" if acc[p] is not None else "not finished"))
if None not in acc.values():
    d = 100 * (acc["mixed_bfloat16"] - acc["float32"])
    print(f"difference (bf16 - fp32): {d:+.2f} points ({'within' if abs(d) <= 1 else 'NOT within'} 1 point)")
PY
}

stage_seeds() {
    local seed
    for seed in 0 1 2; do
        # seed 0 is the train stage's torch run (the same command): keep it rather than train it twice.
        if [ $seed = 0 ] && finished "$work/train-torch"; then say "seed-0: the train stage's train-torch, kept"; continue; fi
        launch train_run "seed-$seed" torch --seed "$seed" "${tiny[@]}"
    done
    wait
    "$py" - "$work" <<'PY' | summary seeds || say "summary failed (see above)"
import json, statistics, sys
from pathlib import Path
work, accs = Path(sys.argv[1]), []
for seed in (0, 1, 2):
    folder = work / f"seed-{seed}"
    if seed == 0 and not folder.is_dir() and (work / "train-torch").is_dir():
        folder = work / "train-torch"
    info = json.loads((folder / "run.json").read_text()) if (folder / "run.json").is_file() else {}
    if "finished" not in info:
        print(f"seed {seed}: not finished ({folder.name})")
        continue
    acc = info["final"]["val_accuracy"]
    accs.append(acc)
    print(f"seed {seed}: final test accuracy {100 * acc:.2f}% ({folder.name}, {info['config']['epochs']} epochs)")
if len(accs) > 1:
    print(f"mean ± std (n-1) of {len(accs)} seeds: {100 * statistics.mean(accs):.2f} ± {100 * statistics.stdev(accs):.2f}%")
PY
}

stage_search() {
    local dir=$work/search log=$work/logs/search.log
    if [ -f "$dir/result.json" ]; then say "search: finished on an earlier call, kept"
    else
        local flags=(--data "$data_path" --out "$dir" --algorithm hyperband --epochs "$search_epochs" --seed 0 --pipeline numpy)
        [ $dry_run = 1 ] && flags+=(--limit-train 64 --batch-size 16)
        # With --jobs N > 1: KerasTuner's chief and N workers on this machine, training N trials at once.
        local cmd=(-m keras_ultimus.tuner.tune)
        [ "$jobs" -gt 1 ] && cmd=(-m keras_ultimus.tuner.launch --workers "$jobs")
        say "search: python ${cmd[*]} ${flags[*]} (resumes its folder)"
        local rc=0
        KERAS_BACKEND=torch OMP_NUM_THREADS=${OMP_NUM_THREADS:-$threads} limited "$py" "${cmd[@]}" "${flags[@]}" \
            >>"$log" 2>&1 || rc=$?
        if [ $rc = 0 ]; then say "search: done"
        elif interrupted search $rc "?"; then :
        else say "search: FAILED (exit $rc): $(tail -1 "$log")"; echo "search (exit $rc)" >>"$failed"; fi
    fi
    [ -f "$dir/result.json" ] || return 0
    "$py" - "$dir" <<'PY' | summary search || say "summary failed (see above)"
import json, sys
from pathlib import Path
import pandas as pd
folder = Path(sys.argv[1])
print(json.dumps(json.loads((folder / "result.json").read_text())))
board = pd.read_csv(folder / "leaderboard.csv", dtype={"trial_id": str})
done = board[board["status"] == "COMPLETED"]
columns = ["trial_id", "num_blocks", "key_dim", "scale", "residual", "conv_widths", "downsample", "max_lr",
           "tuner/epochs", "trainable_params", "best_val_accuracy"]
print(done[[c for c in columns if c in done]].head(10).to_string(index=False))
PY
}

stage_confirm() {
    local search=$work/search
    if [ ! -f "$search/best.json" ] || [ ! -f "$search/leaderboard.csv" ]; then
        say "confirm: no finished search in $search (run the search stage first); skipped"
        echo "confirm (no search)" >>"$failed"
        return 0
    fi
    # The top 3 distinct configurations: best.json first, then the leaderboard's completed trials by
    # best_val_accuracy, each configuration once (Hyperband trains one configuration at several budgets).
    mkdir -p "$work/confirm"
    local top
    top=$("$py" - "$search" "$work/confirm" <<'PY'
import csv, json, sys
from pathlib import Path
search, out = Path(sys.argv[1]), Path(sys.argv[2])
best = json.loads((search / "best.json").read_text())
KEYS = ("num_blocks", "key_dim", "scale", "residual", "conv_widths", "downsample", "max_lr")

def config(row: dict) -> dict:
    """A leaderboard row (or best.json) as train --config values, of the types train checks."""
    widths, down = row["conv_widths"], row["downsample"]
    return {"num_blocks": int(row["num_blocks"]), "key_dim": int(row["key_dim"]), "scale": str(row["scale"]),
            "residual": row["residual"] in (True, "True", "true"),
            "conv_widths": [int(w) for w in (widths.split(",") if isinstance(widths, str) else widths)],
            "downsample": down.split(",") if isinstance(down, str) else list(down),
            "max_lr": float(row["max_lr"]), "batch_size": int(best["batch_size"])}

with open(search / "leaderboard.csv") as f:
    rows = [r for r in csv.DictReader(f) if r["status"] == "COMPLETED" and r["best_val_accuracy"]]
rows.sort(key=lambda r: -float(r["best_val_accuracy"]))
chosen = []
for c in [config(best), *(config(r) for r in rows)]:
    if all(c != d for d in chosen):
        chosen.append(c)
for k, c in enumerate(chosen[:3], 1):
    (out / f"top{k}.json").write_text(json.dumps(c, indent=2) + "\n")
    print(k, c["num_blocks"])
PY
)
    local k blocks best_blocks=
    while read -r k blocks; do
        [ -n "$k" ] || continue
        [ "$k" = 1 ] && best_blocks=$blocks
        launch train_run "confirm-$k" torch --config "$work/confirm/top$k.json" --seed 0 --epochs 24 "${tiny[@]}"
    done <<<"$top"
    local depth
    for depth in ${depths//,/ }; do
        [ "$depth" = "$best_blocks" ] && continue  # that is confirm-1
        launch train_run "depth-$depth" torch --config "$work/confirm/top1.json" --blocks "$depth" --seed 0 --epochs 24 "${tiny[@]}"
    done
    wait
    "$py" - "$work" "$depths" <<'PY' | summary confirm || say "summary failed (see above)"
import csv, json, re, sys
from pathlib import Path
work, depths = Path(sys.argv[1]), [int(d) for d in sys.argv[2].split(",")]

def run(folder: Path) -> dict | None:
    info = json.loads((folder / "run.json").read_text()) if (folder / "run.json").is_file() else {}
    if "finished" not in info:
        return None
    text = (folder / "summary.txt").read_text() if (folder / "summary.txt").is_file() else ""
    params = re.search(r"Trainable params: ([\d,]+)", text)
    return {"acc": info["final"]["val_accuracy"], "params": params.group(1).replace(",", "") if params else "",
            "epochs": info["config"]["epochs"], "config": info["config"]}

print("confirmations (seed 0, scored on the test set):")
best_blocks = None
for k in (1, 2, 3):
    spec = work / "confirm" / f"top{k}.json"
    if not spec.is_file():
        continue
    c, r = json.loads(spec.read_text()), run(work / f"confirm-{k}")
    best_blocks = c["num_blocks"] if k == 1 else best_blocks
    shown = " ".join(f"{key}={c[key]}" for key in c if key != "batch_size")
    print(f"  top{k}: " + (f"{100 * r['acc']:.2f}% after {r['epochs']} epochs, {r['params']} trainable params"
                          if r else "not finished") + f"; {shown}")
rows = []
for d in depths:
    folder = work / ("confirm-1" if d == best_blocks else f"depth-{d}")
    r = run(folder)
    rows.append({"blocks": d, "run": folder.name, "trainable_params": r["params"] if r else "",
                 "epochs": r["epochs"] if r else "", "test_accuracy": f"{r['acc']:.4f}" if r else ""})
    print(f"  depth {d}: " + (f"{100 * r['acc']:.2f}%, {r['params']} params ({folder.name})" if r else "not finished"))
with open(work / "confirm" / "depth.csv", "w", newline="") as f:
    writer = csv.DictWriter(f, fieldnames=list(rows[0]))
    writer.writeheader()
    writer.writerows(rows)
done = [r for r in rows if r["test_accuracy"]]
if done:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(6, 4), layout="constrained")
    ax.plot([r["blocks"] for r in done], [100 * float(r["test_accuracy"]) for r in done], "o-")
    ax.set(xlabel="number of Ultimus blocks (all else at the best configuration)", ylabel="test accuracy (%)",
           title=f"Test accuracy vs depth, {done[0]['epochs']} epochs, seed 0")
    fig.savefig(work / "confirm" / "depth.png", dpi=120)
PY
}

for stage in "${stage_list[@]}"; do
    stage_start=$(date +%s)
    say "stage $stage: start"
    "stage_$stage"
    say "stage $stage: end ($(( $(date +%s) - stage_start )) s)"
    pack  # after every stage: a call cut off later still brings these back
done
packed=1
if [ -s "$failed" ]; then
    say "done with problems: $(tr '\n' ';' <"$failed"); the run folders are in $work, the results in $out"
    exit 1
fi
say "done: the run folders are in $work, the results in $out"
