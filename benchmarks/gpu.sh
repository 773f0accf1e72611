#!/usr/bin/env bash
# Speed and a full default training run on a GPU machine with PyTorch and JAX but no TensorFlow, Keras or network.
#
# Usage (from the repo root): benchmarks/gpu.sh [--dry-run] [--data-only] [--out DIR]
#   Everything goes under --out (default: $OUT, else runs/gpu-<time>):
#   bench/ (python -m keras_ultimus.bench on torch and jax, synthetic data), train-torch/ and train-jax/
#   (the 24-epoch default training, NumPy pipeline), data.txt (what data was used), logs.
#   --dry-run: the same steps end to end on this CPU on a fake tarball (1 epoch, tiny limits).
#   --data-only: only reassemble and check the data (on a CPU machine: the same partial data, for a comparison run).
#
# What must travel with the repo (both folders are ignored through .git/info/exclude, not .gitignore):
#   printf "/.whl/\n/.data-parts/\n/.data-cache/\n" >> .git/info/exclude
#   .whl/: Keras, KerasTuner and the pure-Python or missing wheels, for Python 3.12, downloaded on a machine with
#   network:
#     python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
#       --platform manylinux_2_17_x86_64 -d .whl keras==3.15.1 keras-tuner==1.4.8 kt-legacy==1.0.5 \
#       absl-py namex optree h5py rich markdown-it-py mdurl pygments ml-dtypes packaging \
#       pandas python-dateutil six tzdata matplotlib contourpy cycler fonttools kiwisolver pyparsing pillow
#   (drop what the GPU machine already has: `python3 -c "import pandas"` etc.). The script installs them with
#     pip install --no-index --no-deps --target /tmp/site .whl/*.whl; export PYTHONPATH=/tmp/site
#   .data-parts/: CIFAR-10 in parts of at most 60 MiB, one part per call to the machine:
#     split -b 60M "$CIFAR10_PATH" .data-parts/cifar.part-      # -> cifar.part-aa, -ab, -ac
#   Each call moves the part it carried into .data-cache/ (kept on the machine between calls). With all
#   parts there, the script reassembles the tarball and checks its md5 and the official md5 of every
#   batch file. With parts missing, it trains on the complete batch files it can read, says so in
#   data.txt, and prints the command that makes the same data on the CPU for a comparison run.
set -euo pipefail

dry_run=0
data_only=0
out=${OUT:-runs/gpu-$(date +%Y%m%d-%H%M%S)}
while [ $# -gt 0 ]; do
    case $1 in
        --dry-run) dry_run=1 ;;
        --data-only) data_only=1 ;;
        --out) out=$2; shift ;;
        *) echo "error: unknown argument $1 (usage: benchmarks/gpu.sh [--dry-run] [--data-only] [--out DIR])" >&2; exit 2 ;;
    esac
    shift
done
mkdir -p "$out"
out=$(cd "$out" && pwd)
py=${PYTHON:-python3}
export KERAS_BACKEND=${KERAS_BACKEND:-torch}  # the GPU machine has no TensorFlow
say() { echo "[gpu.sh $(date +%H:%M:%S)] $*" | tee -a "$out/steps.txt" >&2; }

