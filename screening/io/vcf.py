"""Variants from VCF files (4.1 - 4.3), as minimal 0-based sequence edits.

Coordinates are converted once, here: VCF ``POS`` is 1-based, every :class:`Variant` is
0-based, half-open like the rest of the package.

What is read
------------
* sequence alleles: SNV, MNV, insertion, deletion and complex indel (``REF``/``ALT`` of
  ``A C G T N``, any case). The shared anchor base(s) are trimmed (common prefix, then
  common suffix) so that ``start``/``end``/``alt`` describe the minimal edit; the record's
  ``POS``/``REF``/``ALT`` are kept for display (``vcf_pos``, ``vcf_ref``, ``vcf_alt``);
* symbolic ``<DEL>``, ``<DUP>``, ``<INV>`` (also ``<DEL:...>`` subtypes and
  ``<DUP:TANDEM>``). The base at ``POS`` is the anchor and the affected interval is
  ``(POS, END]`` in VCF terms, i.e. 0-based ``[POS, END)``; ``END`` comes from ``INFO/END``,
  else ``POS + |SVLEN|``;
* multi-allelic records give one :class:`Variant` per ``ALT`` allele.

Three kinds of problem
----------------------
* **malformed syntax** always raises :class:`VcfError` at once, whatever the policy: no
  ``#CHROM`` header, fewer than 8 columns, a non-integer or non-positive ``POS``, an empty
  ``REF``/``ALT``, letters outside ``ACGTN`` in a sequence allele, a non-integer
  ``END``/``SVLEN``;
* **alleles this package cannot model** are always skipped and listed in
  :attr:`VcfResult.skipped` with the reason: ``.`` (no alternative), ``*`` (spanning
  deletion), ``<*>``/``<NON_REF>``, ``ALT`` equal to ``REF``, breakends (``BND``,
  ``[``/``]`` notation, single breakends) and other symbolic alleles (``<INS>``, ``<CNV>``,
  ...). A real VCF often mixes them with usable alleles, even within one record;
* **content problems** with an allele that can be modelled follow ``policy``: unknown
  chromosome, a variant running off the chromosome end, ``REF`` differing from the genome,
  a symbolic SV without ``END``/``SVLEN``, with ``END <= POS``, or whose ``END`` and
  ``SVLEN`` disagree. With ``policy="fail"`` every such problem in the file is collected and
  one :class:`VcfError` lists them; with ``policy="skip"`` they are skipped and listed.

``REF`` must equal the genome's bases exactly (case-insensitively); a genome ``N`` matches
only ``N``. Chromosome names are matched strictly: ``1`` and ``chr1`` differ (the error
says when the other spelling exists).

Two more readings of a file
---------------------------
* ``read_vcf(..., sample=NAME)``: only the alleles that sample's phased ``GT`` carries, each with
  the haplotypes carrying it (:attr:`Variant.haplotypes`); an unphased heterozygous ``GT`` is a
  content problem (``docs/rearrangements.md``);
* :func:`read_breakends`: the breakend (``BND``) records, paired by ``ID``/``MATEID`` into
  :class:`Junction` s, one per mate pair; malformed or unpaired breakends are content problems
  (the policy applies), single breakends are always skipped.
"""

from __future__ import annotations

import gzip
import re
from dataclasses import dataclass, replace
from os import PathLike
from pathlib import Path
from typing import IO, Literal

import numpy as np

from screening.core.errors import ScreeningError
from screening.core.encode import decode, encode, reverse_complement
from screening.io.genome import Genome

__all__ = [
    "BreakendResult", "Junction", "SkippedVariant", "Variant", "VariantEdit", "VcfError", "VcfResult", "read_breakends",
    "read_vcf",
]

Kind = Literal["SNV", "MNV", "INS", "DEL", "INDEL", "SV_DEL", "SV_DUP", "SV_INV"]
Op = Literal["replace", "duplicate", "invert"]

_HEADER = ("#CHROM", "POS", "ID", "REF", "ALT", "QUAL", "FILTER", "INFO")
_BASES = re.compile(r"^[ACGTNacgtn]+$")
_SYMBOLIC = re.compile(r"^<[^<>]+>$")
# symbolic alleles we model, by their ID; other subtypes of DUP are not tandem
_SV_KINDS: dict[str, Kind] = {"DEL": "SV_DEL", "DUP": "SV_DUP", "DUP:TANDEM": "SV_DUP", "INV": "SV_INV"}
_NO_ALT = {".": "no alternative allele ('.')", "*": "spanning-deletion allele '*' is not a variant of its own",
           "<*>": "gVCF reference block '<*>'", "<NON_REF>": "gVCF reference block '<NON_REF>'"}
_MAX_LISTED = 20  # problems spelled out in one VcfError


class VcfError(ScreeningError, ValueError):
    """A VCF file, line or variant that cannot be used; names the file and line."""


