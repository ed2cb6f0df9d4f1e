"""The downloader against a real HTTP server on loopback: mirrors, checksums, atomicity, errors."""

from __future__ import annotations

import gzip
import hashlib
import logging
from pathlib import Path

import pytest

from trainlab.data.sources import (
    MIRROR_ENV,
    RemoteFile,
    candidate_urls,
    copy_files,
    data_root,
    dataset_dir,
    fetch_files,
    md5sum,
    missing_files,
)
from trainlab.errors import DataError

BODY = b"the real file contents " * 500
OTHER = b"another published file"


def remote(name: str = "a.bin", body: bytes = BODY) -> RemoteFile:
    return RemoteFile(name, hashlib.md5(body).hexdigest())


def leftovers(folder: Path) -> list[str]:
    """Temporary download names left behind (there must never be any)."""
    return sorted(p.name for p in folder.glob(".*.part")) if folder.exists() else []


# ---------------------------------------------------------------------------------------------
# Paths and URLs (no network)
# ---------------------------------------------------------------------------------------------


def test_data_root_prefers_argument_then_env_then_home(tmp_path, monkeypatch):
    monkeypatch.setenv("TRAINLAB_DATA", str(tmp_path / "env"))
    assert data_root(tmp_path / "arg") == tmp_path / "arg"
    assert data_root() == tmp_path / "env"
    assert dataset_dir("mnist") == tmp_path / "env" / "mnist"
    monkeypatch.delenv("TRAINLAB_DATA")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert data_root() == tmp_path / "home" / ".cache" / "trainlab"


def test_candidate_urls_put_the_mirror_env_first_and_join_names(monkeypatch):
    monkeypatch.delenv(MIRROR_ENV, raising=False)
    assert candidate_urls("f.gz", ["https://a/x", "https://b/y/"]) == [
        "https://a/x/f.gz",
        "https://b/y/f.gz",
    ]
    monkeypatch.setenv(MIRROR_ENV, "http://local/m/")
    assert candidate_urls("f.gz", ["http://local/m", "https://a/"]) == [
        "http://local/m/f.gz",
        "https://a/f.gz",
    ]


def test_download_false_names_the_missing_files_and_folder(tmp_path):
    folder = tmp_path / "ds"
    with pytest.raises(DataError) as error:
        fetch_files("toy", folder, [remote("a.bin"), remote("b.bin")], [], download=False)
    message = str(error.value)
    assert "\n" not in message
    assert message == (
        f"toy files are missing or corrupt in {folder}: a.bin (missing), b.bin (missing), and "
        "downloads are disabled (--offline / download=False); allow downloads (drop --offline, "
        "or pass download=True) or put a.bin, b.bin there by hand"
    )


def test_cached_verified_files_need_no_mirror(tmp_path):
    folder = tmp_path / "ds"
    folder.mkdir()
    (folder / "a.bin").write_bytes(BODY)
    paths = fetch_files("toy", folder, [remote()], [], download=False)
    assert paths == {"a.bin": folder / "a.bin"}


# ---------------------------------------------------------------------------------------------
# Decompressed copies and files copied from a local folder (no network)
# ---------------------------------------------------------------------------------------------

PACKED = gzip.compress(BODY, mtime=0)


def packed(name: str = "a.bin.gz") -> RemoteFile:
    """A published .gz whose contents' MD5 is published too, so its unpacked copy is accepted."""
    return RemoteFile(name, md5(PACKED), unpacked_md5=md5(BODY))


def md5(data: bytes) -> str:
    return hashlib.md5(data).hexdigest()


def test_forms_are_the_archive_then_its_unpacked_copy_when_its_checksum_is_known():
    assert packed().forms() == [("a.bin.gz", md5(PACKED)), ("a.bin", md5(BODY))]
    assert remote("x.gz").forms() == [("x.gz", md5(BODY))]  # contents' MD5 unknown: archive only


def test_a_verified_unpacked_copy_stands_in_for_the_archive_offline(tmp_path):
    (tmp_path / "a.bin").write_bytes(BODY)
    assert fetch_files("toy", tmp_path, [packed()], [], download=False) == {
        "a.bin.gz": tmp_path / "a.bin"
    }
    assert missing_files(tmp_path, [packed()]) == []
    assert missing_files(tmp_path, [remote("a.bin.gz")]) == ["a.bin.gz"]


def test_the_archive_wins_and_a_corrupt_unpacked_copy_is_not_accepted(tmp_path):
    (tmp_path / "a.bin").write_bytes(b"not the published contents")
    with pytest.raises(DataError, match=r": a\.bin \(checksum mismatch\).*decompressed copies"):
        fetch_files("toy", tmp_path, [packed()], [], download=False)
    (tmp_path / "a.bin.gz").write_bytes(PACKED)
    paths = fetch_files("toy", tmp_path, [packed()], [], download=False)
    assert paths == {"a.bin.gz": tmp_path / "a.bin.gz"}


