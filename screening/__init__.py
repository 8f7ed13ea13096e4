"""screening: genome-scale in-silico perturbation screens of sequence-to-3D-genome models."""

from typing import TYPE_CHECKING

from screening.client import Client  # httpx only: cheap
from screening.core.version import __version__

if TYPE_CHECKING:  # type checkers see the real function and its types
    from screening.store.reader import open_results
else:

    def __getattr__(name):
        # open_results (screening.store.reader) is imported on first use: it pulls in zarr, dask and xarray
        # (about a second), which `import screening` - every CLI command, every Ray worker - does not need.
        if name == "open_results":
            from screening.store.reader import open_results

            return open_results
        raise AttributeError(f"module 'screening' has no attribute {name!r}")


__all__ = ["__version__", "Client", "open_results"]
