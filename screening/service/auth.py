"""Bearer tokens: read from a file (one per line) and ``SCREENING_API_TOKENS``, compared as sha256 digests.

Only digests are kept and passed around (the Serve deployment's init arguments hold no tokens).
A replica that can read the token file re-reads it when it changes, so rotating a mounted
Kubernetes secret needs no redeploy; one that cannot falls back to the digests known when the
application was built.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import threading
from pathlib import Path

__all__ = ["TokenStore", "digest", "read_token_file", "token_digests"]


def digest(token: str) -> str:
    """sha256 hex digest of a token."""
    return hashlib.sha256(token.encode()).hexdigest()


def read_token_file(path: str | os.PathLike) -> list[str]:
    """Tokens in a file: one per line; blank lines and ``#`` comments ignored."""
    lines = Path(path).read_text().splitlines()
    return [line.strip() for line in lines if line.strip() and not line.strip().startswith("#")]


def token_digests(token_file: str | os.PathLike | None, env_tokens: str = "") -> set[str]:
    """Digests of the tokens of a file (if given and readable) and a comma-separated string."""
    tokens = [t.strip() for t in env_tokens.split(",") if t.strip()]
    if token_file:
        try:
            tokens += read_token_file(token_file)
        except OSError:
            pass
    return {digest(t) for t in tokens}


class TokenStore:
    """Decides whether a presented bearer token is valid.

    Parameters
    ----------
    fallback_digests
        Digests to use when the token file cannot be read in this process.
    token_file
        The token file, re-read whenever its modification time or size changes.
    env_tokens
        ``SCREENING_API_TOKENS`` of this process (comma-separated).
    """

    def __init__(self, fallback_digests: tuple[str, ...], token_file: str | None, env_tokens: str = "") -> None:
        self.fallback = frozenset(fallback_digests)
        self.token_file = token_file
        self.env = frozenset(token_digests(None, env_tokens))
        self._stamp: tuple[float, int] | None = None
        self._from_file: frozenset[str] = frozenset()
        self._lock = threading.Lock()

    def _current(self) -> frozenset[str]:
        if not self.token_file:
            return self.fallback | self.env
        try:
            stat = os.stat(self.token_file)
        except OSError:
            return self.fallback | self.env
        stamp = (stat.st_mtime, stat.st_size)
        with self._lock:
            if stamp != self._stamp:
                try:
                    self._from_file = frozenset(digest(t) for t in read_token_file(self.token_file))
                    self._stamp = stamp
                except OSError:
                    return self.fallback | self.env
            return self._from_file | self.env

    def valid(self, token: str | None) -> bool:
        """Constant-time comparison of the token's digest with every known digest."""
        if not token:
            return False
        presented = digest(token)
        found = False
        for known in self._current():
            found |= hmac.compare_digest(presented, known)
        return found
