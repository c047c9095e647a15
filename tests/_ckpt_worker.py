"""Helper for tests/test_checkpoint.py: save checkpoints in a loop until killed.

Usage: python _ckpt_worker.py PATH

Checkpoint ``i`` holds a model whose every parameter equals ``i`` and ``extra={"i": i}``, so a
reader can tell whether a file is one consistent saved state. Prints ``i`` after each save.
"""

import sys

import torch
from torch import nn

from reglab import checkpoint


def main(path: str) -> None:
    torch.set_num_threads(1)
    model = nn.Sequential(nn.Linear(256, 512), nn.Linear(512, 256))  # ~1 MB: saves take a while
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    i = 0
    while True:
        with torch.no_grad():
            for p in model.parameters():
                p.fill_(float(i))
                opt.state[p]["momentum_buffer"] = torch.full_like(p, float(i))
        checkpoint.save(path, model, opt, {"i": i})
        print(i, flush=True)
        i += 1


if __name__ == "__main__":
    main(sys.argv[1])
