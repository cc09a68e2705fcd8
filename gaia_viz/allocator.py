"""Keep freed CPU memory in the process instead of handing it back to the OS after every op.

Why: a GAIA backward pass allocates and frees many large gradient buffers (8 MB each for a
ResNet-20 batch of 128). glibc's default malloc returns such memory to the OS as soon as
more than 2x its (adaptive, at most 32 MB) mmap threshold is free at the top of the heap,
so the next buffer is faulted in page by page again: measured 30-60 thousand minor page
faults per GAIA-Z call, 25-35 % of its time on 2 cores. With the thresholds raised the same
call has no page faults. Plain forward passes gain too: in a fresh process, 1,000 CIFAR-10
images through ResNet-20 took 0.67 s by default and 0.40 s after ``retain_freed_memory()``
(the first batches fault their buffers in either way; the default heap keeps returning them).

This is a process-wide malloc setting, so the library never changes it on import: the
entry points opt in (``python -m gaia_viz``, the Streamlit app, the benchmark), like
PyTorch's own CPU launcher (``torch.backends.xeon.run_cpu``) preloads jemalloc. The cost
is that the process keeps up to 1 GB of freed heap instead of shrinking back after a large
batch (more than that is still returned; blocks over 32 MB are mapped and unmapped as before).
"""

from __future__ import annotations

import ctypes
import sys

_M_TRIM_THRESHOLD = -1  # glibc <malloc.h>
_M_MMAP_THRESHOLD = -3
MMAP_THRESHOLD = 32 * 1024 * 1024  # glibc's maximum (64-bit): larger blocks still use mmap
TRIM_THRESHOLD = 1024 * 1024 * 1024

_retained = False


def retain_freed_memory() -> bool:
    """Raise glibc's trim and mmap thresholds for this process (idempotent).

    Returns whether the setting is active: False off Linux/glibc (macOS, Windows, musl),
    where nothing is changed.
    """
    global _retained
    if _retained:
        return True
    if not sys.platform.startswith("linux"):
        return False
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):  # not glibc
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    _retained = bool(mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD)) and bool(
        mallopt(_M_TRIM_THRESHOLD, TRIM_THRESHOLD))
    return _retained


def freed_memory_retained() -> bool:
    """Whether :func:`retain_freed_memory` is in effect in this process."""
    return _retained
