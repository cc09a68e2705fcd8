"""Command line: ``python -m gaia_viz evaluate ...`` (and ``report``, see gaia_viz.report).

Every user error ends the process with one line on stderr and exit code 2.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Sequence

from gaia_viz.allocator import retain_freed_memory
from gaia_viz.errors import GaiaVizError

EXIT_USAGE = 2


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # one line, exit 2 (argparse prints usage too by default)
        sys.stderr.write(f"error: {message} (see --help)\n")
        raise SystemExit(EXIT_USAGE)


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="python -m gaia_viz", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    ev = commands.add_parser("evaluate", help="score ID and OOD sets with GAIA and baselines")
    ev.add_argument("--demo", action="store_true", help="the embedded offline demo (digits vs faces, textures, ...)")
    ev.add_argument("--model", help="demo, cifar_resnet20..110, gaia_resnet18/34 or a torchvision name")
    ev.add_argument("--checkpoint", help="weights file (.pt/.pth/.th state_dict or .safetensors)")
    ev.add_argument("--num-classes", type=int, help="classes of the model (default: from the checkpoint)")
    ev.add_argument("--id", dest="id_source", help="ID test set: folder:PATH, torchvision:CIFAR10[:test], demo:digits, ...")
    ev.add_argument("--ood", action="append", default=[], metavar="NAME=SOURCE", help="an OOD set (repeatable)")
    ev.add_argument("--fit", dest="fit_source", help="ID training set for ReAct/KNN/Mahalanobis (never the test set)")
    ev.add_argument("--methods", default=None, help="comma-separated; 'all' for every method (default: gaia_z,gaia_a,msp,energy)")
    ev.add_argument("--preset", help="preprocessing preset (default: the model's)")
    ev.add_argument("--ood-transform", choices=("center-crop", "resize"), default=None,
                    help="how OOD images reach the input size (default: center-crop as the GAIA paper; "
                         "resize for the demo, whose OOD images are smaller than its input)")
    ev.add_argument("--layers", help="comma-separated GAIA-Z layers (default: every normalisation layer)")
    ev.add_argument("--batch-size", type=int, default=64)
    ev.add_argument("--device", default=None, help="cpu or cuda (default: cuda when present)")
    ev.add_argument("--data-root", help="root of torchvision datasets / benchmark folders (default $GAIA_VIZ_DATA_ROOT)")
    ev.add_argument("--max-samples", type=int, default=None, help="use at most N samples of each set (deterministic)")
    ev.add_argument("--download", action="store_true", help="allow downloading torchvision datasets/weights")
    ev.add_argument("--cache-dir", help="run cache folder (default $GAIA_VIZ_CACHE_DIR or ~/.cache/gaia-viz)")
    ev.add_argument("--no-cache", action="store_true", help="neither read nor write the run cache")
    ev.add_argument("--out", required=True, help="output folder for metrics.json and scores.csv")
    ev.add_argument("--quiet", action="store_true", help="no progress bar")

    rep = commands.add_parser("report", help="CIFAR-10 benchmark report on real data (see README)")
    rep.add_argument("--data-root", help="folder with cifar10/, textures/ and models/ (default $GAIA_VIZ_DATA_ROOT)")
    rep.add_argument("--out", required=True)
    rep.add_argument("--models", default="cifar_resnet20,cifar_resnet56")
    rep.add_argument("--max-id", type=int, default=None, help="ID test images used (default all)")
    rep.add_argument("--max-ood", type=int, default=None, help="images per OOD set (default all)")
    rep.add_argument("--batch-size", type=int, default=128)
    rep.add_argument("--device", default=None)
    rep.add_argument("--cache-dir")
    rep.add_argument("--quiet", action="store_true")
    return parser


def _device(requested: str | None) -> str:
    import torch

    if requested is None:
        return "cuda" if torch.cuda.is_available() else "cpu"
    if requested not in ("cpu", "cuda") and not requested.startswith("cuda:"):
        raise GaiaVizError(f"unknown device {requested!r}: use cpu or cuda")
    if requested.startswith("cuda") and not torch.cuda.is_available():
        raise GaiaVizError("--device cuda was asked but no CUDA GPU is available")
    return requested


def parse_methods(text: str | None) -> list[str]:
    from gaia_viz.sweep import ALL_METHODS, DEFAULT_METHODS

    if text is None:
        return list(DEFAULT_METHODS)
    if text.strip().lower() == "all":
        return list(ALL_METHODS)
    return [m.strip().lower() for m in text.split(",") if m.strip()]


def _progress_bar(quiet: bool):
    if quiet:
        return None, lambda: None
    from tqdm import tqdm

    bar = tqdm(total=100, unit="%", file=sys.stderr, bar_format="{l_bar}{bar}| {n:.0f}% [{elapsed}]")

    def update(fraction: float, message: str):
        bar.set_description(message[:60])
        bar.n = round(100 * fraction, 1)
        bar.refresh()

    return update, bar.close


def write_outputs(evaluation, out: Path) -> None:
    """``metrics.json`` (CLI schema) and ``scores.csv`` (one row per sample)."""
    out.mkdir(parents=True, exist_ok=True)
    (out / "metrics.json").write_text(json.dumps(evaluation.metrics_json(), indent=2, default=str))
    evaluation.scores.to_csv(out / "scores.csv", index=False)


def format_table(evaluation) -> str:
    table = evaluation.metrics_table()
    table = table[["method", "ood_set", "fpr95", "auroc", "aupr_in", "aupr_out"]].copy()
    for column in ("fpr95", "auroc", "aupr_in", "aupr_out"):
        table[column] = (100 * table[column]).map(lambda v: f"{v:6.2f}")
    header = "FPR95 = % of OOD accepted at 95 % TPR on ID (lower is better); AUROC/AUPR in % (higher is better)"
    return header + "\n" + table.to_string(index=False)


def run_evaluate(args) -> int:

    from gaia_viz.data.presets import PRESETS, id_policy
    from gaia_viz.data.sources import open_source
    from gaia_viz.models import default_preset, load_model
    from gaia_viz.sweep import SweepSettings, evaluate

    device = _device(args.device)
    if args.batch_size < 1:
        raise GaiaVizError("--batch-size must be at least 1")
    if args.demo:
        from gaia_viz.demo import DEMO_PRESET, demo_id_set, demo_ood_sets

        model = load_model("demo", device=device)
        preset = args.preset or DEMO_PRESET
        id_set = demo_id_set("test", preset=preset)
        fit_set = demo_id_set("train", preset=preset)
        args.ood_transform = args.ood_transform or "resize"
        ood_sets = demo_ood_sets(preset=preset, ood_policy=args.ood_transform)
        model_name = "demo"
    else:
        if not args.model or not args.id_source or not args.ood:
            raise GaiaVizError("give --model, --id and at least one --ood NAME=SOURCE (or --demo)")
        model_name = args.model
        args.ood_transform = args.ood_transform or "center-crop"
        model = load_model(args.model, checkpoint=args.checkpoint, num_classes=args.num_classes,
                           device=device, allow_download=args.download)
        preset = args.preset or default_preset(args.model)
        if preset not in PRESETS:
            raise GaiaVizError(f"unknown preset {preset!r}; choose one of {', '.join(PRESETS)}")
        common = dict(preset=preset, data_root=args.data_root, download=args.download)
        id_set = open_source(args.id_source, ood_policy=id_policy(preset), name="id", **common)
        fit_set = (open_source(args.fit_source, ood_policy=id_policy(preset), name="fit", **common)
                   if args.fit_source else None)
        ood_sets = {}
        for item in args.ood:
            name, sep, source = item.partition("=")
            if not sep or not name or not source:
                raise GaiaVizError(f"--ood expects NAME=SOURCE, got {item!r}")
            ood_sets[name] = open_source(source, ood_policy=args.ood_transform, name=name, **common)
    if args.max_samples:
        from gaia_viz.data.sources import limit

        id_set = limit(id_set, args.max_samples)
        ood_sets = {k: limit(v, args.max_samples) for k, v in ood_sets.items()}
    settings = SweepSettings(
        methods=parse_methods(args.methods), batch_size=args.batch_size,
        layers=[s.strip() for s in args.layers.split(",")] if args.layers else None,
    )
    progress, close = _progress_bar(args.quiet)
    try:
        evaluation = evaluate(
            model, id_set, ood_sets, settings, fit_set=fit_set, device=device,
            cache_dir=args.cache_dir, use_cache=not args.no_cache, progress=progress,
            extra_config=dict(model_name=model_name, checkpoint=args.checkpoint, preset=preset,
                              ood_transform=args.ood_transform),
        )
    finally:
        close()
    out = Path(args.out)
    write_outputs(evaluation, out)
    accuracy = evaluation.id_accuracy()
    print(format_table(evaluation))
    if accuracy is not None:
        print(f"ID accuracy (top-1): {100 * accuracy:.2f} %")
    print(f"{len(evaluation.scores):,} images in {evaluation.seconds:.1f} s on {device}; wrote {out}/metrics.json and {out}/scores.csv")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    retain_freed_memory()
    try:
        if args.command == "evaluate":
            return run_evaluate(args)
        from gaia_viz.report import run_report

        return run_report(args)
    except (GaiaVizError, OSError) as exc:
        sys.stderr.write(f"error: {str(exc).splitlines()[0] if str(exc) else type(exc).__name__}\n")
        return EXIT_USAGE
    except KeyboardInterrupt:
        sys.stderr.write("error: interrupted; finished chunks are kept in the run cache\n")
        return 130
