"""An index directory turned read-only: `xmr index` says so in one line with its own exit
code and changes nothing, and search still works.

Root ignores file modes, so under root the commands run as an unprivileged user
(through util-linux ``setpriv``) who owns the index, as a real owner would.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from cli_helpers import invoke
from test_crash import make_big_tree

from xmr.errors import ExitCode

pytestmark = pytest.mark.usefixtures("fake_encoders")
REPO = Path(__file__).resolve().parent.parent


@pytest.fixture
def shared_dir() -> Iterator[Path]:
    """A folder an unprivileged user can reach (pytest's tmp_path is root's alone)."""
    d = Path(tempfile.mkdtemp(prefix="xmr-ro-"))
    os.chmod(d, 0o755)
    try:
        yield d
    finally:
        for top, dirs, _ in os.walk(d):
            for name in dirs:
                os.chmod(os.path.join(top, name), 0o700)
        shutil.rmtree(d)


def _as_owner(index: Path, args: list[str]) -> subprocess.CompletedProcess[str]:
    """Run `xmr ARGS` as the index's owner."""
    env = {**os.environ, "XMR_HOME": str(index), "PYTHONPATH": f"{REPO}{os.pathsep}{REPO / 'tests'}"}
    cmd = [sys.executable, "-m", "xmr", *args]
    if os.geteuid() == 0:
        setpriv = shutil.which("setpriv")
        assert setpriv, "util-linux setpriv is needed to drop root privileges for this test"
        cmd = [setpriv, "--reuid=nobody", "--regid=nogroup", "--clear-groups", *cmd]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=env)


def _contents(index: Path) -> dict[str, str]:
    return {
        str(p.relative_to(index)): hashlib.blake2b(p.read_bytes()).hexdigest() for p in index.rglob("*") if p.is_file()
    }


def test_index_into_a_read_only_index_dir(shared_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    root = shared_dir / "tree"
    make_big_tree(root, 40)
    index = shared_dir / "index"
    monkeypatch.setenv("XMR_HOME", str(index))
    assert invoke("index", str(root), "--workers", "0").exit_code == 0
    make_big_tree(root / "new", 5)  # there is work to do
    if os.geteuid() == 0:
        nobody = int(subprocess.run(["id", "-u", "nobody"], capture_output=True, text=True).stdout)
        for p in [index, *index.rglob("*"), root, *root.rglob("*")]:
            os.chown(p, nobody, -1)
    before = _contents(index)
    for top, dirs, files in os.walk(index):  # the owner turns it read-only
        for name in files:
            os.chmod(os.path.join(top, name), 0o400)
        for name in dirs:
            os.chmod(os.path.join(top, name), 0o500)
    os.chmod(index, 0o500)

    res = _as_owner(index, ["index", str(root), "--workers", "0"])
    assert res.returncode == ExitCode.READ_ONLY == 13, res.stderr
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"xmr: error: {index}: the index is read-only"), res.stderr
    assert "Traceback" not in res.stderr
    assert _contents(index) == before  # nothing was written

    res = _as_owner(index, ["search", "alpha bravo", "--paths"])
    assert res.returncode == 0, res.stderr
    assert res.stdout.splitlines() and all(Path(p).is_file() for p in res.stdout.splitlines())
    assert _contents(index) == before
