"""Bad input, CLI surface: ``python -m gaia_viz evaluate`` fed bad folders, images and
checkpoints ends with one line on stderr and exit code 2, writes no results; odd but valid
input works. Also: a run killed with SIGKILL mid-evaluation leaves a cache the next run uses.

tests/test_cli.py already covers an unknown model, a missing folder, a bad --ood syntax,
unknown methods, batch size 0, a missing checkpoint, unknown flags and devices and an empty
--ood folder; these are the rest.
"""

from __future__ import annotations

import io
import json
import os
import pickle
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from gaia_viz.demo import DemoCNN

from support import ROOT, run_cli
FAST = ["--methods", "gaia_z,msp", "--max-samples", "12", "--quiet"]


def cli(*args, cache=None, timeout=300):
    return run_cli(*args, cache=cache, timeout=timeout)


# --------------------------------------------------------------------------- inputs


def png(path: Path, value: int = 120, size=(28, 28)):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("L", size, value).save(path)


def truncated_jpeg(path: Path):
    rng = np.random.default_rng(0)
    buffer = io.BytesIO()
    Image.fromarray(rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)).save(buffer, format="JPEG")
    path.write_bytes(buffer.getvalue()[:2000])  # past the header: found only when decoded


def bomb_png(path: Path):
    import struct
    import zlib

    def chunk(kind, body):
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", 50_000, 50_000, 8, 0, 0, 0, 0))
                     + chunk(b"IDAT", zlib.compress(b"\x00" * 64)) + chunk(b"IEND", b""))


class CodeRunner:
    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (Path.touch, (Path(self.marker),))


def cifar20_state(num_classes=10):
    from gaia_viz.models import cifar_resnet

    return cifar_resnet(20, num_classes).state_dict()


def make_ood_folder_with_truncated_jpeg(tmp):
    """A JPEG cut short is skipped and reported (a warning line), not the end of the run."""
    folder = tmp / "ood"
    for i in range(3):
        png(folder / f"{i}.png", 40 * i)
    truncated_jpeg(folder / "cut.jpg")
    return ["--model", "demo", "--id", "demo:digits", "--ood", f"mine={folder}"], {"mine": 3}


def make_ood_folder_of_unreadable_files(tmp):
    folder = tmp / "ood"
    folder.mkdir()
    (folder / "empty.png").write_bytes(b"")
    (folder / "text.png").write_text("a text file renamed .png")
    bomb_png(folder / "bomb.png")
    (folder / "readme.txt").write_text("ignored: not an image extension")
    return ["--model", "demo", "--id", "demo:digits", "--ood", f"mine={folder}"], "3 unreadable image files skipped"


def make_empty_id_tree(tmp):
    (tmp / "id" / "cat").mkdir(parents=True)
    (tmp / "id" / "dog").mkdir()
    return ["--model", "demo", "--id", f"folder:{tmp / 'id'}", "--ood", "n=demo:noise"], "no images found"


def make_text_file_as_ood(tmp):
    (tmp / "scores.png").write_text("not an image")
    return ["--model", "demo", "--id", "demo:digits", "--ood", f"t={tmp / 'scores.png'}"], "not a recognised image"


def make_images_spec_with_a_missing_file(tmp):
    png(tmp / "a.png")
    return (["--model", "demo", "--id", "demo:digits", "--ood", f"x=images:{tmp / 'a.png'},{tmp / 'gone.png'}"],
            "gone.png")


def make_negative_max_samples(tmp):
    return ["--demo", "--max-samples", "-5"], "max_samples must be positive"


def _checkpoint_case(data: bytes, phrase: str, *extra):
    def make(tmp):
        path = tmp / "weights.pth"
        path.write_bytes(data)
        return ["--model", "cifar_resnet20", "--checkpoint", path, *extra,
                "--id", "demo:digits", "--ood", "n=demo:noise"], phrase
    return make


def _saved(obj) -> bytes:
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    return buffer.getvalue()


def _safetensors_int_weights() -> bytes:
    from safetensors.torch import save

    state = cifar20_state()
    state["linear.weight"] = state["linear.weight"].to(torch.int16)
    return save(state)


MARKER = "code_ran_marker"

BAD_CASES = {
    "--ood folder of unreadable files only": make_ood_folder_of_unreadable_files,
    "empty ImageFolder tree as --id": make_empty_id_tree,
    "text file given as --ood image": make_text_file_as_ood,
    "images: list with a missing file": make_images_spec_with_a_missing_file,
    "negative --max-samples": make_negative_max_samples,
    "malicious checkpoint (torch.save)": "malicious-torch",
    "malicious checkpoint (plain pickle)": "malicious-pickle",
    "checkpoint of another architecture": _checkpoint_case(_saved(DemoCNN().state_dict()), "does not fit"),
    "checkpoint with 100 classes for --num-classes 10": _checkpoint_case(
        _saved(cifar20_state(100)), "shape mismatches", "--num-classes", "10"),
    "truncated checkpoint": _checkpoint_case(_saved(cifar20_state())[:5000], "corrupt"),
    "safetensors with int16 weights": _checkpoint_case(_safetensors_int_weights(), "wrong dtypes"),
    "empty checkpoint file": _checkpoint_case(b"", "is empty"),
}


