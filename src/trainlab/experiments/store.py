"""The study store: Optuna's RDB storage, SQLite in the runs folder by default, PostgreSQL for
workers on many machines.

Optuna keeps every trial's state, parameters, intermediate values and attributes in ordinary
transactions, so a worker killed at any moment leaves the database consistent. What Optuna does
not give is an exclusive section across processes: claiming "the next configuration nobody has
taken" must be atomic, and SQLite (through Python's driver, which opens a transaction only at
the first write) cannot make Optuna's own read-then-update claim atomic. :meth:`Store.lock` is
that section: a file lock beside a SQLite file, an advisory lock on a PostgreSQL server. Both
are released by the operating system or the server when the holder dies, so a kill -9 never
leaves a study locked.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
import warnings
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from trainlab.errors import StudyError

STORAGE_ENV = "TRAINLAB_STORAGE"
STORE_FILE = "studies.db"
# How long a worker waits for another one's SQLite write before giving up, seconds.
SQLITE_TIMEOUT = 120
SUPPORTED = "sqlite:///path/to/studies.db or postgresql://user[:password]@host[:port]/database"


def default_storage_url(runs_dir: str | Path = "runs") -> str:
    """``sqlite:////abs/runs/studies.db``: absolute, so workers started elsewhere find it."""
    return f"sqlite:///{(Path(runs_dir).expanduser().resolve() / STORE_FILE).as_posix()}"


def resolve_storage_url(storage: str | None, runs_dir: str | Path = "runs") -> str:
    """``--storage`` > ``TRAINLAB_STORAGE`` > the SQLite file in the runs folder."""
    url = storage or os.environ.get(STORAGE_ENV) or default_storage_url(runs_dir)
    return normalize_url(url)


def normalize_url(url: str) -> str:
    """Accept what people type: ``postgres://`` and a driver-less ``postgresql://`` work with
    whichever PostgreSQL driver is installed (psycopg 3 ships with trainlab)."""
    scheme, sep, rest = url.partition("://")
    if not sep:
        raise StudyError(f"storage {url!r} is not a database URL; use {SUPPORTED}")
    if scheme in ("postgres", "postgresql"):
        scheme = "postgresql" if _has_module("psycopg2") else "postgresql+psycopg"
    elif scheme == "sqlite" and rest.startswith("/") and not rest.startswith("//"):
        path = rest[1:]
        if path and path != ":memory:":
            rest = "/" + Path(path).expanduser().resolve().as_posix()
    dialect = scheme.split("+")[0]
    if dialect not in ("sqlite", "postgresql"):
        raise StudyError(f"unsupported storage {redact(url)!r}; use {SUPPORTED}")
    return f"{scheme}://{rest}"


