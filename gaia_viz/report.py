"""The CIFAR-10 OOD benchmark of the field on real images and real pretrained models, as a report.

``python -m gaia_viz report --data-root PATH --out DIR`` runs every method on each model
and writes ``DIR/report.md``, ``DIR/metrics.json`` (``{"models": {model: <CLI schema>}}``
plus run facts and the tables' averages), ``DIR/scores.csv`` and per-model histogram and ROC
figures as PNG. The tables in ``report.md`` are rendered from the same dictionary that is
written to ``metrics.json``, so the two cannot disagree.

Preset "CIFAR-10 (real)": ID = ``cifar10/test``; the field's OOD sets (the main table,
:data:`FIELD_SETS`): ODIN's LSUN-Resize and TinyImageNet-Resize (32 x 32 already, so no
sizing policy changes them) and DTD textures center-cropped to 32 x 32 (the GAIA paper's
protocol) and resized to 32 x 32 (OpenOOD's); the far-OOD extras (their own table,
:data:`EXTRA_SETS`): the demo's real MNIST digits and LFW faces as 32 x 32 RGB. Models
(:data:`REPORT_MODELS`): the CIFAR ResNet-20/56 checkpoints with the ImageNet normalisation
they were trained with and ODIN's DenseNet-BC-100 with its own (``odin-cifar10``). Fitted
methods (ReAct, KNN, Mahalanobis, ViM, fDBD, NNGuide, DICE) fit on ``cifar10/train-5k``,
never on test data. Each table's average is over that table's sets only.
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
from gaia_viz.models import model_info
from gaia_viz.settings import DEFAULT_METHODS

REAL_PRESET = "cifar-imagenet-norm"  # the ResNets'; each model's own is models.default_preset
# the models with shared CIFAR-10 weights: {name: its checkpoint's file name under <data root>/models}
REPORT_MODELS = {name: Path(model_info(name).checkpoint_file).name
                 for name in ("cifar_resnet20", "cifar_resnet56", "cifar_densenet_bc100")}
MODEL_TITLES = {name: model_info(name).title for name in REPORT_MODELS}
METRIC_COLUMNS = ("fpr95", "auroc")
# OOD sets of the main table (as the field's CIFAR papers use them) and of the extras table
LSUN_RESIZE, TIN_RESIZE = "LSUN-Resize", "TinyImageNet-Resize"
FIELD_SETS = (LSUN_RESIZE, TIN_RESIZE, "textures (center-crop)", "textures (resize)")
EXTRA_SETS = ("mnist digits", "lfw faces")
FIELD_TABLE, EXTRA_TABLE = "field", "far-OOD extras"
# the post-hoc methods the GAIA paper compares with (Chen et al., NeurIPS 2023, Tables 1-2)
PAPER_BASELINES = ("msp", "odin", "energy", "gradnorm", "react")
# published figures, each with where it is printed (no other figure is shown)
PUBLISHED_ANCHORS = (
    dict(model="cifar_densenet_bc100", what="top-1 test error on the lossless CIFAR-10 test set",
         value="4.81 %", source="ODIN's README (github.com/facebookresearch/odin, 'Pre-trained Models')"),
    dict(model="cifar_densenet_bc100", what="FPR95 on TinyImageNet (crop), OOD for CIFAR-10",
         value="baseline (MSP) 34.7 % -> ODIN 4.3 %",
         source="Liang, Li & Srikant, ICLR 2018 (ODIN paper), and ODIN's README"),
)
# the ODIN/Mahalanobis layouts in the shared data (32 x 32 JPEGs) and the sets they become
RESIZED_LAYOUTS = {"lsun_resize": LSUN_RESIZE, "tin_resize": TIN_RESIZE}


@dataclass
class RealBenchmark:
    """The sets of the "CIFAR-10 (real)" preset found under a data root.

    ``id_set``, ``fit_set`` and ``ood_sets`` are seen through :data:`REAL_PRESET`;
    :meth:`sets_for` gives them through another model's preset (same images, same subsets).
    ``tables`` maps a table name to the OOD set names it shows (present ones only)."""

    data_root: Path
    id_set: object
    fit_set: object
    ood_sets: dict
    checkpoints: dict  # model name -> checkpoint path (present ones only)
    tables: dict | None = None
    bases: dict | None = None  # set name -> (whole set, policy, at most this many) to re-open per preset

    def sets_for(self, preset: str) -> tuple[object, object, dict]:
        """``(id_set, fit_set, ood_sets)`` seen through ``preset``."""
        if preset == REAL_PRESET or not self.bases:
            return self.id_set, self.fit_set, self.ood_sets
        return _open_sets(self.bases, preset)


def _open_sets(bases: dict, preset: str) -> tuple[object, object, dict]:
    """Every set of ``bases`` through ``preset`` and its policy, limited to its subset (seeded,
    so every preset sees the same images): ``(id_set, fit_set, ood_sets)``."""
    from gaia_viz.data.image_sets import with_preset
    from gaia_viz.data.sources import limit

    opened = {name: limit(with_preset(base, preset, policy), cap) for name, (base, policy, cap) in bases.items()}
    for name, images in opened.items():
        images.name = name
    return opened.pop("cifar10-test"), opened.pop("cifar10-train-5k"), opened


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
    from gaia_viz.data.sources import find_benchmark_sets, open_source
    from gaia_viz.demo import demo_id_set, demo_ood_sets

    root = resolve_data_root(data_root)
    found = find_benchmark_sets(root)
    missing = [k for k in ("cifar10-test", "cifar10-train-5k") if k not in found]
    if missing:
        raise DataError(f"{root} lacks {', '.join(missing)} (expected cifar10/test and cifar10/train-5k as image folders)")
    bases = {"cifar10-test": (open_source(found["cifar10-test"]["spec"], REAL_PRESET, "resize", name="cifar10-test"),
                              "resize", max_id),
             "cifar10-train-5k": (open_source(found["cifar10-train-5k"]["spec"], REAL_PRESET, "resize",
                                              name="cifar10-train-5k"), "resize", max_fit)}
    field = []
    for key, name in RESIZED_LAYOUTS.items():  # already 32 x 32: both policies are the identity
        if key in found:
            bases[name] = (open_source(found[key]["spec"], REAL_PRESET, "center-crop", name=name),
                           "center-crop", max_ood)
            field.append(name)
    if "textures" in found:
        textures = open_source(found["textures"]["spec"], REAL_PRESET, "center-crop", name="textures")
        for policy in ("center-crop", "resize"):
            bases[f"textures ({policy})"] = (textures, policy, max_ood)
            field.append(f"textures ({policy})")
    for key, entry in found.items():  # the GAIA/ODIN layouts (LSUN, iSUN, ...) when present
        if entry["role"] == "ood" and key not in ("textures", *RESIZED_LAYOUTS) and entry["spec"].startswith("folder:"):
            bases[key] = (open_source(entry["spec"], REAL_PRESET, "center-crop", name=key), "center-crop", max_ood)
            field.append(key)
    # real far-OOD images shipped with the demo, as 32 x 32 RGB (resized: they are smaller than 32)
    bases["mnist digits"] = (demo_id_set("test", preset=REAL_PRESET, ood_policy="resize"), "resize", max_ood)
    bases["lfw faces"] = (demo_ood_sets(preset=REAL_PRESET, ood_policy="resize")["faces"], "resize", max_ood)
    extras = ["mnist digits", "lfw faces"]
    checkpoints = {name: root / "models" / file for name, file in REPORT_MODELS.items()
                   if (root / "models" / file).is_file()}
    id_set, fit_set, ood_sets = _open_sets(bases, REAL_PRESET)
    return RealBenchmark(root, id_set, fit_set, ood_sets, checkpoints,
                         tables={FIELD_TABLE: field, EXTRA_TABLE: extras}, bases=bases)


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


def checkpoint_reported_top1(path: Path) -> float | None:
    """The top-1 accuracy (%) a checkpoint file records about itself (``best_prec1`` of the
    akamaster ResNets, on the lossless CIFAR-10 test set); None when it records none."""
    import torch

    if path.suffix == ".safetensors":
        return None
    try:
        stored = torch.load(path, map_location="cpu", weights_only=True)
    except Exception:  # unreadable here: the model loader reports it with its reason
        return None
    value = stored.get("best_prec1") if isinstance(stored, dict) else None
    return float(value) if isinstance(value, (int, float)) else None


def _model_progress(progress, index: int, count: int, name: str):
    """The sweep's ``progress(fraction, message)`` of one model, as the report's: the bar
    restarts for each model; the message names the model (the sweep's names the set, the
    images done and its ETA)."""
    if progress is None:
        return None
    title = MODEL_TITLES.get(name, name)
    return lambda fraction, message: progress(fraction, f"[{index}/{count}] {title}: {message}")


def run_benchmark(bench: RealBenchmark, models=tuple(REPORT_MODELS),
                  methods=None, batch_size: int = 128, device: str = "cpu", cache_dir=None,
                  progress=None) -> BenchmarkResult:
    """Evaluate every model of ``models`` on ``bench``, each with its own preset
    (:func:`gaia_viz.models.default_preset`): one sweep over the field's and the extra sets."""
    from gaia_viz.models import default_preset, load_model
    from gaia_viz.run_config import RunConfig
    from gaia_viz.sweep import ALL_METHODS, SweepSettings, evaluate

    methods = list(methods or ALL_METHODS)
    tables = bench.tables or {FIELD_TABLE: list(bench.ood_sets)}
    summary = {"models": {}, "date": date.today().isoformat(), "machine": machine_description(device),
               "device": device, "data_root": str(bench.data_root), "tables": tables}
    evaluations = {}
    for index, name in enumerate(models, 1):
        if name not in bench.checkpoints:
            raise DataError(f"checkpoint for {name} not found under {bench.data_root / 'models'}")
        model = load_model(name, checkpoint=bench.checkpoints[name], device=device)
        preset = default_preset(name)
        id_set, fit_set, ood_sets = bench.sets_for(preset)
        settings = SweepSettings(methods=methods, batch_size=batch_size)
        started = time.perf_counter()
        evaluation = evaluate(
            model, id_set, ood_sets, settings, fit_set=fit_set, device=device,
            cache_dir=cache_dir, progress=_model_progress(progress, index, len(models), name),
            run=RunConfig(model_name=name, checkpoint=str(bench.checkpoints[name]), preset=preset,
                          data="CIFAR-10 (real)", data_root=str(bench.data_root),
                          fit_source=f"folder:{bench.data_root / 'cifar10' / 'train-5k'}"),
        )
        seconds = time.perf_counter() - started
        entry = evaluation.metrics_json()
        for per_set in entry["methods"].values():  # an average over all sets mixes the tables
            per_set.pop("average", None)
        entry.update(
            id_accuracy=evaluation.id_accuracy(), seconds=round(seconds, 2),
            images=int(len(evaluation.scores)),
            images_per_second=round(len(evaluation.scores) / max(seconds, 1e-9), 1),
            cache_hits=evaluation.cache_hits, preset=preset,
            checkpoint_reported_top1=checkpoint_reported_top1(Path(bench.checkpoints[name])),
            averages={table: table_averages(entry, sets) for table, sets in tables.items()},
        )
        summary["models"][name] = entry
        evaluations[name] = evaluation
    summary["claim"] = claim_check(summary)
    return BenchmarkResult(summary, evaluations)


