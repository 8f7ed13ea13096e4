"""screening: genome-scale in-silico perturbation screens of sequence-to-3D-genome models."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("screening")
except PackageNotFoundError:  # running from a source tree without install
    __version__ = "0.0.0+local"


def open_results(path):
    """Open a screen's result store for queries (see :class:`screening.results.Results`)."""
    from screening.results import open_results as _open

    return _open(path)


__all__ = ["__version__", "open_results"]
