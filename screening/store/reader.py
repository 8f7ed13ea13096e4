"""The result store, reader side: range queries over a (possibly still running) screen.

Readers never write. A query loads the coordinates of the perturbations overlapping a
region and returns every score as a lazy dask array that reads only the overlapping chunks;
chunks whose ``chunk_done`` flag is not set read as NaN.
"""

from __future__ import annotations

import os
import uuid
from collections import OrderedDict
from typing import Any, Sequence

import dask.array as da
import numpy as np
import pandas as pd
import xarray as xr
import zarr
import zarr.errors

from screening.core.errors import ScreeningError
from screening.core.regions import Region, RegionError, parse_region, validate_region
from screening.store.location import Location
from screening.store.layout import (
    COORDS,
    DIM,
    DONE,
    HIT_INDEX,
    HIT_VALUE,
    DamagedChunkError,
    StoreError,
    StoreNotFoundError,
    screening_attrs,
    as_location,
    check_format,
    coords_from,
    indexed_chunks,
    regular_overlap,
    read_checked,
    read_store_attrs,
    stored_chunks,
    zarr_store,
)

# StoreError / StoreNotFoundError / DamagedChunkError are re-exported: open_results and queries raise them.
__all__ = [
    "DamagedChunkError",
    "Results",
    "ResultsError",
    "StoreError",
    "StoreNotFoundError",
    "dataset_to_frame",
    "open_results",
]

_COORD_CACHE = 8  # (chrom, analysis) groups whose start/end stay in memory
_TOP_BLOCK = 1 << 18  # score values read at a time by Results.nlargest
_DASK_ROWS = 1 << 18  # about this many score values per dask block of a query (whole units)


class ResultsError(ScreeningError, ValueError):
    """A query that names an unknown analysis or score."""


def _meta(group: zarr.Group) -> dict[str, Any]:
    """A group's attributes: JSON values whose meaning docs/store.md fixes (``n_chunks``, ``scores``, ``kind`` …)."""
    return group.attrs.asdict()


def _array(group: zarr.Group, name: str) -> zarr.Array:
    """``group[name]``: an array of the store layout."""
    node = group[name]
    if not isinstance(node, zarr.Array):
        raise StoreError(f"{group.store_path}/{name} is a group where the store layout has an array")
    return node


def _grouped(group: zarr.Group) -> bool:
    """Format 3: units in blocks, flags one object per block (``block_units`` in the group's attributes)."""
    return int(_meta(group).get("block_units", 0)) > 0


def _done_units(group: zarr.Group) -> np.ndarray:
    """Indices (ascending) of a group's done units. Format 3: its flag chunks (one per block) are read;
    earlier formats: one listing of the stored flag objects (a missing flag is 0). A flag that cannot
    be decoded counts as done here (the unit's scores are still checksum-verified when read)."""
    flags = _array(group, DONE)
    if not _grouped(group):
        return np.fromiter(sorted(stored_chunks(flags)), dtype=np.int64)
    try:
        return np.flatnonzero(np.asarray(flags[:]))
    except Exception:  # noqa: BLE001  a damaged flag block: its units count as done, as above
        size, done = flags.chunks[0], []
        for k0 in range(0, flags.shape[0], size):
            try:
                done.append(k0 + np.flatnonzero(np.asarray(flags[k0 : k0 + size])))
            except Exception:  # noqa: BLE001
                done.append(np.arange(k0, min(k0 + size, flags.shape[0])))
        return np.concatenate(done).astype(np.int64)


def _remote_root_group(location: Location) -> zarr.Group | None:
    """The root group of a remote store, opened with one GET (its consolidated ``zarr.json`` holds every
    node's metadata and the root attributes), or ``None`` when it cannot be opened: then
    :func:`read_store_attrs` tells why (nothing there, another kind of object, an unreachable endpoint).
    Opening a store for a query thus costs one S3 client and one GET instead of two of each.

    Raises
    ------
    StoreError
        If the object store cannot be read (refused credentials, an unreachable endpoint), naming the URL.
    """
    try:
        return zarr.open_group(zarr_store(location, read_only=True), mode="r", zarr_format=3)
    except (FileNotFoundError, KeyError, ValueError, zarr.errors.BaseZarrError):
        return None  # nothing there, or not a zarr group: read_store_attrs says which
    except Exception as err:  # noqa: BLE001  fsspec backends raise many types (see layout._remote)
        raise StoreError(f"{location}: cannot read the object store: {type(err).__name__}: {err}") from err