@pytest.mark.filterwarnings("ignore:Detected pickle protocol")
@pytest.mark.parametrize("name", list(BAD_CASES))
def test_bad_input_is_one_line_on_stderr_and_exit_2(tmp_path, name):
    make = BAD_CASES[name]
    marker = tmp_path / MARKER
    if isinstance(make, str):
        payload = {"state_dict": cifar20_state(), "hook": CodeRunner(marker)}
        data = _saved(payload) if make == "malicious-torch" else pickle.dumps(payload, protocol=2)
        make = _checkpoint_case(data, "refused: this checkpoint needs to run code")
    args, phrase = make(tmp_path)
    proc = cli("evaluate", *FAST, *args, "--out", tmp_path / "out", cache=tmp_path / "cache")
    assert proc.returncode == 2, (proc.returncode, proc.stderr[-2000:])
    assert proc.stderr.count("\n") == 1 and proc.stderr.startswith("error: "), proc.stderr[-2000:]
    assert phrase in proc.stderr, proc.stderr
    assert "Traceback" not in proc.stderr
    assert not (tmp_path / "out" / "metrics.json").exists()
    assert not marker.exists()  # the pickle's code never ran


# --------------------------------------------------------------------------- odd but valid


def make_one_class_folder(tmp):
    for i in range(4):
        png(tmp / "ood" / "only_class" / f"{i}.png", 30 * i)
    return ["--model", "demo", "--id", "demo:digits", "--ood", f"one={tmp / 'ood'}"], {"one": 4}


def make_mixed_folder(tmp):
    folder = tmp / "mixed"
    png(folder / "tiny.png", size=(1, 1))
    png(folder / "wide.png", size=(4000, 10))
    Image.new("CMYK", (30, 20), (0, 255, 255, 0)).save(folder / "cmyk.jpg")
    frames = [Image.new("RGB", (12, 12), c) for c in ((0, 0, 255), (255, 0, 0))]
    frames[0].save(folder / "anim.gif", save_all=True, append_images=frames[1:])
    Image.fromarray(np.array([[0, 65535]], dtype=np.uint16)).save(folder / "deep.png")
    (folder / "notes.txt").write_text("skip me")
    (folder / "empty.png").write_bytes(b"")
    return ["--model", "demo", "--id", "demo:digits", "--ood", f"mixed={folder}"], {"mixed": 5}


def make_single_sample(tmp):
    png(tmp / "one.png")
    return ["--model", "demo", "--id", "demo:digits", "--ood", f"single={tmp / 'one.png'}"], {"single": 1}


GOOD_CASES = {
    "one-class --ood folder": make_one_class_folder,
    "folder mixing odd images with other files": make_mixed_folder,
    "single-image OOD set": make_single_sample,
    "truncated JPEG in --ood folder": make_ood_folder_with_truncated_jpeg,
}


@pytest.mark.parametrize("name", list(GOOD_CASES))
def test_odd_but_valid_input_works(tmp_path, name):
    args, sizes = GOOD_CASES[name](tmp_path)
    out = tmp_path / "out"
    proc = cli("evaluate", *args, *FAST, "--no-cache", "--out", out)
    assert proc.returncode == 0, proc.stderr[-2000:]
    scores = pd.read_csv(out / "scores.csv")
    for dataset, size in sizes.items():
        assert (scores.dataset == dataset).sum() == size
    metrics = json.loads((out / "metrics.json").read_text())["methods"]
    for per_set in metrics.values():
        for values in per_set.values():
            assert all(0.0 <= values[k] <= 1.0 for k in ("fpr95", "auroc", "aupr_in", "aupr_out"))


# --------------------------------------------------------------------------- SIGKILL


def chunk_files(cache: Path) -> dict[Path, int]:
    return {p: p.stat().st_mtime_ns for p in cache.rglob("chunk-*.npz")}


def test_sigkill_mid_evaluation_leaves_a_cache_the_next_run_uses(tmp_path):
    cache = tmp_path / "cache"
    # batch 4 -> chunks of 16 samples: 36 chunks over the six demo sets
    args = ["evaluate", "--demo", "--methods", "gaia_z,msp", "--max-samples", "96", "--batch-size", "4",
            "--quiet", "--cache-dir", cache]
    env = dict(os.environ)
    proc = subprocess.Popen([sys.executable, "-m", "gaia_viz", *map(str, args), "--out", tmp_path / "killed"],
                            cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 240
    try:
        while not (cache.exists() and chunk_files(cache)):
            assert proc.poll() is None, f"finished before the kill: {proc.stderr.read()[-2000:]}"
            assert time.monotonic() < deadline, "no chunk written in time"
            time.sleep(0.01)
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.wait(timeout=60)
        proc.stderr.close()
    assert proc.returncode == -signal.SIGKILL
    assert not (tmp_path / "killed" / "metrics.json").exists()
    survivors = chunk_files(cache)
    assert survivors
    # what a kill during a write leaves: a temporary file. It must never be read as a chunk.
    key_dir = next(iter(survivors)).parent
    (key_dir / ".tmp-killed.npz").write_bytes(next(iter(survivors)).read_bytes()[:100])
    np.savez(key_dir / ".tmp-bogus-chunk-000000000-000000016.npz", msp=np.full(16, 1e9))

    resumed = cli(*args, "--out", tmp_path / "resumed")
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    after = chunk_files(cache)
    reused = [p for p, mtime in survivors.items() if after.get(p) == mtime]
    assert reused == list(survivors), "chunks written before the kill were recomputed, not reused"

    clean = cli(*args[:-2], "--no-cache", "--out", tmp_path / "clean")
    assert clean.returncode == 0, clean.stderr[-2000:]
    resumed_scores = pd.read_csv(tmp_path / "resumed" / "scores.csv")
    clean_scores = pd.read_csv(tmp_path / "clean" / "scores.csv")
    pd.testing.assert_frame_equal(resumed_scores, clean_scores, check_exact=False, rtol=1e-9, atol=1e-12)
