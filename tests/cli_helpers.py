"""Shared helpers for the CLI tests."""

from __future__ import annotations

from typer.testing import CliRunner, Result

from xmr.cli import app


def invoke(*args: str, input: str | None = None) -> Result:
    """Run the CLI in-process; stdout and stderr are kept apart."""
    return CliRunner().invoke(app, list(args), input=input, catch_exceptions=False)
