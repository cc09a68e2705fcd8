"""Command line: ``python -m gaia_viz evaluate ...`` (and ``report``, see gaia_viz.report).

Every user error ends the process with one line on stderr and exit code 2. ``evaluate``
also runs under ``torchrun --nproc-per-node N [--nnodes M ...] -m gaia_viz evaluate ...``:
the ranks share the chunks (see :mod:`gaia_viz.distributed`) and rank 0 writes the outputs.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from gaia_viz.allocator import retain_freed_memory
from gaia_viz.errors import GaiaVizError, GaiaVizWarning
from gaia_viz.paths import check_allowed, check_path_text, check_text, echo
from gaia_viz.progress import terminal_progress
from gaia_viz.settings import DEFAULT_METHODS

EXIT_USAGE = 2


class _Parser(argparse.ArgumentParser):
    # {action: callable giving its help}, computed only when the help is printed
    late_help: dict = {}

    def error(self, message):  # one line, exit 2 (argparse prints usage too by default)
        sys.stderr.write(f"error: {message} (see --help)\n")
        raise SystemExit(EXIT_USAGE)

    def format_help(self):
        for action, text in self.late_help.items():
            action.help = text()
        return super().format_help()


def _model_help() -> str:
    """``--model``'s help: the catalogue's names (reading it imports the models, hence late)."""
    from gaia_viz.models.catalogue import catalogue_summary

    return f"a catalogue name: {catalogue_summary()} (tv: optional for a torchvision name)"


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="python -m gaia_viz", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    ev = commands.add_parser("evaluate", help="score ID and OOD sets with GAIA and baselines")
    ev.add_argument("--demo", action="store_true", help="the embedded offline demo (digits vs faces, textures, ...)")
    ev.late_help = {ev.add_argument("--model", help="a catalogue name (listed by --help)"): _model_help}
    ev.add_argument("--checkpoint", help="weights file (.pt/.pth/.th/.pth.tar state_dict, .safetensors, or BiT's .npz)")
    ev.add_argument("--num-classes", type=int, help="classes of the model (default: from the checkpoint)")
    ev.add_argument("--id", dest="id_source", help="ID test set: folder:PATH, torchvision:CIFAR10[:test], demo:digits, ...")
    ev.add_argument("--ood", action="append", default=[], metavar="NAME=SOURCE", help="an OOD set (repeatable)")
    ev.add_argument("--fit", dest="fit_source", help="ID training set for ReAct/KNN/Mahalanobis (never the test set)")
    ev.add_argument("--methods", default=None,
                    help=f"comma-separated; 'all' for every method (default: {','.join(DEFAULT_METHODS)})")
    ev.add_argument("--preset", help="preprocessing preset (default: the model's)")
    ev.add_argument("--ood-transform", choices=("center-crop", "resize"), default=None,
                    help="how OOD images reach the input size (default: center-crop as the GAIA paper; "
                         "resize for the demo, whose OOD images are smaller than its input)")
    ev.add_argument("--layers", help="comma-separated GAIA-Z layers (default: every normalisation layer)")
    ev.add_argument("--batch-size", type=int, default=64)
    ev.add_argument("--workers", type=int, default=None,
                    help="loader processes decoding images while scoring (0: in this process; "
                         "default: one per core beyond this one, at most 4)")
    ev.add_argument("--chunk-size", type=int, default=None,
                    help="samples per cached chunk, the unit that is resumed and shared between torchrun ranks "
                         "(default 256)")
    ev.add_argument("--device", default=None, help="cpu or cuda (default: cuda when present)")
    ev.add_argument("--data-root", help="root of torchvision datasets / benchmark folders (default $GAIA_VIZ_DATA_ROOT)")
    ev.add_argument("--max-samples", type=int, default=None, help="use at most N samples of each set (deterministic)")
    ev.add_argument("--download", action="store_true", help="allow downloading torchvision datasets and torchvision/timm weights")
    ev.add_argument("--cache-dir", help="run cache folder (default $GAIA_VIZ_CACHE_DIR or ~/.cache/gaia-viz)")
    ev.add_argument("--no-cache", action="store_true", help="neither read nor write the run cache")
    ev.add_argument("--out", required=True, help="output folder for metrics.json and scores.csv")
    ev.add_argument("--quiet", action="store_true", help="no progress bar")

    rep = commands.add_parser("report", help="CIFAR-10 benchmark report on real data (see README)")
    rep.add_argument("--data-root", help="folder with cifar10/, lsun_resize/, tin_resize/, textures/ and models/ "
                                         "(default $GAIA_VIZ_DATA_ROOT)")
    rep.add_argument("--out", required=True)
    rep.add_argument("--models", default="cifar_resnet20,cifar_resnet56,cifar_densenet_bc100")
    rep.add_argument("--max-samples", type=int, default=None,
                     help="at most N images of the ID set and of every OOD set (deterministic; default all)")
    rep.add_argument("--max-id", type=int, default=None, help="ID test images used (default all, or --max-samples)")
    rep.add_argument("--max-ood", type=int, default=None, help="images per OOD set (default all, or --max-samples)")
    rep.add_argument("--max-fit", type=int, default=None,
                     help="images of cifar10/train-5k the fitted methods fit on (default all 5,000)")
    rep.add_argument("--batch-size", type=int, default=128)
    rep.add_argument("--device", default=None)
    rep.add_argument("--cache-dir")
    rep.add_argument("--quiet", action="store_true")
    return parser


def parse_methods(text: str | None) -> list[str]:
    from gaia_viz.sweep import ALL_METHODS

    if text is None:
        return list(DEFAULT_METHODS)
    if text.strip().lower() == "all":
        return list(ALL_METHODS)
    return [m.strip().lower() for m in text.split(",") if m.strip()]


def write_outputs(evaluation, out: Path) -> None:
    """``metrics.json`` (CLI schema) and ``scores.csv`` (one row per sample), renamed into
    ``out`` together once both are written: a failure leaves the previous pair intact."""
    from gaia_viz.outputs import staged_outputs

    with staged_outputs(out) as stage:
        (stage / "metrics.json").write_text(json.dumps(evaluation.metrics_json(), indent=2, default=str))
        evaluation.scores.to_csv(stage / "scores.csv", index=False)


def format_table(evaluation) -> str:
    """The metrics in %, and below them the chosen methods left out (their reasons are the
    ``warning:`` lines on stderr and ``config.left_out`` in metrics.json)."""
    table = evaluation.metrics_table()
    table = table[["method", "ood_set", "fpr95", "auroc", "aupr_in", "aupr_out"]].copy()
    for column in ("fpr95", "auroc", "aupr_in", "aupr_out"):
        table[column] = (100 * table[column]).map(lambda v: f"{v:6.2f}" if v == v else "   n/a")  # NaN: undefined
    header = "FPR95 = % of OOD accepted at 95 % TPR on ID (lower is better); AUROC/AUPR in % (higher is better)"
    lines = [header, table.to_string(index=False)]
    from gaia_viz.sweep import non_finite_methods

    undefined = non_finite_methods(evaluation)
    if undefined:
        lines.append(f"n/a: scores that are not finite (why: the warning lines and config.notes): {', '.join(undefined)}")
    left_out = evaluation.config.left_out
    if left_out:
        lines.append(f"left out (no numbers; why: the warning lines and config.left_out): {', '.join(left_out)}")
    return "\n".join(lines)


@dataclass
class EvaluationInputs:
    """What ``evaluate``'s arguments name, opened: the model, the data sets and the run record."""

    model: object
    id_set: object
    fit_set: object | None
    ood_sets: dict
    run: object  # gaia_viz.run_config.RunConfig


