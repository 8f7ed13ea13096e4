"""Reference genomes as ``uint8`` base codes (A0 C1 G2 T3 N4).

Two layouts are read:

* one FASTA file, plain or bgzip-compressed, random access through pyfaidx. A missing
  ``.fai`` is built beside the FASTA, or in a per-user cache when that directory is not
  writable (shared, read-only reference data is never written to);
* a directory of per-chromosome gzip FASTAs ``<dir>/<chrom>.fa.gz`` (C.Origami's layout).
  Plain gzip has no random access, so a chromosome is decompressed once per process, on
  first use, into a bounded in-memory cache of codes.

A :class:`Genome` holds only paths: handles are opened lazily in each process and dropped
when pickled, so it ships cheaply to Ray workers.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import operator
import os
import re
import stat
import threading
import zlib
from collections import OrderedDict
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pyfaidx

from screening.core.errors import ScreeningError
from screening.core.encode import N_CODE, encode
from screening.core.urls import is_url
from screening.io.staging import FASTA_SIDECARS, StagingError, stage

__all__ = ["Genome", "GenomeError", "cache_dir"]

_FOLDER_SUFFIXES = (".fa.gz", ".fasta.gz", ".fna.gz")
_FASTA_SUFFIXES = (".fa", ".fasta", ".fna", ".fas", ".seq")
_CHUNK = 1 << 24  # 16 MiB: streaming unit for checksums and gzip decompression


class GenomeError(ScreeningError, ValueError):
    """A genome file, chromosome or region that cannot be used."""


# ---------------------------------------------------------------------------------------
# cache locations and small file helpers
# ---------------------------------------------------------------------------------------


def cache_dir(kind: str) -> Path:
    """Per-user cache folder ``$SCREENING_CACHE/<kind>`` (default ``~/.cache/screening``)."""
    root = os.environ.get("SCREENING_CACHE")
    if not root:
        xdg = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
        root = str(Path(xdg) / "screening")
    return Path(root) / kind


def _file_key(path: Path) -> str:
    """Short digest of a file's identity (absolute path, size, mtime) for cache names."""
    st = path.stat()
    text = f"{path.resolve()}\0{st.st_size}\0{st.st_mtime_ns}"
    return hashlib.sha256(text.encode()).hexdigest()[:24]


def _dir_writable(directory: Path) -> bool:
    """Whether we may write into ``directory``.

    Root passes ``os.access`` everywhere, so for root the mode bits decide too: a
    folder chmod-ed read-only (shared reference data) is treated as read-only.
    """
    if not os.access(directory, os.W_OK | os.X_OK):
        return False
    if hasattr(os, "geteuid") and os.geteuid() == 0:
        return bool(stat.S_IMODE(directory.stat().st_mode) & 0o222)
    return True


def _fresh(index: Path, data: Path) -> bool:
    """An index that exists and is not older than its data file."""
    try:
        return index.stat().st_mtime_ns >= data.stat().st_mtime_ns and index.stat().st_size > 0
    except OSError:
        return False


def _sha256_stream(path: Path, digest: hashlib._Hash) -> None:
    with path.open("rb") as handle:
        while block := handle.read(_CHUNK):
            digest.update(block)


def _sniff(path: Path) -> str:
    """Classify a file by its magic bytes: ``plain``, ``bgzf``, ``gzip``, ``empty`` or a
    compression name."""
    with path.open("rb") as handle:
        head = handle.read(18)
    if not head:
        return "empty"
    if head[:2] == b"\x1f\x8b":
        # BGZF = gzip member with FEXTRA and a 'BC' subfield (SAM spec 4.1)
        is_bgzf = len(head) >= 16 and head[3] & 4 and head[12:14] == b"BC"
        return "bgzf" if is_bgzf else "gzip"
    for magic, name in ((b"BZh", "bzip2"), (b"PK\x03\x04", "zip"), (b"\xfd7zXZ", "xz"), (b"\x28\xb5\x2f\xfd", "zstd")):
        if head.startswith(magic):
            return name
    return "plain"


def _natural_key(name: str) -> tuple:
    """chr2 before chr10: split digits out for sorting."""
    return tuple(int(part) if part.isdigit() else part for part in re.split(r"(\d+)", name))


