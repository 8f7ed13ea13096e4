"""screening: genome-scale in-silico perturbation screens of sequence-to-3D-genome models."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("screening")
except PackageNotFoundError:  # running from a source tree without install
    __version__ = "0.0.0+local"


def open_results(path, storage_options=None):
    """Open a screen's result store (a path or an fsspec URL such as ``s3://bucket/x.zarr``)
    for queries (see :class:`screening.results.Results`)."""
    from screening.results import open_results as _open

    return _open(path, storage_options)


def __getattr__(name):
    # Client is imported on first use, so `import screening` does not pull in httpx.
    if name == "Client":
        from screening.client import Client

        return Client
    raise AttributeError(f"module 'screening' has no attribute {name!r}")


__all__ = ["__version__", "Client", "open_results"]