class _Problem(Exception):
    """A content problem with one allele; handled according to ``policy``."""


# ---------------------------------------------------------------------------------------
# public records
# ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class VariantEdit:
    """A sequence edit on the reference: ``[start, end)`` becomes something else.

    Maps onto :func:`screening.perturb.edits.apply_edit` with ``offset = start - window_start``,
    ``ref_length`` and, as ``alt_codes``, :attr:`alt_codes` (``"replace"``) or the result
    of :func:`screening.perturb.edits.duplicate` / :func:`screening.perturb.edits.invert` applied to the
    reference segment (which also carries the tracks along).

    Attributes
    ----------
    chrom
        Chromosome.
    start, end
        0-based, half-open reference interval that is replaced (``start == end`` for an
        insertion, which goes before the base at ``start``).
    op
        ``"replace"``: the interval becomes ``alt`` (empty for a deletion);
        ``"duplicate"``: the interval is followed by a copy of itself (tandem duplication);
        ``"invert"``: the interval becomes its reverse complement.
    alt
        Replacement letters for ``"replace"``, else ``None``.
    """

    chrom: str
    start: int
    end: int
    op: Op
    alt: str | None = None

    @property
    def ref_length(self) -> int:
        """Length of the replaced reference interval."""
        return self.end - self.start

    @property
    def alt_length(self) -> int:
        """Length of what takes the interval's place."""
        if self.op == "replace":
            return len(self.alt or "")
        return 2 * self.ref_length if self.op == "duplicate" else self.ref_length

    @property
    def alt_codes(self) -> np.ndarray | None:
        """``uint8`` codes of ``alt`` (``None`` unless ``op == "replace"``)."""
        return None if self.alt is None else encode(self.alt)

    def replacement(self, ref_codes: np.ndarray) -> np.ndarray:
        """Codes that replace the interval, given its reference codes ``[start, end)``."""
        if ref_codes.shape[-1] != self.ref_length:
            raise ValueError(f"expected {self.ref_length} reference codes, got {ref_codes.shape[-1]}")
        if self.op == "replace":
            return encode(self.alt or "")
        if self.op == "duplicate":
            return np.concatenate([ref_codes, ref_codes])
        return reverse_complement(ref_codes)

    def apply(self, codes: np.ndarray, offset: int = 0) -> np.ndarray:
        """Apply the edit to a loaded span of codes.

        Parameters
        ----------
        codes
            ``uint8 [L]`` reference codes of ``chrom:[offset, offset + L)``; must contain
            ``[start, end)``.
        offset
            Genome coordinate of ``codes[0]``.

        Returns
        -------
        numpy.ndarray
            New codes of length ``L - ref_length + alt_length``; ``codes`` is not modified.
        """
        lo, hi = self.start - offset, self.end - offset
        if lo < 0 or hi > codes.shape[-1]:
            raise ValueError(
                f"edit {self.chrom}:{self.start:,}-{self.end:,} lies outside the loaded span "
                f"[{offset:,}, {offset + codes.shape[-1]:,})"
            )
        return np.concatenate([codes[:lo], self.replacement(codes[lo:hi]), codes[hi:]])


@dataclass(frozen=True)
class Variant:
    """One ALT allele of a VCF record, as a minimal 0-based edit.

    Attributes
    ----------
    chrom
        Chromosome as written in the VCF.
    start, end
        0-based, half-open reference interval the variant changes (after trimming the
        anchor; ``start == end`` for an insertion). For symbolic SVs: ``[POS, END)``.
    ref, alt
        Minimal alleles: ``ref`` is the reference over ``[start, end)`` (``""`` for an
        insertion), ``alt`` what replaces it (``""`` for a deletion). For symbolic SVs,
        ``ref`` is the VCF ``REF`` (the anchor base, *not* the affected sequence) and
        ``alt`` the symbolic allele as written, e.g. ``<DEL>``; use :attr:`ref_length`.
    id
        VCF ``ID``; ``chrom:POS:REF:ALT`` when the ID is ``.``. In a multi-allelic record
        an ID becomes ``ID:ALT`` so that each allele's id is distinct.
    kind
        ``SNV``, ``MNV``, ``INS``, ``DEL``, ``INDEL`` (both minimal alleles non-empty, of
        different lengths), ``SV_DEL``, ``SV_DUP`` or ``SV_INV``; from the minimal alleles,
        so ``REF=ACG ALT=ATG`` is an SNV.
    line
        1-based line number in the file.
    vcf_pos, vcf_ref, vcf_alt
        The record's ``POS`` (1-based), ``REF`` and this ``ALT``, as written, for display.
    haplotypes
        With ``read_vcf(..., sample=NAME)``: the haplotypes (1, 2) of that sample that carry this allele,
        from its phased ``GT``; ``()`` otherwise.
    """

    chrom: str
    start: int
    end: int
    ref: str
    alt: str
    id: str
    kind: Kind
    line: int
    vcf_pos: int
    vcf_ref: str
    vcf_alt: str
    haplotypes: tuple[int, ...] = ()

    @property
    def is_symbolic(self) -> bool:
        """Whether this is a symbolic SV (``<DEL>``, ``<DUP>``, ``<INV>``)."""
        return self.kind.startswith("SV_")

    @property
    def ref_length(self) -> int:
        """Reference bases changed: ``end - start`` (0 for an insertion)."""
        return self.end - self.start

    @property
    def alt_length(self) -> int:
        """Bases in their place: 0 for ``SV_DEL``, twice the span for ``SV_DUP``."""
        return self.edit().alt_length

    def edit(self) -> VariantEdit:
        """The sequence edit that turns the reference into this allele."""
        if self.kind == "SV_DEL":
            return VariantEdit(self.chrom, self.start, self.end, "replace", "")
        if self.kind == "SV_DUP":
            return VariantEdit(self.chrom, self.start, self.end, "duplicate")
        if self.kind == "SV_INV":
            return VariantEdit(self.chrom, self.start, self.end, "invert")
        return VariantEdit(self.chrom, self.start, self.end, "replace", self.alt)


