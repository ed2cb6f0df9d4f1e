"""Where dataset files live on disk, and how they get there.

Files are cached under ``<root>/<dataset>/<file name>``, where ``root`` is the ``root`` argument,
else ``$TRAINLAB_DATA``, else ``~/.cache/trainlab``. A missing file is fetched from each mirror
in turn (``$TRAINLAB_MIRROR`` first when set), streamed to a temporary name beside the final one,
checked against its published MD5 and only then renamed into place, so an interrupted or corrupt
download never leaves a file at the final name. Every attempt has a bounded timeout and each
mirror is tried once: no retry loops.

Where the publisher's MD5 of a gzipped file's contents is known, the decompressed copy (the name
without ``.gz``, as torchvision's ``raw/`` folders and many course kits keep it) is accepted in
its place, so files users already have need no download. :func:`copy_files` brings such files
from any local folder into the cache, verified.
"""

from __future__ import annotations

import hashlib
import http.client
import logging
import os
import socket
import urllib.error
import urllib.request
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from trainlab._io import atomic_path
from trainlab.errors import DataError

log = logging.getLogger(__name__)

DATA_ENV = "TRAINLAB_DATA"
MIRROR_ENV = "TRAINLAB_MIRROR"
DEFAULT_TIMEOUT = 30.0  # seconds allowed to connect and for each read to make progress
_CHUNK = 1 << 20  # bytes per read while streaming a download
_USER_AGENT = "trainlab (+https://pypi.org/project/trainlab/)"


@dataclass(frozen=True)
class RemoteFile:
    """One file of a dataset as its publisher serves it."""

    name: str  # file name on every mirror and in the cache folder
    md5: str | None  # published checksum; None only for optional files that have none
    optional: bool = False  # nice to have (e.g. a class-name map); its absence is not an error
    # MD5 of the gunzipped contents, where published: the decompressed copy, named without
    # ".gz", is then accepted in place of the archive (read_idx reads either).
    unpacked_md5: str | None = None

    def forms(self) -> list[tuple[str, str | None]]:
        """``(file name, md5)`` of each accepted form: the published file, then its unpacked copy."""
        forms = [(self.name, self.md5)]
        if self.unpacked_md5 is not None and self.name.endswith(".gz"):
            forms.append((self.name.removesuffix(".gz"), self.unpacked_md5))
        return forms


class _AttemptFailed(Exception):
    """One URL did not yield a verified file; the message is the short reason shown to users."""


def data_root(root: str | Path | None = None) -> Path:
    """The cache folder: ``root`` if given, else ``$TRAINLAB_DATA``, else ``~/.cache/trainlab``."""
    if root is not None:
        return Path(root).expanduser()
    env = os.environ.get(DATA_ENV, "").strip()
    if env:
        return Path(env).expanduser()
    return Path.home() / ".cache" / "trainlab"


def dataset_dir(dataset: str, root: str | Path | None = None) -> Path:
    """The folder that holds one dataset's files, e.g. ``~/.cache/trainlab/mnist``."""
    return data_root(root) / dataset


def md5sum(path: str | Path) -> str:
    """Hex MD5 of a file, read in chunks so large archives need little memory."""
    digest = hashlib.md5(usedforsecurity=False)
    with open(path, "rb") as handle:
        while chunk := handle.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def candidate_urls(file_name: str, mirrors: Sequence[str]) -> list[str]:
    """URLs to try for one file, in order: ``$TRAINLAB_MIRROR`` first, then the official mirrors."""
    bases = [os.environ.get(MIRROR_ENV, "").strip(), *mirrors]
    urls: list[str] = []
    for base in bases:
        if base:
            url = base.rstrip("/") + "/" + file_name
            if url not in urls:
                urls.append(url)
    return urls


