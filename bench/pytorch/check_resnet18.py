#!/usr/bin/env python3
"""Dev check: steepest's `resnet18` computes what torchvision's `resnet18` computes.

A randomly initialised torchvision resnet18 (10 classes; batch norm running statistics moved
off their defaults by a few training-mode passes) is saved as safetensors with the metadata
`steepest predict` needs; both then classify the same 224x224 images (random pixels, written
as PNG so both read identical bytes), and the class probabilities must agree within 1e-4
(f32 sums of up to 4608 terms through 20 layers, in other orders: relative errors of the
logits around 1e-5).

    python bench/pytorch/check_resnet18.py [path/to/steepest] [cpu|gpu]

Needs torch, torchvision, safetensors, numpy and Pillow.
"""
import json
import os
import subprocess
import sys
import tempfile

import numpy as np
import torch
import torchvision
from PIL import Image
from safetensors.torch import save_file

steepest = sys.argv[1] if len(sys.argv) > 1 else "target/release/steepest"
device = sys.argv[2] if len(sys.argv) > 2 else "cpu"
torch.manual_seed(0)
model = torchvision.models.resnet18(num_classes=10)
model.train()
with torch.no_grad():
    for _ in range(3):
        model(torch.rand(8, 3, 224, 224))
model.eval()

tmp = tempfile.mkdtemp(prefix="steepest-resnet18-")
weights = os.path.join(tmp, "resnet18.safetensors")
state = {k: v.contiguous() for k, v in model.state_dict().items()}
classes = [f"c{i}" for i in range(10)]
save_file(state, weights, metadata={
    "format": "pt",
    "steepest.model": "resnet18",
    "steepest.input_shape": "3,224,224",
    "steepest.class_names": json.dumps(classes),
})

rng = np.random.default_rng(1)
paths, batch = [], []
for i in range(4):
    pixels = rng.integers(0, 256, size=(224, 224, 3), dtype=np.uint8)
    path = os.path.join(tmp, f"image{i}.png")
    Image.fromarray(pixels).save(path)
    paths.append(path)
    batch.append(torch.from_numpy(pixels).permute(2, 0, 1).float() / 255.0)
with torch.no_grad():
    want = torch.softmax(model(torch.stack(batch)).double(), dim=1).numpy()

out = subprocess.run([steepest, "predict", "--weights", weights, "--device", device, "--json",
                      "--top-k", "10", *paths], check=True, capture_output=True, text=True).stdout
worst = 0.0
for line, row in zip(out.strip().splitlines(), want):
    got = {t["index"]: t["probability"] for t in json.loads(line)["top"]}
    worst = max(worst, max(abs(got[j] - row[j]) for j in range(10)))
print(f"resnet18 on {device}: max |probability difference| over 4 images x 10 classes: {worst:.2e}")
sys.exit(0 if worst <= 1e-4 else 1)