# --------------------------------------------------------------------------- tables


def _sets_of(model_entry: dict, sets) -> list[str]:
    """The sets of ``sets`` the entry has numbers for (all of them when ``sets`` is None)."""
    present = next(iter(model_entry["methods"].values()))
    return [s for s in (sets if sets is not None else present) if s in present and s != "average"]


def table_averages(model_entry: dict, sets) -> dict:
    """``{method: {"fpr95", "auroc"}}``: the mean over ``sets`` (the table's own) of each metric."""
    sets = _sets_of(model_entry, sets)
    if not sets:
        return {}
    return {method: {metric: float(np.mean([per_set[s][metric] for s in sets])) for metric in METRIC_COLUMNS}
            for method, per_set in model_entry["methods"].items()
            if all(per_set[s][metric] is not None for s in sets for metric in METRIC_COLUMNS)}


def metrics_frame(model_entry: dict, sets=None):
    """pandas table: one row per method, columns "<set> FPR95 ↓ (%)" and "<set> AUROC ↑ (%)"
    for each of ``sets`` (default all), then the average over them when there are several."""
    import pandas as pd

    from gaia_viz.detectors import METHOD_LABELS

    sets = _sets_of(model_entry, sets)
    averages = table_averages(model_entry, sets) if len(sets) > 1 else {}
    rows = []
    for method, per_set in model_entry["methods"].items():
        row = {"method": METHOD_LABELS.get(method, method)}
        averaged = [("average", averages.get(method, {"fpr95": None, "auroc": None}))] if averages else []
        for ood_set, values in [(s, per_set[s]) for s in sets] + averaged:
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