def fetch_files(
    dataset: str,
    folder: Path,
    files: Iterable[RemoteFile],
    mirrors: Sequence[str],
    *,
    download: bool = True,
    timeout: float = DEFAULT_TIMEOUT,
) -> dict[str, Path]:
    """Make sure every required file is in ``folder`` and verified; return ``{name: path}``.

    Cached files are verified and reused. Missing or corrupt ones are downloaded when
    ``download`` is true, otherwise a :class:`DataError` says which files to put where. Optional
    files are included when present; they are only fetched in a call that had to download a
    required file anyway, so an offline user with hand-placed files never touches the network.
    """
    files = list(files)
    required = [f for f in files if not f.optional]
    found = {f.name: locate(folder, f) for f in required}
    todo = [f for f in required if found[f.name].path is None]
    if todo:
        if not download:
            # Worded for both doors in: the CLI's --offline and the Python API's download=False.
            problems = ", ".join(found[f.name].problem for f in todo)
            raise DataError(
                f"{dataset} files are missing or corrupt in {folder}: {problems}, and downloads "
                f"are disabled (--offline / download=False); allow downloads (drop --offline, or "
                f"pass download=True) or put {_names(required)} there by hand"
                f"{_unpacked_hint(required)}"
            )
        for remote in todo:
            if found[remote.name].why == _CORRUPT:  # said only now that it will be refetched
                log.warning(
                    "%s does not match its published checksum; downloading %s again",
                    folder / found[remote.name].name,
                    remote.name,
                )
        _make_folder(folder)
        for remote in todo:
            failures = _try_mirrors(folder, remote, mirrors, timeout)
            if failures:
                raise DataError(
                    f"could not download {dataset} file {remote.name}: tried "
                    f"{'; '.join(failures)}; download {_names(required)} by hand into {folder}"
                )
            found[remote.name] = Located(folder / remote.name, "ok", remote.name, remote.md5)
        for remote in files:  # the network works, so try the optional extras too
            if remote.optional and not (folder / remote.name).is_file():
                _try_mirrors(folder, remote, mirrors, timeout)  # failures are fine
    paths = {name: hit.path for name, hit in found.items() if hit.path is not None}
    optional = {f.name: folder / f.name for f in files if f.optional}
    return paths | {name: path for name, path in optional.items() if path.is_file()}


def copy_files(dataset: str, folder: Path, files: Iterable[RemoteFile], source: Path) -> list[Path]:
    """Copy a dataset's files from the local folder ``source`` into the cache ``folder``.

    Each required file may be the published one or its decompressed copy. All of them are
    verified against their published checksums before anything is copied, so a wrong or
    incomplete set changes nothing; each copy is checked again as it is written (a source that
    changed in between is an error, never an unverified file in the cache) and renamed into
    place. Optional files (class maps, no checksum published) are copied as they are when
    present. ``source`` may be the cache folder itself. Returns the cache paths written.
    """
    files = list(files)
    if not source.is_dir():
        raise DataError(f"{source} is not a folder; pass the folder that holds the files")
    found = {f.name: locate(source, f) for f in files}
    problems = [found[f.name].problem for f in files if not f.optional and not found[f.name].path]
    if problems:
        required = [f for f in files if not f.optional]
        raise DataError(
            f"{source} does not hold the {dataset} files: {', '.join(problems)}; it needs "
            f"{_names(required)}{_unpacked_hint(required)}"
        )
    _make_folder(folder)
    written = []
    for remote in files:
        hit = found[remote.name]
        if hit.path is None:
            continue
        dest = folder / hit.name
        if dest.exists() and dest.resolve() == hit.path.resolve():
            continue  # the source is the cache itself
        _copy_checked(hit.path, dest, hit.md5)
        written.append(dest)
    return written


def _copy_checked(source: Path, dest: Path, md5: str | None) -> None:
    """Copy ``source`` to ``dest`` atomically, hashing what is written; a mismatch is an error
    and leaves ``dest`` untouched."""
    digest = hashlib.md5(usedforsecurity=False)
    with atomic_path(dest) as tmp:
        with open(source, "rb") as reader, open(tmp, "wb") as writer:
            while chunk := reader.read(_CHUNK):
                writer.write(chunk)
                digest.update(chunk)
        if md5 is not None and digest.hexdigest() != md5:
            raise DataError(f"{source} changed while it was copied; run the command again")


def missing_files(folder: Path, files: Iterable[RemoteFile]) -> list[str]:
    """Names of required files present in ``folder`` in no accepted form (presence only; no
    checksum: cheap)."""
    return [
        f.name
        for f in files
        if not f.optional and not any((folder / name).is_file() for name, _ in f.forms())
    ]


def _names(files: Iterable[RemoteFile]) -> str:
    return ", ".join(f.name for f in files)


def _unpacked_hint(files: Iterable[RemoteFile]) -> str:
    unpacked = any(len(f.forms()) > 1 for f in files)
    return " (or their decompressed copies, without .gz)" if unpacked else ""


_CORRUPT = "checksum mismatch"


