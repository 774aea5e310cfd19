"""The upload sandbox: one spawned decoder process, restarted after a crash or a hang."""

from __future__ import annotations

from pathlib import Path

import pytest

from xmr.errors import MediaError
from xmr.server import uploads
from xmr.server.uploads import Sandbox

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "media"


@pytest.fixture
def sandbox():
    box = Sandbox()
    yield box
    box.close()


def test_a_worker_killed_under_another_request_does_not_fail_this_one(sandbox: Sandbox) -> None:
    image = str(FIXTURES / "images" / "gray.png")
    assert sandbox.check(image, "image", "gray.png") == "image"
    pool = sandbox._pool
    for proc in list(pool._processes.values()):  # as a crash on another request's file would
        proc.kill()
        proc.join(10)
    assert sandbox.check(image, None, "gray.png") == "image"  # retried on a fresh worker
    assert sandbox._pool is not pool


def test_a_decode_past_the_limit_is_refused_and_the_worker_replaced(sandbox: Sandbox, monkeypatch) -> None:
    image = str(FIXTURES / "images" / "gray.png")
    sandbox.start()
    monkeypatch.setattr(uploads, "DECODE_TIMEOUT_S", 1e-6)
    with pytest.raises(MediaError, match="gray.png.*longer than"):
        sandbox.check(image, "image", "gray.png")
    assert sandbox._pool is None
    monkeypatch.setattr(uploads, "DECODE_TIMEOUT_S", 60.0)
    assert sandbox.check(image, "image", "gray.png") == "image"


def test_a_reset_of_a_pool_already_replaced_leaves_the_new_one(sandbox: Sandbox) -> None:
    sandbox.start()
    old = sandbox._pool
    sandbox._reset(old)
    sandbox.start()
    new = sandbox._pool
    sandbox._reset(old)  # a second request that saw the same failure
    assert sandbox._pool is new