def metrics_markdown(model_entry: dict, sets=None) -> str:
    """A methods x OOD-sets table of FPR95 and AUROC (in %) for ``sets`` (default all), with
    the average over those sets when there are several; n/a where a metric is undefined."""
    from gaia_viz.detectors import METHOD_LABELS

    sets = _sets_of(model_entry, sets)
    averages = table_averages(model_entry, sets) if len(sets) > 1 else {}
    columns = sets + (["average"] if len(sets) > 1 else [])
    header = "| method | " + " | ".join(f"{s} FPR95↓ / AUROC↑" for s in columns) + " |"
    lines = [header, "|" + "---|" * (len(columns) + 1)]
    for method, per_set in model_entry["methods"].items():
        undefined = {"fpr95": None, "auroc": None}
        values = [per_set[s] for s in sets] + ([averages.get(method, undefined)] if len(sets) > 1 else [])
        cells = [_cell(v) for v in values]
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


def _ranked(model_entry: dict, sets) -> tuple[list[str], dict]:
    """Methods by the average FPR95 over ``sets`` (lowest first) and those averages; a method
    with an undefined metric on one of them (non-finite scores) is not ranked."""
    averages = {m: v["fpr95"] for m, v in table_averages(model_entry, sets).items()}
    return sorted(averages, key=averages.get), averages


