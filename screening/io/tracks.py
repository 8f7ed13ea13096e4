"""Genomic signal tracks (bigWig) read as per-base ``float32``.

Missing data (NaN, i.e. no bigWig entry) becomes 0 *before* the track's transform, as in
C.Origami (CTCF used raw, ATAC as ``log(x + 1)``). A :class:`Track` holds only its path:
the pyBigWig handle is opened once per process, shared by every copy of the track there,
and never pickled, so tracks ship cheaply to Ray workers.
"""

from __future__ import annotations

import hashlib
import operator
import os
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pyBigWig

from screening.core.errors import ScreeningError
from screening.core.urls import is_url
from screening.io.staging import StagingError, stage

__all__ = ["TRANSFORMS", "Track", "TrackError", "TrackSet"]

_BIGWIG_MAGIC = 0x888FFC26
_BIGBED_MAGIC = 0x8789F2EB


class TrackError(ScreeningError, ValueError):
    """A track file, chromosome, region or transform that cannot be used."""


#: :meth:`Track.probe` reads spans up to this many bp per chromosome whole, ...
PROBE_FULL_BP = 1 << 22
#: ... longer ones at this many places ...
PROBE_SPANS = 64
#: ... of this many bp each.
PROBE_BP = 1 << 14


def _probe_points(intervals: Sequence[tuple[int, int]], length: int) -> list[tuple[int, int]]:
    """Where :meth:`Track.probe` reads: the merged, clipped intervals, or evenly spread pieces of them."""
    merged: list[list[int]] = []
    for start, end in sorted((max(0, int(s)), min(length, int(e))) for s, e in intervals):
        if start >= end:
            continue
        if merged and start <= merged[-1][1]:
            merged[-1][1] = max(merged[-1][1], end)
        else:
            merged.append([start, end])
    total = sum(end - start for start, end in merged)
    if total <= PROBE_FULL_BP:
        # whole, in pieces of PROBE_FULL_BP at most (one values() array each)
        return [(s, min(end, s + PROBE_FULL_BP)) for start, end in merged for s in range(start, end, PROBE_FULL_BP)]
    offsets = np.linspace(0, total - 1, PROBE_SPANS).astype(np.int64)  # positions along the concatenated intervals
    cumulative = np.cumsum([0] + [end - start for start, end in merged])
    points = []
    for offset in offsets.tolist():
        i = int(np.searchsorted(cumulative, offset, side="right")) - 1
        start = merged[i][0] + offset - int(cumulative[i])
        points.append((start, min(merged[i][1], start + PROBE_BP)))
    return points


def _identity(values: np.ndarray) -> np.ndarray:
    """Values as stored (C.Origami's CTCF)."""
    return np.asarray(values, dtype=np.float32)


def _log1p(values: np.ndarray) -> np.ndarray:
    """Natural ``log(x + 1)`` (C.Origami's ATAC); computed in float64 like the original.

    Values below -1 give NaN, exactly -1 gives -inf: such tracks need no log transform.
    """
    return np.log1p(np.asarray(values, dtype=np.float64)).astype(np.float32)


TRANSFORMS: dict[str, Callable[[np.ndarray], np.ndarray]] = {
    "none": _identity,
    "log1p": _log1p,
}
"""Named value transforms, ``float32`` in and out, applied after NaN → 0."""


# pyBigWig handles are not safe for concurrent reads, so each comes with a lock. They are
# kept at module level, keyed by process id, so every unpickled copy of a track in a
# worker reuses one handle and a forked child never shares its parent's file position.
_LOCK = threading.Lock()
_HANDLES: dict[tuple[int, str], tuple[Any, threading.Lock]] = {}


def _check_magic(path: Path) -> None:
    """Recognise a bigWig by its header before pyBigWig (which prints C errors) sees it."""
    with path.open("rb") as handle:
        head = handle.read(4)
    if len(head) < 4:
        raise TrackError(f"track {path} is not a bigWig (file is {len(head)} bytes long)")
    magics = {int.from_bytes(head, "little"), int.from_bytes(head, "big")}
    if _BIGBED_MAGIC in magics:
        raise TrackError(f"track {path} is a bigBed, not a bigWig")
    if _BIGWIG_MAGIC not in magics:
        raise TrackError(f"track {path} is not a bigWig (unknown file signature {head.hex()})")


