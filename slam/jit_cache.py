"""Load the Numba kernels' cached machine code before the first frame, not during it.

With ``cache=True`` a kernel compiled once (``slam warmup``, an earlier run) is kept on
disk, but each new process still loads it lazily, on the kernel's first call: about
0.4 s for the ~50 kernels a replay uses, paid by the first frames of tracking, local
mapping and loop closing (a tracking stall of 100-170 ms on KITTI's first frames, an
eighth of a 50-frame replay). :func:`load_cached_kernels` loads every overload that
the on-disk cache index of each imported ``slam`` kernel lists, so that this happens at
start-up. Kernels without a cache entry still compile on first use, as before.

The index is read through Numba's cache objects (``Dispatcher._cache``), which are not
public API: when they change shape, nothing is preloaded and a debug line says why.
"""

from __future__ import annotations

import logging
import sys
import threading
import time
from typing import Any

log = logging.getLogger(__name__)

_lock = threading.Lock()


def _kernels(prefix: str) -> list[Any]:
    """The Numba dispatchers defined at module level in the imported ``prefix`` modules."""
    from numba.core.dispatcher import Dispatcher

    found = []
    for name, module in list(sys.modules.items()):
        if module is None or not (name == prefix or name.startswith(prefix + ".")):
            continue
        for value in list(vars(module).values()):
            if isinstance(value, Dispatcher) and getattr(value, "__module__", None) == name:
                found.append(value)
    return found


def _load(kernel: Any) -> int:
    """Load the cached overloads of one dispatcher not loaded yet; how many."""
    cache = getattr(kernel, "_cache", None)
    index_file = getattr(cache, "_cache_file", None)
    if index_file is None:  # caching off for this kernel
        return 0
    magic = kernel.targetctx.codegen().magic_tuple()
    n = 0
    for key in index_file._load_index():
        sig, key_magic = key[0], key[1]
        if key_magic != magic or tuple(sig) in kernel.overloads:
            continue
        kernel.compile(sig)  # finds it in the cache: a load, not a compilation
        n += 1
    return n


def load_cached_kernels(prefix: str = "slam") -> tuple[int, float]:
    """Load the cached overloads of every kernel in the imported ``prefix`` modules.
    Returns (overloads loaded, seconds). Cheap when they are loaded already."""
    t0 = time.perf_counter()
    n = 0
    with _lock:
        for kernel in _kernels(prefix):
            try:
                n += _load(kernel)
            except Exception as exc:  # Numba's cache internals differ: load lazily
                log.debug("%s: cache not preloaded (%s: %s)", kernel.__name__,
                          type(exc).__name__, exc)
    seconds = time.perf_counter() - t0
    if n:
        log.debug("loaded %d cached kernel overloads in %.2f s", n, seconds)
    return n, seconds
