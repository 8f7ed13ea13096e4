"""Deprecated: use :mod:`screening.store.reader` (or ``screening.open_results``).

``screening.results`` was the reader of result stores before the package was laid out by stage;
it now re-exports :mod:`screening.store.reader`'s public names so code that imports it keeps
working. It will be removed in a future release.
"""

from screening.store.reader import (
    DamagedChunkError,
    Results,
    ResultsError,
    StoreError,
    StoreNotFoundError,
    dataset_to_frame,
    open_results,
)

__all__ = [
    "DamagedChunkError", "Results", "ResultsError", "StoreError", "StoreNotFoundError", "dataset_to_frame",
    "open_results",
]
