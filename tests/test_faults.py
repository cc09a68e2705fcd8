"""Faults a careful operator or an attacker meets (issue: reliable under load and faults):
zip-bomb checkpoints, swapped cache chunks, half-written outputs, non-UTF-8 file names, links
out of the data root, oversized files and small CLI refusals. Each test failed before its fix."""

from __future__ import annotations

import io
import zipfile

import numpy as np
import pytest
import torch

from gaia_viz.errors import CheckpointError
from gaia_viz.models.checkpoints import load_state_dict_file


def npy_bytes(array: np.ndarray) -> bytes:
    stream = io.BytesIO()
    np.lib.format.write_array(stream, array)
    return stream.getvalue()


def zip_bytes(members: dict[str, bytes]) -> bytes:
    stream = io.BytesIO()
    with zipfile.ZipFile(stream, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    return stream.getvalue()


# --------------------------------------------------------------------------- zip bombs


def test_a_zip_bomb_checkpoint_is_refused_before_anything_is_unpacked(monkeypatch, tmp_path):
    """Was: a 4.2 MB upload (one deflated .npy member, named .safetensors) was sniffed as npz and
    unpacked whole (server memory 0.9 -> 5.0 GB)."""
    monkeypatch.setenv("GAIA_VIZ_MAX_CHECKPOINT_MB", "1")
    bomb = zip_bytes({"weight.npy": npy_bytes(np.zeros(2_000_000, dtype=np.float32))})  # 8 MB unpacked
    assert len(bomb) < 100_000
    saved = io.BytesIO()  # PyTorch's own zip format is budgeted too, its members deflated here
    torch.save({"w": torch.zeros(300_000)}, saved)
    with zipfile.ZipFile(saved) as archive:
        members = {info.filename: archive.read(info) for info in archive.infolist()}
    torch_zip = tmp_path / "model.pt"
    torch_zip.write_bytes(zip_bytes(members))
    assert torch_zip.stat().st_size < 100_000

    def unpacked(*args, **kwargs):
        raise AssertionError("a member was opened: the archive was decompressed")

    monkeypatch.setattr(zipfile.ZipFile, "open", unpacked)
    with pytest.raises(CheckpointError) as refused:
        load_state_dict_file(bomb)  # an upload: bytes, whatever its name
    message = str(refused.value)
    assert "the uploaded checkpoint would unpack to 8.0 MB" in message
    assert "limit of 1.0 MB" in message and "GAIA_VIZ_MAX_CHECKPOINT_MB" in message
    path = tmp_path / "model.safetensors"
    path.write_bytes(bomb)
    with pytest.raises(CheckpointError, match="would unpack to 8.0 MB"):
        load_state_dict_file(path)
    with pytest.raises(CheckpointError, match="would unpack to 1.2 MB, more than the limit of 1.0 MB"):
        load_state_dict_file(torch_zip)


def test_npz_within_the_budget_loads_and_a_header_claiming_more_data_is_refused(monkeypatch):
    monkeypatch.setenv("GAIA_VIZ_MAX_CHECKPOINT_MB", "1")
    state = load_state_dict_file(zip_bytes({"a.npy": npy_bytes(np.arange(6, dtype=np.float32).reshape(2, 3))}))
    assert torch.equal(state["a"], torch.arange(6, dtype=torch.float32).reshape(2, 3))
    lying = npy_bytes(np.zeros(4, dtype=np.float32)).replace(b"(4,)", b"(4000000000000,)")
    with pytest.raises(CheckpointError, match="claims 16,000,000,000,000 bytes of data but holds"):
        load_state_dict_file(zip_bytes({"a.npy": lying}))


# --------------------------------------------------------------------------- swapped cache chunks


class TinyNet(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = torch.nn.Conv2d(1, 6, 3, padding=1)
        self.bn = torch.nn.BatchNorm2d(6)
        self.fc = torch.nn.Linear(6, 3)

    def forward(self, x):
        return self.fc(torch.relu(self.bn(self.conv(x))).mean(dim=(2, 3)))


class TensorSet(torch.utils.data.Dataset):
    def __init__(self, name, n, seed, shift=0.0):
        g = torch.Generator().manual_seed(seed)
        self.name, self.x = name, torch.randn(n, 1, 6, 6, generator=g) + shift
        self.y = torch.randint(0, 3, (n,), generator=g)

    def __len__(self):
        return len(self.x)

    def __getitem__(self, i):
        return self.x[i], int(self.y[i])


def entry_dir(cache, entry: str, dataset: str):
    import json

    return next(meta.parent for meta in cache.glob("*/meta.json")
                if json.loads(meta.read_text())["entry"] == entry
                and json.loads(meta.read_text())["dataset"]["name"] == dataset)


def test_a_chunk_copied_over_another_range_or_into_another_entry_is_recomputed(tmp_path):
    """Was: the checksum did not cover the entry key and sample range, so a chunk copied over
    another range's file changed MSP's FPR95, and an MSP chunk in the energy entry gave a
    ``KeyError: 'energy'`` traceback on every rerun."""
    from gaia_viz import sweep

    torch.manual_seed(0)
    model = TinyNet().eval()
    id_set, ood = TensorSet("id", 30, 1), {"far": TensorSet("far", 20, 2, shift=1.5)}
    settings = sweep.SweepSettings(methods=["msp", "energy"], batch_size=10, chunk_size=10)
    cache = tmp_path / "cache"
    first = sweep.evaluate(model, id_set, ood, settings, cache_dir=cache)
    name = "chunk-{:09d}-{:09d}.npz".format
    msp, energy, outputs = (entry_dir(cache, e, "id") for e in ("msp", "energy", sweep.OUTPUTS))
    (msp / name(10, 20)).write_bytes((msp / name(20, 30)).read_bytes())  # another range's chunk
    (energy / name(0, 10)).write_bytes((msp / name(0, 10)).read_bytes())  # another entry's chunk
    (outputs / name(20, 30)).write_bytes((outputs / name(0, 10)).read_bytes())
    again = sweep.evaluate(model, id_set, ood, settings, cache_dir=cache)
    assert again.scores.equals(first.scores)
    assert again.metrics_table().equals(first.metrics_table())


# --------------------------------------------------------------------------- outputs on a full disk


def test_outputs_on_a_full_disk_leave_the_previous_outputs_intact(tmp_path, monkeypatch, capsys):
    """Was: with --out on a nearly full disk a new metrics.json stood next to a scores.csv cut
    mid-line, and the previous good outputs were gone."""
    import errno

    import pandas as pd

    from gaia_viz.cli import main

    out = tmp_path / "out"
    args = ["evaluate", "--demo", "--max-samples", "12", "--methods", "msp", "--workers", "0", "--quiet",
            "--cache-dir", str(tmp_path / "cache"), "--out", str(out)]
    assert main(args) == 0
    before = {name: (out / name).read_bytes() for name in ("metrics.json", "scores.csv")}
    real = pd.DataFrame.to_csv

    def disk_full(frame, path, *a, **k):
        real(frame.head(3), path, *a, **k)
        with open(path, "a") as handle:
            handle.write("demo:digits,3,0.12")  # cut mid-line
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(pd.DataFrame, "to_csv", disk_full)
    capsys.readouterr()
    assert main([*args[:3], "13", *args[4:]]) == 2  # another evaluation: new numbers
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "No space left on device" in err
    assert {name: (out / name).read_bytes() for name in before} == before
    assert sorted(p.name for p in out.iterdir()) == ["metrics.json", "scores.csv"]  # no staging left
    monkeypatch.setattr(pd.DataFrame, "to_csv", real)
    assert main([*args[:3], "13", *args[4:]]) == 0
    assert (out / "scores.csv").read_bytes() != before["scores.csv"]


# --------------------------------------------------------------------------- names that are not UTF-8


def test_a_file_name_that_is_not_utf8_is_fingerprinted_and_shown_escaped(tmp_path):
    """Was: a UnicodeEncodeError traceback in sweep.dataset_fingerprint (exit 1)."""
    import os

    from PIL import Image

    from gaia_viz import sweep
    from gaia_viz.data.sources import open_source
    from gaia_viz.paths import echo, printable

    folder = tmp_path / "ood"
    folder.mkdir()
    for name in (b"\xffodd.png", b"plain.png"):
        Image.new("RGB", (8, 8), (200, 10, 10)).save(os.path.join(os.fsencode(folder), name), format="PNG")
    images = open_source(f"folder:{folder}", preset="gaia-cifar10", name="ood")
    fingerprint = sweep.dataset_fingerprint(images)
    assert fingerprint["files"]
    (folder / "plain.png").touch()
    os.utime(folder / "plain.png", ns=(1, 1))
    assert sweep.dataset_fingerprint(images)["files"] != fingerprint["files"]
    odd = next(images.path(i) for i in range(len(images)) if "odd" in images.path(i))
    assert printable(odd).endswith("/\\xffodd.png") and echo(odd, limit=1000).endswith("/\\xffodd.png")
    assert printable(os.fsencode(odd)) == printable(odd)


# --------------------------------------------------------------------------- default weights and the path check


def test_default_cifar_weights_behind_a_link_out_of_the_data_root_are_refused_unread(tmp_path, monkeypatch):
    """Was: ``<data root>/models/cifar10_resnet{depth}.th`` was read without check_allowed, so a
    ``models`` link out of the root was followed and the error showed the outside file's keys."""
    from gaia_viz.errors import GaiaVizError
    from gaia_viz.models import load_model

    outside = tmp_path / "outside" / "models"
    outside.mkdir(parents=True)
    torch.save({"secret_key_of_the_outside_file": torch.zeros(2)}, outside / "cifar10_resnet20.th")
    root = tmp_path / "root"
    root.mkdir()
    (root / "models").symlink_to(outside, target_is_directory=True)
    monkeypatch.setenv("GAIA_VIZ_DATA_ROOT", str(root))
    monkeypatch.setenv("GAIA_VIZ_ALLOWED_ROOTS", str(root))
    read = []
    monkeypatch.setattr("gaia_viz.models.zoo.load_state_dict_file", lambda source: read.append(source))
    with pytest.raises(GaiaVizError) as refused:
        load_model("cifar_resnet20")
    message = str(refused.value)
    assert "outside the allowed data roots" in message and str(root / "models" / "cifar10_resnet20.th") in message
    assert "secret" not in message and str(outside) not in message and not read


# --------------------------------------------------------------------------- size caps on server paths


def sparse_copy(source_bytes: bytes, path, size: int):
    """``source_bytes`` padded to ``size`` bytes without using the disk (a sparse file)."""
    path.write_bytes(source_bytes)
    os_truncate = __import__("os").truncate
    os_truncate(path, size)
    return path


def test_a_png_padded_to_4_gib_is_refused_by_its_size_and_the_rest_of_the_folder_is_scored(tmp_path):
    """Was: a 32x32 PNG padded to 4 GiB passed the header probe and was read whole (+4.7 GB)."""
    from PIL import Image

    from gaia_viz.data.images import load_image, probe_image
    from gaia_viz.data.sources import open_source
    from gaia_viz.errors import ImageLoadError

    png = io.BytesIO()
    Image.new("RGB", (32, 32), (9, 99, 199)).save(png, format="PNG")
    folder = tmp_path / "ood"
    folder.mkdir()
    (folder / "small.png").write_bytes(png.getvalue())
    huge = sparse_copy(png.getvalue(), folder / "huge.png", 4 << 30)
    assert "4,295 MB, more than the 256 MB limit for an image file" in probe_image(huge)
    with pytest.raises(ImageLoadError, match="GAIA_VIZ_MAX_IMAGE_MB") as refused:
        load_image(huge)
    assert "4,295 MB, more than the 256 MB limit for an image file" in str(refused.value)
    images = open_source(f"folder:{folder}", preset="gaia-cifar10", name="ood")
    assert len(images) == 1 and [p.endswith("huge.png") for p, _ in images.skipped] == [True]


def test_a_checkpoint_over_the_cap_is_refused_before_reading(tmp_path, monkeypatch):
    from gaia_viz.models import load_model

    path = tmp_path / "model.pt"
    torch.save({"w": torch.zeros(2)}, path)
    sparse_copy(path.read_bytes(), path, 4 << 30)
    with pytest.raises(CheckpointError, match="is 4,295 MB, more than the 2,048 MB limit for a checkpoint") as refused:
        load_state_dict_file(path)
    assert "GAIA_VIZ_MAX_CHECKPOINT_MB" in str(refused.value)
    monkeypatch.setenv("GAIA_VIZ_MAX_CHECKPOINT_MB", "0.001")  # 1 kB: a real checkpoint is over it
    small = tmp_path / "small.pt"
    torch.save(load_model("cifar_resnet20", pretrained=False).state_dict(), small)
    with pytest.raises(CheckpointError, match="more than the 0.001 MB limit"):
        load_model("cifar_resnet20", checkpoint=small)
    monkeypatch.setenv("GAIA_VIZ_MAX_CHECKPOINT_MB", "lots")
    with pytest.raises(Exception, match="GAIA_VIZ_MAX_CHECKPOINT_MB='lots' is not a positive number"):
        load_state_dict_file(small)


# --------------------------------------------------------------------------- small ones


def test_messages_name_folders_and_checkpoints_as_typed_with_the_tilde(tmp_path, monkeypatch):
    """Was: ``~`` was expanded in folder messages (they showed the server user's home)."""
    from gaia_viz.data.sources import open_source
    from gaia_viz.errors import DataError

    monkeypatch.setenv("HOME", str(tmp_path / "home-of-the-server-user"))
    with pytest.raises(DataError) as missing:
        open_source("folder:~/no-such-folder", preset="gaia-cifar10")
    assert "~/no-such-folder does not exist" in str(missing.value) and "home-of-the" not in str(missing.value)
    with pytest.raises(CheckpointError) as unreadable:
        load_state_dict_file("~/no-such.pt")
    assert "checkpoint ~/no-such.pt" in str(unreadable.value) and "home-of-the" not in str(unreadable.value)


def cli(args, capsys) -> tuple[int, str]:
    from gaia_viz.cli import main

    capsys.readouterr()
    code = main(args)
    return code, capsys.readouterr().err


@pytest.mark.parametrize("case", ["missing", "fifo", "file"])
def test_a_data_root_that_is_no_folder_is_a_one_line_error(case, tmp_path, capsys):
    """Was: ``--data-root /nonexistent`` and a FIFO as data root were accepted silently."""
    import os

    root = tmp_path / "root"
    if case == "fifo":
        os.mkfifo(root)
    elif case == "file":
        root.write_text("x")
    code, err = cli(["evaluate", "--demo", "--data-root", str(root), "--out", str(tmp_path / "out")], capsys)
    state = "does not exist" if case == "missing" else "is not a folder"
    assert code == 2 and err.count("\n") == 1 and f"--data-root {root} {state}" in err
    assert not (tmp_path / "out").exists()


def test_num_classes_zero_is_refused(tmp_path, capsys):
    """Was: ``--num-classes 0`` was ignored (the model got 10 classes)."""
    from gaia_viz.errors import ModelError
    from gaia_viz.models import load_model

    code, err = cli(["evaluate", "--model", "cifar_resnet20", "--num-classes", "0", "--id", "demo:digits",
                     "--ood", "n=demo:noise", "--out", str(tmp_path / "out")], capsys)
    assert code == 2 and err.count("\n") == 1 and "--num-classes must be at least 1 (got 0)" in err
    with pytest.raises(ModelError, match="num_classes must be a whole number of at least 1, not 0"):
        load_model("cifar_resnet20", pretrained=False, num_classes=0)


def test_the_bomb_refusal_quotes_the_apps_pixel_limit_not_pillows():
    """Was: a 144 MP image was refused with Pillow's own text (its 89 M limit) while the app's
    limit reads 40 MP."""
    from PIL import Image

    from gaia_viz.data.images import load_image
    from gaia_viz.errors import ImageLoadError

    png = io.BytesIO()
    Image.new("1", (12_000, 12_000)).save(png, format="PNG")
    with pytest.raises(ImageLoadError) as refused:
        load_image(png.getvalue())
    assert "144,000,000 pixels exceeds the limit of 40,000,000 pixels (40 MP)" in str(refused.value)
    assert "89478485" not in str(refused.value) and "DOS" not in str(refused.value)
    assert load_image(png.getvalue(), max_pixels=150_000_000).size == (12_000, 12_000)  # the limit set here decides


def test_one_truncated_jpeg_is_skipped_and_reported_and_the_run_goes_on(tmp_path, capsys):
    """Was: one truncated JPEG in a folder stopped the whole run."""
    from PIL import Image

    folder = tmp_path / "ood"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for i in range(4):
        Image.fromarray(rng.integers(0, 255, (32, 32, 3), dtype=np.uint8)).save(folder / f"{i}.jpg", quality=90)
    whole = (folder / "1.jpg").read_bytes()
    (folder / "1.jpg").write_bytes(whole[: len(whole) // 2])
    out = tmp_path / "out"
    code, err = cli(["evaluate", "--model", "demo", "--id", "demo:digits", "--ood", f"photos=folder:{folder}",
                     "--methods", "msp", "--max-samples", "10", "--workers", "0", "--quiet",
                     "--cache-dir", str(tmp_path / "cache"), "--out", str(out)], capsys)
    assert code == 0, err
    assert "warning: 1 unreadable file(s) skipped in photos" in err and "1.jpg: truncated" in err
    import json

    skipped = json.loads((out / "metrics.json").read_text())["config"]["skipped"]["photos"]
    assert [path.endswith("1.jpg") for path, _ in skipped] == [True]
