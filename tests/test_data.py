"""Tests for gaia_viz.data: presets, safe image loading, image sources, benchmark discovery."""

from __future__ import annotations

import io
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import gaia_viz.demo  # noqa: F401 (registers the demo: scheme, a form the unknown-spec error lists)
from gaia_viz.data import (
    OOD_POLICIES,
    PRESETS,
    find_benchmark_sets,
    get_preset,
    limit,
    load_image,
    make_transform,
    open_source,
    subset,
    with_preset,
)
from gaia_viz.data.presets import denormalize
from gaia_viz.errors import DataError, ImageLoadError

from support import DATA_ROOT, ROOT


def rgb_noise(width: int, height: int, seed: int = 0) -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8), "RGB")


def encoded(img: Image.Image, fmt: str, **kwargs) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format=fmt, **kwargs)
    return buf.getvalue()


def png_claiming(width: int, height: int) -> bytes:
    """A valid 1x1 PNG whose IHDR is patched to claim width x height (CRC fixed up)."""
    data = bytearray(encoded(Image.new("L", (1, 1)), "PNG"))
    # bytes 8..: length(4) 'IHDR'(4) width(4) height(4) ...(5) crc(4)
    data[16:24] = struct.pack(">II", width, height)
    data[29:33] = struct.pack(">I", zlib.crc32(bytes(data[12:29])) & 0xFFFFFFFF)
    return bytes(data)


# --- presets --------------------------------------------------------------------------------

EXPECTED_PRESETS = {
    "demo-mnist28": (1, 28, (0.1307,), (0.3081,)),
    "gaia-cifar10": (3, 32, (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)),
    "gaia-cifar100": (3, 32, (0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762)),
    "cifar-imagenet-norm": (3, 32, (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)),
    "odin-cifar10": (3, 32, (125.3 / 255, 123.0 / 255, 113.9 / 255), (63.0 / 255, 62.1 / 255, 66.7 / 255)),
    "imagenet224": (3, 224, (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)),
    "bit480": (3, 480, (0.5, 0.5, 0.5), (0.5, 0.5, 0.5)),
}


def test_preset_registry_is_exactly_the_contract():
    assert set(PRESETS) == set(EXPECTED_PRESETS)
    assert OOD_POLICIES == ("center-crop", "resize")
    assert PRESETS["imagenet224"].resize_to == 256


@pytest.mark.parametrize("name", sorted(EXPECTED_PRESETS))
@pytest.mark.parametrize("policy", OOD_POLICIES)
def test_preset_shapes_and_normalisation(name, policy):
    channels, size, mean, std = EXPECTED_PRESETS[name]
    gray_value = 100
    img = Image.new("RGB", (300, 200), (gray_value,) * 3)
    x = make_transform(name, policy)(img)
    assert x.shape == (channels, size, size) == get_preset(name).input_shape
    expected = (gray_value / 255 - np.array(mean)) / np.array(std)
    np.testing.assert_allclose(x.mean(dim=(1, 2)).numpy(), expected, atol=1e-4)


def test_unknown_preset_and_policy_are_data_errors():
    with pytest.raises(DataError, match="unknown preset"):
        make_transform("cifar11")
    with pytest.raises(DataError, match="OOD policy"):
        make_transform("gaia-cifar10", "squash")


def test_center_crop_keeps_pixel_scale_and_resize_does_not():
    # 300x200 image with 1-pixel stripes: cropping keeps them, resizing blurs them
    arr = np.zeros((200, 300, 3), np.uint8)
    arr[:, ::2] = 255
    img = Image.fromarray(arr)
    preset = PRESETS["gaia-cifar10"]
    top, left = (200 - 32) // 2, (300 - 32) // 2
    expected = arr[top:top + 32, left:left + 32].transpose(2, 0, 1) / 255.0

    cropped = denormalize(make_transform(preset, "center-crop")(img), preset).numpy()
    np.testing.assert_allclose(cropped, expected, atol=1e-5)

    resized = denormalize(make_transform(preset, "resize")(img), preset).numpy()
    assert resized.shape == (3, 32, 32)
    assert np.abs(resized - expected).max() > 0.2  # stripes averaged towards grey


