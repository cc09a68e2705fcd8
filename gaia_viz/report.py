"""The CIFAR-10 benchmark on real images and real pretrained ResNets, as a report.

``python -m gaia_viz report --data-root PATH --out DIR`` runs every method on each model
and writes ``DIR/report.md``, ``DIR/metrics.json`` (``{"models": {model: <CLI schema>}}``
plus run facts), ``DIR/scores.csv`` and per-model histogram and ROC figures as PNG.
The tables in ``report.md`` are rendered from the same dictionary that is written to
``metrics.json``, so the two cannot disagree.

Preset "CIFAR-10 (real)": ID = ``cifar10/test``; OOD = DTD textures center-cropped to
32 x 32 (the GAIA paper's protocol) and resized to 32 x 32 (OpenOOD's), plus the demo's
real far-OOD images (MNIST digits and LFW faces) as 32 x 32 RGB; models = the CIFAR
ResNet-20/56 checkpoints with the ImageNet normalisation they were trained with. Fitted
methods (ReAct, KNN, Mahalanobis, ViM, fDBD, NNGuide, DICE) fit on ``cifar10/train-5k``,
never on test data.
"""

from __future__ import annotations

import json
import os
import platform
import time
from dataclasses import dataclass
from datetime import date
from pathlib import Path

import numpy as np

from gaia_viz.errors import DataError

REAL_PRESET = "cifar-imagenet-norm"
REPORT_MODELS = {"cifar_resnet20": "cifar10_resnet20.th", "cifar_resnet56": "cifar10_resnet56.th"}
METRIC_COLUMNS = ("fpr95", "auroc")


@dataclass
class RealBenchmark:
    """The sets of the "CIFAR-10 (real)" preset found under a data root."""

    data_root: Path
    id_set: object
    fit_set: object
    ood_sets: dict
    checkpoints: dict  # model name -> checkpoint path (present ones only)


def resolve_data_root(data_root: str | os.PathLike | None) -> Path:
    from gaia_viz.settings import DATA_ROOT_ENV, data_root as default_data_root

    root = data_root or default_data_root()
    if not root:
        raise DataError(f"give --data-root or set {DATA_ROOT_ENV} to the folder holding cifar10/ and textures/")
    root = Path(root).expanduser()
    if not root.is_dir():
        raise DataError(f"data root {root} does not exist")
    return root


def open_real_benchmark(data_root, max_id: int | None = None, max_ood: int | None = None,
                        max_fit: int | None = None) -> RealBenchmark:
    """Open the "CIFAR-10 (real)" sets present under ``data_root`` (errors name what is missing)."""
    from gaia_viz.data.sources import find_benchmark_sets, limit, open_source
    from gaia_viz.demo import demo_id_set, demo_ood_sets

    root = resolve_data_root(data_root)
    found = find_benchmark_sets(root)
    missing = [k for k in ("cifar10-test", "cifar10-train-5k") if k not in found]
    if missing:
        raise DataError(f"{root} lacks {', '.join(missing)} (expected cifar10/test and cifar10/train-5k as image folders)")
    id_set = limit(open_source(found["cifar10-test"]["spec"], REAL_PRESET, "resize", name="cifar10-test"), max_id)
    fit_set = limit(open_source(found["cifar10-train-5k"]["spec"], REAL_PRESET, "resize", name="cifar10-train-5k"), max_fit)
    ood_sets = {}
    if "textures" in found:
        for policy in ("center-crop", "resize"):
            name = f"textures ({policy})"
            ood_sets[name] = limit(open_source(found["textures"]["spec"], REAL_PRESET, policy, name=name), max_ood)
    for key, entry in found.items():
        if entry["role"] == "ood" and key != "textures" and entry["spec"].startswith("folder:"):
            ood_sets[key] = limit(open_source(entry["spec"], REAL_PRESET, "center-crop", name=key), max_ood)
    # real far-OOD images shipped with the demo, as 32 x 32 RGB (resized: they are smaller than 32)
    digits = demo_id_set("test", preset=REAL_PRESET, ood_policy="resize")
    digits.name = "mnist digits"
    ood_sets["mnist digits"] = limit(digits, max_ood)
    faces = demo_ood_sets(preset=REAL_PRESET, ood_policy="resize")["faces"]
    faces.name = "lfw faces"
    ood_sets["lfw faces"] = limit(faces, max_ood)
    checkpoints = {name: root / "models" / file for name, file in REPORT_MODELS.items()
                   if (root / "models" / file).is_file()}
    return RealBenchmark(root, id_set, fit_set, ood_sets, checkpoints)


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine_description(device: str) -> str:
    import torch

    if device.startswith("cuda"):
        return f"{torch.cuda.get_device_name(0)} (CUDA), torch {torch.__version__}"
    return f"{_cpu_name()}, {torch.get_num_threads()} threads, torch {torch.__version__}"