def test_copy_files_verifies_everything_then_copies_atomically(tmp_path):
    source, cache = tmp_path / "kit", tmp_path / "cache" / "toy"
    source.mkdir()
    (source / "a.bin").write_bytes(BODY)  # unpacked form
    (source / "b.bin").write_bytes(OTHER)  # published form
    (source / "names.csv").write_text("x")
    files = [packed(), remote("b.bin", OTHER), RemoteFile("names.csv", None, optional=True)]
    copied = copy_files("toy", cache, files, source)
    assert sorted(p.name for p in copied) == ["a.bin", "b.bin", "names.csv"]
    assert (cache / "a.bin").read_bytes() == BODY and leftovers(cache) == []
    assert fetch_files("toy", cache, files, [], download=False)["a.bin.gz"] == cache / "a.bin"
    # The cache as its own source: nothing to copy, nothing broken.
    assert copy_files("toy", cache, files, cache) == []
    assert (cache / "b.bin").read_bytes() == OTHER


def test_copy_files_changes_nothing_when_any_required_file_is_wrong(tmp_path):
    source, cache = tmp_path / "kit", tmp_path / "cache"
    source.mkdir()
    (source / "a.bin").write_bytes(BODY)
    (source / "b.bin").write_bytes(b"damaged")
    files = [packed(), remote("b.bin", OTHER), remote("c.bin", OTHER)]
    with pytest.raises(DataError) as error:
        copy_files("toy", cache, files, source)
    assert str(error.value) == (
        f"{source} does not hold the toy files: b.bin (checksum mismatch), c.bin (missing); it "
        "needs a.bin.gz, b.bin, c.bin (or their decompressed copies, without .gz)"
    )
    assert not cache.exists()
    with pytest.raises(DataError, match="absent is not a folder"):
        copy_files("toy", cache, files, tmp_path / "absent")


def test_a_source_that_changes_while_it_is_copied_leaves_no_unverified_file(tmp_path, monkeypatch):
    import trainlab.data.sources as sources

    source, cache = tmp_path / "kit", tmp_path / "cache"
    source.mkdir()
    (source / "a.bin").write_bytes(b"swapped after the check")
    monkeypatch.setattr(sources, "md5sum", lambda path: md5(BODY))  # the check saw BODY
    with pytest.raises(DataError, match=r"a\.bin changed while it was copied"):
        copy_files("toy", cache, [packed()], source)
    assert list(cache.iterdir()) == []


# ---------------------------------------------------------------------------------------------
# Real HTTP on 127.0.0.1
# ---------------------------------------------------------------------------------------------


@pytest.mark.integration
def test_download_verifies_writes_and_then_hits_the_cache(http_server, tmp_path):
    http_server.serve("/m/a.bin", BODY)
    folder = tmp_path / "ds"
    paths = fetch_files("toy", folder, [remote()], [http_server.url("/m/")])
    assert paths["a.bin"].read_bytes() == BODY
    assert http_server.requests == ["/m/a.bin"]
    assert leftovers(folder) == []

    fetch_files("toy", folder, [remote()], [http_server.url("/m/")])
    assert http_server.requests == ["/m/a.bin"]  # verified cache: no second request


@pytest.mark.integration
def test_bad_checksum_tries_the_next_mirror(http_server, tmp_path):
    http_server.serve("/bad/a.bin", b"tampered" + BODY)
    http_server.serve("/good/a.bin", BODY)
    folder = tmp_path / "ds"
    fetch_files("toy", folder, [remote()], [http_server.url("/bad/"), http_server.url("/good/")])
    assert http_server.requests == ["/bad/a.bin", "/good/a.bin"]
    assert md5sum(folder / "a.bin") == remote().md5
    assert leftovers(folder) == []


@pytest.mark.integration
def test_bad_checksum_everywhere_leaves_nothing_at_the_final_name(http_server, tmp_path):
    http_server.serve("/bad/a.bin", b"tampered" + BODY)
    folder = tmp_path / "ds"
    with pytest.raises(DataError) as error:
        fetch_files("toy", folder, [remote()], [http_server.url("/bad/")])
    message = str(error.value)
    assert "\n" not in message
    assert "checksum mismatch" in message and http_server.url("/bad/a.bin") in message
    assert f"into {folder}" in message
    assert not (folder / "a.bin").exists()
    assert leftovers(folder) == []


@pytest.mark.integration
def test_interrupted_transfer_is_discarded_and_the_next_mirror_used(http_server, tmp_path):
    http_server.serve("/cut/a.bin", BODY[:100], behaviour="truncate")
    http_server.serve("/good/a.bin", BODY)
    folder = tmp_path / "ds"
    fetch_files("toy", folder, [remote()], [http_server.url("/cut/"), http_server.url("/good/")])
    assert (folder / "a.bin").read_bytes() == BODY
    assert leftovers(folder) == []