@dataclass(frozen=True)
class SkippedVariant:
    """An allele that was not read: its line, id and why."""

    line: int
    id: str
    reason: str


@dataclass
class VcfResult:
    """What :func:`read_vcf` read: usable variants and skipped alleles, in file order."""

    path: Path
    variants: list[Variant]
    skipped: list[SkippedVariant]

    def __len__(self) -> int:
        return len(self.variants)


# ---------------------------------------------------------------------------------------
# parsing
# ---------------------------------------------------------------------------------------


def _open_text(path: Path) -> IO[str]:
    """Open plain or gzip/bgzip text by its magic bytes, not its name."""
    with path.open("rb") as handle:
        gz = handle.read(2) == b"\x1f\x8b"
    if gz:
        return gzip.open(path, "rt", encoding="utf-8", errors="replace")
    return path.open(encoding="utf-8", errors="replace")


def _split(line: str) -> list[str]:
    fields = line.rstrip("\r\n").split("\t")
    if len(fields) < len(_HEADER):  # hand-written files sometimes use spaces
        fields = line.split()
    return fields


def _check_header(fields: list[str], where: str) -> None:
    got = tuple(f.upper() for f in fields[: len(_HEADER)])
    if got != _HEADER:
        raise VcfError(f"{where}: #CHROM header must start with {' '.join(_HEADER)}, got {' '.join(fields[:8])!r}")


def _parse_info(text: str) -> dict[str, str]:
    if text in ("", "."):
        return {}
    out: dict[str, str] = {}
    for item in text.split(";"):
        key, _, value = item.partition("=")
        out[key] = value
    return out


def _info_int(info: dict[str, str], key: str, where: str) -> list[int] | None:
    """Integer values of an INFO key (``None`` when absent); malformed values raise."""
    if key not in info:
        return None
    try:
        return [int(v) for v in info[key].split(",")]
    except ValueError:
        raise VcfError(f"{where}: INFO {key}={info[key]!r} is not an integer") from None


def _allele_id(vid: str, chrom: str, pos: int, ref: str, alt: str, n_alts: int) -> str:
    if vid == ".":
        return f"{chrom}:{pos}:{ref}:{alt}"
    return vid if n_alts == 1 else f"{vid}:{alt}"


def _unsupported(ref: str, alt: str) -> str | None:
    """Why an ALT allele cannot be modelled, or ``None`` if it can."""
    if alt in _NO_ALT:
        return _NO_ALT[alt]
    if "[" in alt or "]" in alt or alt.startswith(".") or alt.endswith("."):
        return f"breakend {alt!r} is not supported"
    if _SYMBOLIC.match(alt):
        name = alt[1:-1].upper()
        if name in _SV_KINDS or name.startswith("DEL:"):
            return None
        return f"symbolic allele {alt} is not supported (only <DEL>, <DUP>, <INV>)"
    if alt.upper() == ref.upper():
        return "ALT equals REF (no change)"
    return None


def _trim(ref: str, alt: str) -> tuple[int, str, str]:
    """Drop the common prefix, then the common suffix; returns (prefix length, ref, alt)."""
    n = 0
    while n < min(len(ref), len(alt)) and ref[n] == alt[n]:
        n += 1
    ref, alt = ref[n:], alt[n:]
    m = 0
    while m < min(len(ref), len(alt)) and ref[-1 - m] == alt[-1 - m]:
        m += 1
    return n, ref[: len(ref) - m], alt[: len(alt) - m]


def _sequence_kind(ref: str, alt: str) -> Kind:
    if not ref:
        return "INS"
    if not alt:
        return "DEL"
    if len(ref) == len(alt):
        return "SNV" if len(ref) == 1 else "MNV"
    return "INDEL"


