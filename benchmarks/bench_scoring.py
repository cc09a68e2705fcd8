"""Scoring-speed benchmark: GAIA and the all-methods sweep, relative to a plain forward pass.

For each model (defaults: CIFAR ResNet-20 at 32 px batch 128, torchvision ResNet-18 random
init at 224 px batch 32) and device, prints the median seconds per batch (after warm-up,
``--repeats`` timed calls) of

    forward          model(x) under no_grad                              (the unit: 1.00x)
    naive_gaia_z     the textbook GAIA-Z: parameter gradients on, model.zero_grad(),
                     full .backward() of sum_b max_k f(x_b)_k, tensor hooks on every norm
                     layer output, r = (g != 0).float().mean over positions
    gaia_z           gaia_viz.gaia.gaia_z
    gaia_a           gaia_viz.gaia.gaia_a
    sweep_no_odin    gaia_viz.sweep.score_batch with every detector except ODIN
    sweep_all        the same with ODIN (its own input-gradient pass + second forward)
    posthoc_seven    what ASH, SCALE, ViM, GEN, fDBD, NNGuide and DICE add to the sweep:
                     their score_forward on the outputs of the sweep's shared forward

each also as a ratio to ``forward`` measured in the same run, with the minor page faults
per call (memory faulted in afresh; see gaia_viz.allocator, which the script opts into
unless ``--default-malloc``). On CUDA it also reports images/s of GAIA on torchvision
ResNet-50 at 224 px next to a plain training step, and with ``--channels-last`` /
``--bf16`` whether GAIA-Z's zero counts stay exact under them.
"Interaction speed" times what the app recomputes without the model on 200,000 cached
samples: moving the threshold and changing the layer subset.

Run:  python benchmarks/bench_scoring.py                # CPU, 2 threads (+ CUDA if present)
      python benchmarks/bench_scoring.py --quick --models resnet20 --batch 8
"""

from __future__ import annotations

import argparse
import copy
import datetime as _dt
import json
import os
import platform
import statistics
import subprocess
import sys
import time
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

try:
    import resource  # page-fault counts (Unix)
except ImportError:  # Windows
    resource = None

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

from gaia_viz import gaia, metrics, sweep  # noqa: E402
from gaia_viz.allocator import retain_freed_memory  # noqa: E402
from gaia_viz.detectors import DETECTORS, make_detector  # noqa: E402
from gaia_viz.forward import merge_needs, shared_forward  # noqa: E402
from gaia_viz.models import load_model  # noqa: E402

# CPU targets (2 threads, ResNet-20, batch 128): maximum ratio to forward-only.
RATIO_TARGETS = {"gaia_z": 2.2, "gaia_a": 2.0, "sweep_no_odin": 3.0, "sweep_all": 5.0, "posthoc_seven": 0.3}
FIT_BATCH = 128  # images per random fit batch
# the post-hoc methods of issue 14, timed together in the posthoc_seven row
POSTHOC_METHODS = ("ash", "scale", "vim", "gen", "fdbd", "nnguide", "dice")
TARGET_SETTING = dict(device="cpu", threads=2, model="resnet20", batch=128)
INTERACTION_TARGET_S = 0.150


@dataclass(frozen=True)
class ModelSpec:
    key: str
    load_name: str
    image_size: int
    batch: int
    repeats: int  # default timed repeats on CPU (large models get fewer)


MODEL_SPECS = {
    "resnet20": ModelSpec("resnet20", "cifar_resnet20", 32, 128, 7),
    "resnet18": ModelSpec("resnet18", "resnet18", 224, 32, 3),
    "resnet50": ModelSpec("resnet50", "resnet50", 224, 32, 3),
}
DEFAULT_MODELS = "resnet20,resnet18"


@dataclass
class Row:
    model: str
    device: str
    method: str
    batch: int
    median_s: float
    ratio: float
    images_per_s: float
    times_s: list[float] = field(default_factory=list)
    page_faults: float = 0.0  # median minor page faults per call (memory faulted in afresh)


# --------------------------------------------------------------------------- timing


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_median(fn: Callable[[], object], repeats: int, warmup: int, device: torch.device) -> list[float]:
    """Seconds of each of ``repeats`` calls of ``fn`` after ``warmup`` untimed calls."""
    for _ in range(warmup):
        fn()
    _sync(device)
    times = []
    for _ in range(repeats):
        _sync(device)
        start = time.perf_counter()
        fn()
        _sync(device)
        times.append(time.perf_counter() - start)
    return times


