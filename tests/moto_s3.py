"""A real S3-compatible server on loopback (moto in server mode) for object-store tests."""

from __future__ import annotations

import contextlib
import logging
import os
from typing import Iterator

import requests

ENV = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
}


@contextlib.contextmanager
def s3_server(buckets: tuple[str, ...] = ("bucket",)) -> Iterator[str]:
    """Start moto's S3 server on 127.0.0.1 (free port), point ``AWS_*`` at it, create ``buckets``.

    Yields the endpoint URL; the environment is restored afterwards.
    """
    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # one log line per request otherwise
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    endpoint = f"http://{host}:{port}"
    # Every server in this process shares moto's in-memory backends: start from an empty S3, so
    # buckets and objects of an earlier test are not there.
    requests.post(f"{endpoint}/moto-api/reset", timeout=30).raise_for_status()
    saved = {key: os.environ.get(key) for key in (*ENV, "AWS_ENDPOINT_URL")}
    os.environ.update(ENV, AWS_ENDPOINT_URL=endpoint)
    try:
        import s3fs

        s3fs.S3FileSystem.clear_instance_cache()
        fs = s3fs.S3FileSystem()
        for bucket in buckets:
            fs.mkdir(bucket)
        yield endpoint
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        server.stop()


def s3fs_client():
    """A fresh synchronous S3 filesystem (no listing cache) on the current environment."""
    import s3fs

    return s3fs.S3FileSystem(skip_instance_cache=True, use_listings_cache=False)
