"""Give freed memory back to the system after a large message (glibc's ``malloc_trim``).

A 200 MB line leaves glibc's arenas (the hub's and the parsing thread's) holding hundreds of MB
after it is freed; ``malloc_trim(0)`` returns the free pages of every arena. It costs a few
milliseconds on a large heap, so it runs at most once per :data:`MIN_INTERVAL` seconds. A no-op
where the C library has no ``malloc_trim`` (musl, macOS).
"""
import ctypes
import ctypes.util
import time

MIN_INTERVAL = 1.0

_last = 0.0


def _load():
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        trim = libc.malloc_trim
    except (OSError, AttributeError):
        return None
    trim.argtypes = [ctypes.c_size_t]
    trim.restype = ctypes.c_int
    return trim


_malloc_trim = _load()


def trim_memory():
    """Return free heap pages to the system; True if it ran."""
    global _last
    now = time.monotonic()
    if _malloc_trim is None or now - _last < MIN_INTERVAL:
        return False
    _last = now
    _malloc_trim(0)
    return True
