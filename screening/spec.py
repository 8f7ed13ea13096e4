"""The screen spec: one validated document spoken by the CLI, the service and the client.

A spec is YAML or JSON. Relative paths inside it are resolved against the
directory of the spec file (or the working directory for an in-memory spec).
Region strings are 0-based, half-open (``chr1:1,400,000-1,420,000`` covers
bases 1,400,000 .. 1,419,999).
"""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Iterable, Iterator, Literal, Union, overload

import yaml
from pydantic import (
    BaseModel, BeforeValidator, ConfigDict, Field, StrictFloat, StrictInt, ValidationError, field_validator, model_validator,
)

from screening.core.errors import ScreeningError
from screening.core.regions import Region, RegionError, parse_region
from screening.core.urls import is_url
from screening.perturb.kinds import TILED_KINDS as _TILED_KINDS

__all__ = [
    "SpecError",
    "ScreenSpec",
    "ModelSpec",
    "UserModelDeclaration",
    "GenomeSpec",
    "TrackSpec",
    "DeletionSpec",
    "MaskSpec",
    "ShuffleSpec",
    "InversionSpec",
    "DuplicationSpec",
    "InsertionSpec",
    "MutagenesisSpec",
    "VariantsSpec",
    "RearrangementSpec",
    "RearrangementEntry",
    "SegmentSpec",
    "RoiSpec",
    "AttributionSpec",
    "TargetSpec",
    "DEFAULT_SCORES",
    "ExecutionSpec",
    "OutputSpec",
    "load_spec",
    "MAX_DEPTH",
    "nesting_depth",
    "parse_spec",
]

#: The default scores of every perturbation kind (C.Origami's two impact formulas).
DEFAULT_SCORES = ("impact_mean_abs", "impact_abs_mean")


_SPLIT_PIECE = re.compile(r"[0-9_]+(\s*-\s*[0-9_]+)?", re.ASCII)


def _split_region_hint(value: list, index: int) -> str:
    """A hint when YAML cut an unquoted region at its commas (``[chr1:1,000-2,000]`` is a list of 2).

    The pieces that follow a region's beginning are bare digit groups (``000-2``, ``000``);
    glued back together they show the region to quote.
    """
    pieces = [str(value[index])]
    for piece in value[index + 1 :]:
        if not (isinstance(piece, (str, int)) and not isinstance(piece, bool) and _SPLIT_PIECE.fullmatch(str(piece))):
            break
        # a piece after a comma is a thousands group: YAML read "000" as the int 0
        pieces.append(f"{piece:03d}" if isinstance(piece, int) else piece)
    if len(pieces) == 1:
        return ""
    return f"; YAML split an unquoted region at its commas: quote it, e.g. ['{','.join(pieces)}']"


@overload
def _checked_regions(value: list[str]) -> list[str]: ...
@overload
def _checked_regions(value: None) -> None: ...


def _checked_regions(value: list[str] | None) -> list[str] | None:
    """Validate region strings, raising the region module's message as a field error."""
    regions = value or []
    for index, text in enumerate(regions):
        try:
            parse_region(text)
        except RegionError as err:
            raise ValueError(f"item {index}: {err}{_split_region_hint(regions, index)}") from None
    return value


def _unsplit_regions(value: Any) -> Any:
    """Before type checks (YAML makes the piece ``400`` an int): refuse a region list that YAML cut
    at a region's commas, with the hint to quote it."""
    if isinstance(value, list):
        for index, item in enumerate(value):
            hint = _split_region_hint(value, index) if isinstance(item, str) and re.fullmatch(r"\S+:[0-9_]+", item) else ""
            if hint:
                raise ValueError(f"item {index}: {item!r} is not a region{hint}")
    return value


#: A list of region strings; ``[chr1:1,000-2,000]`` unquoted in YAML gets a hint to quote it.
RegionList = Annotated[list[str], BeforeValidator(_unsplit_regions)]


# Zarr's own metadata files and the arrays every analysis group holds (screening.store.layout): an analysis
# of one of these names would overwrite them, on case-insensitive file systems in any case.
_ZARR_NAMES = ("zarr.json", ".zattrs", ".zgroup", ".zarray", ".zmetadata", "coordinates")
_ANALYSIS_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.+-]{0,99}", re.ASCII)


def _checked_analysis_name(name: str | None) -> str | None:
    """An analysis name is a folder of the store: letters, digits, ``_ . + -``; none of the store's own."""
    if name is None:
        return name
    from screening.store.layout import RESERVED_NAMES

    if not _ANALYSIS_NAME.fullmatch(name) or ".." in name:
        raise ValueError(
            f"{name!r} cannot name an analysis (a folder of the store): use 1-100 ASCII letters, digits, '_', '.', "
            "'+' or '-', starting with a letter or digit (no '/', '..', spaces)"
        )
    if name.lower() in {n.lower() for n in (*_ZARR_NAMES, *RESERVED_NAMES)}:
        raise ValueError(f"{name!r} is a name the result store uses itself; choose another analysis name")
    return name