def _has_module(name: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(name) is not None


def redact(url: str) -> str:
    """The URL without its password (``user:***@``, ``?password=***``), for messages."""
    import re

    scheme, sep, rest = url.partition("://")
    if not sep:
        return url
    credentials, at, host = rest.rpartition("@")
    if at and ":" in credentials:
        rest = f"{credentials.split(':', 1)[0]}:***@{host}"
    rest = re.sub(r"((?:^|[?&])(?:ssl)?password=)[^&]*", r"\1***", rest, flags=re.IGNORECASE)
    return f"{scheme}://{rest}"


def sqlite_path(url: str) -> Path | None:
    scheme, _, rest = url.partition("://")
    if not scheme.startswith("sqlite") or rest in ("/", "/:memory:"):
        return None
    return Path(rest[1:])


@dataclass
class Store:
    """An opened study store: the Optuna storage plus the cross-process lock that goes with it."""

    url: str
    rdb: Any  # optuna.storages.RDBStorage: the database itself
    # What studies talk to: Optuna wraps an RDB storage in a cache, and trials created or
    # changed behind that cache's back would be unknown to it, so everything goes through it.
    storage: Any

    @property
    def dialect(self) -> str:
        return self.url.split("://")[0].split("+")[0]

    @property
    def display_url(self) -> str:
        return redact(self.url)

    def study_id(self, study: Any) -> int:
        return self.storage.get_study_id_from_name(study.study_name)

    @contextlib.contextmanager
    def lock(self, study_name: str) -> Iterator[None]:
        """Hold the study's exclusive section (claims, planning, recovery of lost runs)."""
        with study_lock(self.url, study_name, engine=self.rdb.engine):
            yield


@contextlib.contextmanager
def study_lock(url: str, study_name: str, engine: Any = None) -> Iterator[None]:
    path = sqlite_path(url)
    if path is not None:
        from filelock import FileLock

        # One lock file per store: SQLite serialises writers anyway, and study creation (which
        # happens before a study exists) needs the same lock.
        with FileLock(str(path) + ".lock"):
            yield
        return
    if url.startswith("postgresql"):
        with _postgres_lock(url, study_name, engine):
            yield
        return
    yield  # in-memory SQLite: one process only


@contextlib.contextmanager
def _postgres_lock(url: str, study_name: str, engine: Any) -> Iterator[None]:
    import sqlalchemy

    owned = engine is None
    engine = engine or sqlalchemy.create_engine(url)
    key = zlib.crc32(f"trainlab:{study_name}".encode())  # advisory lock ids are 64-bit ints
    try:
        with engine.connect() as connection:
            connection.execute(sqlalchemy.text("SELECT pg_advisory_lock(:key)"), {"key": key})
            connection.commit()
            try:
                yield
            finally:
                connection.execute(sqlalchemy.text("SELECT pg_advisory_unlock(:key)"), {"key": key})
                connection.commit()
    finally:
        if owned:
            engine.dispose()


def _prepare_sqlite(path: Path) -> None:
    """Create the folder, and switch the file to write-ahead logging once: readers (listings,
    optuna-dashboard) then never block the workers' writes."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        connection = sqlite3.connect(path, timeout=SQLITE_TIMEOUT)
        try:
            connection.execute("PRAGMA journal_mode=WAL")
        finally:
            connection.close()
    except (OSError, sqlite3.Error) as error:
        raise StudyError(f"cannot open the study store {path}: {error}") from None


def open_store(url: str, *, create: bool = True) -> Store:
    """Open (creating tables on first use) the store at ``url``; one clear line if unreachable.

    ``create=False`` is for commands that only read: a SQLite file that is not there is an
    error (a mistyped --runs-dir), not a new empty store.
    """
    import optuna
    import sqlalchemy.exc

    url = normalize_url(url)
    engine_kwargs: dict[str, Any] = {}
    path = sqlite_path(url)
    if path is not None and not create and not path.is_file():
        raise StudyError(f"no study store at {path}; start a study with `trainlab sweep` or "
                         "`trainlab tune`, or point --runs-dir/--storage at an existing one")  # fmt: skip
    if path is not None:
        _prepare_sqlite(path)
        engine_kwargs["connect_args"] = {"timeout": SQLITE_TIMEOUT}
    else:
        # Drop connections the server closed (restarts, idle timeouts) instead of failing on them.
        engine_kwargs["pool_pre_ping"] = True
        # Keepalives both ways: a worker machine that vanishes while holding the study lock
        # (an advisory lock, released with its connection) is noticed in about a minute, not
        # after the operating system's default two hours.
        engine_kwargs["connect_args"] = {
            "keepalives": 1, "keepalives_idle": 20, "keepalives_interval": 10,
            "keepalives_count": 3,
            "options": "-c tcp_keepalives_idle=20 -c tcp_keepalives_interval=10 "
                       "-c tcp_keepalives_count=3",
        }  # fmt: skip
    try:
        with study_lock(url, "__schema__"), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            storage = optuna.storages.RDBStorage(url, engine_kwargs=engine_kwargs)
    except (sqlalchemy.exc.SQLAlchemyError, optuna.exceptions.StorageInternalError) as error:
        reason = str(getattr(error, "orig", None) or error.__cause__ or error).strip()
        reason = reason.splitlines()[0] if reason else type(error).__name__
        raise StudyError(f"cannot open the study store {redact(url)}: {reason}") from None
    except ImportError as error:
        raise StudyError(f"no database driver for {redact(url)}: {error}") from None
    if path is not None:
        _relax_sqlite_sync(storage.engine)
    return Store(url, storage, optuna.storages.get_storage(storage))


def _relax_sqlite_sync(engine: Any) -> None:
    """With write-ahead logging, ``synchronous=NORMAL`` is still crash-safe (a killed process
    loses nothing committed; only a power cut may lose the last transactions) and saves an
    fsync per write: a worker writes a few dozen attributes per run."""
    import sqlalchemy

    @sqlalchemy.event.listens_for(engine, "connect")
    def _on_connect(connection: Any, _record: Any) -> None:
        connection.execute("PRAGMA synchronous=NORMAL")

    engine.dispose()  # connections opened before the listener get it on reopening