def _minor_faults() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt if resource is not None else 0


def time_interleaved(methods: dict[str, Callable[[], object]], repeats: int, warmup: int,
                     device: torch.device, faults: dict[str, list[int]] | None = None
                     ) -> dict[str, list[float]]:
    """Like :func:`time_median` for several methods, timed round-robin (one call of each per
    round) so that a load change on a shared machine hits every method alike. ``faults``,
    when given, receives each call's minor page faults per method."""
    for fn in methods.values():
        for _ in range(warmup):
            fn()
    times: dict[str, list[float]] = {name: [] for name in methods}
    for _ in range(repeats):
        for name, fn in methods.items():
            before = _minor_faults()
            times[name].extend(time_median(fn, 1, 0, device))
            if faults is not None:
                faults.setdefault(name, []).append(_minor_faults() - before)
    return times


# --------------------------------------------------------------------------- methods


def forward_only(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return model(x)


def norm_layer_names(model: nn.Module) -> list[str]:
    return [n for n, m in model.named_modules() if isinstance(m, gaia.NORM_TYPES)]


def naive_gaia_z(model: nn.Module, x: torch.Tensor, layers: list[str]) -> torch.Tensor:
    """The baseline: GAIA-Z written the obvious way.

    Parameter gradients stay on, ``model.zero_grad()``, one full ``.backward()`` of
    ``sum_b max_k f(x_b)_k`` down to the first layer, a ``register_hook`` on every norm
    layer output collecting its gradient, and ``r = (g != 0).float().mean(positions)``;
    GAIA-Z = mean over all channels of r^2.
    """
    modules = dict(model.named_modules())
    grads: dict[str, torch.Tensor] = {}
    handles = []

    def forward_hook(name):
        def hook(_module, _inputs, output):
            def keep(grad):
                grads[name] = grad
            output.register_hook(keep)
        return hook

    for name in layers:
        handles.append(modules[name].register_forward_hook(forward_hook(name)))
    try:
        model.zero_grad()
        logits = model(x)
        logits.max(dim=1).values.sum().backward()
    finally:
        for handle in handles:
            handle.remove()
    ratios = [(grads[name] != 0).float().mean(dim=(2, 3)) for name in layers]
    return (torch.cat(ratios, dim=1) ** 2).mean(dim=1).detach().cpu()


def build_detectors(model: nn.Module, x: torch.Tensor, num_classes: int, fit_batches: int,
                    with_odin: bool) -> dict:
    """Every registered detector with default parameters; fitted ones fitted on
    ``fit_batches`` random batches of ``FIT_BATCH`` images shaped like ``x`` (random labels;
    at least that many so ViM's principal subspace has a residual whatever the timed batch)."""
    generator = torch.Generator().manual_seed(1)
    shape = (FIT_BATCH, *x.shape[1:])
    loader = [
        (torch.randn(shape, generator=generator).to(x.device),
         torch.randint(0, num_classes, (FIT_BATCH,), generator=generator))
        for _ in range(fit_batches)
    ]
    detectors = {}
    for name in DETECTORS:
        if name == "odin" and not with_odin:
            continue
        detector = make_detector(name, model)
        if detector.needs_fit:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                detector.fit(loader)
        detectors[name] = detector
    return detectors


# --------------------------------------------------------------------------- per model


def load_bench_model(spec: ModelSpec, random_init: bool, device: torch.device) -> tuple[nn.Module, str]:
    """The model in eval mode on ``device`` and a note on its weights."""
    if spec.load_name.startswith("cifar_") and not random_init:
        try:
            return load_model(spec.load_name, device=device), "shared CIFAR-10 checkpoint"
        except Exception as exc:  # shared data absent: random weights time the same
            print(f"  ({spec.key}: pretrained weights unavailable ({exc}); using random init)")
    return load_model(spec.load_name, pretrained=False, device=device), "random init"


def bench_model(spec: ModelSpec, device: torch.device, batch: int, repeats: int, warmup: int,
                fit_batches: int, random_init: bool) -> tuple[list[Row], dict]:
    model, weights = load_bench_model(spec, random_init, device)
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(batch, 3, spec.image_size, spec.image_size, generator=generator).to(device)
    layers = norm_layer_names(model)
    num_classes = forward_only(model, x[:1]).shape[1]
    det_no_odin = build_detectors(model, x, num_classes, fit_batches, with_odin=False)
    det_all = dict(det_no_odin, odin=make_detector("odin", model))
    posthoc = {m: det_no_odin[m] for m in POSTHOC_METHODS}
    shared = shared_forward(model, x, merge_needs(d.needs() for d in det_no_odin.values()))

    # sanity: the naive baseline and gaia_z agree (both computed once, untimed)
    agreement = float((naive_gaia_z(model, x, layers) - gaia.gaia_z(model, x, layers)).abs().max())
    for p in model.parameters():  # naive_gaia_z leaves .grad behind; drop it
        p.grad = None

    methods: dict[str, Callable[[], object]] = {
        "forward": lambda: forward_only(model, x),
        "naive_gaia_z": lambda: naive_gaia_z(model, x, layers),
        "gaia_z": lambda: gaia.gaia_z(model, x, layers),
        "gaia_a": lambda: gaia.gaia_a(model, x),
        "sweep_no_odin": lambda: sweep.score_batch(model, x, det_no_odin),
        "sweep_all": lambda: sweep.score_batch(model, x, det_all),
        "posthoc_seven": lambda: [d.score_forward(shared) for d in posthoc.values()],
    }
    rows = []
    faults: dict[str, list[int]] = {}
    timings = time_interleaved(methods, repeats, warmup, device, faults)
    forward_s = statistics.median(timings["forward"])
    for method, times in timings.items():
        median = statistics.median(times)
        rows.append(Row(spec.key, device.type, method, batch, median, median / forward_s,
                        batch / median, times, statistics.median(faults[method])))
    for p in model.parameters():
        p.grad = None
    info = dict(model=spec.key, device=device.type, weights=weights, batch=batch,
                image_size=spec.image_size, norm_layers=len(layers),
                naive_vs_gaia_z_max_abs_diff=agreement)
    return rows, info


# --------------------------------------------------------------------------- GPU extras


def training_step(model: nn.Module, x: torch.Tensor, labels: torch.Tensor) -> None:
    """Forward + backward with parameter gradients, no optimizer (train mode)."""
    model.zero_grad(set_to_none=True)
    F.cross_entropy(model(x), labels).backward()


def zero_counts_exactness(model: nn.Module, x: torch.Tensor, channels_last: bool, bf16: bool) -> dict:
    """Does GAIA-Z's per-channel non-zero ratio match the fp32 contiguous result exactly?"""
    reference = gaia.gaia_analyze(model, x, average=False)
    variant_model, variant_x = model, x
    if channels_last:
        variant_model = copy.deepcopy(model).to(memory_format=torch.channels_last)
        variant_x = x.contiguous(memory_format=torch.channels_last)
    autocast = torch.autocast(x.device.type, dtype=torch.bfloat16, enabled=bf16)
    with autocast:
        result = gaia.gaia_analyze(variant_model, variant_x, average=False)
    ref = torch.cat([reference.nonzero_ratio[n] for n in reference.zero_layers], 1)
    got = torch.cat([result.nonzero_ratio[n] for n in result.zero_layers], 1)
    differing = float((ref != got).float().mean())
    return dict(channels_last=channels_last, bf16=bf16, exact=differing == 0.0,
                differing_channel_fraction=differing,
                score_max_abs_diff=float((reference.gaia_z - result.gaia_z).abs().max()))


def bench_variant_throughput(device: torch.device, batch: int, repeats: int, warmup: int,
                             variants: list[tuple[bool, bool]]) -> tuple[list[dict], list[dict]]:
    """images/s of forward / training step / GAIA-Z / GAIA-A on torchvision ResNet-50 at
    224 px, per (channels_last, bf16) variant, plus GAIA-Z exactness of each variant."""
    base = load_model("resnet50", pretrained=False, device=device)
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(batch, 3, 224, 224, generator=generator).to(device)
    labels = torch.randint(0, 1000, (batch,), generator=generator).to(device)
    rows, checks = [], []
    for channels_last, bf16 in variants:
        model = copy.deepcopy(base)
        xv = x
        if channels_last:
            model = model.to(memory_format=torch.channels_last)
            xv = x.contiguous(memory_format=torch.channels_last)
        label = ("channels_last" if channels_last else "contiguous") + ("+bf16" if bf16 else "+fp32")

        def under_autocast(fn):
            def run():
                with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
                    return fn()
            return run

        def train():
            model.train()
            try:
                training_step(model, xv, labels)
            finally:
                model.eval()

        methods = {
            "forward": lambda: forward_only(model, xv),
            "train_step": train,
            "gaia_z": lambda: gaia.gaia_z(model, xv),
            "gaia_a": lambda: gaia.gaia_a(model, xv),
        }
        timings = time_interleaved({m: under_autocast(fn) for m, fn in methods.items()},
                                   repeats, warmup, device)
        for method, times in timings.items():
            median = statistics.median(times)
            rows.append(dict(variant=label, method=method, batch=batch, median_s=median,
                             images_per_s=batch / median))
        model.zero_grad(set_to_none=True)
        if channels_last or bf16:
            checks.append(dict(variant=label, **zero_counts_exactness(base, x, channels_last, bf16)))
    return rows, checks


# --------------------------------------------------------------------------- interaction


def bench_interaction(n_samples: int, n_layers: int, n_inner: int, repeats: int, seed: int = 0) -> list[dict]:
    """What the app recomputes from cached arrays (no model), ID and OOD halves of
    ``n_samples``: (a) threshold move, (b) layer-subset change."""
    rng = np.random.default_rng(seed)
    n_id = n_samples // 2
    n_ood = n_samples - n_id
    channel_counts = rng.integers(16, 512, n_layers)
    inner_counts = rng.integers(64, 512, n_inner)

    def dataset(n, shift):
        return dict(
            zero=rng.random((n, n_layers)) * channel_counts * (0.5 + shift),
            avg=rng.random((n, n_inner)) * inner_counts,
            out=rng.random(n) + 0.5,
        )

    id_data, ood_data = dataset(n_id, 0.0), dataset(n_ood, 0.1)
    id_scores = gaia.gaia_z_from_partials(id_data["zero"], channel_counts)
    ood_scores = gaia.gaia_z_from_partials(ood_data["zero"], channel_counts)
    edges = metrics.shared_edges([id_scores, ood_scores])
    thresholds = np.quantile(id_scores, np.linspace(0.05, 0.95, max(repeats, 3)))

    def move_threshold(t):
        metrics.confusion_at_threshold(id_scores, ood_scores, t)
        metrics.binned_histogram(id_scores, edges)
        metrics.binned_histogram(ood_scores, edges)

    masks = [rng.random(n_layers) < 0.6 for _ in range(max(repeats, 3))]
    inner_masks = [rng.random(n_inner) < 0.6 for _ in range(max(repeats, 3))]
    for m, im in zip(masks, inner_masks):
        m[0] = im[0] = True

    def change_layers(mask, inner_mask):
        z_id = gaia.gaia_z_from_partials(id_data["zero"], channel_counts, mask)
        z_ood = gaia.gaia_z_from_partials(ood_data["zero"], channel_counts, mask)
        a_id = gaia.gaia_a_from_partials(id_data["avg"], inner_counts, id_data["out"], inner_mask)
        a_ood = gaia.gaia_a_from_partials(ood_data["avg"], inner_counts, ood_data["out"], inner_mask)
        metrics.evaluate_scores(z_id, z_ood)
        metrics.evaluate_scores(a_id, a_ood)

    cpu = torch.device("cpu")
    results = []
    for name, fn, args in (
        ("move_threshold", move_threshold, [(t,) for t in thresholds]),
        ("change_layers", change_layers, list(zip(masks, inner_masks))),
    ):
        it = iter(args * 2)
        times = time_median(lambda: fn(*next(it)), repeats, 1, cpu)
        median = statistics.median(times)
        results.append(dict(action=name, samples=n_samples, median_s=median,
                            target_s=INTERACTION_TARGET_S, passed=median < INTERACTION_TARGET_S))
    return results


# --------------------------------------------------------------------------- reporting


def machine_info(threads: int) -> dict:
    cpu_model = platform.processor() or "unknown"
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, timeout=5).stdout
        for line in out.splitlines():
            if line.startswith("Model name:"):
                cpu_model = line.split(":", 1)[1].strip()
    except (OSError, subprocess.SubprocessError):
        pass
    info = dict(date=_dt.datetime.now().isoformat(timespec="seconds"), cpu=cpu_model,
                cpu_threads=threads, torch=torch.__version__, python=platform.python_version())
    if hasattr(os, "getloadavg"):  # other processes on the cores make timings noisy
        info["load_average_1min"] = round(os.getloadavg()[0], 2)
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name()
    return info