def _demo_inputs(args, device: str) -> EvaluationInputs:
    from gaia_viz.demo import DEMO_PRESET, demo_id_set, demo_ood_sets
    from gaia_viz.models import load_model
    from gaia_viz.run_config import RunConfig

    if args.ood or args.id_source or args.model or args.checkpoint:
        raise GaiaVizError("--demo scores the demo model on its own sets; it cannot be combined with "
                           "--model, --checkpoint, --id or --ood (drop --demo to score your own data)")
    preset = args.preset or DEMO_PRESET
    policy = args.ood_transform or "resize"  # the demo's OOD images are smaller than its input
    run = RunConfig(model_name="demo", preset=preset, data="demo",
                    fit_source="demo:digits:train", max_samples=args.max_samples)
    return EvaluationInputs(load_model("demo", device=device), demo_id_set("test", preset=preset),
                            demo_id_set("train", preset=preset),
                            demo_ood_sets(preset=preset, ood_policy=policy), run)


def _user_inputs(args, device: str) -> EvaluationInputs:
    import gaia_viz.demo  # noqa: F401 (registers the demo: data scheme)
    from gaia_viz.data.presets import PRESETS, id_policy
    from gaia_viz.data.sources import open_source
    from gaia_viz.models import default_preset, load_model
    from gaia_viz.run_config import RunConfig

    if not args.model or not args.id_source or not args.ood:
        raise GaiaVizError("give --model, --id and at least one --ood NAME=SOURCE (or --demo)")
    if args.checkpoint:
        check_allowed(args.checkpoint, "--checkpoint")
    policy = args.ood_transform or "center-crop"
    model = load_model(args.model, checkpoint=args.checkpoint, num_classes=args.num_classes,
                       device=device, allow_download=args.download)
    preset = args.preset or default_preset(args.model)
    if preset not in PRESETS:
        raise GaiaVizError(f"unknown preset {echo(preset)!r}; choose one of {', '.join(PRESETS)}")
    common = dict(preset=preset, data_root=args.data_root, download=args.download)
    id_set = open_source(args.id_source, ood_policy=id_policy(preset), name="id", **common)
    fit_set = (open_source(args.fit_source, ood_policy=id_policy(preset), name="fit", **common)
               if args.fit_source else None)
    ood_sets, sources = {}, {"id": args.id_source}
    for item in args.ood:
        name, sep, source = item.partition("=")
        if not sep or not name or not source:
            raise GaiaVizError(f"--ood expects NAME=SOURCE, got {echo(item)!r}")
        check_text(name, "--ood name")
        ood_sets[name] = open_source(source, ood_policy=policy, name=name, **common)
        sources[name] = source
    run = RunConfig(model_name=args.model, checkpoint=args.checkpoint, preset=preset, sources=sources,
                    fit_source=args.fit_source, data_root=args.data_root, max_samples=args.max_samples)
    return EvaluationInputs(model, id_set, fit_set, ood_sets, run)