@dataclass
class BenchmarkResult:
    """What :func:`run_benchmark` returns: ``summary`` is the ``metrics.json`` dictionary
    (``{"models": {model: <CLI schema> + run facts}, "date", "machine", ...}``) and
    ``evaluations`` the :class:`gaia_viz.sweep.Evaluation` of each model."""

    summary: dict
    evaluations: dict


def run_benchmark(bench: RealBenchmark, models=("cifar_resnet20", "cifar_resnet56"),
                  methods=None, batch_size: int = 128, device: str = "cpu", cache_dir=None,
                  progress=None) -> BenchmarkResult:
    """Evaluate every model of ``models`` on ``bench``."""
    from gaia_viz.models import load_model
    from gaia_viz.run_config import RunConfig
    from gaia_viz.sweep import ALL_METHODS, SweepSettings, evaluate

    methods = list(methods or ALL_METHODS)
    summary = {"models": {}, "date": date.today().isoformat(), "machine": machine_description(device),
               "device": device, "data_root": str(bench.data_root)}
    evaluations = {}
    for name in models:
        if name not in bench.checkpoints:
            raise DataError(f"checkpoint for {name} not found under {bench.data_root / 'models'}")
        model = load_model(name, checkpoint=bench.checkpoints[name], device=device)
        settings = SweepSettings(methods=methods, batch_size=batch_size)
        started = time.perf_counter()
        evaluation = evaluate(
            model, bench.id_set, bench.ood_sets, settings, fit_set=bench.fit_set, device=device,
            cache_dir=cache_dir, progress=(lambda f, m, _n=name: progress(f, f"{_n}: {m}")) if progress else None,
            run=RunConfig(model_name=name, checkpoint=str(bench.checkpoints[name]), preset=REAL_PRESET,
                          data="CIFAR-10 (real)", data_root=str(bench.data_root),
                          fit_source=f"folder:{bench.data_root / 'cifar10' / 'train-5k'}"),
        )
        seconds = time.perf_counter() - started
        entry = evaluation.metrics_json()
        entry.update(
            id_accuracy=evaluation.id_accuracy(), seconds=round(seconds, 2),
            images=int(len(evaluation.scores)),
            images_per_second=round(len(evaluation.scores) / max(seconds, 1e-9), 1),
            cache_hits=evaluation.cache_hits,
        )
        summary["models"][name] = entry
        evaluations[name] = evaluation
    return BenchmarkResult(summary, evaluations)


# --------------------------------------------------------------------------- rendering


def metrics_frame(model_entry: dict):
    """pandas table: one row per method, columns "<set> FPR95 ↓ (%)" and "<set> AUROC ↑ (%)"."""
    import pandas as pd

    from gaia_viz.detectors import METHOD_LABELS

    rows = []
    for method, per_set in model_entry["methods"].items():
        row = {"method": METHOD_LABELS.get(method, method)}
        for ood_set, values in per_set.items():
            row[f"{ood_set} FPR95 ↓ (%)"] = _percent(values["fpr95"])
            row[f"{ood_set} AUROC ↑ (%)"] = _percent(values["auroc"])
        rows.append(row)
    return pd.DataFrame(rows)


def _percent(value: float | None) -> float:
    """A metric in %, rounded; NaN where it is undefined (None in metrics.json: non-finite scores)."""
    return float("nan") if value is None else round(100 * value, 2)


