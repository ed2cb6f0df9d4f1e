"""Shared fixtures: small, fast configurations over the real offline MNIST digits."""

from __future__ import annotations

from pathlib import Path

import pytest

from trainlab.config import TrainConfig, build_config


@pytest.fixture
def tiny_config(tmp_path: Path):
    """A config that trains in about a second: 300 real digits, a small MLP, 2 epochs."""

    def make(**overrides) -> TrainConfig:
        tree = {
            "data": {"dataset": "mnist-5k", "train_size": 300, "val_size": 100, "batch_size": 50},
            "model": {"name": "mlp", "options": {"hidden": [32]}},
            "epochs": 2,
            "progress": False,
            "out": str(tmp_path / "run"),
        }
        for dotted, value in overrides.items():
            node = tree
            *parents, leaf = dotted.split("__")
            for part in parents:
                node = node.setdefault(part, {})
            node[leaf] = value
        return build_config(tree)

    return make


@pytest.fixture(scope="session")
def small_run(tmp_path_factory) -> Path:
    """A finished run folder, shared by the session (add files beside it, change nothing):
    300 real digits, a small MLP, 2 epochs, about a second."""
    import trainlab

    out = tmp_path_factory.mktemp("small-run") / "run"
    trainlab.train({"data": {"dataset": "mnist-5k", "train_size": 300, "val_size": 100},
                    "model": {"name": "mlp", "options": {"hidden": [32]}}, "epochs": 2,
                    "progress": False, "out": str(out)})  # fmt: skip
    return out


# -- study stores: SQLite always, PostgreSQL from the Debian package ----------------------------


@pytest.fixture(scope="session")
def postgres_server():
    """A real PostgreSQL server for the session; skipped only where none is installed and
    ``TRAINLAB_REQUIRE_POSTGRES`` is unset (``.ci/run`` sets it, so CI cannot skip)."""
    import os

    from postgres_server import REQUIRE_ENV, URL_ENV, PostgresServer, find_bindir

    if os.environ.get(URL_ENV):
        yield None
        return
    bindir = find_bindir()
    if bindir is None:
        if os.environ.get(REQUIRE_ENV):
            pytest.fail("PostgreSQL is required here but initdb was not found")
        pytest.skip("PostgreSQL is not installed (apt-get install postgresql)")
    server = PostgresServer(bindir)
    server.start()
    try:
        yield server
    finally:
        server.stop()


_database_counter = iter(range(10**6))


@pytest.fixture
def postgres_url(postgres_server) -> str:
    """A fresh, empty database on the session's server."""
    import os

    from postgres_server import URL_ENV

    name = f"trainlab_test_{os.getpid()}_{next(_database_counter)}"
    if postgres_server is None:  # an external server from TRAINLAB_TEST_POSTGRES_URL
        import psycopg

        base = os.environ[URL_ENV]
        with psycopg.connect(base, autocommit=True) as connection:
            connection.execute(f'CREATE DATABASE "{name}"')
        return base.rsplit("/", 1)[0] + "/" + name
    return postgres_server.create_database(name)


@pytest.fixture(params=["sqlite", "postgresql"])
def store_url(request, tmp_path: Path) -> str:
    """The same contract tests on every supported backend."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'runs' / 'studies.db'}"
    return request.getfixturevalue("postgres_url")


@pytest.fixture
def study_base() -> dict:
    """Base config of study tests: runs of a fraction of a second on real digits."""
    return {
        "data": {"dataset": "mnist-5k", "train_size": 300, "val_size": 100, "batch_size": 50},
        "model": {"name": "mlp", "options": {"hidden": [32]}},
        "epochs": 2,
    }
