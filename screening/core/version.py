"""The package's version, read from the installed distribution's metadata (``screening.__version__``).

It lives in the bottom layer so that modules recording it (the store's provenance, ``screening --version``, the
service's ``/version``) need not import the package root, which re-exports the client.
"""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("screening")
except PackageNotFoundError:  # running from a source tree without install
    __version__ = "0.0.0+local"

__all__ = ["__version__"]