def _report_skipped(evaluation) -> None:
    """One stderr line per data set that lost unreadable files (the list is in metrics.json)."""
    for name, skipped in evaluation.config.skipped.items():
        first = skipped[0]
        sys.stderr.write(f"warning: {len(skipped)} unreadable file(s) skipped in {name} "
                         f"(first: {first[0]}: {first[1]}); all are listed under config.skipped in metrics.json\n")


def _report_notes(evaluation) -> None:
    """One stderr line per warning about the numbers (GAIA-Z without exact zeros, ...); they
    are also in metrics.json under config.notes."""
    for method, reason in evaluation.config.left_out.items():
        sys.stderr.write(f"warning: {method} left out: {reason}\n")
    for note in evaluation.config.notes:
        sys.stderr.write(f"warning: {note}\n")


def check_path_arguments(args) -> None:
    """Refuse unusable path arguments (control characters, over-long) before anything runs;
    ``--data-root`` is also a path that is read (:func:`gaia_viz.paths.check_allowed`)."""
    for flag in ("out", "cache_dir"):
        if getattr(args, flag, None):
            check_path_text(getattr(args, flag), f"--{flag.replace('_', '-')}")
    if args.data_root:  # a missing path, a file or a pipe is no data root: said at once
        resolved = check_allowed(args.data_root, "--data-root")
        if not resolved.is_dir():
            state = "is not a folder" if os.path.lexists(resolved) else "does not exist"
            raise GaiaVizError(f"--data-root {echo(args.data_root)} {state}; give the folder that holds "
                               "the data sets (cifar10/, textures/, models/, torchvision sets)")


def run_evaluate(args) -> int:
    from gaia_viz import distributed
    from gaia_viz.settings import resolve_device

    check_path_arguments(args)
    device = resolve_device(args.device)
    if args.batch_size < 1:
        raise GaiaVizError("--batch-size must be at least 1")
    if args.workers is not None and args.workers < 0:
        raise GaiaVizError("--workers must be 0 (load in this process) or more")
    if args.chunk_size is not None and args.chunk_size < 1:
        raise GaiaVizError("--chunk-size must be at least 1")
    if args.num_classes is not None and args.num_classes < 1:
        raise GaiaVizError(f"--num-classes must be at least 1 (got {args.num_classes})")
    if args.demo and args.num_classes not in (None, 10):
        raise GaiaVizError("--demo scores the 10-class demo model; drop --num-classes")
    context, device = distributed.start(device)
    try:
        return _evaluate_on_rank(args, device, context)
    finally:
        distributed.close(context)


