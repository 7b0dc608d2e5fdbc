"""PyTorch side of clef's `torch_parity` test (framework/backend/tests/torch_parity.rs).

Reads a case directory written by the test, trains the same MLP with PyTorch for a few SGD
steps, and writes what it computed, so that the test can compare it with clef's native and dfdx
backends:

  in:  meta.json   {"widths": [...], "activation": "relu"|"tanh"|"sigmoid", "rows": R,
                    "steps": S, "lr": .., "momentum": .., "weight_decay": .., "nesterov": bool,
                    "mask": [bool per class] | null}
       params.f32  every tensor in clef's order (layers.{l}.weight [out, in], layers.{l}.bias),
                   little-endian float32
       x.f32       R x widths[0] inputs;  y.f32  R targets (class ids as floats)
  out: out.json    {"losses": [loss before each step]}
       params_out.f32  the parameters after S steps, same layout as params.f32

Masked classes take no part in the softmax: their logits are set to -inf (masked_fill), the
usual PyTorch idiom for task-incremental heads.

Usage: python3 torch_parity.py CASE_DIR
"""

import json
import struct
import sys
from pathlib import Path

import torch
from torch import nn


def read_f32(path: Path) -> torch.Tensor:
    data = path.read_bytes()
    return torch.tensor(struct.unpack(f"<{len(data) // 4}f", data), dtype=torch.float32)


def main() -> None:
    case = Path(sys.argv[1])
    meta = json.loads((case / "meta.json").read_text())
    widths = meta["widths"]
    act = {"relu": nn.ReLU, "tanh": nn.Tanh, "sigmoid": nn.Sigmoid}[meta["activation"]]
    layers = []
    for i, (fin, fout) in enumerate(zip(widths, widths[1:])):
        layers.append(nn.Linear(fin, fout))
        if i < len(widths) - 2:
            layers.append(act())
    model = nn.Sequential(*layers)
    linears = [m for m in model if isinstance(m, nn.Linear)]

    flat = read_f32(case / "params.f32")
    offset = 0
    with torch.no_grad():
        for lin in linears:
            for p in (lin.weight, lin.bias):
                n = p.numel()
                p.copy_(flat[offset : offset + n].view_as(p))
                offset += n
    assert offset == flat.numel(), "params.f32 has the wrong size"

    rows = meta["rows"]
    x = read_f32(case / "x.f32").view(rows, widths[0])
    y = read_f32(case / "y.f32").long()
    mask = meta.get("mask")
    blocked = None if mask is None else ~torch.tensor(mask, dtype=torch.bool)

    opt = torch.optim.SGD(
        model.parameters(),
        lr=meta["lr"],
        momentum=meta["momentum"],
        weight_decay=meta["weight_decay"],
        nesterov=meta["nesterov"],
    )
    losses = []
    for _ in range(meta["steps"]):
        opt.zero_grad()
        logits = model(x)
        if blocked is not None:
            logits = logits.masked_fill(blocked, float("-inf"))
        loss = nn.functional.cross_entropy(logits, y)
        loss.backward()
        losses.append(loss.item())
        opt.step()

    (case / "out.json").write_text(json.dumps({"losses": losses, "torch": torch.__version__}))
    with torch.no_grad():
        out = torch.cat([p.detach().reshape(-1) for lin in linears for p in (lin.weight, lin.bias)])
    (case / "params_out.f32").write_bytes(struct.pack(f"<{out.numel()}f", *out.tolist()))


if __name__ == "__main__":
    main()