class SpecError(ScreeningError, ValueError):
    """A spec that does not validate; the message names the field.

    Parameters
    ----------
    message
        What is wrong, naming the field(s).
    fields
        One ``{"field": dotted name, "message": ...}`` per invalid field, for callers that report
        fields separately (the service's ``errors``); empty when the error is not about fields.
    """

    def __init__(self, message: str, fields: list[dict[str, str]] | None = None) -> None:
        super().__init__(message)
        self.fields = list(fields or [])

    def __reduce__(self):  # keep the fields across pickling (Ray)
        return (type(self), (str(self), self.fields))


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class UserModelDeclaration(_Strict):
    """What a user's own model takes and returns (``model.declare``, required for ``kind: user``).

    The adapter builds every input from it, and the model is checked against it when
    loaded (one forward on a dummy batch). See ``docs/user_models.md``.
    """

    window_length: Annotated[StrictInt, Field(gt=0)] = Field(description="input length in bp")
    bin_size: Annotated[StrictInt, Field(gt=0)] = Field(description="bp per output map bin")
    n_bins: Annotated[StrictInt, Field(gt=0)] = Field(description="the output map is n_bins x n_bins")
    map_offset: Annotated[StrictInt, Field(ge=0)] = Field(0, description="bp from the window start to the first map bin")
    symmetric: bool = Field(False, description="the output map is symmetric (checked at load)")
    input_layout: Literal["NCL", "NLC"] = Field(
        description="NCL: [batch, channels, length]; NLC: [batch, length, channels]"
    )
    alphabet: str = Field(
        description="DNA channel order, a permutation of ACGT with optionally N (own channel), e.g. ATCGN"
    )
    n_value: StrictFloat | None = Field(
        None, description="value of every A/C/G/T channel at an N base (e.g. 0.25 or 0); required iff alphabet has no N"
    )
    tracks: tuple[str, ...] = Field(
        (), description="names of the track channels that follow the DNA channels, in order"
    )

    @field_validator("alphabet")
    @classmethod
    def _alphabet(cls, value: str) -> str:
        letters = value.upper()
        if sorted(letters.replace("N", "", 1)) != list("ACGT") or len(letters) not in (4, 5):
            raise ValueError(f"{value!r} is not a permutation of ACGT optionally with one N (e.g. 'ACGT', 'ATCGN')")
        return letters

    @model_validator(mode="after")
    def _consistent(self) -> "UserModelDeclaration":
        has_n = "N" in self.alphabet
        if has_n and self.n_value is not None:
            raise ValueError(
                f"n_value {self.n_value} with alphabet {self.alphabet!r}: N has its own channel; drop n_value"
            )
        if not has_n and self.n_value is None:
            raise ValueError(
                f"alphabet {self.alphabet!r} has no N channel: give n_value (A/C/G/T value at N, e.g. 0.25 or 0)"
            )
        map_end = self.map_offset + self.n_bins * self.bin_size
        if map_end > self.window_length:
            raise ValueError(
                f"the map (map_offset {self.map_offset} + n_bins {self.n_bins} x bin_size {self.bin_size} "
                f"= {map_end} bp) "
                f"reaches beyond window_length {self.window_length}"
            )
        if len(set(self.tracks)) != len(self.tracks):
            raise ValueError(f"tracks are listed twice: {list(self.tracks)}")
        return self

    @property
    def n_channels(self) -> int:
        """Input channels: DNA then tracks."""
        return len(self.alphabet) + len(self.tracks)


_USER_ONLY = ("import_path", "python_path", "state_dict_prefix", "declare")


class ModelSpec(_Strict):
    """Which model to run.

    Exactly one of ``checkpoint`` (a trained model file) or ``random_seed`` (a
    random-initialised model, for smoke tests only) is given.
    """

    kind: Literal["corigami", "orca", "user"] = Field(
        "corigami", description="corigami, orca (the 1 Mb model) or user (your own PyTorch/TorchScript model)"
    )
    checkpoint: str | None = None
    random_seed: StrictInt | None = None
    config: dict[str, Any] = Field(default_factory=dict, description="architecture overrides")
    track_names: tuple[str, ...] | None = Field(
        None, description="names of the model's input tracks, in order (C.Origami: ctcf, atac)"
    )
    strand_average: bool = Field(
        False,
        description="kind orca: average the forward and the reverse-complement prediction, "
        "0.5 * fwd + 0.5 * rc[::-1, ::-1], as Orca's own predictions do (twice the compute)",
    )
    name: str | None = None
    import_path: str | None = Field(
        None,
        description="kind user: 'package.module:factory', a class or function building the nn.Module (called "
        "with config as keyword arguments); checkpoint is then a state dict. Without it, checkpoint is TorchScript",
    )
    python_path: tuple[str, ...] = Field(
        (), description="kind user: folders put on sys.path (driver and every Ray worker) before importing import_path"
    )
    state_dict_prefix: str | None = Field(
        None, description="kind user: prefix stripped from state-dict keys, e.g. 'model.'"
    )
    declare: UserModelDeclaration | None = Field(None, description="kind user: the model's input/output (required)")

    @model_validator(mode="after")
    def _one_source(self) -> "ModelSpec":
        if (self.checkpoint is None) == (self.random_seed is None):
            raise ValueError("give exactly one of 'checkpoint' or 'random_seed'")
        return self

    @model_validator(mode="after")
    def _orca_fields(self) -> "ModelSpec":
        if self.strand_average and self.kind != "orca":
            raise ValueError(f"strand_average is only for kind: orca (this model is kind: {self.kind})")
        return self

    @model_validator(mode="after")
    def _user_fields(self) -> "ModelSpec":
        if self.kind != "user":
            given = [name for name in _USER_ONLY if getattr(self, name) not in (None, ())]
            if given:
                raise ValueError(f"{given} are only for kind: user (this model is kind: {self.kind})")
            return self
        if self.declare is None:
            raise ValueError("kind user needs 'declare' (window_length, bin_size, n_bins, input_layout, alphabet, ...)")
        if self.track_names is not None:
            raise ValueError("kind user names its tracks in declare.tracks, not track_names")
        if self.import_path is None:  # a TorchScript file: code and weights in one
            if self.random_seed is not None:
                raise ValueError("random_seed needs import_path (a TorchScript checkpoint carries its own weights)")
            if self.config or self.state_dict_prefix is not None:
                raise ValueError(
                    "config and state_dict_prefix need import_path (a TorchScript checkpoint is built already)"
                )
        elif not re.fullmatch(r"[A-Za-z_][\w.]*:[A-Za-z_][\w.]*", self.import_path):
            raise ValueError(f"import_path {self.import_path!r} is not 'package.module:factory'")
        return self


