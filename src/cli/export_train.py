#!/usr/bin/env python3
# Written by `steepest export` (steepest __VERSION__) from __SOURCE__.
"""Continues a steepest training run in PyTorch.

The model is steepest's as an `nn.Sequential` whose state_dict names are the checkpoint's, so
model.safetensors (beside this file) loads with strict=True. The data set, its normalisation,
the optimizer, the learning-rate schedule, the batch size and the augmentation are the run's.

    python train.py                        one device: CUDA if there is one, else the CPU
    python train.py --eval-only            the checkpoint's test loss and accuracy, then stop
    torchrun --nproc-per-node 2 train.py   DistributedDataParallel (nccl on GPUs, else gloo)

Options: --data-dir DIR (the data set's folder), --epochs N (epochs to train now), --out FILE
(the trained weights, default model_out.safetensors), --limit-test N (0: the whole test split),
--device auto|cpu|cuda, --eval-only.

stdout: one JSON line with the checkpoint's test loss and accuracy before training (computed as
`steepest eval` computes them: mean cross-entropy, accuracy by the first largest logit), then
one JSON line per epoch. Under torchrun only rank 0 prints and saves. The weights written carry
steepest's metadata, so `steepest eval --weights FILE` and `steepest predict --weights FILE
IMAGE` take them.

Needs torch, numpy and safetensors (and pillow for an image folder).
"""

import argparse
import gzip
import json
import math
import os
import sys
import time
import warnings

import numpy as np
import torch
import torch.distributed as dist
import torch.nn as nn
import torch.nn.functional as F
from safetensors.torch import load_file, save_file

HERE = os.path.dirname(os.path.abspath(__file__))
# DDP's note on a weight with a size-1 dimension (a first conv on grey images): harmless.
warnings.filterwarnings("ignore", message="Grad strides do not match bucket view strides")

# What steepest knew about the run; "config" holds every `steepest train` flag it ran with.
RUN = __RUN__


# ----------------------------------------------------------------------------------- the model


class Residual(nn.Module):
    """steepest's `res(BODY)` / `res(BODY;SHORTCUT)`: body(x) + shortcut(x)."""

    def __init__(self, body, shortcut=None):
        super().__init__()
        self.body = nn.Sequential(*body)
        self.shortcut = nn.Sequential(*shortcut) if shortcut else nn.Identity()

    def forward(self, x):
        y = self.body(x)
        # reshape: a no-op unless one path flattened what the other keeps as a C×1×1 image.
        return y + self.shortcut(x).reshape(y.shape)


class FlatLinear(nn.Linear):
    """nn.Linear on an image (C×1×1, or the model's input): steepest flattens it implicitly."""

    def forward(self, x):
        return super().forward(x.flatten(1))


def on_image(layer_class):
    """`layer_class` applied to a flat vector as steepest applies it: as a C×1×1 image."""

    class OnImage(layer_class):
        def forward(self, x):
            return super().forward(x.reshape(x.shape[0], -1, 1, 1))

    OnImage.__name__ = layer_class.__name__
    return OnImage


class Net(nn.Sequential):
    """An nn.Sequential with steepest's layer positions (so its state_dict names are the
    checkpoint's) that returns [N, classes] logits. A model that starts with a linear layer
    takes the image flattened, as steepest does, without a Flatten that would shift the
    positions."""

    def __init__(self, *layers, flatten_input=False):
        super().__init__(*layers)
        self.flatten_input = flatten_input

    def forward(self, x):
        if self.flatten_input:
            x = x.flatten(1)
        return super().forward(x).flatten(1)


__MODEL__

# ------------------------------------------------------------------------------------ the data

FASHION_MNIST = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt",
                 "Sneaker", "Bag", "Ankle boot"]
CIFAR10 = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship",
           "truck"]


def fail(message):
    print(f"error: {message}", file=sys.stderr)
    sys.exit(1)