def reading(model_entry: dict, sets=None) -> str:
    """A short, honest reading of one table: where GAIA wins and where it does not."""
    sets = _sets_of(model_entry, sets)
    methods = model_entry["methods"]
    ranked, averages = _ranked(model_entry, sets)
    if not ranked:
        return "No method has defined metrics (see the notes)."
    best = ranked[0]
    what = "average FPR95" if len(sets) > 1 else f"FPR95 on {sets[0]}"
    lines = [f"Best {what}: **{best}** ({100 * averages[best]:.1f} %)."]
    for gaia_method in ("gaia_z", "gaia_a"):
        if gaia_method not in averages:
            continue
        wins = [s for s in sets if "msp" in averages and methods[gaia_method][s]["fpr95"] < methods["msp"][s]["fpr95"]]
        losses = [s for s in sets if s not in wins]
        lines.append(f"{gaia_method}: lower FPR95 than MSP on {', '.join(wins) or 'no set'}; "
                     f"not on {', '.join(losses) or 'any other set'}; rank {_rank(gaia_method, averages)} "
                     f"of {len(ranked)} by {what}.")
    return " ".join(lines)


def _rank(method: str, averages: dict) -> int:
    """1 + the methods with a strictly lower value (ties share a rank)."""
    return 1 + sum(v < averages[method] for v in averages.values())


def claim_check(summary: dict) -> dict:
    """Per model, on the field's sets: GAIA-Z's and GAIA-A's rank among the methods by average
    FPR95, and against each of :data:`PAPER_BASELINES` present the two averages and on how
    many sets GAIA's FPR95 is lower. ``{model: {"methods": n, "sets": [...], "gaia_z": {...},
    "gaia_a": {...}}}``; a GAIA score missing from a model is left out."""
    sets_wanted = summary.get("tables", {}).get(FIELD_TABLE)
    claim = {}
    for name, entry in summary["models"].items():
        sets = _sets_of(entry, sets_wanted)
        if not sets:
            continue
        ranked, averages = _ranked(entry, sets)
        methods = entry["methods"]
        per_model = {"methods": len(ranked), "sets": sets}
        for gaia_method in ("gaia_z", "gaia_a"):
            if gaia_method not in averages:  # absent, or undefined metrics (non-finite scores)
                continue
            versus = {}
            for baseline in PAPER_BASELINES:
                if baseline not in averages:
                    continue
                lower = [s for s in sets if methods[gaia_method][s]["fpr95"] < methods[baseline][s]["fpr95"]]
                versus[baseline] = dict(
                    gaia_fpr95=averages[gaia_method], baseline_fpr95=averages[baseline],
                    wins=averages[gaia_method] < averages[baseline], sets_lower=lower)
            per_model[gaia_method] = dict(rank=_rank(gaia_method, averages), average_fpr95=averages[gaia_method],
                                          versus=versus)
        claim[name] = per_model
    return claim