def open_results(path: str | os.PathLike, storage_options: dict[str, Any] | None = None) -> Results:
    """Open a result store for queries.

    Parameters
    ----------
    path
        A store written by a screen (complete or still running): a local path or an fsspec
        URL such as ``s3://bucket/screen.zarr``.
    storage_options
        fsspec options of a URL; credentials and ``AWS_ENDPOINT_URL`` otherwise come from the
        environment.

    Raises
    ------
    StoreNotFoundError
        If ``path`` does not exist.
    StoreError
        If ``path`` is not a screening result store, or of an unsupported format version, or
        the object store cannot be read (the message names the URL).
    """
    return Results(path, storage_options)


class Results:
    """Read-only view of a result store (picklable: holds the path only).

    Parameters
    ----------
    path
        A screening result store (local path or fsspec URL).
    storage_options
        fsspec options of a URL.
    """

    def __init__(self, path: str | os.PathLike, storage_options: dict[str, Any] | None = None) -> None:
        local = as_location(path, storage_options)
        root = _remote_root_group(local) if local.remote else None
        attrs = screening_attrs(root.attrs.asdict()) if root is not None else None
        if attrs is None:
            root = None
            attrs = read_store_attrs(local)  # raises StoreNotFoundError when missing (names the cause)
        if attrs is None:
            raise StoreError(f"{local} is not a screening result store")
        check_format(attrs, local)
        self._location = local
        self.path = str(local)
        self.storage_options = dict(local.storage_options)
        self._attrs = attrs
        self._root: zarr.Group | None = root
        self._coords: OrderedDict[tuple[str, str], tuple[np.ndarray, np.ndarray, bool]] = OrderedDict()

    def __getstate__(self) -> dict[str, Any]:
        return {"path": self.path, "storage_options": self.storage_options}

    def __setstate__(self, state: dict[str, Any]) -> None:
        Results.__init__(self, state["path"], state.get("storage_options"))

    def __repr__(self) -> str:
        done, total = self.progress
        return (
            f"<Results {self.path}: {len(self.chromosomes)} chromosomes, analyses {self.analyses}, "
            f"{done}/{total} units done>"
        )

    # -- metadata
    @property
    def spec(self) -> dict[str, Any]:
        """The screen spec the store was created for."""
        return self._attrs["spec"]

    @property
    def spec_sha256(self) -> str:
        """Hash of the spec's science fields."""
        return self._attrs["spec_sha256"]

    @property
    def provenance(self) -> dict[str, Any]:
        """Versions, model, genome and track checksums recorded at creation."""
        return self._attrs["provenance"]

    @property
    def analyses(self) -> list[str]:
        """Analysis names, in spec order."""
        return list(self._attrs["analyses"])

    @property
    def chromosomes(self) -> dict[str, int]:
        """Chromosomes holding results, with their lengths."""
        return dict(self._attrs["chromosomes"])

    @property
    def checksummed(self) -> bool:
        """Whether chunks carry checksums verified on read (format 2); format 1 stores are unverified."""
        return int(self._attrs.get("format_version", 1)) >= 2

    @property
    def is_complete(self) -> bool:
        """Whether the driver recorded the screen as finished (read fresh)."""
        attrs = read_store_attrs(self._location) or {}
        return bool(attrs.get("complete", False))

    @property
    def progress(self) -> tuple[int, int]:
        """``(done, total)`` work units (chunks), read fresh."""
        done = total = 0
        for chrom in self.chromosomes:
            for analysis in self.analyses:
                group = self._group(chrom, analysis)
                if group is None:
                    continue
                n_chunks = int(_meta(group)["n_chunks"])
                total += n_chunks
                if n_chunks:
                    done += len(_done_units(group))
        return done, total

    def resolve_analysis(self, analysis: str | None = None) -> str:
        """``analysis``, or the only one when ``None``.

        Raises
        ------
        ResultsError
            If it is unknown, or ``None`` while the store holds several.
        """
        if analysis is None:
            if len(self.analyses) == 1:
                return self.analyses[0]
            raise ResultsError(f"this store holds several analyses; pick one of {self.analyses}")
        if analysis not in self.analyses:
            raise ResultsError(f"unknown analysis {analysis!r}; the store holds {self.analyses}")
        return analysis

    def scores(self, analysis: str | None = None) -> list[str]:
        """Score names of an analysis."""
        analysis = self.resolve_analysis(analysis)
        for chrom in self.chromosomes:
            group = self._group(chrom, analysis)
            if group is not None:
                return list(_meta(group)["scores"])
        return []

    def check_score(self, score: str, analysis: str | None = None) -> None:
        """Raise :class:`ResultsError` unless ``score`` is a score of ``analysis``."""
        available = self.scores(analysis)
        if score not in available:
            raise ResultsError(f"unknown score {score!r}; available: {available}")

    def resolve_region(self, region: str | Region) -> Region:
        """Parse ``region`` and resolve it against the stored chromosomes.

        Raises
        ------
        RegionError
            If malformed, on a chromosome without results, or past the chromosome end.
        """
        region = parse_region(region)
        if region.chrom not in self.chromosomes:
            raise RegionError(
                f"region {region}: chromosome {region.chrom!r} has no results in this store "
                f"(it holds {', '.join(self.chromosomes)})"
            )
        return validate_region(region, self.chromosomes)

    # -- data
    def _open_root(self) -> zarr.Group:
        if self._root is None:
            self._root = zarr.open_group(zarr_store(self._location, read_only=True), mode="r", zarr_format=3)
        return self._root

    def _group(self, chrom: str, analysis: str) -> zarr.Group | None:
        root = self._open_root()
        try:
            node = root[f"{chrom}/{analysis}"]
        except KeyError:
            return None
        return node if isinstance(node, zarr.Group) else None

    def score_array(self, chrom: str, analysis: str, score: str) -> zarr.Array | None:
        """The stored (read-only) zarr array of one score, for readers that stream its rows themselves.

        Rows of units that are not done hold fill values or stale data: read ``query(...)["done"]`` (or
        the group's ``chunk_done``) to know which rows count. ``None`` when the group or score is absent.
        """
        group = self._group(chrom, analysis)
        if group is None or score not in self.scores(analysis):
            return None
        node = group.get(score)
        return node if isinstance(node, zarr.Array) else None

    def _start_end(self, chrom: str, analysis: str, group: zarr.Group) -> tuple[np.ndarray, np.ndarray, bool]:
        key = (chrom, analysis)
        if key in self._coords:
            self._coords.move_to_end(key)
        else:
            regular = _meta(group).get("regular")
            if regular is not None:  # format 3, tiled kinds: computed, not read
                start, end = coords_from(regular)
            else:
                start, end = (self._read(group, name, slice(None), chrom, analysis) for name in ("start", "end"))
            self._coords[key] = (start, end, bool(np.all(np.diff(end) >= 0)))
            while len(self._coords) > _COORD_CACHE:
                self._coords.popitem(last=False)
        return self._coords[key]

    def _read(self, group: zarr.Group, name: str, key: Any, chrom: str, analysis: str) -> np.ndarray:
        """``group[name][key]``; an undecodable chunk raises :class:`DamagedChunkError` naming it."""
        return read_checked(_array(group, name), key, self.path, f"{chrom}/{analysis}/{name}")

    def _span(self, chrom: str, analysis: str, group: zarr.Group) -> Any:
        """``span(k)``: the genomic range of chunk ``k``, for error messages."""
        chunk_size = int(_meta(group)["chunk_size"])

        def span(k: int) -> str:
            start, end, _ = self._start_end(chrom, analysis, group)
            rows = slice(k * chunk_size, (k + 1) * chunk_size)
            return f"{chrom}:{int(start[rows].min()):,}-{int(end[rows].max()):,}" if len(start[rows]) else ""

        return span

    def _overlapping(
        self, chrom: str, analysis: str, group: zarr.Group, region: Region
    ) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        """Indices (ascending) of the perturbations whose ``[start, end)`` overlaps ``region``, and their
        ``start``/``end`` where these were read to find them (``{}`` for regular groups)."""
        assert region.end is not None  # resolved by resolve_region
        meta = _meta(group)
        regular = meta.get("regular")
        if regular is not None:  # format 3, tiled kinds: by arithmetic, no chromosome-long array
            return np.arange(*regular_overlap(regular, region.start, region.end)), {}
        index = meta.get("coord_index")
        # format 3, irregular: only the coordinate chunks it may overlap (unless read whole already)
        if index is not None and (chrom, analysis) not in self._coords:
            return self._indexed_overlap(chrom, analysis, group, index, region)
        start, end, end_sorted = self._start_end(chrom, analysis, group)
        hi = int(np.searchsorted(start, region.end, side="left"))  # start < region.end
        if end_sorted:
            lo = int(np.searchsorted(end, region.start, side="right"))  # end > region.start
            idx = np.arange(lo, max(lo, hi))
        else:
            idx = np.flatnonzero(end[:hi] > region.start)
        return idx, {"start": start[idx], "end": end[idx]}

    def _indexed_overlap(
        self, chrom: str, analysis: str, group: zarr.Group, index: dict[str, Any], region: Region
    ) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        """:meth:`_overlapping` of an irregular group from its ``coord_index``: only the coordinate chunks
        whose first start and largest end allow an overlap are read (a run of them in one read)."""
        assert region.end is not None  # resolved by resolve_region
        rows, n = int(index["rows"]), int(_meta(group)["n"])
        chunks = indexed_chunks(index, region.start, region.end)
        found: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []
        i = 0
        while i < len(chunks):
            j = i + 1
            while j < len(chunks) and chunks[j] == chunks[j - 1] + 1:
                j += 1
            lo, hi = int(chunks[i]) * rows, min(n, (int(chunks[j - 1]) + 1) * rows)
            start, end = (self._read(group, name, slice(lo, hi), chrom, analysis) for name in ("start", "end"))
            hit = np.flatnonzero((start < region.end) & (end > region.start))
            found.append((lo + hit, start[hit], end[hit]))
            i = j
        if not found:
            empty = np.zeros(0, np.int64)
            return empty, {"start": empty, "end": empty}
        idx, start, end = (np.concatenate(parts) for parts in zip(*found))
        return idx.astype(np.int64), {"start": start, "end": end}

    def query(self, region: str | Region, analysis: str | None = None) -> xr.Dataset:
        """The perturbations overlapping ``region``, with lazy scores.

        Parameters
        ----------
        region
            ``"chr1:1,400,000-1,410,000"`` (0-based, half-open), a whole chromosome
            ``"chr1"``, or a :class:`~screening.core.regions.Region`.
        analysis
            Analysis name; may be left out when the store holds only one.

        Returns
        -------
        xarray.Dataset
            Dimension ``perturbation`` (coordinate: index within the chromosome's analysis
            group), coordinates ``start``, ``end``, ``window_start`` (in memory), one
            dask-backed float32 variable per score (NaN where the chunk is not done) and a
            boolean ``done``. Attributes: ``analysis``, ``kind``, ``params``, ``chrom``,
            ``region``.
        """
        region = self.resolve_region(region)
        analysis = self.resolve_analysis(analysis)
        group = self._group(region.chrom, analysis)
        attrs = {"analysis": analysis, "chrom": region.chrom, "region": str(region)}
        if group is None:  # this analysis has no perturbations on this chromosome
            return _empty_dataset(self.scores(analysis), attrs)
        meta = _meta(group)
        attrs.update(kind=meta["kind"], params=meta["params"])
        idx, known = self._overlapping(region.chrom, analysis, group, region)
        where = _Where(
            self.path, f"{region.chrom}/{analysis}", self._span(region.chrom, analysis, group), int(meta["chunk_size"])
        )
        return _dataset(group, idx, attrs, where, known)

    def spec_kind(self, analysis: str) -> str:
        """The perturbation kind of an analysis, from the stored spec."""
        for entry in self.spec.get("perturbations", []):
            label = entry.get("name") or None
            if label == analysis:
                return entry["kind"]
        for chrom in self.chromosomes:
            group = self._group(chrom, analysis)
            if group is not None:
                return str(_meta(group)["kind"])
        raise ResultsError(f"unknown analysis {analysis!r}; the store holds {self.analyses}")

    def top_maps(self, region: str | Region, analysis: str | None = None) -> xr.DataArray:
        """Stored Δ maps (perturbed − reference) of kept top perturbations overlapping ``region``.

        Only analyses run with ``keep_maps: K`` have them: the K strongest perturbations of each
        done work unit (a unit whose ``chunk_done`` flag is not set shows none). Returns
        ``[top, row, col]`` with coordinates ``start``, ``end`` (and ``base`` for mutagenesis),
        strongest first within each unit.
        """
        region = self.resolve_region(region)
        analysis = self.resolve_analysis(analysis)
        group = self._group(region.chrom, analysis)
        keep = int(_meta(group).get("top_maps", [0])[0]) if group is not None else 0
        if group is None or not keep:
            raise ResultsError(f"analysis {analysis!r} kept no Δ maps (run it with keep_maps: K)")
        chrom = region.chrom
        index = self._read(group, "top_index", slice(None), chrom, analysis)
        done = np.zeros(len(index) // keep, bool)
        done[_done_units(group)] = True
        index = np.where(np.repeat(done, keep), index, -1)  # units not done (yet, or cleared) show none
        per_base = dict(_meta(group).get("extra_dims", {})).get("base") == 4
        row = np.where(index >= 0, index // 4 if per_base else index, -1)
        start, end, _ = self._start_end(chrom, analysis, group)
        hit = np.flatnonzero((row >= 0) & (start[row] < region.end) & (end[row] > region.start))
        maps = self._top_delta(group, hit, chrom, analysis) if hit.size else np.zeros((0, 0, 0), np.float32)
        coords = {"start": ("top", start[row[hit]]), "end": ("top", end[row[hit]])}
        if per_base:
            coords["base"] = ("top", np.array(list("ACGT"))[index[hit] % 4])
        return xr.DataArray(
            maps,
            dims=("top", "row", "col"),
            coords=coords,
            name="delta",
            attrs={"analysis": analysis, "chrom": region.chrom},
        )

    def _top_delta(self, group: zarr.Group, hit: np.ndarray, chrom: str, analysis: str) -> np.ndarray:
        """Rows ``hit`` (ascending) of ``top_delta``, read as one slice per run of adjacent chunks (zarr's
        orthogonal selection decodes a sharded array's chunks one at a time: 20× slower)."""
        delta = _array(group, "top_delta")
        keep = delta.chunks[0]
        chunk = hit // keep
        runs = np.split(np.arange(hit.size), np.flatnonzero(np.diff(chunk) > 1) + 1)
        out = np.empty((hit.size, *delta.shape[1:]), np.float32)
        for run in runs:
            lo, hi = int(chunk[run[0]]) * keep, (int(chunk[run[-1]]) + 1) * keep
            out[run] = self._read(group, "top_delta", slice(lo, hi), chrom, analysis)[hit[run] - lo]
        return out

    def nlargest(self, chrom: str, score: str, n: int, analysis: str | None = None) -> pd.DataFrame:
        """The ``n`` perturbations of a whole chromosome with the largest ``score``, strongest first.

        The same rows, in the same order, as ``to_dataframe(chrom, analysis).dropna(subset=[score])
        .nlargest(n, score)`` (columns ``chrom, start, end, <labels…>`` or ``<base>``, then ``score``),
        without building the table: the chromosome's done units are found by one listing of their
        ``chunk_done`` flags, their scores are read in blocks of about ``_TOP_BLOCK`` rows with numpy
        and only a running top ``n`` is kept (memory bounded by the block, not the chromosome). A
        damaged ``chunk_done`` flag counts as done here (its scores are still checksum-verified).
        """
        analysis = self.resolve_analysis(analysis)
        self.check_score(score, analysis)
        if chrom not in self.chromosomes:
            raise RegionError(
                f"chromosome {chrom!r} has no results in this store (it holds {', '.join(self.chromosomes)})"
            )
        group = self._group(chrom, analysis)
        meta = _meta(group) if group is not None else {}
        extra_dims = dict(meta.get("extra_dims", {}))
        dims = list(meta.get("score_dims", {}).get(score, list(extra_dims)))
        labels = [] if dims else list(meta.get("labels", []))
        if group is None or n <= 0:
            return _top_frame(chrom, np.zeros(0, np.int64), {}, dims, score, np.zeros(0, np.float32))
        if dims != list(extra_dims) or len(dims) > 1:  # scores of mixed or several trailing dims: the table itself
            return self.to_dataframe(chrom, analysis).dropna(subset=[score]).nlargest(n, score).reset_index(drop=True)
        chunk_size, total = int(meta["chunk_size"]), int(meta["n"])
        width = int(np.prod([extra_dims[d] for d in dims])) if dims else 1
        array = _array(group, score)
        where = _Where(self.path, f"{chrom}/{analysis}", self._span(chrom, analysis, group), chunk_size)
        done = _done_units(group)
        if _grouped(group) and n <= int(meta.get("hit_k", 0)):
            best_pos, best_val = self._summary_top(group, score, n, done, chunk_size, width, chrom, analysis)
            return self._top_table(group, chrom, best_pos, best_val, width, dims, extra_dims, labels, score)
        per_block = max(1, _TOP_BLOCK // (chunk_size * width))
        best_pos, best_val = np.zeros(0, np.int64), np.zeros(0, np.float32)
        for b in range(0, len(done), per_block):
            units = done[b : b + per_block]
            rows = (units[:, None] * chunk_size + np.arange(chunk_size)).ravel()
            rows = rows[rows < total]
            values = self._read_rows(array, rows, units, where, score).reshape(len(rows), width)
            flat = (rows[:, None] * width + np.arange(width)).ravel()  # position in the table's row order
            keep = _top_n(values.ravel(), n)
            pos = np.concatenate([best_pos, flat[keep]])
            val = np.concatenate([best_val, values.ravel()[keep]])
            order = np.argsort(pos, kind="stable")  # keep="first" ties need table order
            pos, val = pos[order], val[order]
            chosen = _top_n(val, n)
            best_pos, best_val = pos[chosen], val[chosen]
        return self._top_table(group, chrom, best_pos, best_val, width, dims, extra_dims, labels, score)

    def _summary_top(
        self,
        group: zarr.Group,
        score: str,
        n: int,
        done: np.ndarray,
        chunk_size: int,
        width: int,
        chrom: str,
        analysis: str,
    ) -> tuple[np.ndarray, np.ndarray]:
        """The chromosome's top ``n`` from the blocks' stored top-k summaries (format 3, ``n`` ≤ k):
        the global top ``n`` is among the blocks' top k, ties included (a value left out of a block's
        top k follows k at least as large and earlier ones of its block)."""
        column = list(_meta(group)["scores"]).index(score)
        pos = self._read(group, HIT_INDEX, (slice(None), column), chrom, analysis)
        val = self._read(group, HIT_VALUE, (slice(None), column), chrom, analysis)
        is_done = np.zeros(int(_meta(group)["n_chunks"]), bool)
        is_done[done] = True
        keep = (pos >= 0) & is_done[np.clip(pos // width // chunk_size, 0, max(0, len(is_done) - 1))]
        pos, val = pos[keep], val[keep]
        order = np.argsort(pos, kind="stable")  # ties in table order, as nlargest(keep="first")
        pos, val = pos[order], val[order]
        chosen = _top_n(val, n)
        return pos[chosen], val[chosen]

    def _top_table(
        self,
        group: zarr.Group,
        chrom: str,
        best_pos: np.ndarray,
        best_val: np.ndarray,
        width: int,
        dims: list[str],
        extra_dims: dict[str, int],
        labels: list[str],
        score: str,
    ) -> pd.DataFrame:
        """:meth:`nlargest`'s table of the chosen positions (``row·width + column``) and values."""
        rows = best_pos // width
        coords = {}
        for name in ("start", "end", *labels):
            coords[name] = (
                np.asarray(_array(group, name).get_coordinate_selection(rows)) if len(rows) else np.zeros(0, np.int64)
            )
        if dims:
            names = np.array(list("ACGT")) if extra_dims.get("base") == 4 else np.arange(width)
            coords[dims[0]] = names[best_pos % width]
        return _top_frame(chrom, rows, coords, dims, score, best_val, labels)

    def _read_rows(
        self, array: zarr.Array, rows: np.ndarray, units: np.ndarray, where: _Where, name: str
    ) -> np.ndarray:
        """Rows of a score array (only the chunks holding them are read); a damaged chunk is named."""
        try:
            return np.asarray(array.get_orthogonal_selection((rows, *[slice(None)] * (array.ndim - 1))))
        except Exception:  # noqa: BLE001  read the units one by one to name the damaged chunk
            size = where.unit or array.chunks[0]
            for k in units:
                where.read(array, name, slice(int(k) * size, min((int(k) + 1) * size, array.shape[0])))
            raise

    def to_dataframe(self, region: str | Region, analysis: str | None = None) -> pd.DataFrame:
        """:meth:`query` as a :class:`pandas.DataFrame`: ``chrom, start, end, <scores…>``."""
        return dataset_to_frame(self.query(region, analysis))


def _top_n(values: np.ndarray, n: int) -> np.ndarray:
    """Positions of the ``n`` largest non-NaN values, largest first, ties in order of position
    (what ``pandas.Series.nlargest(n, keep="first")`` returns)."""
    series = pd.Series(values)
    return series.dropna().nlargest(n).index.to_numpy(dtype=np.int64)


def _top_frame(
    chrom: str,
    rows: np.ndarray,
    coords: dict[str, np.ndarray],
    dims: list[str],
    score: str,
    values: np.ndarray,
    labels: Sequence[str] = (),
) -> pd.DataFrame:
    """:meth:`Results.nlargest`'s table: the columns :func:`dataset_to_frame` gives these rows."""
    empty = np.zeros(0, np.int64)
    frame = {"start": coords.get("start", empty), "end": coords.get("end", empty)}
    for name in (*dims[:1], *labels):
        frame[name] = coords.get(name, np.zeros(0, object))
    frame[score] = np.asarray(values, np.float32)
    table = pd.DataFrame(frame)
    if dims:  # as dataset_to_frame builds each kind's chrom column
        table.insert(0, "chrom", chrom)
    else:
        table.insert(0, "chrom", pd.Series([chrom] * len(rows), dtype=object))
    return table


def dataset_to_frame(ds: xr.Dataset) -> pd.DataFrame:
    """A query result as a table: ``chrom, start, end, <labels…>, <scores…>`` (one row per perturbation,
    or per perturbation and base for per-base scores). Used for local and service query results alike."""
    ds = ds.compute()
    scores = [name for name in ds.data_vars if name != "done"]
    labels = [name for name in ds.coords if name not in (DIM, "start", "end", "window_start", "base")]
    extra = [dim for dim in ds.dims if dim != DIM]
    if extra:  # e.g. mutagenesis [position, base]: one row per (perturbation, base)
        frame = ds[scores].to_dataframe().reset_index()
        frame.insert(0, "chrom", ds.attrs["chrom"])
        return frame[["chrom", "start", "end", *extra, *scores]]
    return pd.DataFrame(
        {
            "chrom": pd.Series([ds.attrs["chrom"]] * ds.sizes[DIM], dtype=object),
            "start": ds["start"].values,
            "end": ds["end"].values,
            **{name: ds[name].values for name in labels},
            **{name: ds[name].values for name in scores},
        }
    )


class _Where:
    """Where a query reads from (store, ``chrom/analysis``, chunk → genomic range), for error messages."""

    def __init__(self, store: str, group: str, span: Any, unit: int | None = None) -> None:
        self.store, self.group, self.span, self.unit = store, group, span, unit

    def read(self, array: zarr.Array, name: str, key: Any) -> np.ndarray:
        unit = self.unit if array.shards is not None else None  # format 3 score shards: name the unit
        return read_checked(array, key, self.store, f"{self.group}/{name}", self.span, unit)


class _CheckedArray:
    """Rows ``[offset, offset + length)`` of a zarr array as dask sees them: each block read names the
    chunk it cannot decode, and rows of units that are not done are NaN. Formats 1-2 (one chunk per
    unit): chunks of units that are not done are not read at all (a dead worker may have left them
    half-written). Format 3 (score shards of inner chunks of several units, each shard written whole
    by the driver, so always decodable): every inner chunk holding a done unit is read, a run of them
    in one read (on an object store: the shard's index and one ranged GET per inner chunk, instead
    of both per run of done units). A block may span many units (a whole-chromosome query is a few
    large blocks, not one task per unit)."""

    def __init__(
        self, array: zarr.Array, name: str, where: _Where, done: dict[int, bool], offset: int, length: int
    ) -> None:
        self.array, self.name, self.where, self.done = array, name, where, done
        self.offset = offset
        self.shape, self.dtype, self.ndim = (length, *array.shape[1:]), array.dtype, array.ndim

    def __getitem__(self, key: Any) -> np.ndarray:
        key = key if isinstance(key, tuple) else (key,)
        start, stop, _ = key[0].indices(self.shape[0])
        rest = key[1:]
        shape = (stop - start, *(len(range(*k.indices(n))) for k, n in zip(rest, self.shape[1:])))
        out = np.full(shape, np.nan, self.dtype)
        size, lo, hi = self.where.unit or self.array.chunks[0], self.offset + start, self.offset + stop
        # Read granules: whole inner chunks of a format 3 shard (a multiple of the unit), else units.
        grain = self.array.chunks[0] if self.array.shards is not None and self.array.chunks[0] % size == 0 else size
        per = grain // size

        def wanted(g: int) -> bool:  # a granule holding a done unit of [lo, hi)
            return any(
                self.done.get(k, True) for k in range(max(g * per, lo // size), min((g + 1) * per, -(-hi // size)))
            )

        g, g_end = lo // grain, -(-hi // grain)
        while g < g_end:  # runs of wanted granules, one read each
            if not wanted(g):
                g += 1
                continue
            run = g
            while run < g_end and wanted(run):
                run += 1
            a, b = max(lo, g * grain), min(hi, run * grain)
            out[a - lo : b - lo] = self.where.read(self.array, self.name, (slice(a, b), *rest))
            g = run
        for k in range(lo // size, -(-hi // size)):  # a granule's units that are not done: NaN
            if not self.done.get(k, True):
                out[max(0, k * size - lo) : max(0, min(hi, (k + 1) * size) - lo)] = np.nan
        return out


def _dataset(
    group: zarr.Group, idx: np.ndarray, attrs: dict[str, Any], where: _Where, known: dict[str, np.ndarray] | None = None
) -> xr.Dataset:
    """The query result of rows ``idx``; ``known``: coordinates of these rows already read."""
    meta = _meta(group)
    chunk_size = int(meta["chunk_size"])
    lo, hi = (int(idx[0]), int(idx[-1]) + 1) if idx.size else (0, 0)
    contiguous = idx.size == hi - lo
    k_lo, k_hi = lo // chunk_size, -(-hi // chunk_size)
    flags = where.read(_array(group, DONE), DONE, slice(k_lo, k_hi)) if hi > lo else np.zeros(0, np.uint8)
    done = flags[idx // chunk_size - k_lo].astype(bool)
    chunk_done = {k_lo + i: bool(flag) for i, flag in enumerate(flags)}
    coords: dict[str, Any] = {DIM: idx.astype(np.int64)}
    computed = dict(zip(("start", "end"), coords_from(meta["regular"], lo, hi))) if meta.get("regular") else {}
    for name in (*COORDS, *meta.get("labels", [])):
        if known and name in known:  # read to find the rows (irregular start/end)
            coords[name] = (DIM, known[name])
            continue
        if name in computed:  # format 3, tiled kinds: computed (the query's rows only), not read
            values = computed[name]
        else:
            values = where.read(_array(group, name), name, slice(lo, hi))
        coords[name] = (DIM, values if contiguous else values[idx - lo])
    extra_dims = dict(meta.get("extra_dims", {}))
    score_dims = meta.get("score_dims", {})
    if extra_dims.get("base") == 4:
        coords["base"] = ("base", np.array(list("ACGT")))
    data_vars: dict[str, Any] = {}
    for score in meta["scores"]:
        dims = list(score_dims.get(score, list(extra_dims)))
        array = _array(group, score)
        # The units holding [lo, hi), in dask blocks of whole units (about _DASK_ROWS values each): a
        # small query is one block; a whole chromosome a few large ones, not one task per unit.
        first, last = k_lo * chunk_size, min(k_hi * chunk_size, array.shape[0])
        width = int(np.prod(array.shape[1:], dtype=np.int64))
        rows = chunk_size * max(1, _DASK_ROWS // (chunk_size * max(1, width)))
        lazy = da.from_array(
            _CheckedArray(array, score, where, chunk_done, first, last - first),
            chunks=(rows, *array.shape[1:]),
            lock=False,
            fancy=False,
            meta=np.empty((0,) * array.ndim, array.dtype),
            name=f"screening-{uuid.uuid4().hex}",
        )[lo - first : hi - first]
        if not contiguous:
            lazy = lazy[idx - lo]
        mask = da.from_array(done.reshape(-1, *[1] * len(dims)), chunks=lazy.chunks[:1] + tuple((1,) for _ in dims))
        data_vars[score] = ((DIM, *dims), da.where(mask, lazy, np.float32(np.nan)))
    data_vars["done"] = (DIM, done)
    return xr.Dataset(data_vars, coords=coords, attrs=attrs)


def _empty_dataset(scores: list[str], attrs: dict[str, Any]) -> xr.Dataset:
    empty_int = np.zeros(0, dtype=np.int64)
    coords = {DIM: empty_int, **{name: (DIM, empty_int) for name in COORDS}}
    data_vars: dict[str, Any] = {s: (DIM, da.zeros(0, dtype=np.float32, chunks=1)) for s in scores}
    data_vars["done"] = (DIM, np.zeros(0, dtype=bool))
    return xr.Dataset(data_vars, coords=coords, attrs={**attrs, "kind": None, "params": {}})
