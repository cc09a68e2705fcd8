"""Output folders written all or nothing: a failure (a full disk, a killed process) while the
CLI or the report writes its files leaves the previous outputs as they were.

Every file is written into a hidden staging folder inside the output folder (the same file
system, so a rename moves it without copying) and flushed to disk; only when all of them
are written are they renamed into place, one after the other. A failure while writing
removes the staging folder and touches nothing else.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from pathlib import Path
from typing import Iterator

STAGING_PREFIX = ".tmp-out-"


def _flush_to_disk(path: Path) -> None:
    # a full disk may only show when the data reaches it: at fsync, not at write
    with open(path, "rb+") as handle:
        os.fsync(handle.fileno())


@contextlib.contextmanager
def staged_outputs(out: str | os.PathLike) -> Iterator[Path]:
    """Yield a staging folder: write every output file into it; on a normal exit they are all
    renamed into ``out`` (created when missing), on an exception none is and ``out`` keeps
    its previous files. The staging folder is removed either way."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    stage = Path(tempfile.mkdtemp(dir=out, prefix=STAGING_PREFIX))
    try:
        yield stage
        written = sorted(path for path in stage.rglob("*") if path.is_file())
        for path in written:
            _flush_to_disk(path)
        for path in written:
            target = out / path.relative_to(stage)
            target.parent.mkdir(parents=True, exist_ok=True)
            os.replace(path, target)
    finally:
        shutil.rmtree(stage, ignore_errors=True)


__all__ = ["STAGING_PREFIX", "staged_outputs"]