def test_center_crop_pads_small_images_with_black():
    img = Image.new("RGB", (20, 10), (255, 255, 255))
    preset = PRESETS["gaia-cifar10"]
    x = denormalize(make_transform(preset, "center-crop")(img), preset)
    assert x.shape == (3, 32, 32)
    assert torch.allclose(x[:, 0, 0], torch.zeros(3), atol=1e-5)
    assert torch.allclose(x[:, 16, 16], torch.ones(3), atol=1e-5)


def test_imagenet_center_crop_resizes_shorter_side_first():
    # a 300x200 image under Resize(256)+CenterCrop(224) keeps its full height in view
    arr = np.zeros((200, 300, 3), np.uint8)
    arr[:100] = 255  # top half white
    x = denormalize(make_transform("imagenet224", "center-crop")(Image.fromarray(arr)), "imagenet224")
    assert x.shape == (3, 224, 224)
    assert x[:, 5].mean() > 0.95 and x[:, -5].mean() < 0.05


# --- load_image: bad inputs ------------------------------------------------------------------

def _bad_inputs(tmp_path: Path) -> dict[str, Path]:
    rng = np.random.default_rng(1)
    jpeg = encoded(rgb_noise(64, 64), "JPEG")
    png = encoded(rgb_noise(64, 64), "PNG")
    files = {
        "empty.png": b"",
        "random.jpg": rng.integers(0, 256, 4096, dtype=np.uint8).tobytes(),
        "text.png": b"this is not an image, just text renamed to .png\n" * 20,
        "truncated.jpg": jpeg[: len(jpeg) // 2],
        "truncated.png": png[: len(png) // 2],
    }
    for name, data in files.items():
        (tmp_path / name).write_bytes(data)
    return {name: tmp_path / name for name in files}


@pytest.mark.parametrize("name,message", [
    ("empty.png", "empty"),
    ("random.jpg", "not a recognised image"),
    ("text.png", "not a recognised image"),
    ("truncated.jpg", "corrupt or truncated"),
    ("truncated.png", "corrupt or truncated"),
])
def test_load_image_rejects_bad_files_with_clear_message(tmp_path, name, message):
    path = _bad_inputs(tmp_path)[name]
    with pytest.raises(ImageLoadError, match=message) as info:
        load_image(path)
    assert name in str(info.value)


def test_decompression_bomb_refused_before_decoding(tmp_path, monkeypatch):
    from PIL import ImageFile

    def no_decoding(self):
        raise AssertionError("pixel data must not be decoded")

    monkeypatch.setattr(ImageFile.ImageFile, "load", no_decoding)
    # beyond Pillow's own guard (2 x 89.5 Mpx): refused at Image.open
    huge = tmp_path / "bomb.png"
    huge.write_bytes(png_claiming(50_000, 50_000))
    with pytest.raises(ImageLoadError, match="decompression bomb"):
        load_image(huge)
    # within Pillow's guard but over ours (48 Mpx > 40 Mpx): refused by the explicit check
    with pytest.raises(ImageLoadError, match="exceeds the limit"):
        load_image(png_claiming(8_000, 6_000))
    with pytest.raises(ImageLoadError, match="exceeds the limit"):
        load_image(png_claiming(200, 200), max_pixels=10_000)


def test_load_image_accepts_bytes_and_file_objects(tmp_path):
    data = encoded(rgb_noise(5, 4), "PNG")
    path = tmp_path / "x.png"
    path.write_bytes(data)
    from_path = load_image(path)
    assert np.array_equal(np.asarray(load_image(data)), np.asarray(from_path))
    with open(path, "rb") as fh:
        assert np.array_equal(np.asarray(load_image(fh)), np.asarray(from_path))
    assert np.array_equal(np.asarray(from_path), np.asarray(rgb_noise(5, 4)))


def test_load_image_missing_file_is_image_load_error(tmp_path):
    with pytest.raises(ImageLoadError, match="cannot read"):
        load_image(tmp_path / "nope.png")


# --- load_image: odd but valid inputs ----------------------------------------------------------

def test_extreme_sizes_load():
    assert load_image(encoded(Image.new("RGB", (1, 1), (1, 2, 3)), "PNG")).getpixel((0, 0)) == (1, 2, 3)
    assert load_image(encoded(Image.new("L", (10_000, 10), 7), "PNG")).size == (10_000, 10)


def test_sixteen_bit_grayscale_scaled_to_8_bit():
    arr = np.array([[0, 257 * 100, 65535]], dtype=np.uint16)
    img = Image.fromarray(arr)
    assert img.mode.startswith("I;16")
    out = load_image(encoded(img, "PNG"))
    assert out.mode == "RGB"
    assert [out.getpixel((i, 0))[0] for i in range(3)] == [0, 100, 255]


def test_cmyk_jpeg_becomes_rgb():
    out = load_image(encoded(Image.new("CMYK", (8, 8), (0, 255, 255, 0)), "JPEG", quality=100))
    r, g, b = out.getpixel((4, 4))
    assert out.mode == "RGB" and r > 200 and g < 60 and b < 60


def test_palette_with_transparency_composited_on_white():
    img = Image.new("P", (4, 4), 0)
    img.putpalette([0, 0, 0, 255, 0, 0] + [0] * 762)
    img.putpixel((0, 0), 1)
    img.info["transparency"] = 0  # palette entry 0 (black) is transparent
    out = load_image(encoded(img, "PNG", transparency=0))
    assert out.mode == "RGB"
    assert out.getpixel((0, 0)) == (255, 0, 0)
    assert out.getpixel((3, 3)) == (255, 255, 255)


def test_rgba_and_la_composited_on_white():
    rgba = Image.new("RGBA", (2, 1), (0, 0, 0, 0))
    rgba.putpixel((1, 0), (0, 0, 255, 255))
    out = load_image(encoded(rgba, "PNG"))
    assert out.getpixel((0, 0)) == (255, 255, 255) and out.getpixel((1, 0)) == (0, 0, 255)
    la = Image.new("LA", (1, 1), (0, 128))
    assert load_image(encoded(la, "PNG")).getpixel((0, 0)) == (127, 127, 127)
    assert load_image(encoded(la, "PNG"), background=(0, 0, 0)).getpixel((0, 0)) == (0, 0, 0)


def test_animated_gif_gives_first_frame():
    frames = [Image.new("RGB", (6, 6), c) for c in ((255, 0, 0), (0, 0, 255))]
    data = encoded(frames[0], "GIF", save_all=True, append_images=frames[1:], duration=50)
    assert Image.open(io.BytesIO(data)).n_frames == 2
    r, g, b = load_image(data).getpixel((3, 3))
    assert r > 200 and b < 50


def test_exif_orientation_applied():
    img = Image.new("RGB", (40, 20), (0, 255, 0))
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise to display
    out = load_image(encoded(img, "JPEG", exif=exif))
    assert out.size == (20, 40)


# --- sources -----------------------------------------------------------------------------------

def _write(path: Path, data: bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def test_folder_mixing_images_and_other_files(tmp_path):
    _write(tmp_path / "a.png", encoded(rgb_noise(10, 10), "PNG"))
    _write(tmp_path / "deep" / "b.JPG", encoded(rgb_noise(40, 30), "JPEG"))
    _write(tmp_path / "notes.txt", b"hello")
    _write(tmp_path / "table.csv", b"1,2\n")
    _write(tmp_path / "broken.png", b"not really a png")
    _write(tmp_path / "empty.jpg", b"")
    jpeg = encoded(rgb_noise(64, 64), "JPEG")
    _write(tmp_path / "trunc.jpg", jpeg[: len(jpeg) // 2])

    images = open_source(f"folder:{tmp_path}", "gaia-cifar10", "center-crop")
    names = [Path(images.path(i)).name for i in range(len(images))]
    assert names == ["a.png", "b.JPG"]
    # a JPEG cut short lacks its end marker: skipped up front, not a failure mid-run
    assert sorted(Path(p).name for p, _ in images.skipped) == ["broken.png", "empty.jpg", "trunc.jpg"]
    assert "truncated" in dict((Path(p).name, r) for p, r in images.skipped)["trunc.jpg"]
    assert list(images.labels) == [-1, -1] and images.class_names is None
    assert images.preset_name == "gaia-cifar10" and images.ood_policy == "center-crop"
    x, label = images[0]
    assert x.shape == (3, 32, 32) and label == -1
    assert images.raw_image(1).mode == "RGB" and images.raw_image(1).size == (40, 30)


def test_folder_without_validation_fails_on_read_naming_the_file(tmp_path):
    _write(tmp_path / "a.png", encoded(rgb_noise(10, 10), "PNG"))
    _write(tmp_path / "broken.png", b"not really a png")
    images = open_source(str(tmp_path), "gaia-cifar10", validate=False)
    assert len(images) == 2 and images.skipped == []
    with pytest.raises(ImageLoadError, match="broken.png"):
        images[1]


def test_image_folder_layout_labels_sorted_like_torchvision(tmp_path):
    for cls, n in (("dog", 2), ("cat", 3), ("zebra", 1)):
        for i in range(n):
            _write(tmp_path / cls / f"{i}.png", encoded(rgb_noise(8, 8, seed=i), "PNG"))
    _write(tmp_path / "cat" / "nested" / "x.png", encoded(rgb_noise(8, 8), "PNG"))
    images = open_source(str(tmp_path), "gaia-cifar10")
    assert images.class_names == ["cat", "dog", "zebra"]
    assert list(images.labels) == [0, 0, 0, 0, 1, 1, 2]


def test_single_subfolder_is_unlabelled(tmp_path):
    # the official GAIA OOD layout, e.g. LSUN/test/*.jpg
    for i in range(3):
        _write(tmp_path / "LSUN" / "test" / f"{i}.jpg", encoded(rgb_noise(36, 36, i), "JPEG"))
    images = open_source(str(tmp_path / "LSUN"), "gaia-cifar10", "center-crop")
    assert images.name == "LSUN" and len(images) == 3 and set(images.labels) == {-1}


def test_empty_and_missing_folders_are_data_errors(tmp_path):
    (tmp_path / "empty").mkdir()
    _write(tmp_path / "empty" / "readme.md", b"# nothing here")
    with pytest.raises(DataError, match="no images found"):
        open_source(f"folder:{tmp_path / 'empty'}", "gaia-cifar10")
    with pytest.raises(DataError, match="does not exist"):
        open_source(f"folder:{tmp_path / 'missing'}", "gaia-cifar10")
    with pytest.raises(DataError, match="not an existing path"):
        open_source(str(tmp_path / "missing"), "gaia-cifar10")


def test_images_spec_and_bare_file(tmp_path):
    a = _write(tmp_path / "a.png", encoded(rgb_noise(8, 8), "PNG"))
    b = _write(tmp_path / "b.webp", encoded(rgb_noise(9, 9), "WEBP", lossless=True))
    images = open_source(f"images:{a},{b}", "demo-mnist28")
    assert len(images) == 2 and images[1][0].shape == (1, 28, 28)
    assert len(open_source(str(a), "demo-mnist28")) == 1
    with pytest.raises(DataError, match="not found"):
        open_source(f"images:{a},{tmp_path / 'gone.png'}", "demo-mnist28")


def test_torchvision_dataset_missing_names_expected_folder(tmp_path):
    with pytest.raises(DataError, match="cifar-10-batches-py"):
        open_source("torchvision:CIFAR10", "gaia-cifar10", data_root=tmp_path)
    with pytest.raises(DataError, match="test_32x32.mat"):
        open_source("torchvision:svhn:test", "gaia-cifar10", data_root=tmp_path)
    with pytest.raises(DataError, match="unknown torchvision dataset"):
        open_source("torchvision:ImageNet21k", "gaia-cifar10", data_root=tmp_path)
    assert not any(tmp_path.iterdir())  # nothing was downloaded


def test_unknown_spec_is_data_error():
    with pytest.raises(DataError, match="demo:<set>"):
        open_source("s3://bucket/images", "gaia-cifar10")


def test_limit_and_subset_are_deterministic_and_keep_classes(tmp_path):
    for cls in ("a", "b", "c"):
        for i in range(20):
            _write(tmp_path / cls / f"{i:02d}.png", encoded(Image.new("RGB", (4, 4), (i, 0, 0)), "PNG"))
    first = open_source(str(tmp_path), "gaia-cifar10", max_samples=12)
    second = open_source(str(tmp_path), "gaia-cifar10", max_samples=12)
    assert len(first) == 12
    assert [first.path(i) for i in range(12)] == [second.path(i) for i in range(12)]
    assert set(first.labels) == {0, 1, 2}
    full = open_source(str(tmp_path), "gaia-cifar10")
    picked = subset(full, [59, 0])
    assert picked.path(0) == full.path(59) and list(picked.labels) == [2, 0]
    assert limit(full, None) is full


def test_with_preset_changes_transform_only(tmp_path):
    _write(tmp_path / "x.png", encoded(rgb_noise(50, 40), "PNG"))
    images = open_source(str(tmp_path), "gaia-cifar10", "resize")
    other = with_preset(images, "imagenet224", "center-crop")
    assert other[0][0].shape == (3, 224, 224) and images[0][0].shape == (3, 32, 32)
    assert other.preset_name == "imagenet224" and other.ood_policy == "center-crop"
    assert other.describe()["preset"] == "imagenet224"


def test_dataloader_batches_an_image_set(tmp_path):
    for i in range(5):
        _write(tmp_path / f"{i}.png", encoded(rgb_noise(30 + i, 20, i), "PNG"))
    images = open_source(str(tmp_path), "gaia-cifar10", "center-crop")
    x, y = next(iter(torch.utils.data.DataLoader(images, batch_size=5)))
    assert x.shape == (5, 3, 32, 32) and y.tolist() == [-1] * 5


# --- benchmark discovery ---------------------------------------------------------------------

def test_find_benchmark_sets_official_gaia_layout(tmp_path):
    jpg = encoded(rgb_noise(36, 36), "JPEG")
    _write(tmp_path / "LSUN" / "test" / "0.jpg", jpg)
    _write(tmp_path / "iSUN" / "iSUN_patches" / "1.jpeg", jpg)
    _write(tmp_path / "textures" / "images" / "banded" / "2.jpg", jpg)
    (tmp_path / "Places").mkdir()  # present but empty: not reported
    _write(tmp_path / "SVHN" / "test_32x32.mat", b"stub")
    (tmp_path / "cifar-10-batches-py").mkdir()
    found = find_benchmark_sets(tmp_path)
    assert set(found) == {"LSUN", "iSUN", "textures", "SVHN", "cifar-10-batches-py"}
    assert found["LSUN"]["spec"] == f"folder:{tmp_path / 'LSUN'}"
    assert found["SVHN"]["spec"] == "torchvision:SVHN:test"
    assert found["cifar-10-batches-py"]["data_root"] == str(tmp_path)
    assert len(open_source(found["iSUN"]["spec"], "gaia-cifar10")) == 1
    assert find_benchmark_sets(tmp_path / "absent") == {}


@pytest.mark.real_data
def test_find_benchmark_sets_on_shared_data():
    if not (DATA_ROOT / "cifar10").is_dir():
        pytest.skip(f"shared data root {DATA_ROOT} absent (set GAIA_VIZ_DATA_ROOT)")
    found = find_benchmark_sets(DATA_ROOT)
    assert {"cifar10-test", "cifar10-train-5k", "textures"} <= set(found)
    assert found["cifar10-test"]["role"] == "id" and found["textures"]["role"] == "ood"
    test_set = open_source(found["cifar10-test"]["spec"], "cifar-imagenet-norm", max_samples=50)
    assert test_set.class_names[:3] == ["airplane", "automobile", "bird"]
    x, label = test_set[0]
    assert x.shape == (3, 32, 32) and 0 <= label < 10
    textures = open_source(found["textures"]["spec"], "cifar-imagenet-norm", "center-crop", max_samples=5)
    assert textures[0][0].shape == (3, 32, 32) and textures.raw_image(0).size[0] > 32


def test_the_demo_scheme_is_registered_by_the_demo_package_not_known_to_data():
    """data/sources.py no longer imports the demo: gaia_viz.demo registers demo: when imported."""
    import subprocess
    import sys

    code = (
        "import sys\n"
        "from gaia_viz.data import open_source\n"
        "from gaia_viz.errors import DataError\n"
        "assert 'gaia_viz.demo' not in sys.modules\n"
        "try:\n"
        "    open_source('demo:noise', None)\n"
        "except DataError as exc:\n"
        "    print('refused:', exc)\n"
        "import gaia_viz.demo\n"
        "print('opened', len(open_source('demo:noise', None)))\n"
    )
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    refused, opened = done.stdout.strip().splitlines()
    assert refused.startswith("refused: cannot open 'demo:noise'") and "once gaia_viz.demo is imported" in refused
    assert opened == "opened 200"