def print_rows(rows: list[Row], info: dict) -> None:
    print(f"\n== {info['model']} on {info['device']} (batch {info['batch']}, "
          f"{info['image_size']} px, {info['weights']}, {info['norm_layers']} norm layers; "
          f"naive vs gaia_z max |diff| = {info['naive_vs_gaia_z_max_abs_diff']:.2e})")
    print(f"{'method':<16}{'median ms':>12}{'x forward':>11}{'images/s':>11}{'faults/call':>13}")
    for row in rows:
        print(f"{row.method:<16}{row.median_s * 1e3:>12.1f}{row.ratio:>10.2f}x{row.images_per_s:>11.1f}"
              f"{row.page_faults:>13.0f}")


def check_targets(rows: list[Row], info: dict, threads: int) -> list[dict]:
    setting = dict(device=info["device"], threads=threads, model=info["model"], batch=info["batch"])
    if info["model"] != "resnet20" or info["device"] != "cpu":
        return []
    note = "" if setting == TARGET_SETTING else " (targets are for CPU, 2 threads, batch 128)"
    results = []
    print(f"targets{note}:")
    for row in rows:
        if row.method in RATIO_TARGETS:
            limit = RATIO_TARGETS[row.method]
            passed = row.ratio <= limit
            results.append(dict(method=row.method, ratio=row.ratio, target=limit, passed=passed,
                                target_setting=setting == TARGET_SETTING))
            print(f"  {row.method:<14} {row.ratio:5.2f}x <= {limit:.1f}x  {'PASS' if passed else 'MISS'}")
    return results


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", choices=("cpu", "cuda", "all"), default="all",
                        help="'all' = CPU plus CUDA when present (default)")
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads (default 2)")
    parser.add_argument("--repeats", type=int, default=None,
                        help="timed calls per method (default: 7 for resnet20, 3 for 224-px models)")
    parser.add_argument("--warmup", type=int, default=1, help="untimed calls before timing (default 1)")
    parser.add_argument("--models", default=DEFAULT_MODELS,
                        help=f"comma list of {','.join(MODEL_SPECS)} (default {DEFAULT_MODELS})")
    parser.add_argument("--batch", type=int, default=None, help="batch size for every model (default per model)")
    parser.add_argument("--random-init", action="store_true",
                        help="random weights for ResNet-20 too (default: shared checkpoint when present)")
    parser.add_argument("--fit-batches", type=int, default=3,
                        help="random batches of 128 images to fit the fitted methods on (default 3; "
                             "it sets KNN's and NNGuide's bank size)")
    parser.add_argument("--interaction-samples", type=int, default=200_000)
    parser.add_argument("--no-interaction", action="store_true")
    parser.add_argument("--gpu-batch", type=int, default=64, help="ResNet-50 throughput batch on CUDA")
    parser.add_argument("--channels-last", action="store_true",
                        help="also time channels_last and check GAIA-Z exactness under it")
    parser.add_argument("--bf16", action="store_true",
                        help="also time bf16 autocast and check GAIA-Z exactness under it")
    parser.add_argument("--variant-check", action="store_true",
                        help="run the channels_last/bf16 exactness check on the CPU too (ResNet-20)")
    parser.add_argument("--quick", action="store_true",
                        help="1 repeat, 1 fit batch, 20,000 interaction samples (smoke runs)")
    parser.add_argument("--default-malloc", action="store_true",
                        help="leave glibc's malloc thresholds at their defaults (the CLI and app "
                             "raise them: gaia_viz.allocator); default: raised, as they run")
    parser.add_argument("--json", type=Path, default=None, help="write all results to this JSON file")
    args = parser.parse_args(argv)
    if args.quick:
        args.repeats = 1 if args.repeats is None else args.repeats
        args.fit_batches = 1
        args.interaction_samples = min(args.interaction_samples, 20_000)
    unknown = [m for m in args.models.split(",") if m.strip() not in MODEL_SPECS]
    if unknown:
        parser.error(f"unknown model(s) {unknown}; choose from {', '.join(MODEL_SPECS)}")
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    malloc_retained = False if args.default_malloc else retain_freed_memory()
    devices = []
    if args.device in ("cpu", "all"):
        devices.append(torch.device("cpu"))
    if args.device in ("cuda", "all") and torch.cuda.is_available():
        devices.append(torch.device("cuda"))
    if args.device == "cuda" and not devices:
        print("CUDA requested but torch.cuda.is_available() is False", file=sys.stderr)
        return 2

    info = machine_info(args.threads)
    print(f"gaia-viz scoring benchmark  {info['date']}")
    print(f"cpu: {info['cpu']}, {args.threads} torch threads; torch {info['torch']}"
          + (f"; gpu: {info['gpu']}" if "gpu" in info else "; no CUDA device")
          + (f"; load average {info['load_average_1min']}" if "load_average_1min" in info else ""))
    info["malloc"] = "freed memory retained (gaia_viz.allocator)" if malloc_retained else "default"
    print(f"malloc: {info['malloc']}")
    report: dict = dict(machine=info, args={k: str(v) for k, v in vars(args).items()},
                        models=[], rows=[], targets=[], interaction=[], gpu=[], exactness=[])

    for device in devices:
        for key in [m.strip() for m in args.models.split(",")]:
            spec = MODEL_SPECS[key]
            repeats = args.repeats or spec.repeats
            rows, model_info = bench_model(spec, device, args.batch or spec.batch, repeats,
                                           args.warmup, args.fit_batches, args.random_init)
            print_rows(rows, model_info)
            report["models"].append(model_info)
            report["rows"].extend(asdict(r) for r in rows)
            report["targets"].extend(check_targets(rows, model_info, args.threads))

    variants = [(False, False)]
    if args.channels_last:
        variants.append((True, False))
    if args.bf16:
        variants.append((False, True))
    if args.channels_last and args.bf16:
        variants.append((True, True))
    for device in devices:
        if device.type != "cuda":
            continue
        print(f"\n== ResNet-50, 224 px, batch {args.gpu_batch} on {torch.cuda.get_device_name(device)}")
        rows, checks = bench_variant_throughput(device, args.gpu_batch, args.repeats or 10,
                                                max(args.warmup, 2), variants)
        print(f"{'variant':<22}{'method':<12}{'median ms':>11}{'images/s':>11}")
        for row in rows:
            print(f"{row['variant']:<22}{row['method']:<12}{row['median_s'] * 1e3:>11.1f}{row['images_per_s']:>11.0f}")
        for check in checks:
            print(f"GAIA-Z under {check['variant']}: {'exact' if check['exact'] else 'NOT exact'} "
                  f"(differing channel ratios {check['differing_channel_fraction']:.4%}, "
                  f"max |score diff| {check['score_max_abs_diff']:.2e})")
        report["gpu"].extend(dict(device=torch.cuda.get_device_name(device), **r) for r in rows)
        report["exactness"].extend(dict(device="cuda", **c) for c in checks)

    if args.variant_check:
        model, _ = load_bench_model(MODEL_SPECS["resnet20"], args.random_init, torch.device("cpu"))
        x = torch.randn(args.batch or 32, 3, 32, 32, generator=torch.Generator().manual_seed(0))
        print("\n== GAIA-Z exactness on CPU (ResNet-20)")
        for channels_last, bf16 in [(True, False), (False, True), (True, True)]:
            check = zero_counts_exactness(model, x, channels_last, bf16)
            print(f"channels_last={channels_last!s:<5} bf16={bf16!s:<5} "
                  f"{'exact' if check['exact'] else 'NOT exact'} "
                  f"(differing {check['differing_channel_fraction']:.4%}, "
                  f"max |score diff| {check['score_max_abs_diff']:.2e})")
            report["exactness"].append(dict(device="cpu", **check))

    if not args.no_interaction:
        print(f"\n== interaction speed ({args.interaction_samples:,} cached samples, ID/OOD halves, "
              f"20 GAIA-Z layers, 10 GAIA-A layers)")
        results = bench_interaction(args.interaction_samples, 20, 10, max(args.repeats or 7, 3))
        for r in results:
            print(f"  {r['action']:<16}{r['median_s'] * 1e3:8.1f} ms  < {r['target_s'] * 1e3:.0f} ms  "
                  f"{'PASS' if r['passed'] else 'MISS'}")
        report["interaction"] = results

    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(report, indent=2))
        print(f"\nresults written to {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
