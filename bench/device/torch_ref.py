# PyTorch CUDA fp32 references for steepest's device run: matmul n^3 (TF32 off) and one LeNet epoch.
import json, sys, time, gzip, struct, os
import numpy as np, torch, torch.nn as nn
torch.backends.cuda.matmul.allow_tf32 = False
torch.backends.cudnn.allow_tf32 = False
dev = torch.device('cuda')
out = {"device": torch.cuda.get_device_name(0), "torch": torch.__version__, "matmul": []}
for n in [256, 512, 1024, 2048, 4096]:
    a = torch.rand(n, n, device=dev) - 0.5; b = torch.rand(n, n, device=dev) - 0.5
    for _ in range(3): c = a @ b
    torch.cuda.synchronize()
    ts = []
    for _ in range(5):
        reps = max(1, int(2e11 / (2 * n ** 3)))
        t = time.perf_counter()
        for _ in range(reps): c = a @ b
        torch.cuda.synchronize()
        ts.append((time.perf_counter() - t) / reps)
    ts.sort(); med = ts[2]
    out["matmul"].append({"size": n, "gflops": 2 * n ** 3 / med / 1e9, "median_seconds": med})
def idx(path):
    d = gzip.open(path, 'rb').read(); nd = d[3]
    dims = struct.unpack('>' + 'I' * nd, d[4:4 + 4 * nd])
    return np.frombuffer(d[4 + 4 * nd:], dtype=np.uint8).reshape(dims)
x = torch.from_numpy(idx(sys.argv[1] + '/train-images-idx3-ubyte.gz').astype(np.float32) / 255.0).unsqueeze(1).to(dev)
y = torch.from_numpy(idx(sys.argv[1] + '/train-labels-idx1-ubyte.gz').astype(np.int64)).to(dev)
for kind in ["lenet", "mlp"]:
    torch.manual_seed(0)
    if kind == "lenet":
        m = nn.Sequential(nn.Conv2d(1, 32, 5), nn.ReLU(), nn.MaxPool2d(2), nn.Conv2d(32, 64, 5), nn.ReLU(),
                          nn.MaxPool2d(2), nn.Flatten(), nn.Linear(1024, 256), nn.ReLU(), nn.Linear(256, 10)).to(dev)
    else:
        m = nn.Sequential(nn.Flatten(), nn.Linear(784, 256), nn.ReLU(), nn.Linear(256, 10)).to(dev)
    opt = torch.optim.SGD(m.parameters(), lr=0.05, momentum=0.9)
    lossf = nn.CrossEntropyLoss()
    for epoch in range(2):
        perm = torch.randperm(x.shape[0], device=dev)
        torch.cuda.synchronize(); t = time.perf_counter()
        for i in range(0, x.shape[0], 128):
            idxs = perm[i:i + 128]
            opt.zero_grad(set_to_none=True)
            loss = lossf(m(x[idxs]), y[idxs]); loss.backward(); opt.step()
        torch.cuda.synchronize()
        out.setdefault("epochs", []).append({"model": kind, "epoch": epoch + 1, "train_seconds": time.perf_counter() - t,
                                             "samples_per_sec": x.shape[0] / (time.perf_counter() - t)})
# The CIFAR presets (src/nn/spec.rs) on random 3x32x32 batches, as `steepest bench` times them:
# samples/s of training steps at batch 128, SGD momentum, median of 3 trials of 100 steps.
class Block(nn.Module):
    def __init__(self, cin, cout, stride):
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(cin, cout, 3, stride, 1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(),
                                  nn.Conv2d(cout, cout, 3, 1, 1, bias=False), nn.BatchNorm2d(cout))
        self.short = (nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))
                      if stride != 1 or cin != cout else nn.Identity())
    def forward(self, x):
        return torch.relu(self.body(x) + self.short(x))
def resnet(n):
    layers, cin = [nn.Conv2d(3, 16, 3, 1, 1, bias=False), nn.BatchNorm2d(16), nn.ReLU()], 16
    for i, c in enumerate([16, 32, 64]):
        for j in range(n):
            layers.append(Block(cin, c, 2 if i > 0 and j == 0 else 1)); cin = c
    return nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(64, 10))
def cifar_cnn():
    def cbr(i, o): return [nn.Conv2d(i, o, 3, 1, 1, bias=False), nn.BatchNorm2d(o), nn.ReLU(), nn.MaxPool2d(2)]
    return nn.Sequential(*cbr(3, 32), *cbr(32, 64), *cbr(64, 128), nn.Flatten(), nn.Dropout(0.25),
                         nn.Linear(2048, 256), nn.ReLU(), nn.Linear(256, 10))
if "--cifar" in sys.argv:
    xb = torch.rand(4096, 3, 32, 32, device=dev); yb = torch.randint(0, 10, (4096,), device=dev)
    for name, make in [("resnet8", lambda: resnet(1)), ("resnet20", lambda: resnet(3)), ("cifar-cnn", cifar_cnn)]:
        torch.manual_seed(0); m = make().to(dev)
        opt = torch.optim.SGD(m.parameters(), lr=0.05, momentum=0.9); lossf = nn.CrossEntropyLoss()
        def steps(k):
            for i in range(k):
                j = (i * 128) % 3968
                opt.zero_grad(set_to_none=True)
                lossf(m(xb[j:j + 128]), yb[j:j + 128]).backward(); opt.step()
        steps(20); torch.cuda.synchronize(); ts = []
        for _ in range(3):
            t = time.perf_counter(); steps(100); torch.cuda.synchronize(); ts.append(time.perf_counter() - t)
        out.setdefault("cifar", []).append({"model": name, "samples_per_sec": 12800 / sorted(ts)[1]})
print(json.dumps(out))