def read_idx(path):
    """An IDX file (raw or gzipped, told by its content): u8 data with its dimensions."""
    with open(path, "rb") as f:
        raw = f.read()
    if raw[:2] == b"\x1f\x8b":
        raw = gzip.decompress(raw)
    if len(raw) < 4 or raw[:3] != b"\x00\x00\x08":
        fail(f"{path}: not an IDX file of unsigned bytes")
    ndim = raw[3]
    start = 4 + 4 * ndim
    dims = [int.from_bytes(raw[4 + 4 * i:8 + 4 * i], "big") for i in range(ndim)]
    count = int(np.prod(dims))
    if len(raw) - start != count:
        fail(f"{path}: {len(raw) - start} data bytes, but its header says {count}")
    return np.frombuffer(raw, np.uint8, count=count, offset=start).reshape(dims)


def idx_file(folder, stem):
    for name in (stem, stem + ".gz"):
        path = os.path.join(folder, name)
        if os.path.isfile(path):
            return path
    fail(f"{folder}: no {stem} or {stem}.gz; pass the data set's folder with --data-dir")


def load_idx(folder, name, need_train):
    splits = []
    for stem in ("train", "t10k"):
        if stem == "train" and not need_train:
            labels = read_idx(idx_file(folder, "train-labels-idx1-ubyte"))
            splits.append((np.zeros((0, 1, 1, 1), np.uint8), labels.astype(np.int64)))
            continue
        images = read_idx(idx_file(folder, f"{stem}-images-idx3-ubyte"))
        labels = read_idx(idx_file(folder, f"{stem}-labels-idx1-ubyte"))
        if len(images) != len(labels):
            fail(f"{folder}: {len(images)} {stem} images but {len(labels)} labels")
        splits.append((images[:, None], labels.astype(np.int64)))
    top = max(int(s[1].max()) for s in splits if len(s[1]))
    names = FASHION_MNIST if name == "fashion-mnist" else [str(c) for c in range(max(10, top + 1))]
    return splits[0], splits[1], list(names)


def load_cifar(folder, need_train):
    try:
        names = os.listdir(folder)
    except OSError as e:
        fail(f"{folder}: cannot list the CIFAR-10 folder ({e}); pass it with --data-dir")
    numbered = []
    for n in names:
        digits = n[len("data_batch_"):-len(".bin")]
        if n.startswith("data_batch_") and n.endswith(".bin") and digits.isascii() \
                and digits.isdigit():
            numbered.append((int(digits), n))
    train = [n for _, n in sorted(numbered)]
    test = sorted(n for n in names if n.startswith("test_batch") and n.endswith(".bin"))
    if "test_batch.bin" in test:
        test = ["test_batch.bin"]
    if not train or not test:
        fail(f"{folder}: expected data_batch_N.bin and test_batch*.bin (CIFAR-10 binary batches)")

    def read(files):
        parts = []
        for f in files:
            path = os.path.join(folder, f)
            with open(path, "rb") as handle:
                raw = handle.read()
            if len(raw) == 0 or len(raw) % 3073:
                fail(f"{path}: {len(raw)} bytes; expected whole 3073-byte CIFAR-10 records "
                     "(1 label byte, then 3x32x32 pixels)")
            parts.append(raw)
        records = np.frombuffer(b"".join(parts), np.uint8).reshape(-1, 3073)
        return records[:, 1:].reshape(-1, 3, 32, 32), records[:, 0].astype(np.int64)

    meta = os.path.join(folder, "batches.meta.txt")
    classes = CIFAR10
    if os.path.exists(meta):
        with open(meta, encoding="utf-8") as f:
            classes = [line.strip() for line in f.read().split("\n") if line.strip()]
    empty = (np.zeros((0, 3, 32, 32), np.uint8), np.zeros(0, np.int64))
    return read(train) if need_train else empty, read(test), list(classes)


class WyRand:
    """fastrand's generator (wyrand), so an image folder's validation split and order are
    steepest's own."""

    MASK = (1 << 64) - 1

    def __init__(self, seed):
        self.state = seed & self.MASK

    def next(self):
        self.state = (self.state + 0x2D358DCCAA6C78A5) & self.MASK
        t = self.state * (self.state ^ 0x8BB84B93962EACC9)
        return (t ^ (t >> 64)) & self.MASK

    def below(self, n):
        t = self.next() * n
        if t & self.MASK < n:
            least = ((-n) & self.MASK) % n
            while t & self.MASK < least:
                t = self.next() * n
        return t >> 64

    def shuffle(self, items):
        for i in range(1, len(items)):
            j = self.below(i + 1)
            items[i], items[j] = items[j], items[i]


