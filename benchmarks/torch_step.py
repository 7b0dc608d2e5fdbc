"""PyTorch CPU reference for clef's `step_throughput` benchmark.

`step_throughput` starts this script once (when `torch` can be imported) and drives it over
stdin/stdout, one JSON object per line, so that its repetitions alternate with clef's own in
the same run on the same machine:

    -> {"batch": 128, "steps": 5, "warmup": 25}   (warmup > 0 only on the first request)
    <- {"seconds_per_step": 0.00123}

The step is the textbook PyTorch training loop on the same model and data shape as clef's
benchmark: nn.Sequential(Linear(784, 256), ReLU, Linear(256, 256), ReLU, Linear(256, 10)),
`optimizer.zero_grad()`, forward, `F.cross_entropy`, `backward()`, `SGD(lr=0.01,
momentum=0.9).step()`, on one fixed random batch per batch size. The first line printed
announces the version and thread count.

Usage (normally run by `step_throughput`, not by hand):
    python3 benchmarks/torch_step.py THREADS
"""

import json
import sys
import time

import torch
import torch.nn.functional as F
from torch import nn


def main() -> None:
    threads = int(sys.argv[1]) if len(sys.argv) > 1 else 1
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    models = {}

    def setup(batch):
        model = nn.Sequential(
            nn.Linear(784, 256),
            nn.ReLU(),
            nn.Linear(256, 256),
            nn.ReLU(),
            nn.Linear(256, 10),
        )
        opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
        x = torch.rand(batch, 784)
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
        if batch not in models:
            models[batch] = setup(batch)
        state = models[batch]
        for _ in range(int(req.get("warmup", 0))):
            step(*state)
        t0 = time.perf_counter()
        for _ in range(steps):
            step(*state)
        elapsed = time.perf_counter() - t0
        print(json.dumps({"seconds_per_step": elapsed / steps}), flush=True)


if __name__ == "__main__":
    main()
