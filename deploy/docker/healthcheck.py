"""The image's HEALTHCHECK: exit 0 when the API answers its health endpoint, 1 otherwise.

Standard library only, so it runs in any variant of the image. The URL comes from
``SCREENING_HEALTHCHECK_URL`` (default ``http://127.0.0.1:8000/healthz``, the API that the
image's default command serves). Kubernetes does not run Docker health checks: KubeRay
adds its own readiness and liveness probes to Ray pods.
"""

from __future__ import annotations

import os
import sys
import urllib.error
import urllib.request

DEFAULT_URL = "http://127.0.0.1:8000/healthz"


def check(url: str, timeout: float = 4.0) -> tuple[bool, str]:
    """Return whether ``url`` answered 2xx within ``timeout`` seconds, and what happened."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return 200 <= response.status < 300, f"{url}: HTTP {response.status}"
    except urllib.error.HTTPError as err:
        return False, f"{url}: HTTP {err.code}"
    except (urllib.error.URLError, OSError) as err:
        return False, f"{url}: {getattr(err, 'reason', err)}"


def main() -> int:
    healthy, message = check(os.environ.get("SCREENING_HEALTHCHECK_URL", DEFAULT_URL))
    print(("healthy: " if healthy else "unhealthy: ") + message)
    return 0 if healthy else 1


if __name__ == "__main__":
    sys.exit(main())