def class_folders(folder):
    """Class subfolders (sorted) with their files (sorted); hidden entries left out."""

    def entries(d):
        return sorted((e for e in os.listdir(d) if not e.startswith(".")), key=os.fsencode)

    out = []
    for name in entries(folder):
        sub = os.path.join(folder, name)
        if os.path.isdir(sub):
            files = [os.path.join(sub, f) for f in entries(sub)]
            out.append((name, [f for f in files if os.path.isfile(f)]))
    return out


def decode_image(path, shape):
    """As steepest prepares an image: centre crop to the aspect ratio, resize, 1 or 3 channels."""
    from PIL import Image

    c, h, w = shape
    with Image.open(path) as im:
        im.load()
        grey = im.mode in ("1", "L", "LA", "I", "I;16", "F")
        im = im.convert("L" if grey else "RGB")
    iw, ih = im.size
    if (iw, ih) != (w, h):
        if iw * h > w * ih:
            cw, ch = max((ih * w + h // 2) // h, 1), ih
        else:
            cw, ch = iw, max((iw * h + w // 2) // w, 1)
        left, top = (iw - cw) // 2, (ih - ch) // 2
        im = im.crop((left, top, left + cw, top + ch)).resize((w, h), Image.BILINEAR)
    a = np.asarray(im)
    if c == 1:
        if not grey:
            a = a.astype(np.uint32)
            a = ((a[..., 0] * 2126 + a[..., 1] * 7152 + a[..., 2] * 722) // 10000)
        return a.astype(np.uint8)[None]
    if grey:
        a = np.stack([a] * 3, -1)
    return a.transpose(2, 0, 1)


def decode_all(files, shape):
    images, labels = [], []
    for path, label in files:
        try:
            images.append(decode_image(path, shape))
            labels.append(label)
        except Exception as e:  # an unreadable file is skipped, as steepest skips it
            print(f"warning: skipping {path}: {e}", file=sys.stderr)
    stacked = np.stack(images) if images else np.zeros((0, *shape), np.uint8)
    return stacked, np.array(labels, np.int64)


def load_folder(folder, shape, val_split, need_train):
    if not os.path.isdir(folder):
        fail(f"{folder}: not a folder; pass the image folder with --data-dir")
    val_dir = None
    if os.path.isdir(os.path.join(folder, "train")):
        for n in ("val", "valid", "validation", "test"):
            if os.path.isdir(os.path.join(folder, n)):
                val_dir = os.path.join(folder, n)
                break
        if val_dir is None:
            fail(f"{folder}: has a train/ subfolder but no val/ (or test/) beside it")
        train_classes = class_folders(os.path.join(folder, "train"))
    else:
        train_classes = class_folders(folder)
    names = [n for n, _ in train_classes]
    label = {n: i for i, n in enumerate(names)}
    train, val = [], []
    if val_dir is not None:
        train = [(f, label[n]) for n, files in train_classes for f in files]
        for n, files in class_folders(val_dir):
            if n not in label:
                fail(f"{os.path.join(val_dir, n)}: class {n!r} is not among the training classes")
            val += [(f, label[n]) for f in files]
    else:
        rng = WyRand(0x59177A11)
        for n, files in train_classes:
            files = list(files)
            rng.shuffle(files)
            x = len(files) * val_split
            hold = min(int(x) + (1 if x - int(x) >= 0.5 else 0), max(len(files) - 1, 0))
            val += [(f, label[n]) for f in files[:hold]]
            train += [(f, label[n]) for f in files[hold:]]
    rng = WyRand(0x0F01DE25)
    rng.shuffle(train)
    rng.shuffle(val)
    return decode_all(train if need_train else [], shape), decode_all(val, shape), names


def select_classes(train, test, names, wanted):
    """`--classes A,B,...`: those classes only (names, or indices), relabelled in that order."""
    chosen = []
    for item in (s.strip() for s in wanted.split(",")):
        if not item:
            continue
        index = next((i for i, n in enumerate(names) if n == item), None)
        if index is None:
            fold = lambda s: "".join(ch.lower() if ch.isascii() else ch for ch in s)  # noqa: E731
            index = next((i for i, n in enumerate(names) if fold(n) == fold(item)), None)
        if index is None and item.isascii() and item.isdigit() and int(item) < len(names):
            index = int(item)
        if index is None:
            fail(f"--classes: {item!r} is not a class of {RUN['dataset']} ({', '.join(names)})")
        chosen.append(index)
    remap = np.full(max(256, len(names)), -1, np.int64)
    remap[chosen] = np.arange(len(chosen))

    def select(split):
        images, labels = split
        new = remap[labels]
        keep = new >= 0
        return images[keep] if len(images) else images, new[keep]

    return select(train), select(test), [names[i] for i in chosen]


def default_data_dir():
    name = RUN["dataset"]
    if RUN["data_dir"]:
        return RUN["data_dir"]
    if name in ("mnist", "fashion-mnist", "cifar10"):
        base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
        return os.path.join(base, "steepest", name)
    return None


def load_data(data_dir, need_train, limit_test):
    """(train, test) as (uint8 [N, C, H, W], int64 [N]) numpy pairs, chosen and cut as the run
    chose and cut them."""
    name, shape = RUN["dataset"], tuple(RUN["input_shape"])
    if data_dir is None:
        fail(f"--data-dir: --dataset {name} reads its files from a folder; pass it")
    if name in ("mnist", "fashion-mnist", "idx"):
        train, test, names = load_idx(data_dir, name, need_train)
    elif name == "cifar10":
        train, test, names = load_cifar(data_dir, need_train)
    elif name == "folder":
        train, test, names = load_folder(data_dir, shape, RUN["val_split"], need_train)
    else:
        fail(f"unknown data set {name!r}")
    if RUN["classes"]:
        train, test, names = select_classes(train, test, names, RUN["classes"])
    if RUN["limit_train"] is not None:
        train = (train[0][:RUN["limit_train"]], train[1][:RUN["limit_train"]])
    if limit_test:
        test = (test[0][:limit_test], test[1][:limit_test])
    if len(names) != len(RUN["class_names"]):
        fail(f"{data_dir}: {len(names)} classes, but the model was trained on "
             f"{len(RUN['class_names'])} ({', '.join(RUN['class_names'])})")
    for what, (images, _) in (("train", train), ("test", test)):
        if len(images) and tuple(images.shape[1:]) != shape:
            fail(f"{data_dir}: {what} images are {'x'.join(map(str, images.shape[1:]))}, but "
                 f"the model takes {'x'.join(map(str, shape))}")
    as_torch = lambda s: (torch.from_numpy(np.array(s[0])),  # noqa: E731 (copies: writable)
                          torch.from_numpy(np.array(s[1])))
    return as_torch(train), as_torch(test)


# ------------------------------------------------------------------ inputs, as steepest makes them


class Inputs:
    """u8 pixels -> f32 in [0, 1] -> (augmented while training) -> (x - mean) / std per channel,
    in f32 as steepest computes it (x - mean) * (1 / std)."""

    def __init__(self, device, seed):
        norm = RUN["normalize"]
        self.mean = self.inv_std = None
        if norm is not None:
            self.mean = torch.tensor(norm["mean"], dtype=torch.float32).view(1, -1, 1, 1)
            inv = 1.0 / torch.tensor(norm["std"], dtype=torch.float32)
            self.mean, self.inv_std = self.mean.to(device), inv.view(1, -1, 1, 1).to(device)
        self.device = device
        self.pad, self.flip = RUN["augment"]["crop"], RUN["augment"]["flip"]
        self.gen = torch.Generator().manual_seed(seed)

    def __call__(self, pixels, train=False):
        x = pixels.to(self.device, non_blocking=True).float() / 255
        if train:
            x = self.augment(x)
        if self.mean is not None:
            x = (x - self.mean) * self.inv_std
        return x

    def augment(self, x):
        """`--augment crop:PAD,flip`: shift by (dy, dx) in [-PAD, PAD] with zero fill (a crop
        of the zero-padded image), then mirror left-right with probability 1/2."""
        n, _, h, w = x.shape
        if self.pad > 0:
            p = self.pad
            dy = torch.randint(-p, p + 1, (n,), generator=self.gen).to(self.device)
            dx = torch.randint(-p, p + 1, (n,), generator=self.gen).to(self.device)
            padded = F.pad(x, (p, p, p, p)).permute(0, 2, 3, 1)
            rows = torch.arange(h, device=self.device)[None, :] + p + dy[:, None]
            cols = torch.arange(w, device=self.device)[None, :] + p + dx[:, None]
            batch = torch.arange(n, device=self.device)[:, None, None]
            x = padded[batch, rows[:, :, None], cols[:, None, :]].permute(0, 3, 1, 2)
        if self.flip:
            mirror = (torch.rand(n, generator=self.gen) < 0.5).to(self.device)
            x = torch.where(mirror[:, None, None, None], x.flip(3), x)
        return x.contiguous()


@torch.no_grad()
def evaluate(net, inputs, split, batch=1000):
    """Mean cross-entropy and accuracy (the first largest logit) over a split, as `steepest
    eval` computes them: with the run's test-time flips, of the mean logits of each image and
    its mirror."""
    images, labels = split
    net.eval()
    # Summed on the device in f64 and read once, not twice a batch.
    sums = torch.zeros(2, dtype=torch.float64, device=inputs.device)
    for i in range(0, len(labels), batch):
        y = labels[i:i + batch].to(inputs.device)
        x = inputs(images[i:i + batch])
        logits = net(x).float()
        if RUN.get("tta") == "flip":
            logits = (logits + net(x.flip(3)).float()) * 0.5
        sums[0] += F.cross_entropy(logits, y, reduction="sum").double()
        sums[1] += (logits.argmax(1) == y).sum()
    loss, correct = sums.tolist()
    n = max(len(labels), 1)
    return loss / n, correct / n


# -------------------------------------------------------------- optimizer and schedule, the run's


def make_optimizer(params):
    o = RUN["optimizer"]
    kind = o["kind"]
    if kind in ("sgd", "momentum", "nesterov"):
        return torch.optim.SGD(params, lr=o["lr"], momentum=o["momentum"],
                               weight_decay=o["weight_decay"], nesterov=kind == "nesterov")
    if kind in ("adam", "adamw"):
        cls = torch.optim.Adam if kind == "adam" else torch.optim.AdamW
        return cls(params, lr=o["lr"], betas=(o["beta1"], o["beta2"]), eps=o["eps"],
                   weight_decay=o["weight_decay"])
    if kind == "rmsprop":
        return torch.optim.RMSprop(params, lr=o["lr"], alpha=o["alpha"], eps=o["eps"],
                                   weight_decay=o["weight_decay"], momentum=o["momentum"])
    fail(f"unknown optimizer {kind!r}")


def load_optimizer_state(optimizer, net, path, steps):
    """The optimizer state steepest saved (`optimizer.PARAM.SLOT`, torch.optim's slot names)."""
    saved = load_file(path)
    for name, p in net.named_parameters():
        if not p.requires_grad:
            continue
        state = {}
        for slot in ("momentum_buffer", "exp_avg", "exp_avg_sq", "square_avg"):
            key = f"optimizer.{name}.{slot}"
            if key in saved:
                state[slot] = saved[key].to(p.device, torch.float32)
        if state:
            if RUN["optimizer"]["kind"] in ("adam", "adamw", "rmsprop"):
                state["step"] = torch.tensor(float(steps), dtype=torch.float32)
            optimizer.state[p] = state


def lr_at(step, steps_per_epoch, total_steps):
    """steepest's schedule: linear warmup from 0 over --warmup-steps, then constant,
    step:EVERY:GAMMA (per epochs) or cosine to 0 at the end of the last step."""
    base, warmup, s = RUN["optimizer"]["lr"], RUN["warmup_steps"], RUN["schedule"]
    if step < warmup:
        return base * (step + 1) / warmup
    if s["kind"] == "step":
        epoch = step // max(steps_per_epoch, 1)
        return base * s["gamma"] ** (epoch // s["every_epochs"])
    if s["kind"] == "cosine":
        t = (step - warmup) / max(total_steps - warmup, 1)
        return base * 0.5 * (1.0 + math.cos(math.pi * t))
    return base


# --------------------------------------------------------------------------------------- the run


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data-dir", default=default_data_dir(),
                        help="the data set's folder [default: %(default)s]")
    parser.add_argument("--epochs", type=int, default=RUN["epochs"],
                        help="epochs to train now [default: %(default)s]")
    parser.add_argument("--out", default="model_out.safetensors",
                        help="where to save the trained weights [default: %(default)s]")
    # The whole test split, as `steepest eval` of the checkpoint reads it (the run itself may
    # have evaluated on fewer: RUN["limit_test"]).
    parser.add_argument("--limit-test", type=int, default=0,
                        help="evaluate on the first N test samples (0: all, as `steepest eval` "
                             "does; the run used %s)" % (RUN["limit_test"] or "all"))
    parser.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    parser.add_argument("--eval-only", action="store_true",
                        help="print the checkpoint's test loss and accuracy and stop")
    args = parser.parse_args()

    cuda = args.device == "cuda" or (args.device == "auto" and torch.cuda.is_available())
    distributed = "WORLD_SIZE" in os.environ
    rank, world = 0, 1
    if distributed:
        dist.init_process_group("nccl" if cuda else "gloo")
        rank, world = dist.get_rank(), dist.get_world_size()
    local = int(os.environ.get("LOCAL_RANK", 0))
    if cuda:
        torch.cuda.set_device(local)
    device = torch.device(f"cuda:{local}" if cuda else "cpu")
    main_rank = rank == 0
    say = (lambda *a: print(*a, file=sys.stderr, flush=True)) if main_rank else (lambda *a: None)
    seed = RUN["seed"] % (1 << 62)
    torch.manual_seed(seed + rank)

    train_set, test_set = load_data(args.data_dir, not args.eval_only, args.limit_test)
    net = build_model()
    net.load_state_dict(load_file(os.path.join(HERE, RUN["checkpoint"])), strict=True)
    net.to(device)
    inputs = Inputs(device, seed ^ 0xA063E47 ^ rank)
    held_out = "val" if RUN["dataset"] == "folder" else "test"
    trained_on = "" if args.eval_only else f"{len(train_set[1])} train, "
    say(f"data: {RUN['dataset']} from {args.data_dir} ({trained_on}{len(test_set[1])} "
        f"{held_out}); model {RUN['model']}; device {device}"
        + (f", {world} processes" if distributed else ""))

    epoch = RUN["epochs_done"]
    if main_rank:
        if len(test_set[1]):
            loss, acc = evaluate(net, inputs, test_set)
            print(json.dumps({"kind": "eval", "epoch": epoch, "test_loss": loss, "test_acc": acc,
                              "samples": len(test_set[1])}), flush=True)
        else:
            say(f"note: the {held_out} split is empty")
    if args.eval_only or args.epochs <= 0:
        if distributed:
            dist.barrier()
            dist.destroy_process_group()
        return

    for name, p in net.named_parameters():
        if any(name.startswith(prefix) for prefix in RUN["freeze"]):
            p.requires_grad_(False)  # --freeze: the optimizer leaves it as it is
    model = net
    if distributed:
        if cuda and any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in net.modules()):
            net = nn.SyncBatchNorm.convert_sync_batchnorm(net)
            model = net
        model = nn.parallel.DistributedDataParallel(net, device_ids=[local] if cuda else None)
    optimizer = make_optimizer([p for p in net.parameters() if p.requires_grad])
    if RUN["optimizer_state"]:
        load_optimizer_state(optimizer, net, os.path.join(HERE, RUN["optimizer_state"]),
                             RUN["optimizer_steps"])

    images, labels = train_set
    n = len(labels)
    batch = RUN["batch_size"]
    if distributed:
        # The run's batch, split over the processes: DDP averages their gradients.
        if batch % world:
            say(f"note: batch {batch} does not split evenly over {world} processes")
        batch = max(-(-batch // world), 1)
        sampler = torch.utils.data.DistributedSampler(
            range(n), num_replicas=world, rank=rank, shuffle=RUN["shuffle"], seed=seed,
            drop_last=RUN["drop_last"])
    shuffle_gen = torch.Generator().manual_seed(seed)
    per_process = len(sampler) if distributed else n
    steps_per_epoch = per_process // batch if RUN["drop_last"] else -(-per_process // batch)
    if steps_per_epoch == 0:
        fail(f"--drop-last: {per_process} training samples, fewer than one batch of {batch}")
    first, last = epoch + 1, epoch + args.epochs
    total_steps = steps_per_epoch * last
    step = steps_per_epoch * epoch
    for epoch in range(first, last + 1):
        started = time.time()
        if distributed:
            sampler.set_epoch(epoch)
            order = torch.tensor(list(sampler), dtype=torch.int64)
        elif RUN["shuffle"]:
            order = torch.randperm(n, generator=shuffle_gen)
        else:
            order = torch.arange(n)
        model.train()
        stats = torch.zeros(3, dtype=torch.float64, device=device)
        lr = lr_at(step, steps_per_epoch, total_steps)
        for b in range(steps_per_epoch):
            idx = order[b * batch:(b + 1) * batch]
            x = inputs(images[idx], train=True)
            y = labels[idx].to(device)
            lr = lr_at(step, steps_per_epoch, total_steps)
            for group in optimizer.param_groups:
                group["lr"] = lr
            logits = model(x)
            loss = F.cross_entropy(logits, y, label_smoothing=RUN.get("label_smoothing", 0.0))
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            step += 1
            with torch.no_grad():
                # Summed on the device (no copy to or from the host each step).
                stats[0] += loss.detach().double() * len(y)
                stats[1] += (logits.argmax(1) == y).sum()
                stats[2] += len(y)
        if distributed:
            dist.all_reduce(stats)
        train_seconds = time.time() - started
        loss_sum, correct, seen = stats.tolist()
        if main_rank:
            line = {"kind": "epoch", "epoch": epoch, "train_loss": loss_sum / seen,
                    "train_acc": correct / seen}
            if len(test_set[1]):
                line["test_loss"], line["test_acc"] = evaluate(net, inputs, test_set)
            line.update({"lr": lr, "seconds": time.time() - started,
                         "samples_per_sec": seen / max(train_seconds, 1e-9),
                         "device": str(device), "processes": world})
            print(json.dumps(line), flush=True)
        if distributed:
            dist.barrier()

    if main_rank:
        save(net, args.out, args.data_dir, last)
        say(f"saved {args.out}: `steepest eval --weights {args.out}` evaluates it")
    if distributed:
        dist.barrier()
        dist.destroy_process_group()


def save(net, path, data_dir, epochs):
    """The state_dict (f32; batch norm's num_batches_tracked int64) with steepest's metadata."""
    tensors = {k: v.detach().to("cpu").contiguous() for k, v in net.state_dict().items()}
    config = dict(RUN["config"])
    config["epochs"] = epochs
    if data_dir is not None:
        config["data_dir"] = os.path.abspath(data_dir)
    meta = {
        "format": "pt",
        "steepest.model": RUN["model"],
        "steepest.input_shape": ",".join(str(d) for d in RUN["input_shape"]),
        "steepest.class_names": json.dumps(RUN["class_names"]),
        "steepest.dataset": RUN["dataset"],
        "steepest.config": json.dumps(config),
    }
    if RUN["normalize"] is not None:
        meta["steepest.normalize"] = json.dumps(RUN["normalize"])
    # Beside the target, then renamed over it: an interrupted save leaves no half-written file.
    tmp = f"{path}.{os.getpid()}.tmp"
    try:
        save_file(tensors, tmp, metadata=meta)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


if __name__ == "__main__":
    main()
