"""Read ahead: run an iterator in a background thread so decoding overlaps with the model.

Written here because torch's DataLoader wants a picklable dataset and worker processes, while
evaluation only needs its one ordered sample stream (whose skip counter lives in this process)
read a little ahead; a thread keeps the order and the counter as they are. Audio decoding and
resampling run in C and release the GIL, so the thread does overlap with generation.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Iterable, Iterator
from typing import TypeVar

T = TypeVar("T")

_DONE = object()


def prefetch(items: Iterable[T], depth: int) -> Iterator[T]:
    """Yield ``items`` in order while a thread produces up to ``depth`` of them ahead.

    An exception in the producer is raised in the consumer at the point it occurred; a consumer
    that stops early (``break``, or closing the generator) stops the producer too.
    """
    if depth < 1:
        yield from items
        return
    buffer: queue.Queue = queue.Queue(maxsize=depth)
    stop = threading.Event()

    def put(item: object) -> bool:
        while not stop.is_set():
            try:
                buffer.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def produce() -> None:
        try:
            for item in items:
                if not put(item):
                    return
            put(_DONE)
        except BaseException as exc:
            put(exc)

    thread = threading.Thread(target=produce, name="xares-prefetch", daemon=True)
    thread.start()
    try:
        while True:
            item = buffer.get()
            if item is _DONE:
                return
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        stop.set()
        thread.join()