# ---------------------------------------------------------------------------------------
# per-process caches (module level so that every unpickled copy in a worker shares them)
# ---------------------------------------------------------------------------------------

_LOCK = threading.RLock()
_HANDLES: dict[tuple[int, str, str], pyfaidx.Faidx] = {}
_CODES: OrderedDict[str, np.ndarray] = OrderedDict()


def _codes_cache_limit() -> int:
    """Bytes of decompressed chromosomes kept per process (``SCREENING_GENOME_CACHE_MB``)."""
    return int(float(os.environ.get("SCREENING_GENOME_CACHE_MB", "1024")) * (1 << 20))


def _remember_codes(key: str, codes: np.ndarray) -> None:
    with _LOCK:
        _CODES[key] = codes
        _CODES.move_to_end(key)
        # evict least recently used, but always keep the newest chromosome
        while len(_CODES) > 1 and sum(a.nbytes for a in _CODES.values()) > _codes_cache_limit():
            _CODES.popitem(last=False)


def _recall_codes(key: str) -> np.ndarray | None:
    with _LOCK:
        codes = _CODES.get(key)
        if codes is not None:
            _CODES.move_to_end(key)
        return codes


# ---------------------------------------------------------------------------------------
# single FASTA: index location and opening
# ---------------------------------------------------------------------------------------


def _check_fasta_format(path: Path) -> str:
    """Refuse files pyfaidx cannot index, with advice. Returns the sniffed kind."""
    kind = _sniff(path)
    if kind == "empty":
        raise GenomeError(f"genome FASTA {path} is empty")
    if kind == "gzip":
        raise GenomeError(
            f"genome FASTA {path} is plain gzip, which has no random access. Either "
            f"recompress it with bgzip (`gunzip -c {path.name} | bgzip > genome.fa.gz`) or "
            "give a folder of per-chromosome files <chrom>.fa.gz instead"
        )
    if kind == "bgzf":
        if not path.name.lower().endswith((".gz", ".bgz")):
            raise GenomeError(f"genome FASTA {path} is bgzip-compressed: name it *.fa.gz")
        try:
            from Bio import bgzf  # noqa: F401  (pyfaidx reads BGZF through Biopython)
        except ImportError:
            raise GenomeError(
                f"genome FASTA {path} is bgzip-compressed, which needs Biopython "
                "(`pip install biopython`); or decompress it (`bgzip -d`) and use the plain FASTA"
            ) from None
    elif kind != "plain":
        raise GenomeError(f"genome FASTA {path} is {kind}-compressed; only plain or bgzip FASTA is supported")
    return kind


def _index_paths(path: Path, where: Path) -> tuple[Path, Path]:
    return where / (path.name + ".fai"), where / (path.name + ".gzi")


def _locate_index(path: Path, bgzf: bool) -> tuple[Path, Path] | None:
    """An up-to-date existing index (beside the FASTA, else in the cache), or None."""
    for where in (path.parent, cache_dir("fai") / _file_key(path)):
        fai, gzi = _index_paths(path, where)
        if _fresh(fai, path) and (not bgzf or _fresh(gzi, path)):
            return fai, gzi
    return None


def _build_index(path: Path, where: Path) -> tuple[Path, Path]:
    """Index ``path`` into ``where``; temp names + rename keep concurrent builders safe."""
    where.mkdir(parents=True, exist_ok=True)
    fai, gzi = _index_paths(path, where)
    tag = f".tmp{os.getpid()}.{threading.get_ident()}"
    tmp_fai, tmp_gzi = fai.with_name(fai.name + tag), gzi.with_name(gzi.name + tag)
    try:
        pyfaidx.Faidx(str(path), indexname=str(tmp_fai), gzi_indexname=str(tmp_gzi)).close()
        if tmp_gzi.exists():
            os.replace(tmp_gzi, gzi)  # gzi first: a reader that sees the .fai finds both
        os.replace(tmp_fai, fai)
    finally:
        for tmp in (tmp_fai, tmp_gzi):
            tmp.unlink(missing_ok=True)
    return fai, gzi