@pytest.mark.integration
def test_interrupted_transfer_alone_is_an_error_without_partial_file(http_server, tmp_path):
    # No checksum: only the Content-Length check can catch the short body.
    http_server.serve("/cut/a.bin", BODY[:100], behaviour="truncate")
    folder = tmp_path / "ds"
    with pytest.raises(DataError, match="connection closed after 100 of 1100 bytes"):
        fetch_files("toy", folder, [RemoteFile("a.bin", None)], [http_server.url("/cut/")])
    assert not (folder / "a.bin").exists()
    assert leftovers(folder) == []


@pytest.mark.integration
def test_offline_gives_one_line_with_folder_and_every_file(refused_url, tmp_path):
    folder = tmp_path / "ds"
    files = [remote("a.bin"), remote("b.bin", OTHER)]
    with pytest.raises(DataError) as error:
        fetch_files("toy", folder, files, [refused_url, refused_url + "other/"])
    message = str(error.value)
    assert "\n" not in message
    assert "could not download toy file a.bin" in message
    assert message.count("connection refused") == 2  # each mirror tried once, none retried
    assert f"download a.bin, b.bin by hand into {folder}" in message
    assert not (folder / "a.bin").exists()


@pytest.mark.integration
def test_http_errors_are_reported_by_status(http_server, tmp_path):
    with pytest.raises(DataError, match="HTTP 404"):
        fetch_files("toy", tmp_path / "ds", [remote()], [http_server.url("/nothing/")])


@pytest.mark.integration
def test_stalled_server_times_out(http_server, tmp_path):
    http_server.serve("/slow/a.bin", BODY, behaviour="stall")
    with pytest.raises(DataError, match=r"no answer within 0.3 s"):
        fetch_files("toy", tmp_path / "ds", [remote()], [http_server.url("/slow/")], timeout=0.3)


@pytest.mark.integration
def test_mirror_env_is_tried_first(http_server, tmp_path, monkeypatch, refused_url):
    http_server.serve("/local/a.bin", BODY)
    monkeypatch.setenv(MIRROR_ENV, http_server.url("/local"))
    folder = tmp_path / "ds"
    fetch_files("toy", folder, [remote()], [refused_url])
    assert http_server.requests == ["/local/a.bin"]
    assert (folder / "a.bin").read_bytes() == BODY


@pytest.mark.integration
def test_a_malformed_mirror_url_is_skipped(http_server, tmp_path, monkeypatch):
    http_server.serve("/m/a.bin", BODY)
    monkeypatch.setenv(MIRROR_ENV, "not-a-url")
    fetch_files("toy", tmp_path / "ds", [remote()], [http_server.url("/m/")])
    assert (tmp_path / "ds" / "a.bin").read_bytes() == BODY


@pytest.mark.integration
def test_corrupt_cached_file_is_fetched_again_or_reported(http_server, tmp_path, caplog):
    folder = tmp_path / "ds"
    folder.mkdir()
    (folder / "a.bin").write_bytes(b"half a file")
    caplog.set_level(logging.DEBUG, logger="trainlab")
    with pytest.raises(
        DataError, match=r"a\.bin \(checksum mismatch\), and downloads are disabled"
    ):
        fetch_files("toy", folder, [remote()], [http_server.url("/m/")], download=False)
    # Offline, nothing may promise a download that will not happen.
    assert not [r for r in caplog.records if "again" in r.getMessage()]
    assert http_server.requests == []

    http_server.serve("/m/a.bin", BODY)
    fetch_files("toy", folder, [remote()], [http_server.url("/m/")])
    assert (folder / "a.bin").read_bytes() == BODY
    assert [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING] == [
        f"{folder / 'a.bin'} does not match its published checksum; downloading a.bin again"
    ]


@pytest.mark.integration
def test_a_corrupt_unpacked_copy_gets_the_archive_downloaded(http_server, tmp_path):
    (tmp_path / "a.bin").write_bytes(b"damaged")
    http_server.serve("/m/a.bin.gz", PACKED)
    paths = fetch_files("toy", tmp_path, [packed()], [http_server.url("/m/")])
    assert paths == {"a.bin.gz": tmp_path / "a.bin.gz"}
    assert http_server.requests == ["/m/a.bin.gz"]


@pytest.mark.integration
def test_optional_files_are_best_effort_and_only_fetched_with_required_ones(http_server, tmp_path):
    http_server.serve("/m/a.bin", BODY)
    files = [remote(), RemoteFile("names.csv", None, optional=True)]
    folder = tmp_path / "ds"
    paths = fetch_files("toy", folder, files, [http_server.url("/m/")])  # 404 for the csv: fine
    assert set(paths) == {"a.bin"}
    assert http_server.requests == ["/m/a.bin", "/m/names.csv"]

    http_server.serve("/m/names.csv", b"index,codepoint,char\n")
    fetch_files("toy", folder, files, [http_server.url("/m/")])
    assert len(http_server.requests) == 2  # nothing required was missing: no network at all
