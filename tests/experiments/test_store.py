from __future__ import annotations

import multiprocessing
import time
from pathlib import Path

import pytest

from trainlab.errors import StudyError
from trainlab.experiments.store import (
    STORAGE_ENV,
    default_storage_url,
    normalize_url,
    open_store,
    redact,
    resolve_storage_url,
    study_lock,
)


def test_default_store_is_an_absolute_sqlite_file_in_the_runs_folder(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv(STORAGE_ENV, raising=False)
    assert resolve_storage_url(None) == f"sqlite:///{tmp_path}/runs/studies.db"
    assert resolve_storage_url(None, "elsewhere") == f"sqlite:///{tmp_path}/elsewhere/studies.db"
    monkeypatch.setenv(STORAGE_ENV, "sqlite:///from-env.db")
    assert resolve_storage_url(None) == f"sqlite:///{tmp_path}/from-env.db"
    assert resolve_storage_url("sqlite:///flag.db") == f"sqlite:///{tmp_path}/flag.db"
    assert default_storage_url(tmp_path).startswith("sqlite:////")


def test_postgres_urls_get_an_installed_driver():
    url = normalize_url("postgres://me@db.example/studies")
    assert url.split("://")[0] in ("postgresql", "postgresql+psycopg")
    assert normalize_url("postgresql+psycopg://me@h/d") == "postgresql+psycopg://me@h/d"


def test_unsupported_and_malformed_urls():
    with pytest.raises(StudyError, match=r"unsupported storage.*sqlite:///"):
        normalize_url("mysql://u:secret@h/d")
    with pytest.raises(StudyError, match="not a database URL"):
        normalize_url("studies.db")


def test_passwords_never_appear_in_messages():
    assert redact("postgresql://me:secret@h:5432/d") == "postgresql://me:***@h:5432/d"
    assert redact("postgresql://me@h/d") == "postgresql://me@h/d"
    with pytest.raises(StudyError) as error:
        normalize_url("mysql://me:secret@h/d")
    assert "secret" not in str(error.value)


def test_unreachable_postgres_is_one_clear_error():
    from postgres_server import free_port

    with pytest.raises(
        StudyError, match=r"cannot open the study store postgresql\+psycopg://me:\*\*\*@127.0.0.1"
    ):
        open_store(f"postgresql://me:pw@127.0.0.1:{free_port()}/nothing")


def test_unwritable_sqlite_location_is_one_clear_error(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    with pytest.raises(StudyError, match="cannot open the study store"):
        open_store(f"sqlite:///{blocker}/studies.db")


def test_sqlite_store_uses_write_ahead_logging(tmp_path):
    import sqlite3

    open_store(f"sqlite:///{tmp_path / 'studies.db'}")
    mode = sqlite3.connect(tmp_path / "studies.db").execute("PRAGMA journal_mode").fetchone()[0]
    assert mode == "wal"


def _hold(url: str, name: str, log: str, index: int) -> None:
    for _ in range(3):
        with study_lock(url, name):
            with open(log, "a") as handle:
                handle.write(f"in {index}\n")
            time.sleep(0.02)
            with open(log, "a") as handle:
                handle.write(f"out {index}\n")


def test_the_study_lock_excludes_other_processes(store_url, tmp_path):
    open_store(store_url)  # creates the SQLite folder / checks the server
    log = tmp_path / "log.txt"
    context = multiprocessing.get_context("spawn")
    processes = [
        context.Process(target=_hold, args=(store_url, "s", str(log), i)) for i in range(3)
    ]
    for process in processes:
        process.start()
    for process in processes:
        process.join(timeout=60)
        assert process.exitcode == 0
    lines = Path(log).read_text().splitlines()
    assert len(lines) == 18
    for enter, leave in zip(lines[::2], lines[1::2], strict=True):  # never two inside at once
        assert enter.startswith("in ") and leave == "out " + enter[3:]


def _die_holding(url: str) -> None:
    import os

    with study_lock(url, "s"):
        os._exit(9)  # killed while holding the lock


def test_a_killed_holder_releases_the_lock(store_url):
    open_store(store_url)
    context = multiprocessing.get_context("spawn")
    process = context.Process(target=_die_holding, args=(store_url,))
    process.start()
    process.join(timeout=60)
    started = time.monotonic()
    with study_lock(store_url, "s"):
        pass
    assert time.monotonic() - started < 5


def test_query_string_passwords_are_hidden_too():
    assert redact("postgresql://me@h/d?password=s3cret&sslmode=require") == (
        "postgresql://me@h/d?password=***&sslmode=require"
    )
    assert "s3cret" not in redact("postgresql://me@h/d?sslmode=x&sslpassword=s3cret")
