"""Distributed evaluation (torchrun, gloo on the CPU): two ranks give the scores of one
process exactly; a rank killed mid-run loses only the chunk it was scoring and the same
command resumes from the run cache.

Every run here is the real entry point, ``python -m gaia_viz evaluate``, on the demo model
with fitted methods (so the fitted state travels from rank 0): under ``torchrun``, or, for
the kill and the rerun, two ranks started with the environment torchrun gives them (one
torchrun start-up less: the tests stay short on two cores).
"""

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from gaia_viz import distributed, sweep
from gaia_viz.errors import DataError, GaiaVizError

from support import ROOT
METHODS = "gaia_z,gaia_a,msp,energy,odin,knn,mahalanobis,react"
CHUNK, SAMPLES, BATCH = 12, 48, 8
DATASETS = ("id", "faces", "noise")  # the CLI names the ID set "id"
TASKS = [(name, start) for name in DATASETS for start in range(0, SAMPLES, CHUNK)]  # the plan of a fresh run
TIMEOUT = 240

# Rank 1 of the kill test: SIGKILLed by itself while scoring its third chunk, after two.
KILLED_RANK = """
import os, signal, sys
from gaia_viz import cli
from gaia_viz.sweep import scoring

real, calls = scoring.score_range, []

def dies_on_third_chunk(*args, **kwargs):
    calls.append(1)
    if len(calls) == 3:
        os.kill(os.getpid(), signal.SIGKILL)
    return real(*args, **kwargs)

scoring.score_range = dies_on_third_chunk
sys.exit(cli.main(sys.argv[1:]))
"""


def environment(**extra) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK")}
    env.update(OMP_NUM_THREADS="1", PYTHONPATH=str(ROOT), **extra)
    return env


@pytest.fixture(scope="module")
def fit_folder(tmp_path_factory):
    """100 demo training digits as PNG files in class folders (a small fit set)."""
    from gaia_viz.demo import demo_id_set

    train = demo_id_set("train")
    root = tmp_path_factory.mktemp("fit")
    for i in range(0, len(train), len(train) // 100):
        label = int(train.labels[i])
        (root / str(label)).mkdir(exist_ok=True)
        Image.fromarray(train.images[i]).save(root / str(label) / f"{i:04d}.png")
    return root


def evaluate_args(fit_folder, cache: Path, out: Path, workers: int) -> list[str]:
    return ["evaluate", "--model", "demo", "--id", "demo:digits", "--ood", "faces=demo:faces",
            "--ood", "noise=demo:noise", "--fit", f"folder:{fit_folder}", "--methods", METHODS,
            "--max-samples", str(SAMPLES), "--chunk-size", str(CHUNK), "--batch-size", str(BATCH),
            "--workers", str(workers), "--cache-dir", str(cache), "--out", str(out), "--quiet"]


def torchrun(args: list[str]) -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
               "-m", "gaia_viz", *args]
    return subprocess.run(command, cwd=ROOT, env=environment(), capture_output=True, text=True, timeout=TIMEOUT)


@pytest.fixture(scope="module")
def one_process(fit_folder, tmp_path_factory):
    """The reference: the same evaluation in one process, loading in it (--workers 0)."""
    base = tmp_path_factory.mktemp("one")
    done = subprocess.run([sys.executable, "-m", "gaia_viz",
                           *evaluate_args(fit_folder, base / "cache", base / "out", workers=0)],
                          cwd=ROOT, env=environment(), capture_output=True, text=True, timeout=TIMEOUT)
    assert done.returncode == 0, done.stderr[-3000:]
    return base / "out"


def metrics_of(out: Path) -> dict:
    return json.loads((out / "metrics.json").read_text())


