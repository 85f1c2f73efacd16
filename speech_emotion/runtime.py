"""Process-level tuning shared by the service and feature extraction.

glibc's allocator hands freed memory back to the kernel as soon as more than ``M_TRIM_THRESHOLD`` lies
free at the top of the heap, and serves blocks above ``M_MMAP_THRESHOLD`` with a fresh ``mmap`` that is
unmapped again on ``free``. Feature extraction allocates and frees a few hundred kilobytes of temporaries
per clip (the YIN pitch track's lag matrices, the spectrogram), so with the defaults every clip can
page-fault its working memory back in. Measured in a feature-extraction process (no TensorFlow loaded),
on 3 s clips: 3.9 ms per clip with the defaults against 2.3 ms with the thresholds pinned (1.7x), the
YIN step alone 2.7x. glibc raises both thresholds by itself after the first large block is freed, so a
process that happened to free one early (importing TensorFlow does) is fast either way; pinning makes
it fast by design rather than by accident.

:func:`retain_freed_memory` pins both thresholds once per process. The cost is memory: each allocator
arena (about one per busy thread) may keep up to ``trim_threshold`` bytes of freed memory for reuse.
Elsewhere than glibc (macOS, musl) it does nothing.

:func:`import_tensorflow` imports TensorFlow for a process that only loads and calls SavedModels (a service
worker, ``score``'s model process). TensorFlow's ``__init__`` imports all of Keras 3 whenever Keras is
installed (for the SavedModel registrations of Keras's optimizers), and Keras imports scikit-learn when that
is installed: about 3 of the 7-8 s that ``import tensorflow`` takes on 2 cores, in every such process's
start, for code that a serving signature never runs.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import sys
from types import ModuleType

log = logging.getLogger(__name__)

_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3

_applied: bool | None = None


def retain_freed_memory(trim_threshold: int = 32 << 20, mmap_threshold: int = 16 << 20) -> bool:
    """Keep up to ``trim_threshold`` bytes of freed heap per arena, and serve blocks below
    ``mmap_threshold`` from the heap; True when applied (glibc), False where there is nothing to tune.
    Idempotent: the first call in a process decides."""
    global _applied
    if _applied is not None:
        return _applied
    _applied = False
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # not glibc (e.g. musl has no mallopt)
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    # mallopt returns 1 on success, 0 on error.
    _applied = bool(mallopt(_M_MMAP_THRESHOLD, mmap_threshold)) and bool(mallopt(_M_TRIM_THRESHOLD, trim_threshold))
    if not _applied:
        log.debug("mallopt refused the thresholds; allocator left at its defaults")
    return _applied


#: Packages TensorFlow imports eagerly when installed and a SavedModel's serving signature does not need.
_NOT_FOR_SERVING = ("keras", "tf_keras")


def import_tensorflow() -> ModuleType:
    """``import tensorflow``, without the Keras import it makes on its own when this process has not imported
    Keras yet. Keras can still be imported later in the process, as usual.

    TensorFlow wraps that import in ``try/except ImportError``: with ``sys.modules["keras"] = None`` (Python's
    way to say a module cannot be imported) it skips it and goes on. Answers are the same either way (tested).
    """
    if "tensorflow" in sys.modules:
        return sys.modules["tensorflow"]
    held = [name for name in _NOT_FOR_SERVING if name not in sys.modules]
    for name in held:
        sys.modules[name] = None  # type: ignore[assignment]
    try:
        import tensorflow
    finally:
        for name in held:
            if name in sys.modules and sys.modules[name] is None:
                del sys.modules[name]
    return tensorflow
