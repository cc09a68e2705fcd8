"""On-disk run cache: one folder per (model, dataset, settings) key, one file per scored chunk.

Why chunks: an interrupted evaluation (exception, cancel, killed process) keeps every chunk
already written, and the next run computes only what is missing. Each chunk is written to a
temporary file and renamed into place, so a killed process never leaves a half-written
chunk under its final name; each chunk carries a checksum of its arrays *and of the entry key
and sample range it was written for*, so a corrupted file, or a chunk copied under another
range's or another entry's name, is detected, deleted and recomputed, never trusted.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import tempfile
import zipfile
from pathlib import Path

import numpy as np

FORMAT_VERSION = 2  # 2: the checksum covers the entry key and the sample range

def stable_hash(obj) -> str:
    """Hex digest of a JSON-serialisable object (key order independent)."""
    text = json.dumps(obj, sort_keys=True, default=str)
    return hashlib.blake2b(text.encode(), digest_size=12).hexdigest()


def _checksum(arrays: dict[str, np.ndarray], identity: str) -> str:
    """Digest of ``identity`` (entry key and sample range) and every array (name, dtype, shape, bytes)."""
    digest = hashlib.blake2b(digest_size=16)
    digest.update(identity.encode())
    for key in sorted(arrays):
        array = np.ascontiguousarray(arrays[key])
        digest.update(key.encode())
        digest.update(str(array.dtype).encode())
        digest.update(str(array.shape).encode())
        digest.update(array.tobytes())
    return digest.hexdigest()


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` so that readers see the old file or the whole new one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-", suffix=path.suffix)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


class ChunkStore:
    """Chunks of per-sample arrays for one cache key, covering sample ranges [start, end)."""

    def __init__(self, root: Path | str, key: str, meta: dict | None = None):
        self.key = key
        self.dir = Path(root) / key
        self.dir.mkdir(parents=True, exist_ok=True)
        if meta is not None:
            meta_path = self.dir / "meta.json"
            if not meta_path.exists():
                atomic_write_bytes(meta_path, json.dumps(meta, indent=1, default=str).encode())

    def _path(self, start: int, end: int) -> Path:
        return self.dir / f"chunk-{start:09d}-{end:09d}.npz"

    def _identity(self, start: int, end: int) -> str:
        return f"{self.key}:{int(start)}-{int(end)}"

    def write(self, start: int, end: int, arrays: dict[str, np.ndarray]) -> None:
        arrays = {k: np.asarray(v) for k, v in arrays.items()}
        payload = dict(arrays)
        payload["__checksum__"] = np.array(_checksum(arrays, self._identity(start, end)))
        payload["__version__"] = np.array(FORMAT_VERSION)
        buffer = io.BytesIO()
        np.savez(buffer, **payload)
        atomic_write_bytes(self._path(start, end), buffer.getvalue())

    def read(self, start: int, end: int) -> dict[str, np.ndarray] | None:
        """The chunk's arrays, or None when it is absent or fails its checksum (then deleted): a
        chunk written for another entry or another sample range fails it too."""
        path = self._path(start, end)
        if not path.exists():
            return None
        try:
            with np.load(path, allow_pickle=False) as data:
                arrays = {k: data[k] for k in data.files}
            checksum = str(arrays.pop("__checksum__"))
            version = int(arrays.pop("__version__"))
            if version != FORMAT_VERSION or checksum != _checksum(arrays, self._identity(start, end)):
                raise ValueError("checksum mismatch")
            return arrays
        except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile):
            path.unlink(missing_ok=True)  # corrupted: recompute, never trust
            return None

    def ranges(self) -> list[tuple[int, int]]:
        """Sample ranges present on disk (not yet checksum-verified)."""
        found = []
        for path in self.dir.glob("chunk-*.npz"):
            try:
                _, start, end = path.stem.split("-")
                found.append((int(start), int(end)))
            except ValueError:
                continue
        return sorted(found)

    def clear(self) -> None:
        for path in self.dir.glob("chunk-*.npz"):
            path.unlink(missing_ok=True)


FITTED_STATE_FILE = "fitted.safetensors"


def write_fitted_state(root: Path | str, key: str, state: dict) -> None:
    """Keep a detector's fitted state (named tensors) under ``root/key`` (atomically)."""
    from safetensors.torch import save

    atomic_write_bytes(Path(root) / key / FITTED_STATE_FILE,
                       save({name: tensor.contiguous() for name, tensor in state.items()}))


def read_fitted_state(root: Path | str, key: str) -> dict | None:
    """The fitted state kept under ``root/key``, or None (absent or unreadable: then deleted)."""
    from safetensors import SafetensorError
    from safetensors.torch import load

    path = Path(root) / key / FITTED_STATE_FILE
    if not path.exists():
        return None
    try:
        return load(path.read_bytes())
    except (OSError, SafetensorError, ValueError):
        path.unlink(missing_ok=True)
        return None