def claim_markdown(claim: dict) -> str:
    """The "does the paper's claim hold here" section, written from :func:`claim_check`."""
    from gaia_viz.detectors import METHOD_LABELS

    if not claim:
        return "No model has numbers on the field's sets, so the claim cannot be checked here."
    baselines = [b for b in PAPER_BASELINES if any(b in c.get(g, {}).get("versus", {})
                                                   for c in claim.values() for g in ("gaia_z", "gaia_a"))]
    header = ("| model | score | rank by average FPR95 | average FPR95 | "
              + " | ".join(f"vs {METHOD_LABELS.get(b, b)}" for b in baselines) + " |")
    lines = ["The GAIA paper (Chen et al., NeurIPS 2023) reports GAIA-Z and GAIA-A with lower FPR95 than "
             "MSP, ODIN, Energy, GradNorm and ReAct on the CIFAR benchmark. Here, on the field's sets "
             "(average FPR95 over them; each cell: GAIA's average vs the baseline's, and on how many sets "
             "GAIA's FPR95 is lower):", "", header, "|" + "---|" * (4 + len(baselines))]
    verdicts = []
    for name, per_model in claim.items():
        title = MODEL_TITLES.get(name, name)
        n_sets = len(per_model["sets"])
        beaten_by_any = []
        for gaia_method in ("gaia_z", "gaia_a"):
            if gaia_method not in per_model:
                continue
            result = per_model[gaia_method]
            cells = []
            for baseline in baselines:
                v = result["versus"].get(baseline)
                if v is None:
                    cells.append("not run")
                    continue
                word = "wins" if v["wins"] else ("ties" if v["gaia_fpr95"] == v["baseline_fpr95"] else "loses")
                cells.append(f"{word}: {100 * v['gaia_fpr95']:.1f} vs {100 * v['baseline_fpr95']:.1f} "
                             f"({len(v['sets_lower'])}/{n_sets} sets)")
            beaten = [b for b in baselines if b in result["versus"] and result["versus"][b]["wins"]]
            beaten_by_any.append((gaia_method, beaten))
            lines.append(f"| {title} | {METHOD_LABELS.get(gaia_method, gaia_method)} | "
                         f"{result['rank']} of {per_model['methods']} | {100 * result['average_fpr95']:.1f} % | "
                         + " | ".join(cells) + " |")
        verdicts.append(_verdict(title, beaten_by_any, baselines))
    return "\n".join(lines + [""] + verdicts)


def _verdict(title: str, beaten_by_any: list, baselines: list) -> str:
    """One sentence per model: does either GAIA score beat every compared baseline?"""
    from gaia_viz.detectors import METHOD_LABELS

    full = [g for g, beaten in beaten_by_any if len(beaten) == len(baselines)]
    if full:
        return (f"- {title}: the claim holds: {' and '.join(METHOD_LABELS[g] for g in full)} "
                f"{'has' if len(full) == 1 else 'have'} a lower average FPR95 than every one of "
                f"{', '.join(METHOD_LABELS[b] for b in baselines)}.")
    parts = [f"{METHOD_LABELS[g]} beats {', '.join(METHOD_LABELS[b] for b in beaten) or 'none of them'}"
             for g, beaten in beaten_by_any]
    return f"- {title}: the claim does not hold in full: " + "; ".join(parts) + " (by average FPR95)."


def anchors_markdown(summary: dict) -> str:
    """Published figures beside ours: each with its source; ours measured in this run."""
    lines = ["| model | figure | published | source | measured here |", "|---|---|---|---|---|"]
    models = summary["models"]

    def top1(entry: dict) -> str:
        if entry.get("id_accuracy") is None:
            return "no labels: not measured"
        return (f"{100 * (1 - entry['id_accuracy']):.2f} % ({100 * entry['id_accuracy']:.2f} % top-1) on the JPEG "
                "`cifar10/test`")

    for name, entry in models.items():
        reported = entry.get("checkpoint_reported_top1")
        if reported is not None:
            lines.append(f"| {MODEL_TITLES.get(name, name)} | top-1 test error on the lossless CIFAR-10 test set | "
                         f"{100 - reported:.2f} % | the checkpoint's own `best_prec1` ({reported:.2f} %) | "
                         f"{top1(entry)} |")
    for anchor in PUBLISHED_ANCHORS:  # printed whether or not the model is in this run
        entry = models.get(anchor["model"])
        methods = (entry or {}).get("methods", {})
        if entry is None:
            measured = "not in this run"
        elif "error" in anchor["what"]:
            measured = top1(entry)
        elif TIN_RESIZE in methods.get("msp", {}) and "odin" in methods:
            measured = (f"MSP {100 * methods['msp'][TIN_RESIZE]['fpr95']:.1f} % -> ODIN "
                        f"{100 * methods['odin'][TIN_RESIZE]['fpr95']:.1f} % on {TIN_RESIZE} (resize, not crop)")
        else:
            measured = "not in this run"
        lines.append(f"| {MODEL_TITLES.get(anchor['model'], anchor['model'])} | {anchor['what']} | {anchor['value']} "
                     f"| {anchor['source']} | {measured} |")
    lines += ["", "Why ours differ: our ID images are the CIFAR-10 test set as JPEG (quality about 75), whose "
              "compression damage lowers the accuracy and spreads the ID scores, so at 95 % ID TPR more OOD "
              "images pass; and our TinyImageNet is ODIN's resized variant (whole images downsampled to "
              "32 x 32), not the cropped one the published FPR95 is for."]
    return "\n".join(lines)


