"""The documentation covers the interface: every CLI option and every XMR_* variable.

README.md and docs/*.md together must name every long option of every command (the
typer/click command tree, walked) and every ``XMR_*`` variable the code reads (string
literals in xmr/). A new option or variable without documentation fails here.
"""

from __future__ import annotations

import ast
import re
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import typer

REPO = Path(__file__).resolve().parent.parent
ENV_NAME = re.compile(r"XMR_[A-Z0-9_]+")


def documentation() -> str:
    return "\n".join(p.read_text(encoding="utf-8") for p in [REPO / "README.md", *sorted(REPO.glob("docs/*.md"))])


# Typer builds click commands (its own vendored copy of click in recent versions), so the
# tree is walked by click's attributes rather than by isinstance checks.
def long_options(command: Any, path: str = "xmr") -> Iterator[tuple[str, str]]:
    """(command path, --option) for every long option of ``command`` and its subcommands."""
    for param in command.params:
        if param.param_type_name == "option":
            for name in [*param.opts, *param.secondary_opts]:
                if name.startswith("--"):
                    yield path, name
    for name, sub in sorted(getattr(command, "commands", {}).items()):
        yield from long_options(sub, f"{path} {name}")


def undocumented_options(command: Any, docs: str) -> list[str]:
    missing = []
    for path, option in long_options(command):
        if not re.search(rf"(?<![\w-]){re.escape(option)}(?![\w-])", docs):
            missing.append(f"{path} {option}")
    return missing


def env_names(sources: Iterable[str]) -> set[str]:
    """XMR_* names in the string literals of Python sources (f-string pieces included:
    ``f"XMR_BACKEND_{space}"`` gives the prefix ``XMR_BACKEND_``)."""
    names: set[str] = set()
    for source in sources:
        for node in ast.walk(ast.parse(source)):
            if isinstance(node, ast.Constant) and isinstance(node.value, str):
                names.update(ENV_NAME.findall(node.value))
    return names


def undocumented_env(names: Iterable[str], docs: str) -> list[str]:
    missing = []
    for name in sorted(names):
        # a prefix (XMR_BACKEND_) is documented by the full names it makes (XMR_BACKEND_CLIP)
        tail = r"[A-Z0-9_]*" if name.endswith("_") else r"(?![A-Z0-9_])"
        if not re.search(rf"(?<![A-Z0-9_]){re.escape(name)}{tail}", docs):
            missing.append(name)
    return missing


def _cli() -> Any:
    from xmr.cli import app

    return typer.main.get_command(app)


def _xmr_sources() -> list[str]:
    return [p.read_text(encoding="utf-8") for p in sorted((REPO / "xmr").rglob("*.py"))]


def test_every_cli_option_is_documented() -> None:
    found = list(long_options(_cli()))
    # the walk reaches nested commands and shared options: it cannot pass by finding nothing
    assert ("xmr index", "--store-snippets") in found and ("xmr models download", "--space") in found
    assert ("xmr", "--version") in found and len(found) > 60
    assert undocumented_options(_cli(), documentation()) == []


def test_every_environment_variable_is_documented() -> None:
    names = env_names(_xmr_sources())
    assert {"XMR_HOME", "XMR_TEXT_EXT", "XMR_CONCEPTS", "XMR_BACKEND_"} <= names
    assert undocumented_env(names, documentation()) == []


def test_an_undocumented_option_or_variable_is_reported() -> None:
    docs = documentation()
    cli = _cli()
    before = undocumented_options(cli, docs)  # what test_every_cli_option_is_documented reports
    option_class = type(cli.commands["index"].params[-1])
    cli.commands["index"].params.append(option_class(param_decls=["--frobnicate-the-index"], is_flag=True))
    cli.commands["models"].commands["download"].params.append(option_class(param_decls=["-z", "--zap-every-cache"]))
    added = [o for o in undocumented_options(cli, docs) if o not in before]
    assert added == ["xmr index --frobnicate-the-index", "xmr models download --zap-every-cache"]

    # a synthetic app: a nested command's option, and a name that only extends a documented one
    fake = typer.Typer(add_completion=False)
    sub = typer.Typer(add_completion=False)
    fake.add_typer(sub, name="things")

    @fake.command("one")
    def one(index_dirs: str = typer.Option("", "--index-dirs")) -> None: ...

    @sub.command("two")
    def two(
        index: str = typer.Option("", "--index"), colour: bool = typer.Option(False, "--colour/--no-colour")
    ) -> None: ...

    assert undocumented_options(typer.main.get_command(fake), "`--index` and `--colour`") == [
        "xmr one --index-dirs",
        "xmr things two --no-colour",
    ]

    source = 'import os\nos.environ.get("XMR_NOT_A_REAL_VARIABLE")\nf"XMR_PREFIX_{x}"\n# XMR_IN_A_COMMENT\n'
    names = env_names([source])
    assert names == {"XMR_NOT_A_REAL_VARIABLE", "XMR_PREFIX_"}
    assert undocumented_env(names, docs) == ["XMR_NOT_A_REAL_VARIABLE", "XMR_PREFIX_"]
    assert undocumented_env(["XMR_HOME"], "`XMR_HOME` (the index)") == []
    assert undocumented_env(["XMR_HOME_DIR"], "`XMR_HOME`") == ["XMR_HOME_DIR"]
    assert undocumented_env(["XMR_PREFIX_"], "`XMR_PREFIX_ONE`") == []


def _ci_block(readme: str, marker: str) -> str:
    """The fenced block after README's marker line, as .ci/run's awk reads it."""
    lines = readme.splitlines()
    start = lines.index(f"<!-- ci: {marker} -->") + 1
    assert lines[start].startswith("```"), lines[start]
    end = next(i for i in range(start + 1, len(lines)) if lines[i].startswith("```"))
    return "\n".join(lines[start + 1 : end])


def test_the_ci_commands_are_in_the_readme_and_install_the_system_programs() -> None:
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    test_cmd, lint_cmd = _ci_block(readme, "test-command"), _ci_block(readme, "lint-command")
    assert test_cmd.startswith("bash scripts/test-deps.sh && ") and "pytest" in test_cmd
    assert "ruff check xmr tests benchmarks fixtures" in lint_cmd
    # one place installs chromium, chromedriver and ghostscript: the script, not .ci/run
    script = (REPO / "scripts" / "test-deps.sh").read_text(encoding="utf-8")
    assert all(p in script for p in ("chromium-driver", "ghostscript", "DEBIAN_FRONTEND=noninteractive"))
    assert "apt-get" not in (REPO / ".ci" / "run").read_text(encoding="utf-8")