def _evaluate_on_rank(args, device: str, context) -> int:
    from gaia_viz.data.sources import limit
    from gaia_viz.settings import default_workers
    from gaia_viz.sweep import DEFAULT_CHUNK_SIZE, SweepSettings, evaluate

    inputs = _demo_inputs(args, device) if args.demo else _user_inputs(args, device)
    id_set, ood_sets = inputs.id_set, inputs.ood_sets
    if args.max_samples:
        id_set = limit(id_set, args.max_samples)
        ood_sets = {k: limit(v, args.max_samples) for k, v in ood_sets.items()}
    settings = SweepSettings(
        methods=parse_methods(args.methods), batch_size=args.batch_size,
        layers=[s.strip() for s in args.layers.split(",")] if args.layers else None,
        workers=default_workers(device) if args.workers is None else args.workers,
        chunk_size=args.chunk_size or DEFAULT_CHUNK_SIZE,
    )
    progress, close = terminal_progress(args.quiet or not context.is_main)
    try:
        with warnings.catch_warnings():
            # the evaluation records each of these once (config.left_out, config.notes) and they are
            # printed below as one `warning:` line per cause, not as Python warnings
            warnings.simplefilter("ignore", GaiaVizWarning)
            evaluation = evaluate(inputs.model, id_set, ood_sets, settings, fit_set=inputs.fit_set, device=device,
                                  cache_dir=args.cache_dir, use_cache=not args.no_cache, progress=progress,
                                  run=inputs.run, distributed=context)
    finally:
        close()
    if evaluation is None:  # a rank other than 0: its chunks are in the run cache, rank 0 reports
        return 0
    out = Path(args.out)
    write_outputs(evaluation, out)
    _report_skipped(evaluation)
    _report_notes(evaluation)
    accuracy = evaluation.id_accuracy()
    print(format_table(evaluation))
    if accuracy is not None:
        print(f"ID accuracy (top-1): {100 * accuracy:.2f} %")
    print(f"{len(evaluation.scores):,} images in {evaluation.seconds:.1f} s on {device}"
          f"{f' and {context.world_size - 1} more process(es)' if context.active else ''}; "
          f"{_rates_line(evaluation.config.timing)}wrote {out}/metrics.json and {out}/scores.csv")
    return 0


def _rates_line(timing: dict) -> str:
    """``"loading N images/s, scoring M images/s; "`` from the run's timing (what was computed)."""
    rates = [f"{label} {timing[key]['images_per_s']:,.0f} images/s" for key, label in
             (("loading", "loading"), ("scoring", "scoring")) if (timing.get(key) or {}).get("images_per_s")]
    return ", ".join(rates) + "; " if rates else ""


def run_report(args) -> int:
    from gaia_viz.report import REPORT_MODELS, metrics_markdown, open_real_benchmark, run_benchmark, write_report
    from gaia_viz.settings import resolve_device

    check_path_arguments(args)
    device = resolve_device(args.device)
    for flag in ("max_samples", "max_id", "max_ood", "max_fit"):
        if getattr(args, flag) is not None and getattr(args, flag) < 1:
            raise GaiaVizError(f"--{flag.replace('_', '-')} must be at least 1")
    bench = open_real_benchmark(args.data_root, max_id=args.max_id or args.max_samples,
                                max_ood=args.max_ood or args.max_samples, max_fit=args.max_fit)
    models = [m.strip() for m in args.models.split(",") if m.strip()]
    unknown = [m for m in models if m not in REPORT_MODELS]
    if unknown:
        raise GaiaVizError(f"unknown report model(s) {unknown}; choose from {', '.join(REPORT_MODELS)}")
    progress, close = terminal_progress(args.quiet)
    try:
        result = run_benchmark(bench, models, batch_size=args.batch_size, device=device,
                               cache_dir=args.cache_dir, progress=progress)
    finally:
        close()
    out = Path(args.out)
    command = "python -m gaia_viz " + " ".join(sys.argv[1:]) if sys.argv[1:2] == ["report"] else \
        f"python -m gaia_viz report --data-root {bench.data_root} --out {out}"
    write_report(result, out, command)
    for name, entry in result.summary["models"].items():
        print(f"{name}: ID accuracy {100 * (entry['id_accuracy'] or 0):.2f} %, {entry['seconds']:.1f} s")
        for sets in result.summary["tables"].values():
            print(metrics_markdown(entry, sets))
        skipped = entry["config"].get("skipped") or {}
        for dataset, items in skipped.items():
            sys.stderr.write(f"warning: {name}: {len(items)} unreadable file(s) skipped in {dataset}; "
                             f"listed in {out}/skipped.csv\n")
    print(f"wrote {out}/report.md, metrics.json, scores.csv and figures")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    retain_freed_memory()
    try:
        if args.command == "evaluate":
            return run_evaluate(args)
        return run_report(args)
    except (GaiaVizError, OSError) as exc:
        sys.stderr.write(f"error: {str(exc).splitlines()[0] if str(exc) else type(exc).__name__}\n")
        return EXIT_USAGE
    except KeyboardInterrupt:
        sys.stderr.write("error: interrupted; finished chunks are kept in the run cache\n")
        return 130