def _sequence_variant(chrom: str, pos: int, ref: str, alt: str, vid: str, line: int) -> Variant:
    shift, mref, malt = _trim(ref.upper(), alt.upper())
    start = pos - 1 + shift
    kind = _sequence_kind(mref, malt)
    return Variant(chrom, start, start + len(mref), mref, malt, vid, kind, line, pos, ref, alt)


def _sv_end(pos: int, info: dict[str, str], index: int, n_alts: int, where: str) -> int:
    """1-based inclusive END of a symbolic SV from INFO END or SVLEN (checked to agree)."""
    ends = _info_int(info, "END", where)
    svlens = _info_int(info, "SVLEN", where)
    from_len = None
    if svlens is not None:
        if len(svlens) not in (1, n_alts):
            raise VcfError(f"{where}: INFO SVLEN has {len(svlens)} values for {n_alts} ALT alleles")
        from_len = pos + abs(svlens[index if len(svlens) > 1 else 0])
    end = ends[0] if ends else from_len
    if end is None:
        raise _Problem("symbolic SV has neither INFO END nor SVLEN")
    if from_len is not None and from_len != end:
        raise _Problem(f"INFO END={end} disagrees with SVLEN (POS + |SVLEN| = {from_len})")
    if end <= pos:
        raise _Problem(f"symbolic SV has END={end} <= POS={pos}: nothing is affected")
    return end


def _symbolic_variant(chrom: str, pos: int, ref: str, alt: str, vid: str, line: int, end: int) -> Variant:
    name = alt[1:-1].upper()
    kind = "SV_DEL" if name.startswith("DEL") else _SV_KINDS[name]
    # 1-based (POS, END] == 0-based [POS, END): the anchor at POS stays
    return Variant(chrom, pos, end, ref.upper(), alt, vid, kind, line, pos, ref, alt)


# ---------------------------------------------------------------------------------------
# genome checks
# ---------------------------------------------------------------------------------------


def _check_genome(variant: Variant, genome: Genome) -> None:
    """Chromosome known, variant inside it, REF equal to the genome."""
    chrom = variant.chrom
    if chrom not in genome:
        other = chrom[3:] if chrom.startswith("chr") else f"chr{chrom}"
        hint = f"; the genome has {other!r}: VCF and genome name chromosomes differently" if other in genome else ""
        raise _Problem(f"unknown chromosome {chrom!r} in genome {genome.name}{hint}")
    size = genome.chrom_size(chrom)
    ref_start = variant.vcf_pos - 1
    last = max(variant.end, ref_start + len(variant.vcf_ref))
    if last > size:
        raise _Problem(f"runs past the end of {chrom} (variant ends at {last:,}, length {size:,})")
    found = decode(genome.fetch(chrom, ref_start, ref_start + len(variant.vcf_ref)))
    if found != variant.vcf_ref.upper():
        raise _Problem(f"REF {variant.vcf_ref!r} does not match the genome ({found!r})")


# ---------------------------------------------------------------------------------------
# reader
# ---------------------------------------------------------------------------------------


def _parse_record(fields: list[str], where: str) -> tuple[str, int, str, str, list[str], dict[str, str]]:
    """Syntax checks of one data line; anything wrong here is always an error."""
    if len(fields) < len(_HEADER):
        raise VcfError(
            f"{where}: expected at least 8 tab-separated columns "
            f"(CHROM POS ID REF ALT QUAL FILTER INFO), found {len(fields)}"
        )
    chrom, pos_text, vid, ref, alt_text = fields[:5]
    if not (pos_text.isascii() and pos_text.isdigit()) or int(pos_text) < 1:
        raise VcfError(f"{where}: POS {pos_text!r} is not a positive integer")
    if not _BASES.match(ref):
        raise VcfError(f"{where}: REF {ref!r} must be bases A, C, G, T or N")
    alts = alt_text.split(",")
    for alt in alts:
        if alt in _NO_ALT or "[" in alt or "]" in alt:
            continue
        if alt.startswith("<") or alt.endswith(">"):
            if not _SYMBOLIC.match(alt):
                raise VcfError(f"{where}: symbolic ALT allele {alt!r} must look like <DEL>")
        elif not _BASES.match(alt.strip(".")):  # '.A' / 'A.' are single breakends
            raise VcfError(f"{where}: ALT allele {alt!r} must be bases A, C, G, T or N, or a symbolic allele")
    return chrom, int(pos_text), vid, ref, alts, _parse_info(fields[7])


