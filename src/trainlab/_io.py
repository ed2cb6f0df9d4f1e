"""Atomic file writes: a reader sees the old file or the new one, never half of one."""

from __future__ import annotations

import contextlib
import errno
import json
import os
import re
import tempfile
import time
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

# Errors of the file system itself (not of what the caller computes or downloads).
_FILE_SYSTEM_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EROFS}


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success it is fsynced and renamed over ``path``.

    On an exception the temporary file is removed and ``path`` is left untouched. Temporary
    files of ``path`` that a killed process left behind are removed first
    (:func:`remove_stale_parts`).
    """
    from trainlab.errors import WriteError

    path = Path(path)
    if path.is_dir():
        raise WriteError(f"cannot write {path}: it is a folder; give a file name")
    remove_stale_parts(path.parent, [path.name])
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        handle, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".part",
                                            dir=path.parent)  # fmt: skip
    except OSError as error:  # name the user's path, not a temporary one
        raise WriteError(f"cannot write {path}: {error.strerror or error}") from None
    os.close(handle)
    tmp = Path(tmp_name)
    try:
        try:
            yield tmp  # the caller's errors (a failed download, say) pass through unchanged ...
        except OSError as error:
            if error.errno not in _FILE_SYSTEM_ERRNOS:
                raise
            # ... but a full disk while writing is about this file: say which one.
            raise WriteError(f"cannot write {path}: {error.strerror or error}") from None
        try:
            with open(tmp, "rb+") as written:
                os.fsync(written.fileno())
            # mkstemp makes the file private (0600); give it the mode a plain open() would have.
            os.chmod(tmp, 0o666 & ~_UMASK)
            os.replace(tmp, path)
        except OSError as error:
            raise WriteError(f"cannot write {path}: {error.strerror or error}") from None
    finally:
        tmp.unlink(missing_ok=True)


# A temporary file untouched for this long belongs to a process that was killed (SIGKILL, power
# loss: no ``finally`` ran). Age by modification time, not by owner: the name holds no process id,
# a pid may be reused or live on another host (a cache on a network share), while a live writer
# touches its file all the time (a download writes a chunk at least every read timeout, 30 s), so
# another process's fetch in progress is never broken. A writer that stays silent for an hour
# loses its temporary file and fails with a WriteError; it never leaves a wrong file behind.
STALE_PART_SECONDS = 3600.0


def remove_stale_parts(
    folder: str | Path, names: Iterable[str], *, older_than: float = STALE_PART_SECONDS
) -> list[Path]:
    """Remove the temporary files :func:`atomic_path` made for ``folder/<name>`` (named
    ``.<name>.<random>.part``) that were last modified more than ``older_than`` seconds ago.

    Best effort: a file that cannot be removed is left alone. Returns the paths removed.
    """
    folder = Path(folder)
    # mkstemp's random part never contains a dot, so ".a.<random>.part" of a file "a" is never
    # confused with ".a.gz.<random>.part" of a file "a.gz".
    patterns = [re.compile(re.escape(f".{name}.") + r"[^./]+\.part") for name in names]
    removed: list[Path] = []
    try:
        entries = list(os.scandir(folder))
    except OSError:  # no such folder yet, or unreadable: nothing to clean
        return removed
    cutoff = time.time() - older_than
    for entry in entries:
        if not any(pattern.fullmatch(entry.name) for pattern in patterns):
            continue
        try:
            if entry.is_file(follow_symlinks=False) and entry.stat().st_mtime < cutoff:
                os.unlink(entry.path)
                removed.append(Path(entry.path))
        except OSError:
            pass
    return removed


def _read_umask() -> int:
    # Reading the umask means setting it; done once at import, before any thread writes files.
    mask = os.umask(0)
    os.umask(mask)
    return mask


_UMASK = _read_umask()


def write_bytes_atomic(path: str | Path, data: bytes) -> None:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def write_text_atomic(path: str | Path, text: str) -> None:
    write_bytes_atomic(path, text.encode("utf-8"))


def write_json_atomic(path: str | Path, obj: Any) -> None:
    write_text_atomic(path, json.dumps(obj, indent=2, sort_keys=False, default=str) + "\n")


def check_writable(path: str | Path, *, folder: bool = False) -> None:
    """Fail now, not after an hour of work, when ``path`` (a file, or with ``folder`` a folder)
    could not be written later: the wrong kind of thing already there, or no writable place to
    create it in. Creates nothing."""
    from trainlab.errors import TrainlabError

    path = Path(path)
    if path.exists() and path.is_dir() != folder:
        wanted = "a folder" if folder else "a file name"
        raise TrainlabError(f"{path} is {'a file' if folder else 'a folder'}; give {wanted}")
    nearest = path if folder and path.exists() else path.parent
    while not nearest.exists() and nearest != nearest.parent:
        nearest = nearest.parent
    if not nearest.is_dir():
        raise TrainlabError(f"cannot write {path}: {nearest} is a file, not a folder")
    if not os.access(nearest, os.W_OK | os.X_OK):
        raise TrainlabError(f"cannot write {path}: {nearest} is not writable")
