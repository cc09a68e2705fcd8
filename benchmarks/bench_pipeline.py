"""Pipeline benchmark: images/s of a whole evaluation, loading included, with loader
workers and with torchrun ranks.

Rows
    workers   DTD textures (shared data, full-size JPEGs) at 224 px through torchvision
              ResNet-18 (random init), the default methods (GAIA-Z, GAIA-A, MSP, Energy),
              ``gaia_viz.sweep.evaluate`` in this process with ``workers`` = each of
              ``--workers``; half the images are the ID set, half the OOD set. Per run:
              images/s of the evaluation, and its own split (RunConfig.timing): loading
              images/s, scoring images/s, seconds the scoring loop waited for a batch.
              Runs go round robin over the worker counts, ``--repeats`` rounds, median.
    ranks     ``python -m gaia_viz evaluate`` as one process vs under
              ``torchrun --standalone --nproc-per-node 2`` (gloo), on the demo (all 2,000
              images) and on CIFAR-10 (ResNet-20 checkpoint, ID ``cifar10/test``, OOD DTD
              center-cropped to 32 px, ``--cifar-samples`` a set), a fresh run cache each
              time, ``--workers 0`` so only the ranks differ: wall seconds of the command
              (start-up included) and the evaluation's own seconds and images/s.

The machine's load average (``os.getloadavg``) is printed before and after every row: on a
shared machine, rerun when it is above the number of cores' worth of your own processes.

Run:  python benchmarks/bench_pipeline.py                       # both rows, about 5 minutes on 2 cores
      python benchmarks/bench_pipeline.py --rows workers --textures 240 --repeats 3
      python benchmarks/bench_pipeline.py --quick --rows workers  # a smoke run
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

from gaia_viz.allocator import retain_freed_memory  # noqa: E402
from gaia_viz.data.sources import open_source, subset  # noqa: E402
from gaia_viz.models import load_model  # noqa: E402
from gaia_viz.settings import data_root, default_workers  # noqa: E402
from gaia_viz.sweep import DEFAULT_METHODS, SweepSettings, evaluate  # noqa: E402


def load_average() -> float:
    return os.getloadavg()[0]


def textures_folder(root: Path | None) -> Path | None:
    folder = root / "textures" / "images" if root else None
    return folder if folder and folder.is_dir() else None


# --------------------------------------------------------------------------- workers row


def workers_row(root: Path, counts: list[int], images: int, batch: int, repeats: int) -> list[dict]:
    """Median over ``repeats`` rounds of an in-process evaluation for each worker count."""
    textures = open_source(f"folder:{textures_folder(root)}", preset="imagenet224", ood_policy="center-crop",
                           name="textures")
    step = max(1, len(textures) // images)  # spread over the classes (the folder is class-sorted)
    chosen = list(range(0, len(textures), step))[:images]
    id_set = subset(textures, chosen[0::2], name="dtd_a")
    ood_set = subset(textures, chosen[1::2], name="dtd_b")
    torch.manual_seed(0)
    model = load_model("resnet18", pretrained=False)
    warm = SweepSettings(methods=list(DEFAULT_METHODS), batch_size=batch, workers=0)
    evaluate(model, subset(id_set, range(min(4, len(id_set)))), {"b": subset(ood_set, range(2))}, warm,
             use_cache=False)  # thread pools and first-call costs, untimed
    runs: dict[int, list[dict]] = {count: [] for count in counts}
    reference = None
    for _ in range(repeats):
        for count in counts:
            settings = SweepSettings(methods=list(DEFAULT_METHODS), batch_size=batch, workers=count)
            before = load_average()
            ev = evaluate(model, id_set, {"dtd_b": ood_set}, settings, use_cache=False)
            if reference is None:
                reference = ev.scores
            elif not ev.scores.equals(reference):
                raise SystemExit(f"workers={count} changed the scores: a bug")
            timing = ev.config.timing
            runs[count].append(dict(
                seconds=ev.seconds, images_per_s=len(ev.scores) / ev.seconds, load_before=before,
                loading_images_per_s=timing["loading"]["images_per_s"],
                scoring_images_per_s=timing["scoring"]["images_per_s"],
                wait_seconds=timing["loading"]["wait_seconds"]))
    rows = []
    for count in counts:
        median = {key: statistics.median(run[key] for run in runs[count])
                  for key in ("seconds", "images_per_s", "loading_images_per_s", "scoring_images_per_s",
                              "wait_seconds")}
        rows.append(dict(row="workers", workers=count, images=len(id_set) + len(ood_set), batch=batch,
                         runs=runs[count], **median))
    return rows


# --------------------------------------------------------------------------- ranks row


def cli_run(args: list[str], ranks: int) -> dict:
    """One ``python -m gaia_viz evaluate`` (``ranks`` > 1: under torchrun) in a fresh cache."""
    with tempfile.TemporaryDirectory(prefix="bench-pipeline-") as tmp:
        full = [*args, "--cache-dir", f"{tmp}/cache", "--out", f"{tmp}/out", "--quiet", "--workers", "0"]
        launcher = ([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", str(ranks)]
                    if ranks > 1 else [sys.executable])
        env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK")}
        before = load_average()
        started = time.perf_counter()
        done = subprocess.run([*launcher, "-m", "gaia_viz", *full], cwd=REPO_ROOT, env=env,
                              capture_output=True, text=True)
        wall = time.perf_counter() - started
        if done.returncode != 0:
            raise SystemExit(f"benchmark run failed ({' '.join(full[:6])} ...):\n{done.stderr[-2000:]}")
        metrics = json.loads(Path(f"{tmp}/out/metrics.json").read_text())
    timing = metrics["config"]["timing"]
    images = timing["scoring"]["images"] + timing["cached_images"]
    return dict(ranks=ranks, wall_seconds=wall, evaluation_seconds=timing["total_seconds"], images=images,
                images_per_s=images / timing["total_seconds"], wall_images_per_s=images / wall,
                world_size=metrics["config"]["world_size"], load_before=before)


def ranks_rows(root: Path | None, cifar_samples: int, repeats: int, demo_samples: int | None) -> list[dict]:
    setups = {"demo": ["evaluate", "--demo", *(["--max-samples", str(demo_samples)] if demo_samples else [])]}
    if root and (root / "cifar10" / "test").is_dir() and textures_folder(root):
        setups["cifar10"] = ["evaluate", "--model", "cifar_resnet20", "--checkpoint",
                             str(root / "models" / "cifar10_resnet20.th"), "--id", f"folder:{root / 'cifar10' / 'test'}",
                             "--ood", f"textures=folder:{textures_folder(root)}", "--ood-transform", "center-crop",
                             "--max-samples", str(cifar_samples), "--batch-size", "128"]
    rows = []
    for name, args in setups.items():
        runs: dict[int, list[dict]] = {1: [], 2: []}
        for _ in range(repeats):
            for ranks in (1, 2):
                runs[ranks].append(cli_run(args, ranks))
        for ranks, results in runs.items():
            median = {key: statistics.median(r[key] for r in results)
                      for key in ("wall_seconds", "evaluation_seconds", "images_per_s", "wall_images_per_s")}
            rows.append(dict(row="ranks", setup=name, ranks=ranks, images=results[0]["images"], runs=results,
                             **median))
    return rows


# --------------------------------------------------------------------------- main


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", default="workers,ranks", help="comma-separated: workers, ranks")
    parser.add_argument("--data-root", default=None, help="shared data (default $GAIA_VIZ_DATA_ROOT)")
    parser.add_argument("--workers", default="0,1,2,default",
                        help="worker counts of the workers row; 'default' = gaia_viz.settings.default_workers")
    parser.add_argument("--textures", type=int, default=240, help="DTD images in the workers row (half ID, half OOD)")
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--cifar-samples", type=int, default=2000, help="images a set in the CIFAR-10 ranks row")
    parser.add_argument("--demo-samples", type=int, default=None, help="images a set in the demo ranks row (all)")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--threads", type=int, default=2, help="torch threads of this process (workers row)")
    parser.add_argument("--quick", action="store_true", help="tiny sizes, one round (a smoke run)")
    parser.add_argument("--json", help="write every run to this file")
    args = parser.parse_args(argv)
    unknown = set(args.rows.split(",")) - {"workers", "ranks"}
    if unknown:
        parser.error(f"unknown rows {sorted(unknown)}")
    if args.quick:
        args.textures, args.repeats, args.cifar_samples, args.demo_samples, args.batch = 8, 1, 64, 40, 4
    return args


def print_rows(rows: list[dict]) -> None:
    for row in rows:
        if row["row"] == "workers":
            print(f"workers={row['workers']}  {row['images']} images  {row['seconds']:.1f} s  "
                  f"{row['images_per_s']:.1f} images/s  (loading {row['loading_images_per_s']:.0f} images/s, "
                  f"scoring {row['scoring_images_per_s']:.1f} images/s, waited {row['wait_seconds']:.2f} s)")
        else:
            print(f"{row['setup']} ranks={row['ranks']}  {row['images']} images  wall {row['wall_seconds']:.1f} s "
                  f"({row['wall_images_per_s']:.0f} images/s)  evaluation {row['evaluation_seconds']:.1f} s "
                  f"({row['images_per_s']:.0f} images/s)")


def main(argv=None) -> int:
    args = parse_args(argv)
    retain_freed_memory()
    torch.set_num_threads(args.threads)
    root = Path(args.data_root) if args.data_root else data_root()
    rows = []
    print(f"load average {load_average():.2f} at start; {os.cpu_count()} cores; torch {torch.__version__}")
    if "workers" in args.rows:
        if textures_folder(root) is None:
            print("workers row skipped: no DTD textures under the data root (set GAIA_VIZ_DATA_ROOT)")
        else:
            default = default_workers("cpu")  # after set_num_threads: the rule reads torch's thread count
            counts = list(dict.fromkeys(default if c.strip() == "default" else int(c) for c in args.workers.split(",")))
            print(f"default_workers('cpu') on this machine: {default}")
            rows += workers_row(root, counts, args.textures, args.batch, args.repeats)
            print_rows(rows)
            print(f"load average {load_average():.2f}")
    if "ranks" in args.rows:
        ranked = ranks_rows(root, args.cifar_samples, args.repeats, args.demo_samples)
        print_rows(ranked)
        rows += ranked
        print(f"load average {load_average():.2f}")
    if args.json:
        Path(args.json).write_text(json.dumps(dict(rows=rows, load_end=load_average()), indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
