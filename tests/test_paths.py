"""Output path checks (screening.io.paths): refused by name before anything is opened."""

from __future__ import annotations

import errno
from pathlib import Path

import pytest

from screening.io.paths import OutputPathError, check_output_file, check_store_path, is_disk_full


def test_writable_paths_pass(tmp_path):
    assert check_output_file(tmp_path / "new" / "deeper" / "s.bw") == tmp_path / "new" / "deeper" / "s.bw"
    (tmp_path / "old.bw").write_text("x")
    check_output_file(tmp_path / "old.bw")  # replaced later
    check_store_path(str(tmp_path / "new" / "out.zarr"))
    (tmp_path / "store.zarr").mkdir()
    check_store_path(str(tmp_path / "store.zarr"))  # an existing store is resumed
    check_store_path("s3://bucket/x.zarr")  # URLs are the object store's business


@pytest.mark.parametrize("make, message", [
    (lambda tmp: (tmp / "d").mkdir() or tmp / "d", "is a directory"),
    (lambda tmp: (tmp / "f").write_text("x") and tmp / "f" / "s.bw", "is a file, so nothing can be created under it"),
    (lambda tmp: Path("/proc/s.bw"), "folder /proc is not writable"),
])
def test_output_files_that_cannot_be_written(tmp_path, make, message):
    with pytest.raises(OutputPathError, match=message):
        check_output_file(make(tmp_path), "export output")


def test_store_paths_that_cannot_be_written(tmp_path):
    (tmp_path / "f").write_text("x")
    with pytest.raises(OutputPathError, match=r"output.store .*f is a file, not a result store"):
        check_store_path(str(tmp_path / "f"))
    with pytest.raises(OutputPathError, match=r"output.store .*f/x/out.zarr: .*f is a file"):
        check_store_path(str(tmp_path / "f" / "x" / "out.zarr"))
    read_only = tmp_path / "ro"
    read_only.mkdir()
    read_only.chmod(0o555)
    try:
        with pytest.raises(OutputPathError, match="not writable"):
            check_store_path(str(read_only / "out.zarr"))
    finally:
        read_only.chmod(0o755)


def test_disk_full_is_found_through_chained_errors():
    full = OSError(errno.ENOSPC, "No space left on device")
    try:
        try:
            raise full
        except OSError as err:
            raise RuntimeError("write failed") from err
    except RuntimeError as wrapped:
        assert is_disk_full(wrapped)
    assert is_disk_full(OSError(errno.EDQUOT, "Disk quota exceeded"))
    assert not is_disk_full(OSError(errno.EACCES, "Permission denied"))
    assert not is_disk_full(ValueError("x"))