def _open_bigwig(path: Path) -> Any:
    if not path.is_file():
        raise TrackError(f"track {path} does not exist")
    _check_magic(path)
    try:
        handle = pyBigWig.open(str(path))
    except RuntimeError as err:
        raise TrackError(f"track {path} is not a readable bigWig: {err}") from None
    if handle is None or not handle.isBigWig():
        raise TrackError(f"track {path} is not a readable bigWig (corrupt?)")
    return handle


class Track:
    """One bigWig signal track.

    Parameters
    ----------
    path
        A bigWig file, or a URL (``s3://``, ``https://``, any fsspec URL) staged once per node
        by :mod:`screening.io.staging`.
    name
        The track's label (e.g. ``"ctcf"``), used in errors and outputs.
    transform
        A key of :data:`TRANSFORMS`: ``"none"`` or ``"log1p"``.

    Raises
    ------
    TrackError
        If the file is missing or not a bigWig, or the transform is unknown.
    """

    def __init__(self, path: str | os.PathLike, name: str, transform: str = "none") -> None:
        if transform not in TRANSFORMS:
            raise TrackError(f"track {name!r}: unknown transform {transform!r}; choose one of {', '.join(TRANSFORMS)}")
        if is_url(path):  # s3://, http(s)://, file://: a node-local copy
            try:
                path = stage(os.fspath(path))
            except StagingError as err:
                raise TrackError(f"track {name!r}: {err}") from None
        self._path = Path(path).expanduser().absolute()
        self._name = name
        self._transform = transform
        self._sha256: str | None = None
        self._handle()  # fail now on a missing or corrupt file, not in a worker
        self._sizes = dict(self._locked(lambda bw: bw.chroms()))

    # -- identity -------------------------------------------------------------------------

    @property
    def path(self) -> Path:
        """Absolute path of the bigWig."""
        return self._path

    @property
    def name(self) -> str:
        """Label of the track."""
        return self._name

    @property
    def transform(self) -> str:
        """Name of the transform applied after NaN → 0."""
        return self._transform

    def __repr__(self) -> str:
        return f"Track({str(self._path)!r}, name={self._name!r}, transform={self._transform!r})"

    def sha256(self) -> str:
        """Streamed SHA-256 of the bigWig file (cached on the object)."""
        if self._sha256 is None:
            digest = hashlib.sha256()
            with self._path.open("rb") as handle:
                while block := handle.read(1 << 24):
                    digest.update(block)
            self._sha256 = digest.hexdigest()
        return self._sha256

    @property
    def chrom_sizes(self) -> dict[str, int]:
        """``{chrom: length}`` as stored in the bigWig header."""
        return dict(self._sizes)

    # -- handle ---------------------------------------------------------------------------

    def _handle(self) -> tuple[Any, threading.Lock]:
        key = (os.getpid(), str(self._path))
        with _LOCK:
            entry = _HANDLES.get(key)
            if entry is None:
                entry = _HANDLES[key] = (_open_bigwig(self._path), threading.Lock())
            return entry

    def _locked(self, read: Callable[[Any], Any]) -> Any:
        handle, lock = self._handle()
        with lock:
            return read(handle)

    def close(self) -> None:
        """Close this process's handle for the file (re-opened on the next fetch)."""
        with _LOCK:
            entry = _HANDLES.pop((os.getpid(), str(self._path)), None)
        if entry is not None:
            with entry[1]:
                entry[0].close()

    def __getstate__(self) -> dict[str, Any]:
        # the handle lives in the module-level cache, never on the object
        return dict(self.__dict__)

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)

    # -- values ---------------------------------------------------------------------------

    def _check_region(self, chrom: str, start: int, end: int, padded: bool = False) -> tuple[int, int]:
        if chrom not in self._sizes:
            known = ", ".join(list(self._sizes)[:10]) + (" …" if len(self._sizes) > 10 else "")
            raise TrackError(f"track {self._name} ({self._path}) has no chromosome {chrom!r}; it has {known}")
        try:
            start, end = operator.index(start), operator.index(end)
        except TypeError:
            raise TrackError(f"track {self._name}: coordinates must be integers, got {start!r}, {end!r}") from None
        where = f"track {self._name} ({self._path}): region {chrom}:{start:,}-{end:,}"
        if end <= start:
            raise TrackError(f"{where} is empty (end must be greater than start)")
        if not padded and start < 0:
            raise TrackError(f"{where} has a negative start")
        if not padded and end > self._sizes[chrom]:
            raise TrackError(f"{where} runs past the end of {chrom} (length {self._sizes[chrom]:,})")
        return start, end

    def _raw(self, chrom: str, start: int, end: int) -> np.ndarray:
        values = self._locked(lambda bw: bw.values(chrom, start, end, numpy=True))
        values = np.asarray(values, dtype=np.float32)
        values[np.isnan(values)] = 0.0  # no data → 0 before the transform
        return values

    def probe(self, spans: Mapping[str, Sequence[tuple[int, int]]]) -> None:
        """Read a sample of the data blocks under ``spans``, refusing a corrupt file by name.

        A corrupt (e.g. cut or overwritten) data block only fails when a read reaches it,
        in a worker, after the store exists. Spans of up to :data:`PROBE_FULL_BP` bp per
        chromosome are read whole; longer ones at :data:`PROBE_SPANS` evenly spread places
        (:data:`PROBE_BP` bp each), so a check stays quick on a genome-wide screen.

        Parameters
        ----------
        spans
            ``{chrom: [(start, end), ...]}``, 0-based half-open, e.g. the model windows of a
            plan; clipped to the chromosome.

        Raises
        ------
        TrackError
            Naming the track, its file and the chromosome (and where) of the first unreadable
            block, or a chromosome the bigWig lacks.
        """
        for chrom, intervals in spans.items():
            if chrom not in self._sizes:
                self._check_region(chrom, 0, 1)  # raises: the bigWig has no such chromosome
            for start, end in _probe_points(intervals, self._sizes[chrom]):
                try:
                    self._locked(lambda bw, s=start, e=end: bw.values(chrom, s, e, numpy=True))
                except RuntimeError as err:  # pyBigWig: "An error occurred while fetching values!"
                    raise TrackError(
                        f"track {self._name} ({self._path}): the data of {chrom} at {chrom}:{start:,}-{end:,} "
                        f"cannot be read ({err}); the bigWig is corrupt or truncated"
                    ) from None

    def fetch(self, chrom: str, start: int, end: int) -> np.ndarray:
        """Per-base values of ``chrom:[start, end)``, NaN → 0, then the transform.

        Returns
        -------
        numpy.ndarray
            ``float32`` of length ``end - start``.

        Raises
        ------
        TrackError
            On a chromosome the bigWig lacks, a negative start, an empty region or one past
            the chromosome end.
        """
        start, end = self._check_region(chrom, start, end)
        return TRANSFORMS[self._transform](self._raw(chrom, start, end))

    def fetch_padded(self, chrom: str, start: int, end: int) -> np.ndarray:
        """Like :meth:`fetch`, but positions outside the chromosome read as 0 (before the
        transform, so ``log1p`` pads with 0 too)."""
        start, end = self._check_region(chrom, start, end, padded=True)
        raw = np.zeros(end - start, dtype=np.float32)
        lo, hi = max(start, 0), min(end, self._sizes[chrom])
        if lo < hi:
            raw[lo - start : hi - start] = self._raw(chrom, lo, hi)
        return TRANSFORMS[self._transform](raw)

    def check_finite(self, chroms: Sequence[str]) -> None:
        """Refuse a track whose values on ``chroms`` are, or transform to, inf or NaN.

        Reads each chromosome's min and max from the bigWig's zoom summaries (cheap; no data
        scan when the file has zoom levels). NaN values are gaps, read as 0, and are not
        counted by the summaries. pyBigWig's ``header()`` is not used: it crashes the
        process on a file whose total sum is not finite.

        Raises
        ------
        TrackError
            Naming the track, its file, the chromosome and the offending value.
        """
        for chrom in chroms:
            if chrom not in self._sizes:
                continue  # a missing chromosome is reported by TrackSet.check
            low, high = (self._locked(lambda bw, kind=kind: bw.stats(chrom, type=kind))[0] for kind in ("min", "max"))
            if low is None:  # no data on the chromosome: all gaps, read as 0
                continue
            where = f"track {self._name} ({self._path}): {chrom}"
            for value in (low, high):
                if not np.isfinite(value):
                    raise TrackError(f"{where} holds the value {value}; a model cannot use non-finite inputs")
            if self._transform == "log1p" and low <= -1:
                raise TrackError(
                    f"{where} holds the value {low} (minimum), which transform log1p turns into "
                    f"{'-inf' if low == -1 else 'NaN'}; use transform: none for a track with values <= -1"
                )


