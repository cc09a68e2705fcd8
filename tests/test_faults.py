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

    def unpacked(*args, **kwargs):
        raise AssertionError("a member was opened: the archive was decompressed")

    monkeypatch.setattr(zipfile.ZipFile, "open", unpacked)
    with pytest.raises(CheckpointError) as refused:
        load_state_dict_file(bomb)  # an upload: bytes, whatever its name
    message = str(refused.value)
    assert "the uploaded checkpoint would unpack to 8 MB" in message
    assert "limit of 1 MB" in message and "GAIA_VIZ_MAX_CHECKPOINT_MB" in message
    path = tmp_path / "model.safetensors"
    path.write_bytes(bomb)
    with pytest.raises(CheckpointError, match="would unpack to 8 MB"):
        load_state_dict_file(path)
    torch_zip = tmp_path / "model.pt"  # PyTorch's own zip format is budgeted too
    torch.save({"w": torch.zeros(300_000)}, torch_zip)
    with pytest.raises(CheckpointError, match="would unpack to 1 MB, more than the limit of 1 MB"):
        load_state_dict_file(torch_zip)


def test_npz_within_the_budget_loads_and_a_header_claiming_more_data_is_refused(monkeypatch):
    monkeypatch.setenv("GAIA_VIZ_MAX_CHECKPOINT_MB", "1")
    state = load_state_dict_file(zip_bytes({"a.npy": npy_bytes(np.arange(6, dtype=np.float32).reshape(2, 3))}))
    assert torch.equal(state["a"], torch.arange(6, dtype=torch.float32).reshape(2, 3))
    lying = npy_bytes(np.zeros(4, dtype=np.float32)).replace(b"(4,)", b"(4000000000000,)")
    with pytest.raises(CheckpointError, match="claims 16,000,000,000,000 bytes of data but holds"):
        load_state_dict_file(zip_bytes({"a.npy": lying}))
