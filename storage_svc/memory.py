"""How storage_svc asks the C allocator to hand large buffers back to the system.

An upload holds 8 MiB parts (:mod:`storage_svc.uploads`) for as long as S3 takes to store each.
glibc's malloc serves blocks of 128 KiB and more with ``mmap``, but raises that threshold to
the size of each such block freed, so after the first part every later part comes from the
heap, whose freed space fragments and stays with the process: one 350 MB upload grew the
process by about 65 MiB. A fixed threshold below a part (4 MiB) keeps parts on ``mmap``, given
back the moment they are freed (about 36 MiB instead, ``python -m bench.files``), while the
1 MiB chunks of a stream stay on the heap, where they are cheap to reuse.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging

logger = logging.getLogger(__name__)

M_MMAP_THRESHOLD = -3  # mallopt's parameter number (malloc.h)
MMAP_THRESHOLD_BYTES = 4 * 1024 * 1024


def release_large_buffers(threshold: int = MMAP_THRESHOLD_BYTES) -> bool:
    """Fixes glibc's mmap threshold at ``threshold`` bytes; False (and nothing changed) where
    the C library is not glibc or refuses."""
    name = ctypes.util.find_library("c")
    if name is None:
        return False
    try:
        mallopt = ctypes.CDLL(name).mallopt
    except (OSError, AttributeError):  # not glibc (musl has no mallopt)
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    done = bool(mallopt(M_MMAP_THRESHOLD, threshold))
    if not done:
        logger.warning("the C library refused an mmap threshold of %d bytes", threshold)
    return done