class TrackSet:
    """An ordered collection of tracks, fetched together as ``[n_tracks, L]``.

    Parameters
    ----------
    tracks
        Tracks in model channel order; names must be unique.

    Raises
    ------
    TrackError
        On duplicate track names or a non-:class:`Track` element.
    """

    def __init__(self, tracks: Sequence[Track]) -> None:
        self._tracks = list(tracks)
        for track in self._tracks:
            if not isinstance(track, Track):
                raise TrackError(f"TrackSet takes Track objects, got {track!r}")
        names = [track.name for track in self._tracks]
        duplicated = sorted({n for n in names if names.count(n) > 1})
        if duplicated:
            raise TrackError(f"track names must be unique; repeated: {', '.join(duplicated)}")

    @property
    def names(self) -> list[str]:
        """Track names in channel order."""
        return [track.name for track in self._tracks]

    @property
    def tracks(self) -> list[Track]:
        """The tracks in channel order."""
        return list(self._tracks)

    def __len__(self) -> int:
        return len(self._tracks)

    def __iter__(self) -> Iterator[Track]:
        return iter(self._tracks)

    def __getitem__(self, key: int | str) -> Track:
        if isinstance(key, str):
            for track in self._tracks:
                if track.name == key:
                    return track
            raise KeyError(f"no track named {key!r}; tracks: {', '.join(self.names)}")
        return self._tracks[key]

    def __repr__(self) -> str:
        return f"TrackSet({self._tracks!r})"

    def fetch(self, chrom: str, start: int, end: int) -> np.ndarray:
        """Values of every track over ``chrom:[start, end)`` as ``float32 [n_tracks, L]``."""
        out = np.empty((len(self._tracks), max(end - start, 0)), dtype=np.float32)
        for row, track in zip(out, self._tracks, strict=True):
            row[:] = track.fetch(chrom, start, end)
        return out

    def fetch_padded(self, chrom: str, start: int, end: int) -> np.ndarray:
        """Like :meth:`fetch`, with 0 (before each transform) outside the chromosome."""
        out = np.empty((len(self._tracks), max(end - start, 0)), dtype=np.float32)
        for row, track in zip(out, self._tracks, strict=True):
            row[:] = track.fetch_padded(chrom, start, end)
        return out

    def check(self, chrom_sizes: Mapping[str, int]) -> None:
        """Verify that every track is a readable bigWig holding each chromosome of
        ``chrom_sizes`` with exactly that length.

        Raises
        ------
        TrackError
            Naming the file and chromosome of the first problem found.
        """
        for track in self._tracks:
            if not track.path.is_file():
                raise TrackError(f"track {track.name}: file {track.path} does not exist")
            _check_magic(track.path)
            sizes = track.chrom_sizes
            for chrom, length in chrom_sizes.items():
                if chrom not in sizes:
                    raise TrackError(f"track {track.name} ({track.path}) has no chromosome {chrom!r}")
                if sizes[chrom] != length:
                    raise TrackError(
                        f"track {track.name} ({track.path}): {chrom} has length {sizes[chrom]:,} "
                        f"but the genome's {chrom} has length {length:,} (another assembly?)"
                    )

    def check_finite(self, chroms: Sequence[str]) -> None:
        """Refuse any track whose values on ``chroms`` are, or transform to, inf or NaN
        (:meth:`Track.check_finite`), naming the first such track and chromosome."""
        for track in self._tracks:
            track.check_finite(chroms)

    def probe(self, spans: Mapping[str, Sequence[tuple[int, int]]]) -> None:
        """Read a sample of every track's data blocks under ``spans`` (:meth:`Track.probe`).

        Raises
        ------
        TrackError
            Naming the first track, file and chromosome whose data cannot be read.
        """
        for track in self._tracks:
            track.probe(spans)

    def sha256(self) -> dict[str, str]:
        """``{track name: SHA-256 of its file}``."""
        return {track.name: track.sha256() for track in self._tracks}

    def close(self) -> None:
        """Close every track's handle in this process."""
        for track in self._tracks:
            track.close()