def _record_variants(
    fields: list[str], where: str, line: int, genome: Genome | None
) -> list[Variant | SkippedVariant | tuple[str, str]]:
    """One outcome per ALT allele: a Variant, an always-skipped allele, or an (id, problem)."""
    chrom, pos, vid, ref, alts, info = _parse_record(fields, where)
    out: list[Variant | SkippedVariant | tuple[str, str]] = []
    for index, alt in enumerate(alts):
        aid = _allele_id(vid, chrom, pos, ref, alt, len(alts))
        reason = _unsupported(ref, alt)
        if reason is not None:
            out.append(SkippedVariant(line, aid, reason))
            continue
        try:
            if alt.startswith("<"):
                end = _sv_end(pos, info, index, len(alts), where)
                variant = _symbolic_variant(chrom, pos, ref, alt, aid, line, end)
            else:
                variant = _sequence_variant(chrom, pos, ref, alt, aid, line)
            if genome is not None:
                _check_genome(variant, genome)
        except _Problem as problem:
            out.append((aid, f"{chrom}:{pos} {problem}"))
            continue
        out.append(variant)
    return out


def _failure(path: Path, problems: list[str]) -> VcfError:
    if len(problems) == 1:
        return VcfError(problems[0])
    listed = "\n  ".join(problems[:_MAX_LISTED])
    more = f"\n  ... and {len(problems) - _MAX_LISTED} more" if len(problems) > _MAX_LISTED else ""
    return VcfError(
        f"{len(problems)} variants in {path} cannot be used (set invalid_policy: skip in the spec, or policy='skip', to skip and list them):\n  "
        f"{listed}{more}"
    )


def _lines(path: Path):
    """``(line number, where, fields)`` of every data line, and the ``#CHROM`` header's fields first (line 0).

    Raises
    ------
    VcfError
        For a missing or unreadable file, a bad header, or no header.
    """
    if not path.is_file():
        raise VcfError(f"VCF file {path} does not exist")
    header_seen = False
    try:
        with _open_text(path) as handle:
            for line_no, line in enumerate(handle, 1):
                where = f"{path}:{line_no}"
                if line.startswith("##") or not line.strip():
                    continue
                if line.startswith("#"):
                    fields = _split(line)
                    _check_header(fields, where)
                    header_seen = True
                    yield 0, where, fields
                    continue
                if not header_seen:
                    raise VcfError(f"{where}: data line before the #CHROM header line; is this a VCF file?")
                yield line_no, where, _split(line)
    except (OSError, EOFError, UnicodeError) as err:  # truncated or corrupt gzip
        raise VcfError(f"VCF file {path} cannot be read: {err}") from None
    if not header_seen:
        raise VcfError(f"VCF file {path} has no #CHROM header line; is it a VCF file?")


def read_vcf(
    path: str | PathLike[str], genome: Genome | None = None, policy: Literal["fail", "skip"] = "fail",
    sample: str | None = None,
) -> VcfResult:
    """Read the variants of a VCF file (plain, gzip or bgzip).

    Parameters
    ----------
    path
        VCF 4.x file; compression is detected from the content, not the name.
    genome
        When given, every variant is checked against it: the chromosome must exist (names
        matched exactly), the variant must lie inside the chromosome and ``REF`` must equal
        the genome's bases (case-insensitive; a genome ``N`` matches only ``N``).
    policy
        What to do with content problems (see the module docstring): ``"fail"`` raises one
        :class:`VcfError` listing all of them after reading the file; ``"skip"`` leaves those
        alleles out and lists them in :attr:`VcfResult.skipped`.
    sample
        A sample column: only the alleles its ``GT`` carries are read, each with the haplotypes
        carrying it (:attr:`Variant.haplotypes`). ``GT`` must be phased (``0|1``); an unphased
        heterozygous ``GT`` (``0/1``) is a content problem, an unphased homozygous one (``1/1``)
        counts for both haplotypes, a haploid one (``1``) for haplotype 1.

    Returns
    -------
    VcfResult
        ``variants`` (one per usable ALT allele) and ``skipped`` (alleles left out, with
        reasons), both in file order.

    Raises
    ------
    VcfError
        On a missing file, malformed syntax (always, naming the line), a ``sample`` the file lacks,
        and with ``policy="fail"`` on content problems; messages read like
        ``variants.vcf:12 rs123 chr1:1000 REF 'A' does not match the genome ('G')``
        (the position is the VCF's 1-based ``POS``).
    """
    if policy not in ("fail", "skip"):
        raise ValueError(f"policy must be 'fail' or 'skip', got {policy!r}")
    path = Path(path)
    variants: list[Variant] = []
    skipped: list[SkippedVariant] = []
    problems: list[str] = []
    column: int | None = None
    for line_no, where, fields in _lines(path):
        if line_no == 0:
            column = None if sample is None else _sample_column(fields, sample, where)
            continue
        outcomes = _record_variants(fields, where, line_no, genome)
        if column is not None:
            outcomes = _carried(outcomes, fields, column, str(sample), where)
        for outcome in outcomes:
            if isinstance(outcome, Variant):
                variants.append(outcome)
            elif isinstance(outcome, SkippedVariant):
                skipped.append(outcome)
            else:
                aid, problem = outcome
                problems.append(f"{where} {aid} {problem}")
                skipped.append(SkippedVariant(line_no, aid, problem))
    if problems and policy == "fail":
        raise _failure(path, problems)
    return VcfResult(path, variants, skipped)


