"""Every ``trainlab`` command shown in README.md, docs/ and the comments of examples/ is one a
user can paste: the subcommand and its flags exist, and for ``train``, ``sweep`` and ``tune`` the
configuration it describes is built and checked as the command would (keys, values, model
options, grids, search spaces, metric, sampler and pruner) without training anything. Inline
``trainlab <command>`` mentions in prose must name real commands. The study pages' smoke runs
are executed end to end by tests/integration/test_user_studies.py."""

from __future__ import annotations

import re
import shlex
from pathlib import Path
from typing import Any

import pytest
import typer.main
from typer.exceptions import TyperException

from trainlab.cli import app, flag_overrides
from trainlab.cli_studies import base_config, random_draws
from trainlab.config import load_config
from trainlab.errors import TrainlabError
from trainlab.experiments import study
from trainlab.experiments.space import load_grid, parse_grid, parse_samples
from trainlab.experiments.sweep import plan_sweep
from trainlab.experiments.tune import plan_tune
from trainlab.models import check_model

ROOT = Path(__file__).parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]
EXAMPLES = sorted((ROOT / "examples").glob("*.yaml"))
SHELL = {"", "sh", "bash", "console", "shell"}
# How a command line may start: trainlab, .venv/bin/trainlab, python -m trainlab, VAR=x trainlab.
PREFIX = re.compile(r"^(?:\w+=\S*\s+)*(?:\S*/)?(?:trainlab|python3? -m trainlab)\s+")
PAGE_DATA = {"tiny-cifar.npz", "my_digits.npz", "path/to/folder"}
PLACEHOLDER = "..."  # "trainlab sweep --study s ... --workers 2": the rest as shown elsewhere


def shell_lines(page: Path) -> list[str]:
    """The lines of a page's shell code blocks (for an example YAML: its indented comments, where
    the commands that use it are shown), continuation lines joined."""
    text = page.read_text(encoding="utf-8")
    if page.suffix == ".yaml":
        lines = re.findall(r"^#\s{2,}(.*)$", text, re.M)
    else:
        lines, language = [], None  # language is None outside a fence
        for line in text.splitlines():
            fence = re.match(r"^\s*```\s*(\S*)", line)
            if fence:
                language = fence.group(1) if language is None else None
            elif language in SHELL:
                lines.append(line)
    return "\n".join(lines).replace("\\\n", " ").splitlines()


def documented_commands(page: Path) -> list[list[str]]:
    """The argument lists after ``trainlab`` on each command of the page's shell lines."""
    commands = []
    for line in shell_lines(page):
        line = line.strip().removeprefix("$ ")
        for part in re.split(r"\s(?:&&|\|\||\||;)\s", line):
            match = PREFIX.match(part.strip())
            if match:
                commands.append(shlex.split(part.strip()[match.end() :], comments=True))
    return commands


COMMANDS = [(page, words) for page in PAGES + EXAMPLES for words in documented_commands(page)]


def test_every_page_shows_commands():
    found = {page: len(documented_commands(page)) for page in PAGES + EXAMPLES}
    assert found[ROOT / "README.md"] >= 35
    for page in PAGES:
        assert found[page] >= 3, f"{page.name}: no trainlab commands found"
    assert sum(found[path] for path in EXAMPLES) >= 15


def parse(words: list[str]) -> tuple[str, dict[str, Any]]:
    """Parse like the CLI does, without running the command: its name and parameter values."""
    group = typer.main.get_command(app)
    parent = group.context_class(group, info_name="trainlab")
    name, command, rest = group.resolve_command(parent, list(words))
    if "--help" in rest:
        return name, {}  # --help exits while parsing; the name is resolved
    return name, command.make_context(name, rest, parent=parent).params


