#!/usr/bin/env bash
# The full check of `steepest export --pytorch` against a real PyTorch (a CPU build is enough):
#
#   1. steepest trains LeNet for 1 epoch on MNIST (5000 samples, --normalize auto,
#      --augment crop:2,flip) and saves it;
#   2. export writes train.py and the checkpoint;
#   3. `python train.py --eval-only` loads it strictly: its test accuracy must equal
#      `steepest eval`'s to 1e-4 (and the loss to 1e-4 relative);
#   4. one epoch of training in one process;
#   5. `torchrun --nproc-per-node 2 train.py --epochs 1` (DistributedDataParallel, gloo on CPU);
#   6. what it saved (model_out.safetensors) goes back into `steepest eval` (the same accuracy
#      as the script's last line, to 1e-4) and `steepest predict` (one MNIST test image).
#
# Usage: bench/pytorch/check_export.sh [WORK_DIR]
#   PYTHON     a python with torch, numpy and safetensors [/work/venv-torch/bin/python if it
#              exists, else python3]
#   STEEPEST   the binary [target/release/steepest]
#   STEEPEST_DATA_DIR  the folder holding mnist/ [../shared/data]
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/../.." && pwd)
STEEPEST=${STEEPEST:-$ROOT/target/release/steepest}
if [[ -z "${PYTHON:-}" ]]; then
    if [[ -x /work/venv-torch/bin/python ]]; then PYTHON=/work/venv-torch/bin/python; else PYTHON=python3; fi
fi
MNIST=${STEEPEST_DATA_DIR:-$ROOT/../shared/data}/mnist
WORK=${1:-$(mktemp -d -t steepest-export-XXXXXX)}
mkdir -p "$WORK"
WORK=$(cd "$WORK" && pwd)

[[ -x "$STEEPEST" ]] || { echo "error: no steepest binary at $STEEPEST (cargo build --release)" >&2; exit 1; }
[[ -d "$MNIST" ]] || { echo "error: no MNIST at $MNIST (set STEEPEST_DATA_DIR)" >&2; exit 1; }
"$PYTHON" -c "import torch, numpy, safetensors" || {
    echo "error: $PYTHON cannot import torch, numpy and safetensors (set PYTHON)" >&2; exit 1; }
echo "work dir: $WORK; python: $PYTHON (torch $("$PYTHON" -c 'import torch; print(torch.__version__)'))"

step() { echo; echo "== $*"; }
seconds() { local start=$SECONDS; "$@"; echo "   ($((SECONDS - start)) s)"; }

# Compares two JSON objects' test_acc (to 1e-4) and test_loss (to 1e-4 relative).
compare() {
    "$PYTHON" - "$1" "$2" "$3" <<'EOF'
import json, sys
what, a, b = sys.argv[1], json.loads(sys.argv[2]), json.loads(sys.argv[3])
da, dl = abs(a["test_acc"] - b["test_acc"]), abs(a["test_loss"] - b["test_loss"])
print(f"   {what}: accuracy {a['test_acc']:.6f} vs {b['test_acc']:.6f} (diff {da:.2e}), "
      f"loss {a['test_loss']:.6f} vs {b['test_loss']:.6f} (diff {dl:.2e})")
if da > 1e-4 or dl > 1e-4 * max(abs(b["test_loss"]), 1.0):
    sys.exit(f"FAIL: {what} differ")
EOF
}

step "1. steepest train: lenet, 1 epoch, 5000 MNIST samples"
seconds "$STEEPEST" train --dataset mnist --data-dir "$MNIST" --model lenet --epochs 1 \
    --limit-train 5000 --normalize auto --augment crop:2,flip --device cpu \
    --save "$WORK/lenet.safetensors"

step "2. steepest export"
rm -rf "$WORK/pt"
"$STEEPEST" export --pytorch "$WORK/pt" --weights "$WORK/lenet.safetensors"
ls -l "$WORK/pt"

step "3. python train.py --eval-only against steepest eval"
cd "$WORK/pt"
rust_eval=$("$STEEPEST" eval --weights "$WORK/lenet.safetensors" --device cpu --json)
start=$SECONDS
py_eval=$("$PYTHON" train.py --eval-only)
echo "$py_eval"
echo "   ($((SECONDS - start)) s)"
compare "train.py --eval-only vs steepest eval" "$py_eval" "$rust_eval"

step "4. python train.py --epochs 1 (one process)"
seconds "$PYTHON" train.py --epochs 1 --out "$WORK/one_process.safetensors"

step "5. torchrun --nproc-per-node 2 train.py --epochs 1 (DDP, gloo)"
"$PYTHON" -m torch.distributed.run --nproc-per-node 2 train.py --epochs 1 \
    > "$WORK/torchrun.jsonl"
cat "$WORK/torchrun.jsonl"
last=$(tail -1 "$WORK/torchrun.jsonl")
[[ -f model_out.safetensors ]] || { echo "FAIL: torchrun saved no model_out.safetensors" >&2; exit 1; }

step "6. the round trip: steepest eval and predict on model_out.safetensors"
back=$("$STEEPEST" eval --weights model_out.safetensors --device cpu --json)
compare "torchrun's last epoch vs steepest eval of what it saved" "$last" "$back"
# The first MNIST test image as a 24-bit BMP (no pillow needed), and its label.
label=$("$PYTHON" - "$MNIST" "$WORK/digit.bmp" <<'EOF'
import gzip, struct, sys
root, out = sys.argv[1], sys.argv[2]
images = gzip.open(f"{root}/t10k-images-idx3-ubyte.gz").read()
labels = gzip.open(f"{root}/t10k-labels-idx1-ubyte.gz").read()
pixels = images[16:16 + 784]
rows = b"".join(bytes(v for p in pixels[y * 28:(y + 1) * 28] for v in (p, p, p))
                for y in reversed(range(28)))  # bottom-up, 84 bytes a row (a multiple of 4)
header = b"BM" + struct.pack("<IHHI", 54 + len(rows), 0, 0, 54)
info = struct.pack("<IiiHHIIiiII", 40, 28, 28, 1, 24, 0, len(rows), 2835, 2835, 0, 0)
open(out, "wb").write(header + info + rows)
print(labels[8])
EOF
)
predicted=$("$STEEPEST" predict --weights model_out.safetensors --device cpu --top-k 1 --json \
    "$WORK/digit.bmp")
echo "   label $label; predict: $predicted"
"$PYTHON" - "$predicted" "$label" <<'EOF'
import json, sys
top = json.loads(sys.argv[1])["top"][0]
if top["class"] != sys.argv[2]:
    sys.exit(f"FAIL: predicted {top['class']}, label {sys.argv[2]}")
print(f"   predicted {top['class']} ({100 * top['probability']:.1f}%), the label")
EOF
echo
echo "ok: export check passed ($WORK)"
