"""PyTorch CPU reference for clef's `step_throughput` benchmark.

`step_throughput` starts this script once (when `torch` can be imported) and drives it over
stdin/stdout, one JSON object per line, so that its repetitions alternate with clef's own in
the same run on the same machine:

    -> {"batch": 128, "steps": 5, "warmup": 25, "model": "mlp"}   (warmup > 0 only on the
                                                                  first request of a model)
    <- {"seconds_per_step": 0.00123}

The step is the textbook PyTorch training loop on the same model and data shape as clef's
benchmark, `optimizer.zero_grad()`, forward, `F.cross_entropy`, `backward()`, `SGD(lr=0.01,
momentum=0.9).step()`, on one fixed random batch per model and batch size, in train mode.
Models: "mlp" = nn.Sequential(Linear(784, 256), ReLU, Linear(256, 256), ReLU, Linear(256, 10))
on 784 features; "convnet" = conv3x3 32-32-maxpool-64-64-maxpool (ReLU, conv biases, no
norm), linear head, on 1x28x28; "resnet18r" = Mammoth's reduced ResNet-18 (width 20, BN) on
3x32x32. The first line printed announces the version and thread count.

Usage (normally run by `step_throughput`, not by hand):
    python3 benchmarks/torch_step.py THREADS
"""

import json
import sys
import time

import torch
import torch.nn.functional as F
from torch import nn


class ConvNet(nn.Module):
    """conv3x3 32-32-pool-64-64-pool + linear head (clef's `convnet` with channels
    [32, 32, 64, 64], no norm)."""

    def __init__(self):
        super().__init__()
        chans = [1, 32, 32, 64, 64]
        self.convs = nn.ModuleList(nn.Conv2d(a, b, 3, padding=1) for a, b in zip(chans, chans[1:]))
        self.layers = nn.ModuleList([nn.Linear(64 * 7 * 7, 10)])

    def forward(self, x):
        for i, conv in enumerate(self.convs):
            x = F.relu(conv(x))
            if i % 2 == 1:
                x = F.max_pool2d(x, 2)
        return self.layers[0](x.flatten(1))


class BasicBlock(nn.Module):
    def __init__(self, inp, planes, stride):
        super().__init__()
        self.conv1 = nn.Conv2d(inp, planes, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.shortcut = nn.Sequential()
        if stride != 1 or inp != planes:
            self.shortcut = nn.Sequential(
                nn.Conv2d(inp, planes, 1, stride, bias=False), nn.BatchNorm2d(planes)
            )

    def forward(self, x):
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + self.shortcut(x))


class ResNet18(nn.Module):
    """Mammoth's CIFAR ResNet-18 (`reduced_resnet18` at width 20)."""

    def __init__(self, width=20, classes=10):
        super().__init__()
        self.conv1 = nn.Conv2d(3, width, 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        inp, stages = width, []
        for s in range(4):
            blocks = []
            for b in range(2):
                blocks.append(BasicBlock(inp, width << s, 2 if s > 0 and b == 0 else 1))
                inp = width << s
            stages.append(nn.Sequential(*blocks))
        self.layers = nn.Sequential(*stages)
        self.linear = nn.Linear(inp, classes)

    def forward(self, x):
        out = self.layers(F.relu(self.bn1(self.conv1(x))))
        return self.linear(F.avg_pool2d(out, out.shape[2]).flatten(1))


def make_model(name):
    """The model and the shape of one input sample."""
    if name == "mlp":
        model = nn.Sequential(
            nn.Linear(784, 256),
            nn.ReLU(),
            nn.Linear(256, 256),
            nn.ReLU(),
            nn.Linear(256, 10),
        )
        return model, (784,)
    if name == "convnet":
        return ConvNet(), (1, 28, 28)
    if name == "resnet18r":
        return ResNet18(20), (3, 32, 32)
    raise ValueError(f"unknown model {name!r}")


def main() -> None:
    threads = int(sys.argv[1]) if len(sys.argv) > 1 else 1
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    models = {}

    def setup(name, batch):
        model, shape = make_model(name)
        model.train()
        opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
        x = torch.rand(batch, *shape)
        y = torch.randint(0, 10, (batch,))
        return model, opt, x, y

    def step(model, opt, x, y):
        opt.zero_grad()
        loss = F.cross_entropy(model(x), y)
        loss.backward()
        opt.step()
        return loss

    print(
        json.dumps(
            {
                "torch": torch.__version__,
                "threads": torch.get_num_threads(),
                "mkldnn": torch.backends.mkldnn.is_available(),
            }
        ),
        flush=True,
    )
    for line in sys.stdin:
        line = line.strip()
        if not line:
            continue
        req = json.loads(line)
        batch, steps = int(req["batch"]), int(req["steps"])
        key = (req.get("model", "mlp"), batch)
        if key not in models:
            models[key] = setup(*key)
        state = models[key]
        for _ in range(int(req.get("warmup", 0))):
            step(*state)
        t0 = time.perf_counter()
        for _ in range(steps):
            step(*state)
        elapsed = time.perf_counter() - t0
        print(json.dumps({"seconds_per_step": elapsed / steps}), flush=True)


if __name__ == "__main__":
    main()