def test_two_gloo_ranks_give_the_scores_of_one_process(fit_folder, one_process, tmp_path):
    done = torchrun(evaluate_args(fit_folder, tmp_path / "cache", tmp_path / "out", workers=1))
    assert done.returncode == 0, done.stderr[-3000:]
    assert (tmp_path / "out" / "scores.csv").read_bytes() == (one_process / "scores.csv").read_bytes()
    two, one = metrics_of(tmp_path / "out"), metrics_of(one_process)
    assert two["methods"] == one["methods"]
    assert two["config"]["world_size"] == 2 and one["config"]["world_size"] == 1
    ranks = two["config"]["timing"]["ranks"]
    assert [r["rank"] for r in ranks] == [0, 1] and all(r["chunks"] == len(TASKS) // 2 for r in ranks)
    assert two["config"]["timing"]["scoring"]["images"] == SAMPLES * len(DATASETS)
    assert done.stdout.count("FPR95") == 1  # only rank 0 reports


def chunk_files(cache: Path) -> dict[tuple[str, str, int], tuple[int, int]]:
    """``(entry, dataset, start) -> (inode, mtime_ns)`` of every chunk in the run cache."""
    found = {}
    for path in cache.rglob("chunk-*.npz"):
        meta = json.loads((path.parent / "meta.json").read_text())
        stat = path.stat()
        found[(meta["entry"], meta["dataset"]["name"], int(path.stem.split("-")[1]))] = (stat.st_ino, stat.st_mtime_ns)
    return found


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_ranks(args: list[str], killed_rank: int | None = None) -> list[subprocess.Popen]:
    """Two ranks of ``python -m gaia_viz`` with the environment torchrun gives them
    (``killed_rank`` runs KILLED_RANK instead, the same entry point with a kill inside)."""
    rendezvous = dict(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(free_port()), WORLD_SIZE="2")
    return [subprocess.Popen([sys.executable, *(["-c", KILLED_RANK] if rank == killed_rank else ["-m", "gaia_viz"]),
                              *args], cwd=ROOT, env=environment(RANK=str(rank), LOCAL_RANK=str(rank), **rendezvous),
                             stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
            for rank in (0, 1)]


def test_a_killed_rank_loses_only_its_unfinished_chunk_and_the_rerun_resumes(fit_folder, one_process, tmp_path):
    cache, out = tmp_path / "cache", tmp_path / "out"
    args = evaluate_args(fit_folder, cache, out, workers=1)
    ranks = start_ranks(args, killed_rank=1)
    try:
        assert ranks[1].wait(timeout=TIMEOUT) == -signal.SIGKILL, ranks[1].stderr.read().decode()[-3000:]
    finally:
        ranks[0].kill()  # as torchrun stops the other ranks when one dies
        ranks[0].wait(timeout=60)
    kept = chunk_files(cache)
    entries = {entry for entry, _, _ in kept}
    rank1 = TASKS[1::2]  # its share of the plan, in order: two finished, the third being scored
    for entry in entries:
        assert {(entry, *task) for task in rank1} & set(kept) == {(entry, *task) for task in rank1[:2]}
    assert not (out / "metrics.json").exists()

    started = time.time_ns()
    ranks = start_ranks(args)  # the same command again
    for rank in ranks:
        assert rank.wait(timeout=TIMEOUT) == 0, rank.stderr.read().decode()[-3000:]
    after = chunk_files(cache)
    assert all(after[key] == stat for key, stat in kept.items())  # nothing scored before was redone
    assert len(after) == len(TASKS) * len(entries) and all(after[k][1] >= started for k in set(after) - set(kept))
    assert (out / "scores.csv").read_bytes() == (one_process / "scores.csv").read_bytes()
    timing = metrics_of(out)["config"]["timing"]
    finished = len({(d, s) for _, d, s in kept if all((e, d, s) in kept for e in entries)})
    assert timing["cached_images"] == finished * CHUNK


def test_distributed_needs_the_cache_and_its_own_gpu(monkeypatch):
    from gaia_viz.models import load_model
    from gaia_viz.demo import demo_id_set, demo_ood_sets

    two = distributed.DistributedContext(rank=0, world_size=2)
    with pytest.raises(DataError, match="run cache"):
        sweep.evaluate(load_model("demo"), demo_id_set(), {"noise": demo_ood_sets()["noise"]},
                       use_cache=False, distributed=two)
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "1")
    with pytest.raises(GaiaVizError, match="cuda:LOCAL_RANK"):
        distributed.start("cuda:1")
    monkeypatch.setenv("RANK", "two")
    with pytest.raises(GaiaVizError, match="torchrun"):
        distributed.start("cpu")
    monkeypatch.delenv("WORLD_SIZE")  # a stray RANK without WORLD_SIZE is no torchrun job
    assert distributed.start("cpu") == (distributed.SINGLE, "cpu")
    assert distributed.share(list(range(7)), distributed.DistributedContext(rank=1, world_size=3)) == [1, 4]
    state = {"bank": np.arange(3.0)}
    assert distributed.broadcast_object(state, distributed.SINGLE) is state