# ---------------------------------------------------------------------------------------
# genotypes of one sample
# ---------------------------------------------------------------------------------------


def _sample_column(header: list[str], sample: str, where: str) -> int:
    samples = header[9:]
    if sample not in samples:
        listed = ", ".join(samples[:20]) or "none (the file has no sample columns)"
        raise VcfError(f"{where}: sample {sample!r} is not in the VCF; its samples: {listed}")
    return 9 + samples.index(sample)


def _genotype(fields: list[str], column: int, sample: str, n_alts: int, where: str) -> tuple[int | None, ...]:
    """The sample's alleles per haplotype (``None``: missing); unphased heterozygous calls are a problem."""
    if len(fields) <= column:
        raise VcfError(f"{where}: the line has no column for sample {sample!r}")
    keys = fields[8].split(":")
    if "GT" not in keys:
        raise _Problem(f"has no GT for sample {sample!r}")
    values = fields[column].split(":")
    text = values[keys.index("GT")] if keys.index("GT") < len(values) else "."
    parts = re.split(r"[|/]", text)
    try:
        alleles = tuple(None if a == "." else int(a) for a in parts)
    except ValueError:
        raise VcfError(f"{where}: GT {text!r} of sample {sample!r} is not a genotype like 0|1") from None
    if any(a is not None and not 0 <= a <= n_alts for a in alleles):
        raise VcfError(f"{where}: GT {text!r} of sample {sample!r} names an allele the record lacks ({n_alts} ALT)")
    if "/" in text and len(set(alleles)) > 1:
        raise _Problem(
            f"GT {text!r} of sample {sample!r} is unphased: which haplotype carries the allele is unknown "
            "(phase the VCF, or leave the record out)"
        )
    return alleles


def _carried(outcomes: list, fields: list[str], column: int, sample: str, where: str) -> list:
    """The outcomes of one record for a sample: its alleles with the haplotypes carrying them, uncarried ones dropped."""
    n_alts = len(fields[4].split(","))
    try:
        alleles = _genotype(fields, column, sample, n_alts, where)
    except _Problem as problem:
        return [(o.id, f"{o.chrom}:{o.vcf_pos} {problem}") if isinstance(o, Variant) else o for o in outcomes]
    out = []
    for index, outcome in enumerate(outcomes):
        if not isinstance(outcome, (Variant, tuple)):
            out.append(outcome)
            continue
        haplotypes = tuple(h + 1 for h, allele in enumerate(alleles[:2]) if allele == index + 1)
        if haplotypes:
            out.append(replace(outcome, haplotypes=haplotypes) if isinstance(outcome, Variant) else outcome)
    return out


# ---------------------------------------------------------------------------------------
# breakends (BND)
# ---------------------------------------------------------------------------------------

_BRACKET = re.compile(r"^(?P<pre>[ACGTNacgtn]*)(?P<open>[\[\]])(?P<chrom>[^\[\]:]+):(?P<pos>[0-9]+)(?P<close>[\[\]])"
                      r"(?P<post>[ACGTNacgtn]*)$")

#: ``(chrom, 0-based boundary, strand)``: one side of a junction (:func:`screening.perturb.rearrange.junction_segments`).
Side = tuple[str, int, str]


@dataclass(frozen=True)
class Junction:
    """A novel adjacency from a pair of BND mates: the sequence ``left`` then the sequence ``right``.

    Attributes
    ----------
    id, mate_id
        The records' ``ID`` s; the junction is read from the first of the two in the file.
    chrom, vcf_pos, line, mate_line
        The first record's ``CHROM``, 1-based ``POS`` and line, and the mate's line.
    left, right
        ``(chrom, position, strand)``, 0-based boundary positions at the junction: ``left`` on ``+`` ends at
        ``position``; on ``-`` it is the reverse complement of the sequence starting at ``position``;
        ``right`` on ``+`` starts at ``position``, on ``-`` it is the reverse complement of the sequence ending
        there (VCF 4.3, section 5.4: ``t[p[``, ``t]p]``, ``]p]t``, ``[p[t``).
    alt
        The first record's ``ALT``.
    inserted
        Bases the junction inserts between ``left`` and ``right``, read along the junction (``tAAA[p[``,
        ``]p]AAAt``, ...: ``"AAA"``; upper case), ``""`` when none.
    """

    id: str
    mate_id: str
    chrom: str
    vcf_pos: int
    line: int
    mate_line: int
    left: Side
    right: Side
    alt: str
    inserted: str = ""