def _ensure_index(path: Path, bgzf: bool) -> tuple[Path, Path]:
    """Find or build the ``.fai`` (and ``.gzi``), never writing to a read-only folder."""
    found = _locate_index(path, bgzf)
    if found is not None:
        return found
    cached = cache_dir("fai") / _file_key(path)
    try:
        if _dir_writable(path.parent):
            try:
                return _build_index(path, path.parent)
            except OSError:
                pass  # e.g. a read-only mount: fall through to the cache
        return _build_index(path, cached)
    except GenomeError:
        raise
    except (
        pyfaidx.FastaIndexingError,
        pyfaidx.UnsupportedCompressionFormat,
        ValueError,
        IndexError,
        ImportError,
        EOFError,
        zlib.error,
    ) as err:
        raise GenomeError(f"genome FASTA {path} cannot be indexed (is it a FASTA?): {err}") from None
    except OSError as err:
        raise GenomeError(f"genome FASTA {path}: cannot write its index to {cached}: {err}") from None


# ---------------------------------------------------------------------------------------
# per-chromosome gzip folder
# ---------------------------------------------------------------------------------------


def _folder_files(directory: Path) -> dict[str, Path]:
    """``chrom -> file`` for every ``<chrom>.fa.gz`` in ``directory``, naturally sorted."""
    files: dict[str, Path] = {}
    for entry in directory.iterdir():
        lower = entry.name.lower()
        suffix = next((s for s in _FOLDER_SUFFIXES if lower.endswith(s)), None)
        if suffix and entry.is_file():
            files[entry.name[: -len(suffix)]] = entry
    if not files:
        raise GenomeError(f"genome folder {directory} holds no per-chromosome FASTAs (<chrom>.fa.gz files)")
    return dict(sorted(files.items(), key=lambda item: _natural_key(item[0])))


def _decompress_chrom(path: Path, chrom: str) -> np.ndarray:
    """Stream-decompress one single-record gzip FASTA into ``uint8`` codes."""
    pieces: list[np.ndarray] = []
    header_done = False
    pending = b""
    try:
        with gzip.open(path, "rb") as handle:
            while block := handle.read(_CHUNK):
                if not header_done:
                    pending += block
                    if b"\n" not in pending:
                        continue
                    header, _, block = pending.partition(b"\n")
                    if not header.startswith(b">"):
                        raise GenomeError(
                            f"genome file {path} (chromosome {chrom}) is not a FASTA: "
                            "the first line does not start with '>'"
                        )
                    header_done = True
                if b">" in block:
                    raise GenomeError(
                        f"genome file {path} holds more than one FASTA record; a per-chromosome "
                        f"folder needs exactly one record per file ({chrom})"
                    )
                pieces.append(encode(block.translate(None, b"\r\n \t")))
    except (OSError, EOFError, zlib.error) as err:
        raise GenomeError(f"genome file {path} (chromosome {chrom}) is not readable gzip: {err}") from None
    if not header_done:
        raise GenomeError(f"genome file {path} (chromosome {chrom}) is not a FASTA (no '>' header line)")
    codes = np.concatenate(pieces) if pieces else np.zeros(0, np.uint8)
    codes.flags.writeable = False  # shared by every fetch in this process
    return codes


# ---------------------------------------------------------------------------------------
# Genome
# ---------------------------------------------------------------------------------------