def render_report(result: dict, command: str) -> str:
    tables = result.get("tables") or {FIELD_TABLE: None}
    field_sets = tables.get(FIELD_TABLE) or []
    extra_sets = tables.get(EXTRA_TABLE) or []
    parts = [
        "# GAIA on the CIFAR-10 benchmark (real images; ResNet-20/56 and DenseNet-BC-100)", "",
        f"Date {result['date']}; machine: {result['machine']}; device {result['device']}.", "",
        "Conventions: scores are OOD-high; **FPR95** = % of OOD images accepted as ID at the threshold "
        "that accepts 95 % of ID images (lower is better); **AUROC** in % (higher is better). "
        "ID = `cifar10/test` (JPEG); fitted baselines fit on `cifar10/train-5k`; each model sees its own "
        "preprocessing (the ResNets `cifar-imagenet-norm`, ImageNet mean/std; DenseNet-BC `odin-cifar10`, "
        "ODIN's CIFAR mean/std), at 32 x 32. The field's OOD sets: " + ", ".join(field_sets)
        + " (LSUN-Resize and TinyImageNet-Resize are ODIN's 32 x 32 sets, which no sizing policy changes; "
        "textures center-cropped to 32 x 32 without resizing as the GAIA paper, and resized to 32 x 32 as "
        "OpenOOD). Far-OOD extras, in their own table: " + (", ".join(extra_sets) or "none")
        + " (from the demo, resized to 32 x 32 RGB). Each table's average is over its own sets.", "",
        f"Rerun: `{command}`", "",
        "## Published figures beside ours", "", anchors_markdown(result), "",
        "## Does the paper's claim hold here", "", claim_markdown(result.get("claim") or claim_check(result)), "",
    ]
    for name, entry in result["models"].items():
        config = entry["config"]
        accuracy = entry["id_accuracy"]
        parts += [
            f"## {name}", "",
            (f"ID top-1 accuracy: {100 * accuracy:.2f} %. " if accuracy is not None else "")
            + f"{entry['images']:,} images scored in {entry['seconds']:.1f} s "
            f"({entry['images_per_second']:.0f} images/s, all methods; cache hits: {entry['cache_hits']}).", "",
        ]
        for table, sets in tables.items():
            if not _sets_of(entry, sets):
                continue
            heading = "The field's OOD sets" if table == FIELD_TABLE else "Far-OOD extras"
            parts += [f"### {heading}", "", metrics_markdown(entry, sets), "",
                      "Reading: " + reading(entry, sets), ""]
        parts += [
            f"Settings: checkpoint `{config.get('checkpoint')}`, preset `{entry.get('preset', config.get('preset'))}`, "
            f"GAIA-Z layers: {len(config['layers']['zero'])} normalisation layers, GAIA-A inner layers: "
            f"{len(config['layers']['inner'])} ({_short_list(config['layers']['inner'])}); head layer "
            f"`{config['layers']['head']}`; batch size {config.get('batch_size')}; OOD policies "
            f"{config.get('ood_policies')}; method parameters {json.dumps(config['method_params'])}.", "",
            _skipped_line(config), "",
            *(f"Note: {note}" for note in config.get("notes") or []), "",
            f"![histograms]({name}_histograms.png) ![roc]({name}_roc.png)", "",
        ]
    return "\n".join(parts)


def _short_list(names, shown: int = 6) -> str:
    names = list(names)
    return ", ".join(names) if len(names) <= shown else ", ".join(names[:3]) + ", ..., " + ", ".join(names[-2:])


def _skipped_line(config: dict) -> str:
    skipped = config.get("skipped") or {}
    if not skipped:
        return "No unreadable files were skipped."
    parts = ", ".join(f"{len(items)} in {name}" for name, items in skipped.items())
    return f"Unreadable files skipped (listed in skipped.csv): {parts}."


def save_figures(evaluation, out: Path, name: str, methods=DEFAULT_METHODS) -> None:
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
