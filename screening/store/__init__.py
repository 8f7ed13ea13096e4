"""The result store: one Zarr v3 store per screen.

* :mod:`screening.store.layout` - what writer and reader share: format version, array names,
  :class:`GroupLayout`, the store errors, finding a store and reading its root attributes;
* :mod:`screening.store.writer` - creating, resuming and writing a store (the driver and the workers);
* :mod:`screening.store.reader` - opening a finished store for queries (:func:`open_results`);
* :mod:`screening.store.location` - where a store lives (a local path or an fsspec URL) and its options;
* :mod:`screening.store.lease` - the lease that keeps two drivers off one store;
* :mod:`screening.store.export` - score tracks as bedGraph/bigWig.

``from screening.store import X`` gives what it gave when the writer was the module
``screening.store``: the layout's names and the writer's.
"""

from screening.store.layout import (
    ATTRS_KEY,
    BUILDING_KEY,
    CHUNK_DIM,
    COORDS,
    COORD_CHUNK,
    COORD_SHARD,
    DIGEST,
    DIM,
    DONE,
    FORMAT_VERSION,
    HIT_INDEX,
    HIT_VALUE,
    READABLE_VERSIONS,
    RESERVED_NAMES,
    SHARD_CHUNKS,
    TOP_DELTA,
    TOP_INDEX,
    DamagedChunkError,
    GroupLayout,
    StoreError,
    StoreNotFoundError,
    as_location,
    check_format,
    read_checked,
    read_store_attrs,
    zarr_store,
)
from screening.store.writer import ResultStore, create_store, open_or_create_store

__all__ = [
    "ATTRS_KEY",
    "BUILDING_KEY",
    "CHUNK_DIM",
    "COORDS",
    "COORD_CHUNK",
    "COORD_SHARD",
    "DIGEST",
    "DIM",
    "DONE",
    "FORMAT_VERSION",
    "HIT_INDEX",
    "HIT_VALUE",
    "READABLE_VERSIONS",
    "RESERVED_NAMES",
    "SHARD_CHUNKS",
    "TOP_DELTA",
    "TOP_INDEX",
    "DamagedChunkError",
    "GroupLayout",
    "ResultStore",
    "StoreError",
    "StoreNotFoundError",
    "as_location",
    "check_format",
    "create_store",
    "open_or_create_store",
    "read_checked",
    "read_store_attrs",
    "zarr_store",
]