def _cell(values: dict) -> str:
    if values["fpr95"] is None or values["auroc"] is None:
        return "n/a"
    return f"{100 * values['fpr95']:.2f} / {100 * values['auroc']:.2f}"


def metrics_markdown(model_entry: dict) -> str:
    """A methods x OOD-sets table of FPR95 and AUROC (in %) with the average column."""
    methods = model_entry["methods"]
    sets = [s for s in next(iter(methods.values())) if s != "average"]
    columns = sets + (["average"] if "average" in next(iter(methods.values())) else [])
    header = "| method | " + " | ".join(f"{s} FPR95↓ / AUROC↑" for s in columns) + " |"
    lines = [header, "|" + "---|" * (len(columns) + 1)]
    from gaia_viz.detectors import METHOD_LABELS

    for method, per_set in methods.items():
        cells = [_cell(per_set[s]) for s in columns]
        lines.append(f"| {METHOD_LABELS.get(method, method)} | " + " | ".join(cells) + " |")
    left_out = (model_entry.get("config") or {}).get("left_out") or {}
    for method in left_out:  # chosen, but it cannot run on this model or data: said where its numbers would be
        lines.append(f"| {METHOD_LABELS.get(method, method)} | " + " | ".join("left out" for _ in columns) + " |")
    if left_out:
        lines += ["", *(f"- {METHOD_LABELS.get(m, m)} left out: {reason}" for m, reason in left_out.items())]
    undefined = model_entry.get("undefined") or {}
    if undefined:
        lines += ["", *(f"- n/a: {note}" for note in undefined.values())]
    return "\n".join(lines)


def reading(model_entry: dict) -> str:
    """A short, honest reading: where GAIA wins and where it does not (by average FPR95)."""
    key = "average" if "average" in next(iter(model_entry["methods"].values())) else \
        next(iter(next(iter(model_entry["methods"].values()))))
    # a method with undefined metrics (non-finite scores) is not ranked
    methods = {m: per_set for m, per_set in model_entry["methods"].items()
               if all(v["fpr95"] is not None for v in per_set.values())}
    if not methods:
        return "No method has defined metrics (see the notes)."
    ranked = sorted(methods, key=lambda m: methods[m][key]["fpr95"])
    best = ranked[0]
    lines = [f"Best average FPR95: **{best}** ({100 * methods[best][key]['fpr95']:.1f} %)."]
    for gaia_method in ("gaia_z", "gaia_a"):
        if gaia_method not in methods:
            continue
        wins = [s for s in methods[gaia_method] if s != "average" and "msp" in methods
                and methods[gaia_method][s]["fpr95"] < methods["msp"][s]["fpr95"]]
        losses = [s for s in methods[gaia_method] if s != "average" and s not in wins]
        lines.append(f"{gaia_method}: lower FPR95 than MSP on {', '.join(wins) or 'no set'}; "
                     f"not on {', '.join(losses) or 'any other set'}; rank {ranked.index(gaia_method) + 1} of {len(ranked)} by average FPR95.")
    return " ".join(lines)


def render_report(result: dict, command: str) -> str:
    parts = [
        "# GAIA on CIFAR-10 (real images, real pretrained ResNets)", "",
        f"Date {result['date']}; machine: {result['machine']}; device {result['device']}.", "",
        "Conventions: scores are OOD-high; **FPR95** = % of OOD images accepted as ID at the threshold "
        "that accepts 95 % of ID images (lower is better); **AUROC** in % (higher is better). "
        "ID = `cifar10/test` (JPEG); fitted baselines fit on `cifar10/train-5k`; preprocessing "
        f"`{REAL_PRESET}` (ImageNet mean/std at 32 x 32). OOD sets: textures center-cropped to 32 x 32 "
        "without resizing (GAIA paper) and resized to 32 x 32 (OpenOOD); MNIST digits and LFW faces "
        "from the demo, resized to 32 x 32 RGB.", "",
        f"Rerun: `{command}`", "",
    ]
    for name, entry in result["models"].items():
        config = entry["config"]
        accuracy = entry["id_accuracy"]
        parts += [
            f"## {name}", "",
            f"ID top-1 accuracy: {100 * accuracy:.2f} %. " if accuracy is not None else "",
            f"{entry['images']:,} images scored in {entry['seconds']:.1f} s "
            f"({entry['images_per_second']:.0f} images/s, all methods; cache hits: {entry['cache_hits']}).", "",
            metrics_markdown(entry), "",
            "Reading: " + reading(entry), "",
            f"Settings: checkpoint `{config.get('checkpoint')}`, GAIA-Z layers: {len(config['layers']['zero'])} "
            f"normalisation layers, GAIA-A inner layers: {', '.join(config['layers']['inner'])}; head layer "
            f"`{config['layers']['head']}`; batch size {config.get('batch_size')}; OOD policies "
            f"{config.get('ood_policies')}; method parameters {json.dumps(config['method_params'])}.", "",
            _skipped_line(config), "",
            *(f"Note: {note}" for note in config.get("notes") or []), "",
            f"![histograms]({name}_histograms.png) ![roc]({name}_roc.png)", "",
        ]
    return "\n".join(parts)