# 1. Python packages that travel in .whl/ (once per machine).
if [ -d .whl ] && ls .whl/*.whl >/dev/null 2>&1; then
    if [ ! -f /tmp/site/.installed ] || [ -n "$(find .whl -newer /tmp/site/.installed -name '*.whl')" ]; then
        say "installing $(ls .whl/*.whl | wc -l) wheels from .whl/ into /tmp/site"
        $py -m pip install --quiet --no-index --no-deps --target /tmp/site .whl/*.whl
        touch /tmp/site/.installed
    fi
    export PYTHONPATH=/tmp/site${PYTHONPATH:+:$PYTHONPATH}
fi
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}
$py - <<'PY' 2>&1 | tee "$out/versions.txt"
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
cache=.data-cache
if [ $dry_run = 1 ]; then
    cache=$out/dry-run-data
    mkdir -p "$cache/parts"
    say "dry run: writing a fake CIFAR-10 tarball (20 records per batch) in 3 parts, the last one withheld"
    $py - "$cache" <<'PY'
import io, sys, tarfile, numpy as np
from pathlib import Path
cache = Path(sys.argv[1])
buffer = io.BytesIO()
with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
    for i, name in enumerate([*(f"data_batch_{k}.bin" for k in range(1, 6)), "test_batch.bin"]):
        records = np.random.default_rng(i).integers(0, 256, (20, 3073), dtype=np.uint8)
        records[:, 0] = np.arange(20) % 10
        info = tarfile.TarInfo(f"cifar-10-batches-bin/{name}")
        info.size = records.nbytes
        tar.addfile(info, io.BytesIO(records.tobytes()))
data = buffer.getvalue()
third = -(-len(data) // 3)
(cache / "full.tar.gz").write_bytes(data)
for i, suffix in enumerate(("aa", "ab")):  # "ac" withheld, to exercise the partial-data path
    (cache / "parts" / f"cifar.part-{suffix}").write_bytes(data[i * third:(i + 1) * third])
PY
else
    mkdir -p "$cache/parts"
    if ls .data-parts/cifar.part-* >/dev/null 2>&1; then
        cp -n .data-parts/cifar.part-* "$cache/parts/" || true
    fi
fi
say "data parts here: $(ls "$cache/parts" 2>/dev/null | tr '\n' ' ')"
data_args=$($py - "$cache" "$out" "$dry_run" <<'PY'
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
parts = sorted((cache / "parts").glob("cifar.part-*"))
joined = b"".join(p.read_bytes() for p in parts)
note = out / "data.txt"
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
    path = cache / "cifar-10-binary.tar.gz"
    path.write_bytes(joined)
    note.write_text(f"full data: {path}, md5 {hashlib.md5(joined).hexdigest()}; batch md5s official: {checked}\n")
    print(f"--data {path}")
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
    ".data-cache/parts/ on the CPU machine, run `benchmarks/gpu.sh --data-only`, then "
    f"`python -m keras_ultimus.train --data .data-cache/partial/cifar-10-batches-bin` there.\n")
print(f"--data {folder}")
PY
)
say "$(cat "$out/data.txt")"
[ $data_only = 1 ] && { echo "$data_args"; exit 0; }

# 3. The bench: synthetic data, torch and jax, fp32 and bf16, NumPy pipeline, plus plain PyTorch.
if [ $dry_run = 1 ]; then
    bench_flags=(--steps 1 --repeats 1 --batch-size 8 --matmul-size 64 --precisions float32)
    train_flags=(--epochs 1 --limit-train 64 --limit-test 32 --batch-size 16)
else
    bench_flags=(--steps 20 --repeats 3 --precisions float32,mixed_bfloat16,mixed_float16 --matmul-size 8192)
    train_flags=()
fi
say "bench: python -m keras_ultimus.bench --backends torch,jax --pipeline numpy ${bench_flags[*]}"
KERAS_BACKEND=torch $py -m keras_ultimus.bench --backends torch,jax --pipeline numpy "${bench_flags[@]}" --out "$out/bench" \
    2>&1 | tee "$out/bench.log"

# 4. The 24-epoch default training on torch and on jax, NumPy pipeline, timed from start to run folder.
for backend in torch jax; do
    say "train on $backend: python -m keras_ultimus.train $data_args --pipeline numpy ${train_flags[*]}"
    start=$(date +%s.%N)
    # shellcheck disable=SC2086  # $data_args is "--data PATH"
    KERAS_BACKEND=$backend $py -m keras_ultimus.train $data_args --pipeline numpy "${train_flags[@]}" \
        --out "$out/train-$backend" >"$out/train-$backend.log" 2>&1 \
        || { say "training on $backend failed: $(tail -1 "$out/train-$backend.log")"; continue; }
    seconds=$($py -c "import time; print(f'{time.time() - $start:.1f}')")
    say "train on $backend: ${seconds} s from start until the run folder was written; $(tail -1 "$out/train-$backend.log")"
    echo "$backend $seconds" >>"$out/train_seconds.txt"
done
say "done: everything is under $out"