@dataclass
class BreakendResult:
    """What :func:`read_breakends` read: junctions (one per mate pair) and the records left out, in file order."""

    path: Path
    junctions: list[Junction]
    skipped: list[SkippedVariant]

    def __len__(self) -> int:
        return len(self.junctions)


def _flip(strand: str) -> str:
    return "-" if strand == "+" else "+"


def _reversed(left: Side, right: Side) -> tuple[Side, Side]:
    """The same junction read along the other strand."""
    return (right[0], right[1], _flip(right[2])), (left[0], left[1], _flip(left[2]))


def _bracket_sides(chrom: str, pos: int, ref: str, alt: str) -> tuple[Side, Side, str, int, str]:
    """``(left, right, mate chrom, mate 1-based POS, inserted bases)`` of a bracketed BND ALT allele.

    ``t[p[``: t, then the sequence from p onwards; ``t]p]``: t, then the reverse complement of the sequence
    up to p; ``]p]t``: the sequence up to p, then t onwards; ``[p[t``: the reverse complement of the sequence
    from p onwards, then t onwards. Bases between t and the brackets (``tAAA[p[``, ``]p]AAAt``) are inserted at
    the junction, as written (on the record's strand, which is the junction's reading direction in every form).
    """
    match = _BRACKET.match(alt)
    if match is None or match["open"] != match["close"]:
        raise _Problem(f"ALT {alt!r} is not breakend notation t[p[, t]p], ]p]t or [p[t (inserted bases, A/C/G/T/N, "
                       "go between t and the brackets)")
    pre, post, bracket = match["pre"].upper(), match["post"].upper(), match["open"]
    if bool(pre) == bool(post):
        raise _Problem(f"ALT {alt!r} needs the REF base on exactly one side of the brackets")
    base, inserted = (pre[0], pre[1:]) if pre else (post[-1], post[:-1])
    if base != ref[:1].upper():
        place = "first" if pre else "last"
        raise _Problem(f"ALT {alt!r}: its {place} base {base!r} is not the REF base {ref[:1]!r} (in {alt!r} the REF "
                       f"base comes {place}; inserted bases sit between it and the brackets)")
    mate_chrom, mate_pos = match["chrom"], int(match["pos"])
    x, y = pos - 1, mate_pos - 1  # 0-based positions of t and p
    if pre and bracket == "[":
        sides = (chrom, x + 1, "+"), (mate_chrom, y, "+")
    elif pre:
        sides = (chrom, x + 1, "+"), (mate_chrom, y + 1, "-")
    elif bracket == "]":
        sides = (mate_chrom, y + 1, "+"), (chrom, x, "+")
    else:
        sides = (mate_chrom, y, "-"), (chrom, x, "+")
    return sides[0], sides[1], mate_chrom, mate_pos, inserted


_COMPLEMENT = str.maketrans("ACGTN", "TGCAN")


def _reverse_complement(bases: str) -> str:
    return bases.translate(_COMPLEMENT)[::-1]


@dataclass
class _Breakend:
    line: int
    where: str
    id: str
    chrom: str
    pos: int
    alt: str
    mate_id: str | None
    left: Side
    right: Side
    mate: tuple[str, int]
    inserted: str = ""


def _breakend(fields: list[str], where: str, line: int, genome: Genome | None) -> _Breakend | SkippedVariant | None:
    """A bracketed BND record, a record left out for good (single breakend, not a BND), or ``None`` for a record
    that is no breakend; raises :class:`_Problem` for a breakend that cannot be used."""
    chrom, pos, vid, ref, alts, info = _parse_record(fields, where)
    bnd = any("[" in a or "]" in a for a in alts) or info.get("SVTYPE") == "BND"
    if not bnd:
        return None
    aid = vid if vid != "." else f"{chrom}:{pos}"
    if len(alts) != 1:
        raise _Problem(f"{aid}: a breakend record with {len(alts)} ALT alleles; one per record is supported")
    alt = alts[0]
    if alt.startswith(".") or alt.endswith("."):
        return SkippedVariant(line, aid, f"single breakend {alt!r}: its partner is unknown, nothing to join")
    left, right, mate_chrom, mate_pos, inserted = _bracket_sides(chrom, pos, ref, alt)
    if genome is not None:
        for name, position in ((chrom, pos), (mate_chrom, mate_pos)):
            if name not in genome:
                raise _Problem(f"{aid}: unknown chromosome {name!r} in genome {genome.name}")
            if position > genome.chrom_size(name):
                raise _Problem(f"{aid}: {name}:{position} lies past the end of {name} ({genome.chrom_size(name):,} bp)")
        found = decode(genome.fetch(chrom, pos - 1, pos))
        if found != ref[:1].upper():
            raise _Problem(f"{aid}: REF {ref!r} does not match the genome ({found!r})")
    mate_id = info.get("MATEID") or None
    return _Breakend(line, where, aid, chrom, pos, alt, mate_id, left, right, (mate_chrom, mate_pos), inserted)