def _skipped_line(config: dict) -> str:
    skipped = config.get("skipped") or {}
    if not skipped:
        return "No unreadable files were skipped."
    parts = ", ".join(f"{len(items)} in {name}" for name, items in skipped.items())
    return f"Unreadable files skipped (listed in skipped.csv): {parts}."


def save_figures(evaluation, out: Path, name: str, methods=("gaia_z", "gaia_a", "msp", "energy")) -> None:
    """Score histograms (ID vs each OOD set) and ROC curves as PNG, with matplotlib."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from gaia_viz.metrics import roc_points, shared_edges

    methods = [m for m in methods if m in evaluation.methods]
    datasets = [evaluation.id_name] + evaluation.ood_names

    def method_grid(draw, xlabel: str, ylabel: str, path: Path) -> None:
        fig, axes = plt.subplots(1, len(methods), figsize=(4.2 * len(methods), 3.4), squeeze=False)
        for ax, method in zip(axes[0], methods):
            draw(ax, method)
            ax.set_title(method)
            ax.set_xlabel(xlabel)
            ax.set_ylabel(ylabel)
        axes[0][0].legend(fontsize=7)
        fig.tight_layout()
        fig.savefig(path, dpi=90)
        plt.close(fig)

    def histograms(ax, method):
        arrays = [evaluation.method_scores(method, d) for d in datasets]
        edges = shared_edges(arrays, bins=50)
        for label, values in zip(datasets, arrays):
            ax.hist(np.clip(values, edges[0], edges[-1]), bins=edges, histtype="step", density=True, label=label)

    def roc(ax, method):
        id_scores = evaluation.method_scores(method, evaluation.id_name)
        for ood in evaluation.ood_names:
            fpr, tpr, _ = roc_points(id_scores, evaluation.method_scores(method, ood))
            ax.plot(fpr, tpr, label=ood)
        ax.axhline(0.95, color="grey", lw=0.8, ls="--")

    method_grid(histograms, "OOD score (higher = more OOD)", "density", out / f"{name}_histograms.png")
    method_grid(roc, "FPR (fraction of OOD accepted)", "TPR (fraction of ID accepted)", out / f"{name}_roc.png")


def write_report(result: BenchmarkResult, out: Path, command: str) -> None:
    """``report.md``, ``metrics.json``, ``scores.csv``, ``skipped.csv`` (unreadable files left
    out, with the reason; only when there are any) and the PNG figures."""
    import pandas as pd

    from gaia_viz.outputs import staged_outputs

    with staged_outputs(out) as stage:  # all renamed into out once all are written
        (stage / "metrics.json").write_text(json.dumps(result.summary, indent=2, default=str))
        (stage / "report.md").write_text(render_report(result.summary, command))
        frames, skipped = [], []
        for name, evaluation in result.evaluations.items():
            frames.append(evaluation.scores.assign(model=name))
            skipped += [dict(model=name, dataset=dataset, path=path, reason=reason)
                        for dataset, items in evaluation.config.skipped.items() for path, reason in items]
            save_figures(evaluation, stage, name)
        pd.concat(frames, ignore_index=True).to_csv(stage / "scores.csv", index=False)
        if skipped:
            pd.DataFrame(skipped).to_csv(stage / "skipped.csv", index=False)