@dataclass(frozen=True)
class Located:
    """What :func:`locate` found for one file."""

    path: Path | None  # the verified file, or None
    why: str  # "ok", "missing" or "checksum mismatch"
    name: str  # the file accepted or rejected (maybe the decompressed form); else the published
    md5: str | None = None  # the accepted file's published checksum

    @property
    def problem(self) -> str:
        return f"{self.name} ({self.why})"


def locate(folder: Path, remote: RemoteFile) -> Located:
    """The verified copy of ``remote`` in ``folder``, else why not. The published form is tried
    first, then the decompressed one; a file is accepted unchecked only when no MD5 is
    published. Logs nothing: the caller knows whether the file will be fetched again."""
    rejected = None
    for name, md5 in remote.forms():
        path = folder / name
        if not path.is_file():
            continue
        if md5 is None or md5sum(path) == md5:
            return Located(path, "ok", name, md5)
        rejected = rejected or name
    return Located(None, _CORRUPT, rejected) if rejected else Located(None, "missing", remote.name)


def _make_folder(folder: Path) -> None:
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise DataError(
            f"cannot create the data folder {folder} ({error.strerror}); "
            f"pass another root or set {DATA_ENV}"
        ) from None


def _try_mirrors(
    folder: Path, remote: RemoteFile, mirrors: Sequence[str], timeout: float
) -> list[str]:
    """Try each URL once, in order; ``[]`` after the first verified download, else the failures."""
    failures: list[str] = []
    for url in candidate_urls(remote.name, mirrors):
        try:
            _download_file(url, folder / remote.name, remote.md5, timeout=timeout)
            return []
        except _AttemptFailed as failure:
            log.info("download of %s failed (%s); trying the next mirror", url, failure)
            failures.append(f"{url} ({failure})")
    return failures or ["no URL (no mirror known and TRAINLAB_MIRROR unset)"]


def _download_file(url: str, dest: Path, md5: str | None, *, timeout: float) -> None:
    """Stream ``url`` to ``dest`` atomically, verifying length and MD5 before the rename.

    Raises ``_AttemptFailed`` with a short reason; ``dest`` is untouched on any failure.
    """
    log.info("downloading %s -> %s", url, dest)
    try:
        request = urllib.request.Request(url, headers={"User-Agent": _USER_AGENT})
        with atomic_path(dest) as tmp:
            digest = _stream(request, tmp, timeout)
            if md5 is not None and digest != md5:
                raise _AttemptFailed(f"checksum mismatch: md5 {digest}, expected {md5}")
    except _AttemptFailed:
        raise
    except urllib.error.HTTPError as error:
        raise _AttemptFailed(f"HTTP {error.code} {error.reason}") from None
    except urllib.error.URLError as error:
        raise _AttemptFailed(_describe(error.reason, timeout)) from None
    except (OSError, http.client.HTTPException) as error:
        raise _AttemptFailed(_describe(error, timeout)) from None
    except ValueError as error:  # e.g. a TRAINLAB_MIRROR without http:// or file://
        raise _AttemptFailed(f"invalid URL: {error}") from None


def _stream(request: urllib.request.Request, tmp: Path, timeout: float) -> str:
    """Copy the response body to ``tmp``; return its MD5. Short bodies are errors, not files."""
    digest = hashlib.md5(usedforsecurity=False)
    received = 0
    with urllib.request.urlopen(request, timeout=timeout) as response, open(tmp, "wb") as out:
        expected = response.headers.get("Content-Length")
        try:
            while chunk := response.read(_CHUNK):
                out.write(chunk)
                digest.update(chunk)
                received += len(chunk)
        except http.client.IncompleteRead as error:
            received += len(error.partial)
            raise _AttemptFailed(_short_body(received, expected)) from None
    if expected is not None and expected.isdigit() and received != int(expected):
        raise _AttemptFailed(_short_body(received, expected))
    return digest.hexdigest()


def _short_body(received: int, expected: str | None) -> str:
    return f"connection closed after {received} of {expected} bytes"


def _describe(reason: object, timeout: float) -> str:
    """A few words for a network failure: what a user can act on, not a traceback."""
    if isinstance(reason, TimeoutError):
        return f"no answer within {timeout:g} s"
    if isinstance(reason, ConnectionRefusedError):
        return "connection refused"
    if isinstance(reason, socket.gaierror):
        return "host not found (offline?)"
    if isinstance(reason, ConnectionResetError):
        return "connection reset"
    text = str(getattr(reason, "strerror", None) or reason).strip()
    return " ".join(text.split()) or type(reason).__name__