class GenomeSpec(_Strict):
    """A FASTA file (plain or bgzip) or a folder of per-chromosome ``<chrom>.fa.gz``."""

    fasta: str
    name: str | None = None


class TrackSpec(_Strict):
    """One bigWig input track and the transform applied after NaN → 0."""

    name: str
    path: str
    transform: Literal["none", "log1p"] = "none"


class RoiSpec(_Strict):
    """A block of the contact map (rows × columns, as genomic intervals) for ``roi_mean_delta``."""

    rows: str
    cols: str

    @field_validator("rows", "cols")
    @classmethod
    def _region(cls, value: str) -> str:
        try:
            parse_region(value)
        except RegionError as err:
            raise ValueError(str(err)) from None
        return value


class _PerturbationBase(_Strict):
    name: str | None = None
    regions: RegionList | None = Field(None, description="this analysis's own regions (default: the screen's)")
    scores: tuple[str, ...] = DEFAULT_SCORES
    roi: RoiSpec | None = None
    insulation_window: Annotated[StrictInt, Field(ge=1)] = 10
    keep_maps: Annotated[StrictInt, Field(ge=0)] = Field(
        0, description="store the Δ maps of the K strongest perturbations (by the first score) of every work unit"
    )
    shifts: list[StrictInt] | None = Field(
        None, description="bp by which each perturbation's model window is moved, e.g. [-s, 0, s]: every score is the "
        "mean over the placements (SuPreMo's --shift_by); cost: one screen per placement"
    )
    strand_average: bool = Field(
        False, description="also score each placement on the reverse strand (input reverse complemented, map flipped "
        "back) and average: doubles the cost"
    )
    keep_placements: bool = Field(
        False, description="with shifts or strand_average, also store each placement's scores (<score>_at<shift>[_rc])"
    )
    if TYPE_CHECKING:  # every kind's class declares it as a Literal field (the discriminator of Perturbation)
        kind: str

    @field_validator("shifts")
    @classmethod
    def _shifts(cls, value: list[int] | None) -> list[int] | None:
        if value is not None and (not value or len(set(value)) != len(value)):
            raise ValueError("list distinct shifts in bp, e.g. [-100000, 0, 100000]")
        return value

    @model_validator(mode="after")
    def _placements_given(self):
        if self.keep_placements and len(self.placements) == 1:
            raise ValueError("keep_placements needs shifts or strand_average: true (more than one placement)")
        if self.keep_maps and len(self.placements) > 1:
            raise ValueError("keep_maps with shifts or strand_average: Δ maps are kept for one placement only; drop one")
        return self

    @property
    def placements(self) -> tuple[tuple[int, bool], ...]:
        """``(shift, reverse strand)`` of every placement each perturbation is scored in (``((0, False),)``: one)."""
        strands = (False, True) if self.strand_average else (False,)
        return tuple((int(shift), strand) for shift in (self.shifts or [0]) for strand in strands)

    @property
    def placement_scores(self) -> dict[tuple[int, bool], list[str]]:
        """With ``keep_placements``: each placement's stored score names (``<score>_at<shift>``, ``_rc`` on the
        reverse strand); else empty."""
        if not self.keep_placements:
            return {}
        return {(shift, rc): [f"{name}_at{shift:+d}{'_rc' if rc else ''}" for name in self.scores]
                for shift, rc in self.placements}

    @property
    def stored_scores(self) -> list[str]:
        """The score arrays of the analysis in the store: its scores (averaged over the placements), then each
        placement's when kept."""
        return [*self.scores, *(name for names in self.placement_scores.values() for name in names)]

    @field_validator("regions")
    @classmethod
    def _own_regions(cls, value: list[str] | None) -> list[str] | None:
        return _checked_regions(value)

    @field_validator("name")
    @classmethod
    def _name(cls, value: str | None) -> str | None:
        return _checked_analysis_name(value)

    @field_validator("scores")
    @classmethod
    def _known_scores(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        from screening.maps.score import available_scores

        if not value:
            raise ValueError("list at least one score")
        if len(set(value)) != len(value):
            raise ValueError("scores are listed twice")
        unknown = [name for name in value if name not in available_scores()]
        if unknown:
            raise ValueError(f"unknown score(s) {unknown}; choose from {list(available_scores())}")
        return value

    @model_validator(mode="after")
    def _roi_given(self):
        if any(name.startswith("roi_mean_delta") for name in self.scores) and self.roi is None:
            raise ValueError("the score roi_mean_delta needs 'roi: {rows: chr:a-b, cols: chr:c-d}'")
        return self

    @property
    def label(self) -> str:
        return self.name or self._default_label()

    def _default_label(self) -> str:
        return self.kind


WINDOW_PLACEMENTS = ("centred", "shared")
_WINDOW_HELP = (
    "centred: one model window centred on each perturbation (C.Origami's screen; two forward passes per "
    "perturbation); shared: the perturbations of a work unit share windows that hold them in their central "
    "half, so each window's reference is predicted once (one forward pass per perturbation, plus one per unit)"
)


class _TiledSpec(_PerturbationBase):
    """Tiled over the screen's regions: ``width`` bp at ``start + k·step`` (region end exclusive)."""

    width: Annotated[StrictInt, Field(gt=0)]
    step: Annotated[StrictInt, Field(gt=0)]
    window: Literal["centred", "shared"] = Field("centred", description=_WINDOW_HELP)

    def _default_label(self) -> str:
        return f"{self.kind}_{self.width}bp"


class DeletionSpec(_TiledSpec):
    """Delete ``width`` bp (sequence and tracks) in a window centred on the deletion, as C.Origami.

    ``padding`` fills the window's tail after the deletion shifts it: ``zero`` (N and
    0 tracks, the original's default) or ``follow`` (real downstream sequence; the
    default for ``model.kind: orca``, as Orca fills windows from the flanking genome).
    """

    kind: Literal["deletion"] = "deletion"
    padding: Literal["zero", "follow"] = "zero"


class MaskSpec(_TiledSpec):
    """Replace ``width`` bp by N in place (no shift); tracks kept unless ``mask_tracks``."""

    kind: Literal["mask"] = "mask"
    mask_tracks: bool = False


class ShuffleSpec(_TiledSpec):
    """Dinucleotide-preserving shuffle of ``width`` bp, seeded by ``seed`` and the position."""

    kind: Literal["shuffle"] = "shuffle"
    seed: StrictInt = 0


class InversionSpec(_TiledSpec):
    """Reverse-complement ``width`` bp in place; tracks reversed."""

    kind: Literal["inversion"] = "inversion"


class DuplicationSpec(_TiledSpec):
    """Tandem duplication of ``width`` bp (the copy follows the original; tracks copied)."""

    kind: Literal["duplication"] = "duplication"


class InsertionSpec(_PerturbationBase):
    """Insert a sequence (or a bundled motif's consensus) before ``start + k·step``; tracks 0 over it."""

    kind: Literal["insertion"] = "insertion"
    step: Annotated[StrictInt, Field(gt=0)]
    window: Literal["centred", "shared"] = Field("centred", description=_WINDOW_HELP)
    sequence: str | None = None
    motif: Literal["CTCF"] | None = None
    orientation: Literal["+", "-"] = "+"

    @model_validator(mode="after")
    def _one_source(self):
        if (self.sequence is None) == (self.motif is None):
            raise ValueError("give exactly one of 'sequence' or 'motif'")
        if self.sequence is not None:
            from screening.perturb.edits import insertion

            if not self.sequence:
                raise ValueError("sequence: empty")
            insertion(self.sequence)  # raises naming letters outside ACGTN
        return self

    def inserted_codes(self):
        """The inserted bases as codes, in the chosen orientation."""
        from screening.perturb.edits import insertion, motif_consensus

        if self.motif is not None:
            from screening.perturb.motif import load_ctcf

            return insertion(motif_consensus(load_ctcf().counts), self.orientation)
        assert self.sequence is not None  # _one_source: exactly one of sequence and motif
        return insertion(self.sequence, self.orientation)

    def _default_label(self) -> str:
        what = self.motif or f"{len(self.sequence or '')}bp"
        return f"insertion_{what}{'_rc' if self.orientation == '-' else ''}"


class MutagenesisSpec(_PerturbationBase):
    """Saturation mutagenesis: every base of the regions × its 3 alternatives; stored as [position, 4].

    Positions of one work unit share one window (centred on them), so its reference is
    predicted once.
    """

    kind: Literal["mutagenesis"] = "mutagenesis"


class VariantsSpec(_PerturbationBase):
    """Variants from a VCF (SNV, MNV, indels, symbolic DEL/DUP/INV), each in a window centred on it.

    With ``sample``, a personal haplotype: only the alleles that sample's phased ``GT`` carries, and
    each is scored together with every other allele of the same haplotype inside its window (joint
    application, against the reference); ``haplotype`` picks 1, 2 or ``both`` (one row per carrying
    haplotype, label ``haplotype``). See ``docs/rearrangements.md``.
    """

    kind: Literal["variants"] = "variants"
    vcf: str
    padding: Literal["zero", "follow"] = "zero"
    sample: str | None = Field(None, description="a VCF sample column: apply its phased haplotype's variants jointly")
    haplotype: Literal[1, 2, "both"] | None = Field(None, description="which haplotype of 'sample' (default both)")

    @field_validator("sample")
    @classmethod
    def _sample(cls, value: str | None) -> str | None:
        if value is not None and not value.strip():
            raise ValueError("sample: empty; name a sample column of the VCF")
        return value

    @model_validator(mode="after")
    def _haplotype_needs_sample(self):
        if self.haplotype is not None and self.sample is None:
            raise ValueError("haplotype needs 'sample' (the VCF column whose phased genotype gives the haplotypes)")
        return self

    @property
    def haplotypes(self) -> tuple[int, ...]:
        """The haplotypes scored (``()`` without a sample: each record alone)."""
        if self.sample is None:
            return ()
        return (1, 2) if self.haplotype in (None, "both") else (int(self.haplotype),)

    def _default_label(self) -> str:
        return "variants" if self.sample is None else f"haplotypes_{self.sample}"


class SegmentSpec(_Strict):
    """One segment of a rearrangement: ``chrom:[start, end)`` (0-based, half-open) read on ``strand``, or
    ``sequence``: literal inserted bases (A, C, G, T, N; they belong to no partner locus, their tracks are 0)."""

    chrom: str | None = None
    start: Annotated[StrictInt, Field(ge=0)] | None = None
    end: Annotated[StrictInt, Field(gt=0)] | None = None
    strand: Literal["+", "-"] = "+"
    sequence: str | None = None

    @model_validator(mode="after")
    def _one_form(self):
        # by value, not by the fields set: a dumped spec (sent to the workers) lists every field
        genomic = {name for name in ("chrom", "start", "end") if getattr(self, name) is not None}
        if self.sequence is not None:
            if genomic or self.strand != "+":
                given = sorted(genomic | ({"strand"} if self.strand != "+" else set()))
                raise ValueError(f"segment: give either 'sequence' (inserted bases, as read along the rearrangement) "
                                 f"or 'chrom', 'start', 'end' (and 'strand'), not both (got sequence and {given})")
            return self
        if self.chrom is None or self.start is None or self.end is None:
            raise ValueError("segment: give 'chrom', 'start' and 'end' (and 'strand'), or 'sequence' (inserted bases)")
        if self.end <= self.start:
            raise ValueError(f"segment {self.chrom}:{self.start}-{self.end}: end must be greater than start")
        return self

    @property
    def inserted(self) -> bool:
        """Whether the segment is literal inserted sequence."""
        return self.sequence is not None


class RearrangementEntry(_Strict):
    """A named rearrangement: its segments, in order, replace the model window's content."""

    name: str
    segments: Annotated[list[SegmentSpec], Field(min_length=1)]

    @model_validator(mode="after")
    def _sequences(self):
        for i, segment in enumerate(self.segments):
            if segment.sequence is None:
                continue
            where = f"rearrangement {self.name!r}, segment {i}"
            if not segment.sequence:
                raise ValueError(f"{where}: the inserted sequence is empty; give at least one base (A, C, G, T, N)")
            bad = sorted(set(segment.sequence.upper()) - set("ACGTN"))
            if bad:
                shown = segment.sequence if len(segment.sequence) <= 40 else segment.sequence[:40] + "..."
                raise ValueError(f"{where}: the inserted sequence {shown!r} holds {''.join(bad)!r}; only A, C, G, T "
                                 "and N (either case) are bases")
        if all(segment.inserted for segment in self.segments):
            raise ValueError(f"rearrangement {self.name!r}: every segment is inserted sequence; a rearrangement needs "
                             "genomic segments (its partner loci) around the inserted bases")
        return self


class RearrangementSpec(_PerturbationBase):
    """Rearrangements (translocations, inversions with flanking deletions, segmental moves): each an ordered
    list of segments (genomic intervals, or literal inserted ``sequence``) that fills a model window centred on
    its junctions, or the junctions of a VCF's breakend (``BND``) mate pairs. The rearranged map is scored against
    the reference map of each contributing locus (partner): scores are stored per partner as ``<score>_p<k>``;
    with ``shifts``/``strand_average`` each is the mean over the placements, per partner; ``keep_maps`` keeps the
    rearranged map minus each partner's reference (see ``docs/rearrangements.md``)."""

    kind: Literal["rearrangement"] = "rearrangement"
    rearrangements: list[RearrangementEntry] | None = None
    vcf: str | None = None
    max_partners: Annotated[StrictInt, Field(ge=1, le=16)] = Field(
        2, description="partners scored per rearrangement (k = 0 .. max_partners-1); more are refused"
    )

    @model_validator(mode="after")
    def _one_source(self):
        if (self.rearrangements is None) == (self.vcf is None):
            raise ValueError("give exactly one of 'rearrangements' (segments) or 'vcf' (BND records)")
        if self.rearrangements is not None:
            names = [r.name for r in self.rearrangements]
            if not names:
                raise ValueError("rearrangements: list at least one")
            if len(set(names)) != len(names):
                raise ValueError(f"rearrangement names must be unique, got {names}")
        if self.roi is not None or any(name.startswith("roi_mean_delta") for name in self.scores):
            raise ValueError("roi (and roi_mean_delta): not for rearrangements: roi_mean_delta reads one block of genomic rows x columns "
                             "in the map, but a rearranged map is compared with several partner windows, each its own "
                             "frame, and the junction-spanning bins have no reference at all; drop roi")
        if self.regions:
            raise ValueError("regions: a rearrangement's segments say where it is; drop regions")
        return self

    def _default_label(self) -> str:
        return "rearrangements"


class TargetSpec(_Strict):
    """The scalar of the predicted map that attribution explains.

    ``whole_map``: the sum of the map; ``insulation``: insulation at the window's centre
    bin (lower = stronger boundary); ``block``: mean over the bins of ``rows`` × ``cols``
    (genomic intervals, e.g. a loop's anchors); ``difference``: block ``rows × cols`` minus
    block ``rows_b × cols_b``.
    """

    kind: Literal["whole_map", "insulation", "block", "difference"] = "whole_map"
    rows: str | None = None
    cols: str | None = None
    rows_b: str | None = None
    cols_b: str | None = None
    window: Annotated[StrictInt, Field(ge=1)] = 10

    @model_validator(mode="after")
    def _blocks(self):
        needed = {"block": ("rows", "cols"), "difference": ("rows", "cols", "rows_b", "cols_b")}.get(self.kind, ())
        missing = [name for name in needed if getattr(self, name) is None]
        if missing:
            raise ValueError(f"target {self.kind} needs {missing}")
        for name in ("rows", "cols", "rows_b", "cols_b"):
            if getattr(self, name) is not None:
                try:
                    parse_region(getattr(self, name))
                except RegionError as err:
                    raise ValueError(f"{name}: {err}") from None
        return self


class AttributionSpec(_Strict):
    """Gradient attribution of a map target to every base (× 4) and track over the regions.

    Windows are tiled every ``window_step`` bp; each keeps only the positions it owns
    (those closest to its centre), so the stitched track has no seams. Stored as
    ``attribution`` and ``attribution_corrected`` ``[position, 4]`` (the correction
    subtracts the mean over the 4 bases), ``track_<name>`` per input track, and each
    position's window ``target`` value and integrated-gradients ``completeness_error``.
    """

    kind: Literal["attribution"] = "attribution"
    name: str | None = None
    regions: RegionList | None = None
    method: Literal["saliency", "input_x_gradient", "integrated_gradients", "deeplift", "deeplift_shap"] = "saliency"
    baseline: Literal["zeros", "uniform", "shuffle"] = "zeros"
    track_baseline: Literal["unchanged", "zeros"] = "zeros"
    # captum's integration needs two points at least; every method is handed n_steps
    n_steps: Annotated[StrictInt, Field(ge=2)] = 50
    n_shuffles: Annotated[StrictInt, Field(ge=1)] = 10
    seed: StrictInt = 0
    internal_batch_size: Annotated[StrictInt, Field(ge=1)] | None = None
    checkpoint: bool = False
    window_step: Annotated[StrictInt, Field(gt=0)] | None = Field(
        None, description="bp between window centres (default: half the model window)"
    )
    target: TargetSpec = TargetSpec()

    @property
    def label(self) -> str:
        return self.name or f"{self.method}"

    @property
    def reports_completeness(self) -> bool:
        """Whether the method has a completeness error (integrated gradients and DeepLIFT do)."""
        return self.method in ("integrated_gradients", "deeplift", "deeplift_shap")

    @field_validator("regions")
    @classmethod
    def _own_regions(cls, value: list[str] | None) -> list[str] | None:
        return _checked_regions(value)

    @field_validator("name")
    @classmethod
    def _name(cls, value: str | None) -> str | None:
        return _checked_analysis_name(value)

    @model_validator(mode="after")
    def _runnable(self) -> "AttributionSpec":
        """The settings screening.interpret.attribution refuses at run time, refused here naming the field."""
        deeplift = self.method in ("deeplift", "deeplift_shap")
        if self.method == "deeplift_shap" and self.baseline != "shuffle":
            raise ValueError(
                f"baseline: {self.baseline!r} with method deeplift_shap, which averages over a distribution of "
                "references: set baseline: shuffle (n_shuffles references per window)"
            )
        if deeplift and self.checkpoint:
            raise ValueError(
                f"checkpoint: true with method {self.method}: DeepLIFT's hooks would see recomputed blocks; "
                "drop checkpoint (or use integrated_gradients)"
            )
        return self


Perturbation = Annotated[
    Union[
        DeletionSpec, MaskSpec, ShuffleSpec, InversionSpec, DuplicationSpec, InsertionSpec, MutagenesisSpec,
        VariantsSpec, RearrangementSpec, AttributionSpec,
    ],
    Field(discriminator="kind"),
]
TILED_KINDS = _TILED_KINDS  # deprecated here: the registry (screening.perturb.kinds) defines it


class ExecutionSpec(_Strict):
    """How to run: Ray address, workers, devices and batching. Not part of the science."""

    address: str | None = Field(None, description="Ray address; None starts an embedded local Ray")
    num_workers: Annotated[StrictInt, Field(ge=1)] = 1
    cpus_per_worker: Annotated[StrictFloat, Field(gt=0)] = 1.0
    gpus_per_worker: Annotated[StrictFloat, Field(ge=0)] = 0.0
    placement_timeout_s: Annotated[float, Field(gt=0)] = Field(
        900.0, description="fail the screen when its workers are not placed on the Ray cluster within this many seconds "
        "(long enough for an autoscaler to start GPU nodes)"
    )
    device: Literal["auto", "cpu", "cuda"] = "auto"
    batch_size: Annotated[StrictInt, Field(ge=1)] = 4
    chunk_size: Annotated[StrictInt, Field(ge=1)] = 16
    max_retries: Annotated[StrictInt, Field(ge=0)] = 2
    metrics_port: Annotated[StrictInt, Field(ge=0, le=65535)] | None = Field(
        None, description="serve Prometheus metrics of the screen on http://<metrics_host>:<port>/metrics"
    )
    metrics_host: str = Field(
        "127.0.0.1", description="address the metrics endpoint binds (0.0.0.0 in a pod, so Prometheus can scrape it)"
    )
    metrics_linger_s: Annotated[float, Field(ge=0, le=600)] = Field(
        15.0, description="after the last unit, the metrics endpoint stays up until one more scrape, at most this "
        "long, so Prometheus records the final counts (0: close at once)"
    )
    precision: Literal["fp32", "bf16", "fp16"] = Field(
        "fp32",
        description="CUDA autocast precision of the model's forward pass; CPU workers always run fp32 (a "
        "bf16/fp16 request there falls back with a warning). Not fp32: part of the spec hash (results differ)",
    )
    overlap: bool = Field(
        True, description="build the next batch's inputs (perturbation, one-hot, host-to-device copy) while the current one "
        "runs; GPU workers only (on a CPU the model uses the same cores, so inputs are built inline)"
    )
    channels_last: bool = Field(
        False, description="run the model's 2-D convolutions in channels-last (NHWC) memory format (faster with cuDNN "
        "bf16/fp16); results agree with the default to float rounding"
    )
    compile: bool = Field(False, description="torch.compile the model (the first batch compiles, minutes)")
    keep_freed_memory: bool = Field(
        True, description="CPU workers keep freed memory for reuse instead of returning it to the system: a full-size "
        "C.Origami forward pass ~30% faster, the resident size stays at its peak (higher for attribution: 4.1 vs 2.8 GiB)"
    )


class OutputSpec(_Strict):
    """Where the result store goes."""

    store: str = Field(description="a local path or any fsspec URL, e.g. s3://bucket/screen.zarr")
    overwrite: bool = False
    plots: bool = True
    storage_options: dict[str, Any] = Field(
        default_factory=dict,
        description="fsspec options of a URL store (e.g. {client_kwargs: {endpoint_url: ...}}); credentials are "
        "better left to the environment (AWS_*), secret-looking values are redacted in the stored spec",
    )


class ScreenSpec(_Strict):
    """A whole screen: model, genome, tracks, regions, perturbations, execution, output."""

    name: str = "screen"
    model: ModelSpec
    genome: GenomeSpec
    tracks: list[TrackSpec] = Field(default_factory=list)
    regions: RegionList = Field(default_factory=list)
    bed: str | None = None
    perturbations: Annotated[list[Perturbation], Field(min_length=1)]
    invalid_policy: Literal["fail", "skip"] = Field(
        "fail",
        description="a perturbation that cannot be made (its model window leaves the chromosome, a VCF "
        "REF that does not match the genome, …): fail the screen, or skip it and list it in the store",
    )
    execution: ExecutionSpec = ExecutionSpec()
    output: OutputSpec

    @model_validator(mode="before")
    @classmethod
    def _orca_padding(cls, raw: Any) -> Any:
        """With ``model.kind: orca`` a deletion's or variant's ``padding`` defaults to ``follow``:
        Orca re-fills the window from the real flanking genome (``docs/orca.md``)."""
        model = raw.get("model") if isinstance(raw, dict) else None
        kind = model.get("kind") if isinstance(model, dict) else getattr(model, "kind", None)
        if kind != "orca" or not isinstance(raw.get("perturbations"), list):
            return raw
        shifting = ("deletion", "variants")
        perturbations = [
            {**p, "padding": "follow"} if isinstance(p, dict) and p.get("kind") in shifting and "padding" not in p else p
            for p in raw["perturbations"]
        ]
        return {**raw, "perturbations": perturbations}

    @field_validator("regions")
    @classmethod
    def _parse_regions(cls, value: list[str]) -> list[str]:
        return _checked_regions(value)

    @model_validator(mode="after")
    def _check(self) -> "ScreenSpec":
        self_contained = all(p.kind in ("variants", "rearrangement") or p.regions for p in self.perturbations)
        if not self.regions and self.bed is None and not self_contained:
            raise ValueError("give 'regions' (e.g. ['chr1:1,400,000-1,420,000']) or a 'bed' file")
        labels = [p.label for p in self.perturbations]
        if len(set(labels)) != len(labels):
            raise ValueError(f"perturbation names must be unique, got {labels}")
        names = [t.name for t in self.tracks]
        if len(set(names)) != len(names):
            raise ValueError(f"track names must be unique, got {names}")
        return self

    def parsed_regions(self) -> list[Region]:
        """Regions from ``regions`` (BED regions are read by the planner)."""
        return [parse_region(text) for text in self.regions]

    def science_hash(self) -> str:
        """sha256 of everything that determines the results (not execution or output).

        Fields left at their defaults are not hashed, so a new optional field added in a
        later version does not orphan existing stores. A reduced precision
        (``execution.precision`` other than fp32) changes the results, so it is hashed too.
        """
        science = self.model_dump(mode="json", exclude={"execution", "output"}, exclude_defaults=True)
        # each perturbation's kind is its own default, yet it is what tells two analyses apart
        science["perturbations"] = [
            {**dumped, "kind": p.kind} for dumped, p in zip(science.get("perturbations", [{}] * len(self.perturbations)), self.perturbations)
        ]
        if self.execution.precision != "fp32":
            science["precision"] = self.execution.precision
        canonical = json.dumps(science, sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(canonical.encode()).hexdigest()


def _spec_error(err: ValidationError, source: str) -> SpecError:
    """A :class:`SpecError` listing every invalid field of a pydantic validation error."""
    fields = []
    for item in err.errors():
        field = ".".join(str(part) for part in item["loc"] if not str(part).startswith("function-")) or "(top level)"
        message = item["msg"].removeprefix("Value error, ")
        if item["type"] in ("int_type", "float_type"):  # strict numbers: say what was given (true is no 1)
            given = item.get("input")
            message += f", got {str(given).lower() if isinstance(given, bool) else repr(given)}"
            message += " (a boolean)" if isinstance(given, bool) else ""
        fields.append({"field": field, "message": message})
    lines = [f"invalid screen spec {source}:", *(f"  {f['field']}: {f['message']}" for f in fields)]
    return SpecError("\n".join(lines), fields)


def _resolve(path: str | None, base: Path) -> str | None:
    if path is None or is_url(path):
        return path
    candidate = Path(path).expanduser()
    return str(candidate if candidate.is_absolute() else (base / candidate).resolve())


def input_path_fields(raw: dict[str, Any]) -> Iterator[tuple[str, dict[str, Any], str]]:
    """``(dotted field, containing mapping, key)`` of every input file a raw spec names.

    The one list of a spec's input paths: relative ones are resolved against the spec's folder
    here (:func:`parse_spec`), and the service checks each against its input roots
    (:mod:`screening.service.policy`). ``model.python_path`` (folders) and ``output.store`` (an
    output) are handled on their own by both.
    """
    if isinstance(raw.get("model"), dict) and raw["model"].get("checkpoint") is not None:
        yield "model.checkpoint", raw["model"], "checkpoint"
    if isinstance(raw.get("genome"), dict) and "fasta" in raw["genome"]:
        yield "genome.fasta", raw["genome"], "fasta"
    for i, track in enumerate(raw.get("tracks") or [] if isinstance(raw.get("tracks"), list) else []):
        if isinstance(track, dict) and "path" in track:
            yield f"tracks.{i}.path", track, "path"
    if raw.get("bed") is not None:
        yield "bed", raw, "bed"
    for i, entry in enumerate(raw.get("perturbations") or [] if isinstance(raw.get("perturbations"), list) else []):
        if isinstance(entry, dict) and entry.get("vcf") is not None:
            yield f"perturbations.{i}.vcf", entry, "vcf"


def _resolve_paths(raw: dict[str, Any], base: Path) -> dict[str, Any]:
    raw = json.loads(json.dumps(raw))  # deep copy, JSON-typed
    if isinstance(raw.get("model"), dict):
        raw["model"].setdefault("checkpoint", None)
        if isinstance(raw["model"].get("python_path"), list):
            folders = raw["model"]["python_path"]
            raw["model"]["python_path"] = [_resolve(p, base) if isinstance(p, str) else p for p in folders]
    for field, holder, key in input_path_fields(raw):
        if holder[key] or not field.endswith(".vcf"):  # an empty vcf is left as it is, for validation to name
            holder[key] = _resolve(holder[key], base)
    if isinstance(raw.get("output"), dict) and "store" in raw["output"]:
        raw["output"]["store"] = _resolve(raw["output"]["store"], base)
    return raw


def parse_spec(raw: dict[str, Any], base_dir: str | Path | None = None, source: str = "<spec>") -> ScreenSpec:
    """Validate a spec given as a mapping; relative paths resolve against ``base_dir``.

    Raises
    ------
    SpecError
        Naming every invalid field.
    """
    if not isinstance(raw, dict):
        raise SpecError(f"invalid screen spec {source}: expected a mapping at the top level, got {type(raw).__name__}")
    if nesting_depth(raw) > MAX_DEPTH:  # the service hands parsed JSON here directly
        raise SpecError(f"invalid screen spec {source}: nested too deeply (more than {MAX_DEPTH} levels)")
    try:
        resolved = _resolve_paths(raw, Path(base_dir or Path.cwd()))
        return ScreenSpec.model_validate(resolved)
    except ValidationError as err:
        raise _spec_error(err, source) from None
    except (TypeError, AttributeError) as err:
        raise SpecError(f"invalid screen spec {source}: {err}") from None


def load_spec(path: str | Path, overrides: dict[str, Any] | None = None) -> ScreenSpec:
    """Read and validate a YAML or JSON spec file.

    Parameters
    ----------
    path
        The spec file.
    overrides
        Dotted-key overrides applied before validation, e.g.
        ``{"execution.num_workers": 2, "output.store": "x.zarr"}``.
    """
    path = Path(path)
    if not path.is_file():
        raise SpecError(f"spec file {path} does not exist")
    raw = _read_document(path)
    if isinstance(raw, dict):
        for key, value in (overrides or {}).items():
            _set_dotted(raw, key, value)
    return parse_spec(raw, base_dir=path.parent.resolve(), source=str(path))


#: Nesting deeper than this is no screen spec (the deepest real one has 5 levels); refused before
#: anything recursive (json, pydantic) walks it into a RecursionError.
MAX_DEPTH = 32
_Loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # libyaml parses deep nesting without recursing in Python


def _read_document(path: Path) -> Any:
    """Parse a spec file as YAML (JSON is YAML), refusing binary files and absurd nesting."""
    data = path.read_bytes()
    if b"\0" in data:
        raise SpecError(f"spec file {path} is not text (it holds NUL bytes); give a YAML or JSON spec")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as err:
        raise SpecError(f"spec file {path} is not UTF-8 text (byte {err.start}); give a YAML or JSON spec") from None
    try:
        raw = yaml.load(text, Loader=_Loader)  # noqa: S506 (a safe loader)
    except yaml.YAMLError as err:
        raise SpecError(f"spec file {path} is not valid YAML/JSON: {err}") from None
    except RecursionError:
        raise SpecError(f"spec file {path} is nested too deeply (more than {MAX_DEPTH} levels)") from None
    if nesting_depth(raw) > MAX_DEPTH:
        raise SpecError(f"spec file {path} is nested too deeply (more than {MAX_DEPTH} levels)")
    return raw


def nesting_depth(value: Any) -> int:
    """Nesting depth of lists and mappings, without recursion (a 10,000-deep list is no problem); counting
    stops once it passes :data:`MAX_DEPTH`."""
    deepest, stack = 0, [(value, 1)]
    while stack:
        node, level = stack.pop()
        children: Iterable[Any]
        if isinstance(node, dict):
            children = node.values()
        elif isinstance(node, list):
            children = node
        else:
            continue
        deepest = max(deepest, level)
        if deepest > MAX_DEPTH:
            return deepest
        stack.extend((child, level + 1) for child in children)
    return deepest


def _set_dotted(raw: dict[str, Any], key: str, value: Any) -> None:
    *parents, leaf = key.split(".")
    node = raw
    for part in parents:
        node = node.setdefault(part, {})
    node[leaf] = value