def build(name: str, params: dict[str, Any]) -> None:
    """Build and check the configurations a train/sweep/tune command describes."""
    if name == "train" and params.get("resume") is None:
        overrides = flag_overrides(**params) + list(params["set_"] or [])  # as `train` does
        config = load_config(params["config"], overrides)
        check_model(config.model.name, config.model.options)
        study.check_dataset(config.data.dataset)
    elif name in ("sweep", "tune"):
        base = base_config(params["config"], params["set_"], dataset=params["dataset"],
                           model=params["model"], epochs=params["epochs"])  # as the command does  # fmt: skip
        common = dict(metric=params["metric"], seed=params["seed"])
        if name == "tune":
            plan_tune("docs", base, space=params["space"], trials=params["trials"],
                      sampler=params["sampler"], pruner=params["pruner"], **common)  # fmt: skip
            return
        axes = parse_grid(params["grid"] or [])
        if params["grid_file"] is not None:
            axes += load_grid(params["grid_file"])
        plan_sweep("docs", base, grid=axes, sample=parse_samples(params["sample"] or []),
                   samples=random_draws(params["samples"], params["sample"]),
                   repeats=params["repeats"], cv=params["cv"],
                   **common)  # fmt: skip


@pytest.mark.parametrize(
    ("page", "words"), COMMANDS, ids=[f"{p.name}:{' '.join(w[:2])}" for p, w in COMMANDS]
)
def test_documented_command_works(page, words, monkeypatch):
    monkeypatch.chdir(ROOT)  # paths in the docs are relative to the repository
    # Data files the pages make or stand for (a smoke run's generated tiny-cifar.npz, "your own
    # folder") are not here; any other name must be a registered data set or an existing path.
    registered_only = study.check_dataset
    monkeypatch.setattr(study, "check_dataset",
                        lambda name: None if Path(name).name in PAGE_DATA or name in PAGE_DATA
                        else registered_only(name))  # fmt: skip  # a study keeps paths absolute
    shown = f"{page.name}: `trainlab {' '.join(words)}`"
    partial = PLACEHOLDER in words
    try:
        name, params = parse([word for word in words if word != PLACEHOLDER])
    except TyperException as error:  # typer's own click: its UsageError derives from this
        if partial and "Missing option" in str(error):
            return  # the elided part held it
        pytest.fail(f"{shown} does not parse: {error}")
    if params and not partial:
        try:
            build(name, params)
        except TrainlabError as error:
            pytest.fail(f"{shown} describes an invalid configuration: {error}")


def test_commands_named_in_prose_exist():
    group = typer.main.get_command(app)
    context = group.context_class(group, info_name="trainlab")
    for page in PAGES:
        for name in re.findall(r"`trainlab ([a-z][a-z-]*)", page.read_text(encoding="utf-8")):
            assert group.get_command(context, name), f"{page.name}: no command `trainlab {name}`"


def test_the_checks_catch_what_they_should(monkeypatch):
    monkeypatch.chdir(ROOT)
    with pytest.raises(TyperException, match="no-such-flag"):
        parse(["sweep", "--study", "s", "--no-such-flag"])
    with pytest.raises(TyperException, match="no-such-command"):
        parse(["no-such-command"])
    bad = [
        ["train", "--set", "optim.learning_rate=0.1"],
        ["train", "--epochs", "many"],
        ["train", "--model", "mlp", "--model-options", "hiden=32"],
        ["sweep", "--study", "s", "--grid", "optim.lr=abc"],
        ["sweep", "--study", "s", "--grid", "model.options.hiden=32,64"],
        ["sweep", "--study", "s", "--metric", "val.acc"],
        ["tune", "--study", "s", "--space", "examples/k49-space.yaml", "--pruner", "median:x=1"],
    ]
    bad.append(["train", "--dataset", "mnsit"])
    for words in bad:
        with pytest.raises((TrainlabError, TyperException)):
            build(*parse(words))
    assert shell_lines(ROOT / "examples" / "k49.yaml")
    assert documented_commands(ROOT / "README.md")[0]
