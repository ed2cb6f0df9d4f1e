"""Every ``trainlab`` command shown in README.md, docs/ and the comments of examples/ parses: the subcommand and its flags
exist and their values convert, and every config key given to --set/--grid/--sample is a real
config field or an option of a registered model. The study pages' smoke runs are executed by
tests/integration/test_user_studies.py; this keeps the other commands from rotting silently."""

from __future__ import annotations

import itertools
import re
import shlex
import typing
from pathlib import Path

import pytest
import typer.main
from pydantic import BaseModel
from typer.exceptions import TyperException

from trainlab.cli import app
from trainlab.config import TrainConfig
from trainlab.models import model_names, model_options

ROOT = Path(__file__).parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]
EXAMPLES = sorted((ROOT / "examples").glob("*.yaml"))
FENCE = re.compile(r"^```(?:sh|bash|console|shell)?\n(.*?)^```", re.S | re.M)
KEY_FLAGS = {"--set", "--grid", "--sample"}


def documented_commands(page: Path) -> list[list[str]]:
    """The argument lists after ``trainlab`` on each command line of the page's shell blocks."""
    text = page.read_text(encoding="utf-8")
    if page.suffix == ".yaml":  # commands are indented comments: "#   trainlab tune ... \"
        indented = re.findall(r"^#\s{2,}(.*)$", text, re.M)
        blocks = ["\n".join(indented)]
    else:
        blocks = FENCE.findall(text)
    commands = []
    for block in blocks:
        for line in block.replace("\\\n", " ").splitlines():
            line = line.strip().removeprefix("$ ")
            for part in re.split(r"\s(?:&&|\|\||\|)\s", line):
                if part.strip().startswith("trainlab "):
                    commands.append(shlex.split(part, comments=True)[1:])
    return commands


COMMANDS = [(page, words) for page in PAGES + EXAMPLES for words in documented_commands(page)]


def test_the_docs_show_commands():
    assert len(COMMANDS) > 50
    assert {page.name for page, _ in COMMANDS} >= {"README.md", "optimizers.md", "k49.yaml"}


def parse(words: list[str]) -> object:
    """Parse like the CLI does, without running the command."""
    group = typer.main.get_command(app)
    parent = group.context_class(group, info_name="trainlab")
    name, command, rest = group.resolve_command(parent, list(words))
    return command.make_context(name, rest, parent=parent)


def config_keys(words: list[str]) -> list[str]:
    keys = []
    for flag, value in itertools.pairwise(words):
        if flag in KEY_FLAGS:
            keys.append(value.split("=", 1)[0])
    return keys


def is_config_key(dotted: str) -> bool:
    parts = dotted.split(".")
    if parts[:2] == ["model", "options"] and len(parts) == 3:
        return any(parts[2] in model_options(name) for name in [*model_names(), "hf"])
    model: type[BaseModel] | None = TrainConfig
    for part in parts:
        field = model.model_fields.get(part) if model else None
        if field is None:
            return False
        model = nested_model(field.annotation)
    return True


def nested_model(annotation: object) -> type[BaseModel] | None:
    """The config section a field holds (``AugmentConfig | "auto"`` holds AugmentConfig)."""
    for candidate in (annotation, *typing.get_args(annotation)):
        if isinstance(candidate, type) and issubclass(candidate, BaseModel):
            return candidate
    return None


@pytest.mark.parametrize(
    ("page", "words"), COMMANDS, ids=[f"{p.name}:{' '.join(w[:2])}" for p, w in COMMANDS]
)
def test_documented_command_parses(page, words):
    if "--help" in words:
        return  # --help exits while parsing; the command name is checked below
    try:
        parse(words)
    except TyperException as error:  # typer's own click: its UsageError derives from this
        pytest.fail(f"{page.name}: `trainlab {' '.join(words)}` does not parse: {error}")
    unknown = [key for key in config_keys(words) if not is_config_key(key)]
    assert not unknown, f"{page.name}: `trainlab {' '.join(words)}` sets unknown keys {unknown}"


def test_the_key_check_rejects_what_it_should():
    assert is_config_key("optim.lr") and is_config_key("model.options.hidden")
    assert is_config_key("budget") and is_config_key("data.augment.rotate")
    assert not is_config_key("optim.learning_rate") and not is_config_key("model.options.nope")
    assert not is_config_key("optim.lr.x")
    with pytest.raises(TyperException, match="no-such-flag"):
        parse(["sweep", "--no-such-flag"])
