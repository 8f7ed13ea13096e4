"""Overlap input building with model compute.

Two pieces, both order-preserving, used by the engine when ``adapter.overlap`` is set
(``execution.overlap``, default on):

* :func:`prefetch` runs an iterator (genome/track reads and perturbations) in a
  background thread, a bounded number of items ahead of its consumer;
* :func:`predict_batches` builds the next batch's model input (stacking, one-hot, and on
  CUDA a pinned-memory, ``non_blocking`` host→device copy on a side stream) in a
  background thread while the current batch's forward pass runs.

Results are identical with overlap on or off: the same batches go through the same
forward pass, in the same order.
"""

from __future__ import annotations

import queue
import threading
from typing import Any, Callable, Iterable, Iterator, TypeVar

import numpy as np
import torch

__all__ = ["predict_batches", "prefetch"]

T = TypeVar("T")
_DONE = object()


class _Failure:
    def __init__(self, error: BaseException) -> None:
        self.error = error


def prefetch(items: Iterable[T], depth: int = 2) -> Iterator[T]:
    """Yield ``items`` in order, produced by a background thread at most ``depth`` ahead.

    An exception of the producer is re-raised in the consumer at the item where it
    happened; a consumer that stops early stops the producer too.
    """
    buffer: queue.Queue = queue.Queue(maxsize=max(1, depth))
    stop = threading.Event()

    def put(value: Any) -> bool:
        while not stop.is_set():
            try:
                buffer.put(value, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def produce() -> None:
        try:
            for item in items:
                if not put(item):
                    return
        except BaseException as error:  # noqa: BLE001  (handed to the consumer)
            put(_Failure(error))
            return
        put(_DONE)

    thread = threading.Thread(target=produce, name="screening-prefetch", daemon=True)
    thread.start()
    try:
        while True:
            value = buffer.get()
            if value is _DONE:
                return
            if isinstance(value, _Failure):
                raise value.error
            yield value
    finally:
        stop.set()
        thread.join()


def _host_input(adapter, batch: tuple[np.ndarray, np.ndarray | None]) -> torch.Tensor:
    host_input = getattr(adapter, "host_input", None)
    return host_input(*batch) if host_input is not None else adapter.build_input(*batch)


def _to_device(adapter, inputs: torch.Tensor, stream) -> tuple[torch.Tensor, Any]:
    """Pinned, asynchronous copy on a side stream; returns the device tensor and its ready event."""
    if inputs.device.type != "cpu":
        return inputs, None
    with torch.cuda.stream(stream):
        moved = inputs.pin_memory().to(adapter.device, non_blocking=True)
        ready = torch.cuda.Event()
        ready.record(stream)
    return moved, ready


def predict_batches(
    adapter, batches: Iterable[Any], build: Callable[[Any], torch.Tensor] | None = None, on_device: bool = False
) -> Iterator[np.ndarray | torch.Tensor]:
    """The maps of each batch, in order, as float32 ``[B, n_bins, n_bins]``: numpy, or with ``on_device`` tensors
    left where the model ran (:meth:`~screening.models.base.ModelAdapter.predict_maps`).

    A batch is ``(codes, tracks)``, built into the model input by the adapter (on the host, then
    copied to the device), or anything ``build`` turns into the model input (e.g.
    :meth:`screening.compute.assemble.InputAssembler.build`, which builds it on the device). With
    ``adapter.overlap`` the next batch's input is built (and on CUDA copied to the device) in a
    background thread while the current batch runs.
    """
    make = build if build is not None else (lambda batch: _host_input(adapter, batch))
    predict = adapter.predict_maps if on_device else adapter.predict_inputs
    if not getattr(adapter, "overlap", False):
        for batch in batches:
            if build is not None:
                yield predict(make(batch))
            else:
                yield predict(adapter.build_input(*batch)) if on_device else adapter.predict(*batch)
        return
    cuda = adapter.device.type == "cuda"
    stream = torch.cuda.Stream(adapter.device) if cuda else None

    def prepared() -> Iterator[tuple[torch.Tensor, Any]]:
        for batch in batches:
            inputs = make(batch)
            yield _to_device(adapter, inputs, stream) if cuda else (inputs, None)

    for inputs, ready in prefetch(prepared(), depth=1):
        if ready is not None:  # the compute stream waits for the copy, and keeps the memory alive
            current = torch.cuda.current_stream(adapter.device)
            current.wait_event(ready)
            inputs.record_stream(current)
        yield predict(inputs)
