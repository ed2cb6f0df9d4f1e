"""Atomic writes: the temporary files of writers that were killed do not pile up."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from trainlab._io import STALE_PART_SECONDS, atomic_path, remove_stale_parts, write_text_atomic


def _age(path: Path, seconds: float) -> None:
    then = time.time() - seconds
    os.utime(path, (then, then))


@pytest.mark.skipif(not hasattr(signal, "SIGKILL"), reason="needs SIGKILL")
def test_a_killed_writers_part_file_is_removed_by_the_next_write(tmp_path):
    target = tmp_path / "cifar-10-python.tar.gz"
    script = (
        "import os, signal, sys\n"
        "from trainlab._io import atomic_path\n"
        "with atomic_path(sys.argv[1]) as tmp:\n"
        "    tmp.write_bytes(b'half a download')\n"
        "    os.kill(os.getpid(), signal.SIGKILL)  # no finally runs, as on kill -9\n"
    )
    killed = subprocess.run([sys.executable, "-c", script, str(target)], timeout=60)
    assert killed.returncode == -signal.SIGKILL
    (left,) = tmp_path.glob(".cifar-10-python.tar.gz.*.part")

    write_text_atomic(target, "complete")  # a fresh leftover may be another process's write
    assert left.exists()
    _age(left, STALE_PART_SECONDS + 60)
    write_text_atomic(target, "complete")
    assert not left.exists() and target.read_text() == "complete"
    assert not list(tmp_path.glob("*.part"))


def test_only_the_named_files_old_part_files_are_removed(tmp_path):
    def part(name: str, age: float, random: str = "ab_12cd3") -> Path:
        path = tmp_path / f".{name}.{random}.part"
        path.write_bytes(b"x")
        _age(path, age)
        return path

    old = part("data", 7200)
    fresh = part("data", 10, "x7y8z9w0")
    gz = part("data.gz", 7200)  # the temporary file of data.gz, not of data
    unrelated = tmp_path / ".data.part"  # no random part: not one of ours
    unrelated.write_bytes(b"x")
    _age(unrelated, 7200)
    assert remove_stale_parts(tmp_path, ["data"]) == [old]
    assert fresh.exists() and gz.exists() and unrelated.exists()
    assert remove_stale_parts(tmp_path / "missing", ["data"]) == []


def test_atomic_path_cleans_only_its_own_name(tmp_path):
    other = tmp_path / ".b.txt.zz9_abcd.part"
    other.write_bytes(b"x")
    _age(other, 7200)
    with atomic_path(tmp_path / "a.txt") as tmp:
        tmp.write_text("a")
    assert other.exists() and (tmp_path / "a.txt").read_text() == "a"


def test_a_full_disk_names_the_file_and_other_errors_pass_through(tmp_path):
    import errno

    from trainlab.errors import WriteError

    target = tmp_path / "summary.json"
    full = pytest.raises(WriteError, match=r"cannot write .*summary\.json: No space left")
    with full, atomic_path(target):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
    # A failed download is the caller's to explain.
    with pytest.raises(ConnectionResetError), atomic_path(target):
        raise ConnectionResetError(errno.ECONNRESET, "reset")
    assert list(tmp_path.iterdir()) == []  # no file, no temporary left behind
