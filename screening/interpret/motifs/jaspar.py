"""JASPAR matrices (pyjaspar's bundled SQLite databases: nothing is downloaded) and TOMTOM matching (memelite)."""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np

from screening.interpret.motifs.core import JasparMatch, MotifError

__all__ = ["DEFAULT_RELEASE", "JasparDatabase", "benjamini_hochberg", "load_jaspar", "match_motifs"]

DEFAULT_RELEASE = "JASPAR2024"
"""The JASPAR release matched against unless one is named (pyjaspar ships 2014 … 2026)."""


@dataclass(eq=False)
class JasparDatabase:
    """Matrices of one JASPAR release, collection and taxonomic group: ``ids``, ``names`` and ``ppms``
    (``float64 [4, w]``, rows A, C, G, T, columns summing to 1)."""

    release: str
    collection: str
    tax_group: str | None
    ids: list[str]
    names: list[str]
    ppms: list[np.ndarray]

    def describe(self) -> str:
        group = f", {self.tax_group}" if self.tax_group else ""
        return f"{self.release} {self.collection}{group} ({len(self.ids)} matrices)"


def load_jaspar(
    collection: str = "CORE", tax_group: str | None = "vertebrates", release: str = DEFAULT_RELEASE
) -> JasparDatabase:
    """The latest version of every matrix of ``collection`` (and ``tax_group``; ``None``: all) in ``release``.

    Raises
    ------
    MotifError
        For an unknown release, collection or taxonomic group, or a selection without matrices.
    """
    import pyjaspar

    if release not in pyjaspar.jaspar_releases:
        raise MotifError(f"unknown JASPAR release {release!r}; pyjaspar ships {sorted(pyjaspar.jaspar_releases)}")
    db = pyjaspar.jaspardb(release=release)
    collections = sorted(row[0] for row in db.conn.execute("SELECT DISTINCT COLLECTION FROM MATRIX"))
    if collection not in collections:
        raise MotifError(f"unknown JASPAR collection {collection!r}; {release} has {collections}")
    if tax_group is not None:
        groups = sorted(
            row[0] for row in db.conn.execute("SELECT DISTINCT VAL FROM MATRIX_ANNOTATION WHERE TAG = 'tax_group'")
        )
        if tax_group not in groups:
            raise MotifError(f"unknown JASPAR taxonomic group {tax_group!r}; {release} has {groups}")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # Biopython's notes about the matrices' pseudocounts
        motifs = db.fetch_motifs(collection=collection, tax_group=[tax_group] if tax_group else None)
    if not motifs:
        raise MotifError(f"JASPAR {release} has no {collection} matrices for the taxonomic group {tax_group!r}")
    ids, names, ppms = [], [], []
    for motif in motifs:
        counts = np.array([motif.counts[base] for base in "ACGT"], np.float64)
        counts = counts + 1e-9  # a column of zeros would divide by zero
        ids.append(str(motif.matrix_id))
        names.append(str(motif.name))
        ppms.append(counts / counts.sum(axis=0, keepdims=True))
    return JasparDatabase(release, collection, tax_group, ids, names, ppms)


def benjamini_hochberg(p_values: np.ndarray) -> np.ndarray:
    """Benjamini–Hochberg q-values of a 1-D array of p-values (as TOMTOM reports them: per query, over every
    target it was compared with)."""
    p = np.asarray(p_values, np.float64)
    n = len(p)
    order = np.argsort(p)
    ranked = p[order] * n / np.arange(1, n + 1)
    q = np.minimum.accumulate(ranked[::-1])[::-1]
    out = np.empty(n)
    out[order] = np.minimum(q, 1.0)
    return out


def match_motifs(
    ppms: list[np.ndarray], database: JasparDatabase, n_best: int = 3, n_jobs: int = 1
) -> list[list[JasparMatch]]:
    """TOMTOM (memelite, both strands) of every motif ``[4, w]`` against every matrix of ``database``.

    Returns each motif's ``n_best`` matches, best first, with p-values and Benjamini–Hochberg q-values
    over all of the database's matrices.
    """
    if not ppms:
        return []
    from memelite.tomtom import tomtom

    queries = [np.asfortranarray(np.asarray(p, np.float64)) for p in ppms]
    p, _, offsets, _, strands = tomtom(queries, database.ppms, n_nearest=None, n_jobs=n_jobs)[:5]
    out = []
    for row in range(len(queries)):
        q = benjamini_hochberg(p[row])
        best = np.argsort(p[row], kind="stable")[:n_best]
        out.append(
            [
                JasparMatch(
                    database.ids[t],
                    database.names[t],
                    float(p[row, t]),
                    float(q[t]),
                    "-" if strands[row, t] else "+",
                    int(offsets[row, t]),
                )
                for t in best
            ]
        )
    return out