def _mate_problem(first: _Breakend, mates: dict[str, _Breakend]) -> str | None:
    if first.mate_id is None:
        return "has no INFO MATEID: an unpaired breakend (each BND record needs its mate, paired by ID/MATEID)"
    mate = mates.get(first.mate_id)
    if mate is None:
        return f"names MATEID={first.mate_id}, but no BND record has that ID: an unpaired breakend"
    if mate.mate_id != first.id:
        return f"names MATEID={first.mate_id}, whose MATEID is {mate.mate_id!r}, not {first.id!r}"
    if first.mate != (mate.chrom, mate.pos) or mate.mate != (first.chrom, first.pos):
        return (f"and its mate {mate.id} (line {mate.line}) do not point at each other: {first.alt!r} at "
                f"{first.chrom}:{first.pos}, {mate.alt!r} at {mate.chrom}:{mate.pos}")
    same, flipped = (first.left, first.right), _reversed(first.left, first.right)
    if (mate.left, mate.right) not in (same, flipped):
        return f"and its mate {mate.id} (line {mate.line}) describe different joins ({first.alt!r} vs {mate.alt!r})"
    # read from the other strand, the mate writes the inserted bases reverse complemented
    if not ((mate.left, mate.right) == same and mate.inserted == first.inserted
            or (mate.left, mate.right) == flipped and mate.inserted == _reverse_complement(first.inserted)):
        return (f"and its mate {mate.id} (line {mate.line}) insert different bases at the junction ({first.alt!r} vs "
                f"{mate.alt!r}: read along the junction, {first.inserted or 'none'!r} vs "
                f"{(mate.inserted if (mate.left, mate.right) == same else _reverse_complement(mate.inserted)) or 'none'!r})")
    return None


def read_breakends(
    path: str | PathLike[str], genome: Genome | None = None, policy: Literal["fail", "skip"] = "fail"
) -> BreakendResult:
    """Read the junctions of a VCF's breakend (``BND``) records, one per mate pair.

    Records with a bracketed ``ALT`` (``t[p[``, ``t]p]``, ``]p]t``, ``[p[t``, with any bases inserted at the
    junction between ``t`` and the brackets: :attr:`Junction.inserted`) or ``INFO SVTYPE=BND`` are read;
    other records are not breakends and are passed over. Mates are paired by ``ID`` and ``INFO MATEID``
    (each must name the other, point at the other's position, and describe the same join, possibly from the
    other strand); the junction is read from the first of the two in the file.

    Parameters
    ----------
    path, genome, policy
        As in :func:`read_vcf`: with a genome, chromosomes, positions and the REF base are checked.

    Returns
    -------
    BreakendResult

    Raises
    ------
    VcfError
        On a missing file or malformed line syntax (always), and with ``policy="fail"`` naming every breakend
        that cannot be used: malformed bracket notation, an unpaired breakend (no ``MATEID``, or a mate that is
        missing or does not point back, or inserts other bases at the junction), a multi-allelic
        breakend record, or a genome mismatch. With ``policy="skip"`` those are listed in ``skipped``. Single
        breakends (``.A``, ``A.``) are always skipped and listed: they have no partner to join.
    """
    if policy not in ("fail", "skip"):
        raise ValueError(f"policy must be 'fail' or 'skip', got {policy!r}")
    path = Path(path)
    breakends: list[_Breakend] = []
    skipped: list[SkippedVariant] = []
    problems: list[tuple[int, str, str]] = []  # (line, id, problem)
    for line_no, where, fields in _lines(path):
        if line_no == 0:
            continue
        try:
            found = _breakend(fields, where, line_no, genome)
        except _Problem as problem:
            vid = fields[2] if len(fields) > 2 and fields[2] != "." else f"{fields[0]}:{fields[1]}"
            text = str(problem)
            problems.append((line_no, vid, text if text.startswith(f"{vid}:") else f"{vid}: {text}"))
            continue
        if isinstance(found, SkippedVariant):
            skipped.append(found)
        elif found is not None:
            breakends.append(found)
    by_id = {b.id: b for b in breakends}
    junctions, paired = [], set()
    for first in breakends:
        if first.id in paired:
            continue
        problem = _mate_problem(first, by_id)
        if problem is not None:
            problems.append((first.line, first.id, f"{first.id} {problem}"))
            continue
        mate = by_id[str(first.mate_id)]
        paired |= {first.id, mate.id}
        junctions.append(Junction(first.id, mate.id, first.chrom, first.pos, first.line, mate.line, first.left,
                                  first.right, first.alt, first.inserted))
    problems.sort()
    skipped += [SkippedVariant(line, vid, text) for line, vid, text in problems]
    skipped.sort(key=lambda s: s.line)
    if problems and policy == "fail":
        raise _failure(path, [f"{path}:{line} breakend {text}" for line, _, text in problems])
    return BreakendResult(path, junctions, skipped)
