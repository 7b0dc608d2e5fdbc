"""PyTorch side of clef's `cnn_torch_parity` test (framework/backend/tests/cnn_torch_parity.rs).

Builds the ConvNet or the CIFAR ResNet (Mammoth's definition) with torch.nn, loads clef's
initial tensors *by name* from its state dict (every clef tensor must name exactly one entry,
and every entry but `num_batches_tracked` must be covered), trains a few SGD steps in train
mode, and writes the losses, every tensor after training in clef's order (running statistics
included) and the eval-mode logits of the batch.

  in:  meta.json   {"model": {...}, "tensors": [[name, shape], ...], "rows", "steps", "lr",
                    "momentum", "weight_decay", "mask": [bool] | null}
       params.f32  the tensors in that order;  x.f32 rows NCHW images;  y.f32 targets
  out: out.json    {"losses": [...]};  params_out.f32;  logits_eval.f32

Usage: python3 cnn_parity.py CASE_DIR
"""

import json
import struct
import sys
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn


def read_f32(path: Path) -> torch.Tensor:
    data = path.read_bytes()
    return torch.tensor(struct.unpack(f"<{len(data) // 4}f", data), dtype=torch.float32)


def make_norm(norm, c):
    if norm["kind"] == "batch":
        return nn.BatchNorm2d(c)
    if norm["kind"] == "group":
        return nn.GroupNorm(norm["groups"], c)
    return nn.Identity()


ACTS = {"relu": F.relu, "tanh": torch.tanh, "sigmoid": torch.sigmoid}


class ConvNet(nn.Module):
    def __init__(self, m):
        super().__init__()
        bias = m["norm"]["kind"] == "none"
        cin, h, w = m["input"]
        self.act = ACTS[m["activation"]]
        self.convs = nn.ModuleList()
        self.norms = nn.ModuleList()
        for i, c in enumerate(m["channels"]):
            self.convs.append(nn.Conv2d(cin, c, 3, padding=1, bias=bias))
            self.norms.append(make_norm(m["norm"], c))
            cin = c
            if i % 2 == 1:
                h, w = h // 2, w // 2
        self.pool = m.get("pool", "flatten")
        flat = cin if self.pool == "avg" else cin * h * w
        widths = [flat] + m["hidden"] + [m["output"]]
        self.layers = nn.ModuleList(nn.Linear(a, b) for a, b in zip(widths, widths[1:]))

    def forward(self, x):
        for i, (conv, norm) in enumerate(zip(self.convs, self.norms)):
            x = self.act(norm(conv(x)))
            if i % 2 == 1:
                x = F.max_pool2d(x, 2)
        if self.pool == "avg":
            x = nn.AdaptiveAvgPool2d(1)(x)
        x = x.flatten(1)
        for lin in self.layers[:-1]:
            x = self.act(lin(x))
        return self.layers[-1](x)


class BasicBlock(nn.Module):
    def __init__(self, inp, planes, stride, norm):
        super().__init__()
        bias = norm["kind"] == "none"
        self.conv1 = nn.Conv2d(inp, planes, 3, stride, 1, bias=bias)
        self.bn1 = make_norm(norm, planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=bias)
        self.bn2 = make_norm(norm, planes)
        self.shortcut = nn.Sequential()
        if stride != 1 or inp != planes:
            self.shortcut = nn.Sequential(
                nn.Conv2d(inp, planes, 1, stride, bias=bias), make_norm(norm, planes)
            )

    def forward(self, x):
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        out = out + self.shortcut(x)
        return F.relu(out)


class ResNet(nn.Module):
    def __init__(self, m):
        super().__init__()
        w, norm = m["width"], m["norm"]
        self.conv1 = nn.Conv2d(m["input"][0], w, 3, 1, 1, bias=norm["kind"] == "none")
        self.bn1 = make_norm(norm, w)
        inp = w
        for s, n in enumerate(m["blocks"]):
            blocks = []
            for b in range(n):
                stride = 2 if s > 0 and b == 0 else 1
                blocks.append(BasicBlock(inp, w << s, stride, norm))
                inp = w << s
            setattr(self, f"layer{s + 1}", nn.Sequential(*blocks))
        self.linear = nn.Linear(inp, m["output"])

    def forward(self, x):
        out = F.relu(self.bn1(self.conv1(x)))
        for s in range(4):
            out = getattr(self, f"layer{s + 1}")(out)
        out = F.adaptive_avg_pool2d(out, 1).flatten(1)
        return self.linear(out)


def main() -> None:
    case = Path(sys.argv[1])
    meta = json.loads((case / "meta.json").read_text())
    m = meta["model"]
    model = ConvNet(m) if m["kind"] == "convnet" else ResNet(m)
    state = model.state_dict()
    flat = read_f32(case / "params.f32")
    offset = 0
    seen = set()
    with torch.no_grad():
        for name, shape in meta["tensors"]:
            t = state[name]
            assert list(t.shape) == shape, f"{name}: torch {list(t.shape)} vs clef {shape}"
            n = t.numel()
            t.copy_(flat[offset : offset + n].view_as(t))
            offset += n
            seen.add(name)
    assert offset == flat.numel(), "params.f32 has the wrong size"
    missing = [k for k in state if k not in seen and not k.endswith("num_batches_tracked")]
    assert not missing, f"torch tensors clef does not have: {missing}"

    rows = meta["rows"]
    c, h, w = m["input"]
    x = read_f32(case / "x.f32").view(rows, c, h, w)
    y = read_f32(case / "y.f32").long()
    mask = meta.get("mask")
    blocked = None if mask is None else ~torch.tensor(mask, dtype=torch.bool)
    opt = torch.optim.SGD(
        model.parameters(), lr=meta["lr"], momentum=meta["momentum"],
        weight_decay=meta["weight_decay"],
    )
    model.train()
    losses = []
    for _ in range(meta["steps"]):
        opt.zero_grad()
        logits = model(x)
        if blocked is not None:
            logits = logits.masked_fill(blocked, float("-inf"))
        loss = F.cross_entropy(logits, y)
        loss.backward()
        losses.append(loss.item())
        opt.step()
    model.eval()
    with torch.no_grad():
        logits = model(x).reshape(-1)
        state = model.state_dict()
        out = torch.cat([state[name].reshape(-1) for name, _ in meta["tensors"]])
    (case / "out.json").write_text(json.dumps({"losses": losses, "torch": torch.__version__}))
    (case / "params_out.f32").write_bytes(struct.pack(f"<{out.numel()}f", *out.tolist()))
    (case / "logits_eval.f32").write_bytes(struct.pack(f"<{logits.numel()}f", *logits.tolist()))


if __name__ == "__main__":
    main()