class Genome:
    """A reference genome read as ``uint8`` base codes.

    Parameters
    ----------
    path
        A FASTA file (plain or bgzip-compressed; its ``.fai`` is built when missing) or a
        folder of per-chromosome gzip FASTAs ``<chrom>.fa.gz``. A URL (``s3://``,
        ``https://``, any fsspec URL) is staged once per node by :mod:`screening.io.staging`,
        with its ``.fai``/``.gzi`` when they exist beside it.
    name
        A label for provenance; defaults to the file stem (``hg38.fa.gz`` → ``hg38``) or the
        folder name.

    Raises
    ------
    GenomeError
        If the path does not exist, is not a FASTA, or cannot be indexed.

    Notes
    -----
    Coordinates are 0-based, half-open. Soft-masked (lower-case) bases read as upper case
    and IUPAC ambiguity codes as N. Handles are opened lazily per process and dropped when
    pickled.
    """

    def __init__(self, path: str | os.PathLike, name: str | None = None) -> None:
        if is_url(path):  # s3://, http(s)://, file://: a node-local copy, its index beside it
            try:
                path = stage(os.fspath(path), sidecars=FASTA_SIDECARS)
            except StagingError as err:
                raise GenomeError(f"genome {err}") from None
        self._path = Path(path).expanduser().absolute()
        if not self._path.exists():
            raise GenomeError(f"genome {self._path} does not exist")
        self._is_folder = self._path.is_dir()
        self._name = name or self._default_name()
        self._sha256: str | None = None
        self._sizes: dict[str, int] | None = None
        self._files: dict[str, Path] | None = None
        self._fai: Path | None = None
        self._gzi: Path | None = None
        if self._is_folder:
            self._files = _folder_files(self._path)
        else:
            self._bgzf = _check_fasta_format(self._path) == "bgzf"
            self._fai, self._gzi = _ensure_index(self._path, self._bgzf)
            self._sizes = {chrom: rec.rlen for chrom, rec in self._faidx().index.items()}
            if not self._sizes:
                raise GenomeError(f"genome FASTA {self._path} holds no sequences")
            self._check_index()

    # -- identity -------------------------------------------------------------------------

    def _default_name(self) -> str:
        name = self._path.name
        for suffix in (".gz", ".bgz"):
            name = name[: -len(suffix)] if name.lower().endswith(suffix) else name
        for suffix in _FASTA_SUFFIXES:
            name = name[: -len(suffix)] if name.lower().endswith(suffix) else name
        return name

    @property
    def name(self) -> str:
        """Label of the genome (file stem or folder name unless given)."""
        return self._name

    @property
    def path(self) -> Path:
        """Absolute path of the FASTA file or per-chromosome folder."""
        return self._path

    @property
    def is_folder(self) -> bool:
        """Whether this genome is a folder of per-chromosome gzip FASTAs."""
        return self._is_folder

    def __repr__(self) -> str:
        return f"Genome({str(self._path)!r}, name={self._name!r})"

    def sha256(self) -> str:
        """Streamed SHA-256 of the FASTA file, or of the folder's FASTAs.

        For a folder, each ``<chrom>.fa.gz`` in sorted file-name order contributes its
        name, a NUL byte, then its bytes. The value is cached on the object.
        """
        if self._sha256 is None:
            digest = hashlib.sha256()
            if self._is_folder:
                for file in sorted(self._chrom_files().values(), key=lambda p: p.name):
                    digest.update(file.name.encode() + b"\0")
                    _sha256_stream(file, digest)
            else:
                _sha256_stream(self._path, digest)
            self._sha256 = digest.hexdigest()
        return self._sha256

    # -- chromosomes ----------------------------------------------------------------------

    def _chrom_files(self) -> dict[str, Path]:
        if self._files is None:
            self._files = _folder_files(self._path)
        return self._files

    @property
    def chroms(self) -> list[str]:
        """Chromosome names in file order (natural order for a folder); reads no sequence."""
        if self._is_folder:
            return list(self._chrom_files())
        return list(self.chrom_sizes)

    @property
    def chrom_sizes(self) -> dict[str, int]:
        """``{chrom: length}`` in file order.

        For a per-chromosome folder every chromosome must be decompressed once to learn its
        length; the sizes are then remembered in the cache folder. Prefer
        :meth:`chrom_size` when only a few chromosomes are needed.
        """
        if self._sizes is None:
            self._sizes = {chrom: self.chrom_size(chrom) for chrom in self._chrom_files()}
        return dict(self._sizes)

    def chrom_size(self, chrom: str) -> int:
        """Length of one chromosome.

        Raises
        ------
        GenomeError
            If the chromosome is unknown.
        """
        self._check_chrom(chrom)
        if self._sizes is not None:
            return self._sizes[chrom]
        file = self._chrom_files()[chrom]
        sizes_json = cache_dir("sizes") / f"{_file_key(file)}.json"
        try:
            return int(json.loads(sizes_json.read_text())["length"])
        except (OSError, ValueError, KeyError, TypeError):
            pass
        size = int(self._folder_codes(chrom).size)
        try:
            sizes_json.parent.mkdir(parents=True, exist_ok=True)
            tmp = sizes_json.with_name(f"{sizes_json.name}.tmp{os.getpid()}")
            tmp.write_text(json.dumps({"file": str(file), "chrom": chrom, "length": size}))
            os.replace(tmp, sizes_json)
        except OSError:
            pass  # the cache is an optimisation only
        return size

    def __contains__(self, chrom: object) -> bool:
        return chrom in (self._chrom_files() if self._is_folder else self._sizes or {})

    def __iter__(self) -> Iterator[str]:
        return iter(self.chroms)

    def _check_chrom(self, chrom: str) -> None:
        if chrom not in self:
            known = self.chroms
            listed = ", ".join(known[:10]) + (f", … ({len(known)} in all)" if len(known) > 10 else "")
            raise GenomeError(f"genome {self._name} ({self._path}): unknown chromosome {chrom!r}; known: {listed}")

    # -- sequence -------------------------------------------------------------------------

    def fetch(self, chrom: str, start: int, end: int) -> np.ndarray:
        """Base codes of ``chrom:[start, end)``.

        Parameters
        ----------
        chrom
            Chromosome name as in the FASTA.
        start, end
            0-based, half-open coordinates, ``0 <= start < end <= chrom length``.

        Returns
        -------
        numpy.ndarray
            ``uint8`` codes (A0 C1 G2 T3 N4) of length ``end - start``, a fresh writable array.

        Raises
        ------
        GenomeError
            On an unknown chromosome, a negative start, an empty region or one that runs
            past the chromosome end.
        """
        start, end = self._check_region(chrom, start, end)
        if self._is_folder:
            return self._folder_codes(chrom)[start:end].copy()
        return self._fasta_codes(chrom, start, end)

    def fetch_padded(self, chrom: str, start: int, end: int) -> np.ndarray:
        """Like :meth:`fetch`, but positions outside ``[0, chrom length)`` read as N.

        ``start`` may be negative and ``end`` may exceed the chromosome length; the region
        must still be non-empty and on a known chromosome.
        """
        self._check_chrom(chrom)
        start, end = operator.index(start), operator.index(end)
        if end <= start:
            raise GenomeError(f"genome {self._name}: region {chrom}:{start:,}-{end:,} is empty")
        out = np.full(end - start, N_CODE, dtype=np.uint8)
        lo, hi = max(start, 0), min(end, self.chrom_size(chrom))
        if lo < hi:
            out[lo - start : hi - start] = self.fetch(chrom, lo, hi)
        return out

    def _check_region(self, chrom: str, start: int, end: int) -> tuple[int, int]:
        self._check_chrom(chrom)
        try:
            start, end = operator.index(start), operator.index(end)
        except TypeError:
            raise GenomeError(f"genome {self._name}: coordinates must be integers, got {start!r}, {end!r}") from None
        where = f"genome {self._name} ({self._path}): region {chrom}:{start:,}-{end:,}"
        if start < 0:
            raise GenomeError(f"{where} has a negative start")
        if end <= start:
            raise GenomeError(f"{where} is empty (end must be greater than start)")
        size = self.chrom_size(chrom)
        if end > size:
            raise GenomeError(f"{where} runs past the end of {chrom} (length {size:,})")
        return start, end

    def _faidx(self) -> pyfaidx.Faidx:
        """This process's pyfaidx handle (opened on first use, re-opened after a fork)."""
        key = (os.getpid(), str(self._path), str(self._fai))
        with _LOCK:
            handle = _HANDLES.get(key)
            if handle is None:
                if not (self._fai and _fresh(self._fai, self._path)):
                    # a new machine or a cleared cache: find or rebuild the index here
                    self._fai, self._gzi = _ensure_index(self._path, self._bgzf)
                    key = (os.getpid(), str(self._path), str(self._fai))
                try:
                    handle = pyfaidx.Faidx(
                        str(self._path), indexname=str(self._fai), gzi_indexname=str(self._gzi), build_index=False
                    )
                except Exception as err:  # pyfaidx raises many types for a bad index/file
                    raise GenomeError(f"genome FASTA {self._path} cannot be opened: {err}") from None
                _HANDLES[key] = handle
            return handle

    def _check_index(self) -> None:
        """Refuse a ``.fai`` that does not describe the file (truncated or edited after indexing).

        pyfaidx trusts the index: behind a stale one, reads come back short or shifted, in a
        worker, after the store exists. So every record is checked here. For a plain FASTA its
        last base must lie inside the file, be a sequence letter and end a line, and the byte
        before its first base must end the header line; a bgzip FASTA must end with BGZF's
        end-of-file block and the last base of its last record must be readable.
        """
        records = self._faidx().index
        if self._bgzf:
            self._check_bgzf_end(records)
            return
        size = self._path.stat().st_size
        advice = f"the file was truncated or edited after indexing: delete {self._fai} to rebuild it"
        with self._path.open("rb") as handle:
            for chrom, rec in records.items():
                if rec.rlen == 0:
                    continue
                last = rec.offset + ((rec.rlen - 1) // rec.lenc) * rec.lenb + (rec.rlen - 1) % rec.lenc
                if last >= size:
                    raise GenomeError(
                        f"genome FASTA {self._path} is {size:,} bytes, but its index {self._fai} puts the end of "
                        f"{chrom} at byte {last + 1:,}: {advice}"
                    )
                handle.seek(rec.offset - 1)
                before = handle.read(1)
                handle.seek(last)
                tail = handle.read(2)
                if before != b"\n" or tail[:1] in (b"\n", b"\r", b">") or tail[1:] not in (b"", b"\n", b"\r"):
                    raise GenomeError(
                        f"genome FASTA {self._path}: its index {self._fai} does not match the sequence of {chrom}: {advice}"
                    )

    def _check_bgzf_end(self, records) -> None:
        # BGZF files end with a fixed empty block (SAM spec 4.1.2); a truncated file lacks it
        eof_block = bytes.fromhex("1f8b08040000000000ff0600424302001b0003000000000000000000")
        with self._path.open("rb") as handle:
            handle.seek(max(0, self._path.stat().st_size - len(eof_block)))
            ends_well = handle.read() == eof_block
        if not ends_well:
            raise GenomeError(
                f"genome FASTA {self._path} lacks the bgzip end-of-file block: the file is truncated "
                "(copy or compress it again)"
            )
        chrom, rec = max(records.items(), key=lambda item: item[1].offset)
        if rec.rlen:
            self._fasta_codes(chrom, rec.rlen - 1, rec.rlen)  # raises naming the file when the index is stale

    def _fasta_codes(self, chrom: str, start: int, end: int) -> np.ndarray:
        try:
            text = self._faidx().from_file(chrom, start + 1, end)  # pyfaidx is 1-based closed
        except (UnicodeDecodeError, pyfaidx.FetchError, OSError, ValueError, EOFError, zlib.error) as err:
            # ValueError, EOFError, zlib.error: Biopython's BGZF reader on a cut or stale file
            raise GenomeError(
                f"genome FASTA {self._path}: cannot read {chrom}:{start:,}-{end:,} ({err}); the file may be "
                "truncated or its index out of date"
            ) from None
        codes = encode(text.encode("ascii", errors="replace"))
        if codes.size != end - start:  # a truncated or edited file behind a stale index
            raise GenomeError(
                f"genome FASTA {self._path}: read {codes.size:,} bases for {chrom}:{start:,}-{end:,}; "
                "the file may be truncated or its .fai out of date"
            )
        return codes

    def _folder_codes(self, chrom: str) -> np.ndarray:
        file = self._chrom_files()[chrom]
        key = f"{file}\0{_file_key(file)}"
        codes = _recall_codes(key)
        if codes is None:
            codes = _decompress_chrom(file, chrom)
            _remember_codes(key, codes)
        return codes

    # -- lifecycle ------------------------------------------------------------------------

    def close(self) -> None:
        """Close this process's file handle and forget cached chromosomes of this genome.

        Safe to call more than once; the genome re-opens on the next fetch.
        """
        with _LOCK:
            for key in [k for k in _HANDLES if k[1] == str(self._path)]:
                _HANDLES.pop(key).close()
            if self._is_folder:
                prefixes = tuple(f"{file}\0" for file in self._chrom_files().values())
                for key in [k for k in _CODES if k.startswith(prefixes)]:
                    del _CODES[key]

    def __enter__(self) -> Genome:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def __getstate__(self) -> dict[str, Any]:
        # only paths and small metadata travel; handles live in module-level caches
        return dict(self.__dict__)

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
