"""The five user studies, end to end at smoke scale: every page in docs/studies has a "Smoke run"
block, and this test runs exactly those commands (train/sweep/tune -> report -> serve), so the
documented commands cannot rot. ``trainlab serve`` runs as a real process on a free loopback port
and answers /predict and /predict_batch; ``python -c`` lines (tiny generated data, a tiny model)
run with this interpreter."""

from __future__ import annotations

import re
import shlex
import subprocess
import sys
from pathlib import Path

import httpx
import numpy as np
import pytest
from typer.testing import CliRunner

from live import png
from postgres_server import free_port, wait_for
from trainlab.cli import app

pytestmark = [pytest.mark.integration, pytest.mark.slow]

ROOT = Path(__file__).parents[2]
PAGES = sorted((ROOT / "docs" / "studies").glob("*.md"))
BLOCK = re.compile(r"^## Smoke run.*?^```(?:sh|bash|console)?\n(.*?)^```", re.S | re.M)


def smoke_commands(page: Path) -> list[list[str]]:
    match = BLOCK.search(page.read_text(encoding="utf-8"))
    assert match, f"{page.name} has no '## Smoke run' code block"
    text = match.group(1).replace("\\\n", " ")  # continued lines
    return [shlex.split(line) for line in text.splitlines()
            if line.strip() and not line.lstrip().startswith("#")]  # fmt: skip


def test_every_study_has_a_page_with_a_smoke_run():
    names = {page.stem for page in PAGES}
    assert names >= {"vit-finetune", "k49-spinalvgg", "gru-small-vs-large", "optimizers",
                     "cifar10-vgg"}  # fmt: skip
    for page in PAGES:
        assert smoke_commands(page)


def serve_and_query(args: list[str], cwd: Path) -> None:
    port = free_port()
    process = subprocess.Popen([sys.executable, "-m", "trainlab", *args, "--port", str(port),
                                "--device", "cpu"], cwd=cwd, stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, text=True)  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    try:

        def up() -> bool:
            if process.poll() is not None:
                raise AssertionError(f"trainlab serve exited: {process.communicate()[0]}")
            try:
                return httpx.get(f"{url}/healthz", timeout=1).status_code == 200
            except httpx.HTTPError:
                return False

        wait_for(up, timeout=90, interval=0.2, what="trainlab serve")
        info = httpx.get(f"{url}/model", timeout=10).json()
        channels, (height, width) = info["input"]["channels"], (info["input"]["height"],
                                                                info["input"]["width"])  # fmt: skip
        shape = (height, width) if channels == 1 else (height, width, channels)
        image = png(np.random.default_rng(0).integers(0, 255, shape, dtype=np.uint8))
        one = httpx.post(f"{url}/predict", files={"file": ("a.png", image)}, timeout=30)
        assert one.status_code == 200, one.text
        assert one.json()["predictions"][0]["label"] in info["classes"]
        many = httpx.post(f"{url}/predict_batch", timeout=30,
                          files=[("files", ("a.png", image)), ("files", ("b.png", image))])  # fmt: skip
        assert many.status_code == 200 and len(many.json()["results"]) == 2, many.text
    finally:
        process.terminate()
        process.communicate(timeout=30)


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.stem)
def test_the_smoke_run_of_the_study_works(page, tmp_path, monkeypatch):
    (tmp_path / "examples").symlink_to(ROOT / "examples")
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("TRAINLAB_STORAGE", raising=False)
    for args in smoke_commands(page):
        shown = shlex.join(args)
        if args[0] == "python":
            done = subprocess.run([sys.executable, *args[1:]], cwd=tmp_path, capture_output=True,
                                  text=True, timeout=300)  # fmt: skip
            assert done.returncode == 0, f"{shown}\n{done.stdout}{done.stderr}"
        elif args[:2] == ["trainlab", "serve"]:
            serve_and_query(args[1:], tmp_path)
        else:
            assert args[0] == "trainlab", f"{page.name}: only trainlab and python lines: {shown}"
            result = CliRunner().invoke(app, args[1:])
            assert result.exit_code == 0, f"{shown}\n{result.output}"
    reports = list((tmp_path / "reports").glob("*/report.*"))
    assert reports, f"{page.name}: the smoke run writes no report"
