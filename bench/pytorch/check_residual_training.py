#!/usr/bin/env python3
"""Dev check: 10 SGD steps of a residual network in steepest and in PyTorch, from the same init
on the same batches, end with the same weights.

The network has identity and 1x1-conv + batch-norm shortcuts, batch norm, ReLU, max pooling and
global average pooling. PyTorch builds it with README's `Residual` module and initialises it; the
weights go to steepest through `--init-from`; both train 10 steps of SGD on the same IDX data in
file order (`--no-shuffle`), batch norm in training mode. Printed: each tensor's largest
|steepest - PyTorch| relative to its largest change over the 10 steps; asserted: below 1e-4
(batch norm's f32 reductions over M = 1,152 values in other orders, compounded over 10 steps;
measured 5e-5).

    python bench/pytorch/check_residual_training.py [path/to/steepest] [cpu|gpu]
"""
import json
import os
import struct
import subprocess
import sys
import tempfile

import numpy as np
import torch
import torch.nn as nn
from safetensors.torch import load_file, save_file

steepest = sys.argv[1] if len(sys.argv) > 1 else "target/release/steepest"
device = sys.argv[2] if len(sys.argv) > 2 else "cpu"
SPEC = ("conv:8:3:p=1:nobias,bn,relu,res(conv:8:3:p=1:nobias,bn,relu,conv:8:3:p=1:nobias,bn),relu,"
        "maxpool:2,res(conv:16:3:s=2:p=1:nobias,bn,relu,conv:16:3:p=1:nobias,bn;conv:16:1:s=2:nobias,bn),"
        "relu,gap,flatten,linear")


class Residual(nn.Module):
    def __init__(self, body, shortcut=None):
        super().__init__()
        self.body = nn.Sequential(*body)
        self.shortcut = nn.Sequential(*shortcut) if shortcut else nn.Identity()

    def forward(self, x):
        return self.body(x) + self.shortcut(x)


torch.manual_seed(3)
model = nn.Sequential(
    nn.Conv2d(1, 8, 3, padding=1, bias=False), nn.BatchNorm2d(8), nn.ReLU(),
    Residual([nn.Conv2d(8, 8, 3, padding=1, bias=False), nn.BatchNorm2d(8), nn.ReLU(),
              nn.Conv2d(8, 8, 3, padding=1, bias=False), nn.BatchNorm2d(8)]),
    nn.ReLU(), nn.MaxPool2d(2),
    Residual([nn.Conv2d(8, 16, 3, stride=2, padding=1, bias=False), nn.BatchNorm2d(16), nn.ReLU(),
              nn.Conv2d(16, 16, 3, padding=1, bias=False), nn.BatchNorm2d(16)],
             [nn.Conv2d(8, 16, 1, stride=2, bias=False), nn.BatchNorm2d(16)]),
    nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(16, 10),
)

tmp = tempfile.mkdtemp(prefix="steepest-residual-")
init = os.path.join(tmp, "init.safetensors")
save_file({k: v.contiguous() for k, v in model.state_dict().items()}, init)

# Ten batches of 8 random 12x12 images with random labels, as IDX files. Small on purpose:
# batch norm's backward subtracts sums over M = batch x pixels values per channel, whose f32
# rounding (up to 2·γ_M of their size, γ_M = M·u) the two libraries make in other orders; at
# M = 25,088 (32 MNIST images) that alone moves an upstream gradient by ~1e-3 of itself, which
# ReLU kinks then amplify step by step. At M = 1,152 it is ~1e-4 at most.
batch, steps, side = 8, int(os.environ.get("STEPS", "10")), 12
rng = np.random.default_rng(4)
images = rng.integers(0, 256, size=(batch * steps, side, side), dtype=np.uint8)
labels = rng.integers(0, 10, size=batch * steps, dtype=np.uint8)
def idx(path, array, dims):
    with open(path, "wb") as f:
        f.write(bytes([0, 0, 8, len(dims)]) + b"".join(struct.pack(">I", d) for d in dims))
        f.write(array.tobytes())
for split in ["train", "t10k"]:
    idx(os.path.join(tmp, f"{split}-images-idx3-ubyte"), images, images.shape)
    idx(os.path.join(tmp, f"{split}-labels-idx1-ubyte"), labels, labels.shape)

after = os.path.join(tmp, "after.safetensors")
subprocess.run([steepest, "train", "--dataset", "idx", "--data-dir", tmp, "--model", SPEC,
                "--init-from", init, "--no-shuffle", "--optimizer", "sgd", "--lr", "0.05",
                "--batch-size", str(batch), "--epochs", "1", "--device", device, "--save", after,
                "--quiet"], check=True)

optimizer = torch.optim.SGD(model.parameters(), lr=0.05)
model.train()
x_all = torch.from_numpy(images).float().unsqueeze(1) / 255.0
y_all = torch.from_numpy(labels).long()
for s in range(steps):
    x, y = x_all[s * batch:(s + 1) * batch], y_all[s * batch:(s + 1) * batch]
    optimizer.zero_grad()
    nn.functional.cross_entropy(model(x), y).backward()
    optimizer.step()

got = load_file(after)
start = load_file(init)
worst = 0.0
for name, want in model.state_dict().items():
    if name.endswith("num_batches_tracked"):
        assert int(got[name]) == int(want), name
        continue
    moved = (want - start[name]).abs().max().item()
    diff = (got[name] - want).abs().max().item() / max(moved, 1e-12)
    worst = max(worst, diff)
    print(f"  {name:28s} {diff:.2e} of its largest change ({moved:.2e})")
print(f"residual net, {steps} SGD steps on {device}: largest relative difference {worst:.2e}")
sys.exit(0 if worst <= 1e-4 else 1)
