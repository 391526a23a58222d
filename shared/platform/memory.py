"""Memory a service no longer uses goes back to the system (issue 28). After a flood, CPython has freed
the records, messages and rows it handled, but the C allocator keeps their pages for later: in `make
bench` the bridge held 133 MB after its flood and 147 MB after a minute with nothing to do. Every
TRIM_EVERY_S glibc is asked to return its free pages (`malloc_trim`), off the event loop; where the C
library has no such call, nothing is trimmed and nothing breaks."""
import asyncio
import ctypes
import ctypes.util
import logging

log = logging.getLogger(__name__)

TRIM_EVERY_S = 30.0


def _malloc_trim():
    """glibc's malloc_trim, or None on a C library without it."""
    try:
        return ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6").malloc_trim
    except (OSError, AttributeError):
        return None


async def keep_trimmed(every_s: float = TRIM_EVERY_S) -> None:
    malloc_trim = _malloc_trim()
    if malloc_trim is None:
        return
    while True:
        await asyncio.sleep(every_s)
        try:
            await asyncio.to_thread(malloc_trim, 0)  # it walks the heap: not on the event loop
        except Exception:  # never worth stopping a service for
            log.debug("trimming memory failed", exc_info=True)
