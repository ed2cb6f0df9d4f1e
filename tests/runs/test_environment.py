"""The environment record is complete, JSON-serialisable, fast, and finds the git commit."""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import time
from pathlib import Path

import pytest
import torch

import trainlab
from trainlab.runs.environment import collect_environment

needs_git = pytest.mark.skipif(shutil.which("git") is None, reason="git is not installed")


@pytest.fixture
def outside_git(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A working directory where git finds no repository, even if tmp is inside one."""
    folder = tmp_path / "work"
    folder.mkdir()
    for variable in ("GIT_DIR", "GIT_WORK_TREE", "GIT_INDEX_FILE"):
        monkeypatch.delenv(variable, raising=False)
    monkeypatch.setenv("GIT_CEILING_DIRECTORIES", str(tmp_path))
    monkeypatch.chdir(folder)
    return folder


def test_keys_present_and_json_serialisable() -> None:
    env = collect_environment("cpu")
    assert json.loads(json.dumps(env, allow_nan=False)) == env
    assert {
        "timestamp_utc",
        "python",
        "platform",
        "cpu",
        "torch",
        "cuda",
        "mps",
        "device",
        "packages",
        "git",
    } <= env.keys()
    assert env["python"]["version"].count(".") == 2
    assert env["python"]["implementation"]
    assert env["platform"]["system"]
    assert env["cpu"]["logical_cores"] >= 1
    assert env["torch"]["version"] == torch.__version__
    assert env["torch"]["threads"] == torch.get_num_threads()
    assert env["cuda"]["available"] == torch.cuda.is_available()
    assert env["device"] == {"type": "cpu", "name": "cpu"}
    assert env["timestamp_utc"].endswith("+00:00")


def test_package_versions() -> None:
    packages = collect_environment()["packages"]
    assert packages["trainlab"] == trainlab.__version__
    assert packages["torch"] == torch.__version__
    for name in ("numpy", "pydantic", "safetensors", "pillow"):
        assert packages[name], name
    assert all(isinstance(version, str) for version in packages.values())


def test_no_hostname_recorded() -> None:
    hostname = socket.gethostname()
    if len(hostname) < 4:
        pytest.skip("hostname too short to search for")
    assert hostname not in json.dumps(collect_environment())


def test_device_may_be_omitted_or_a_torch_device() -> None:
    assert collect_environment()["device"] is None
    assert collect_environment(torch.device("cpu"))["device"]["type"] == "cpu"


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_details() -> None:
    env = collect_environment("cuda")
    assert env["cuda"]["devices"] and env["cuda"]["devices"][0]["memory_gb"] > 0
    assert env["device"]["gpu"] == torch.cuda.get_device_name()


def test_fast(outside_git: Path) -> None:
    collect_environment("cpu")  # warm up lazy imports inside torch/importlib
    start = time.perf_counter()
    collect_environment("cpu")
    assert time.perf_counter() - start < 0.2


@needs_git
def test_git_commit_and_dirty_flag(outside_git: Path) -> None:
    def git(*args: str) -> str:
        command = ["git", "-c", "user.name=t", "-c", "user.email=t@example.com", *args]
        return subprocess.run(
            command, cwd=outside_git, check=True, capture_output=True, text=True
        ).stdout.strip()

    git("init", "-q")
    (outside_git / "train.py").write_text("print('hi')\n")
    git("add", "train.py")
    git("commit", "-q", "-m", "first")
    head = git("rev-parse", "HEAD")

    assert collect_environment()["git"] == {"commit": head, "dirty": False}
    (outside_git / "runs").mkdir()
    (outside_git / "runs" / "untracked.txt").write_text("x")
    assert collect_environment()["git"]["dirty"] is False, "untracked files are not dirt"
    (outside_git / "train.py").write_text("print('changed')\n")
    assert collect_environment()["git"] == {"commit": head, "dirty": True}


def test_no_git_outside_a_checkout(outside_git: Path) -> None:
    assert collect_environment()["git"] is None


def test_git_missing_is_silent(outside_git: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", str(outside_git))  # no git executable to be found
    assert collect_environment()["git"] is None
