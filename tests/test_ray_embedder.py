"""``xmr index --executor ray``: a 2-node local Ray cluster on loopback indexes the fixtures;
the catalogue equals a local run's, and a worker killed mid-run loses and duplicates nothing."""

from __future__ import annotations

import os
import shutil
import signal
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from xmr.index.options import IndexOptions
from xmr.indexer import index
from xmr.settings import Settings

REPO = Path(__file__).resolve().parent.parent
os.environ["RAY_USAGE_STATS_ENABLED"] = "0"
# Ray turns 127.0.0.1 into the host's routable address when connecting; with this (read when
# ray is imported; nodes inherit it) it keeps loopback. Checked below through ray.nodes().
os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"

import ray  # noqa: E402  (the test extra installs it)
from ray.cluster_utils import Cluster  # noqa: E402

from xmr.index.ray_embedder import RayEmbedder  # noqa: E402

pytestmark = pytest.mark.usefixtures("fake_encoders")


@pytest.fixture(scope="module")
def cluster() -> Iterator[Cluster]:
    loopback = {"node_ip_address": "127.0.0.1", "num_cpus": 1}
    # Why a start can fail: a raylet registers with the GCS only once its two Python agents
    # (dashboard agent, runtime-env agent) have imported and reported their ports, and Ray
    # allows 30 s for that (ray/_private/node.py: raylet_start_wait_time_s = 30, not
    # configurable). On this 2-core machine at load ~10-13 those imports took 9 s and a
    # whole head start 21-30 s (13:34 UTC), so a start can miss the deadline. Fewer
    # processes start beside them on the head (no autoscaler monitor, no log monitor: the
    # driver does not want worker logs), and a start that timed out is tried once more.
    head = {"include_dashboard": False, "include_log_monitor": False, "no_monitor": True}
    for attempt in range(2):
        c = Cluster(initialize_head=False)
        try:
            c.add_node(**loopback, **head)
            c.add_node(**loopback)
            c.wait_for_nodes()
            break
        except Exception as exc:
            c.shutdown()
            if attempt or "timed out during startup" not in str(exc):
                raise
    yield c
    c.shutdown()


@pytest.fixture
def connected(cluster: Cluster) -> Iterator[Cluster]:
    yield cluster
    ray.shutdown()


def _runtime_env(**env: str) -> dict:
    # the workers import the test encoders (tests/) and this tree
    path = os.pathsep.join([str(REPO / "tests"), str(REPO), os.environ.get("PYTHONPATH", "")])
    return {"env_vars": {"PYTHONPATH": path, **env}}


def _catalogue(index_dir: Path) -> tuple[dict, dict]:
    con = sqlite3.connect(index_dir / "catalogue.db")
    try:
        files = {p: (h, st) for p, h, st in con.execute("SELECT path, hash, status FROM files")}
        vecs = {}
        for h, space, kind, seq, blob in con.execute(
            "SELECT s.hash, s.space, s.kind, s.seq, v.vector FROM vectors v JOIN segments s ON s.id = v.segment_id"
        ):
            key = (h, space, kind, seq)
            assert key not in vecs, f"{key} embedded twice"
            vecs[key] = np.frombuffer(blob, np.float32)
        return files, vecs
    finally:
        con.close()


@pytest.fixture
def media(tmp_path: Path) -> Path:
    return Path(shutil.copytree(REPO / "fixtures" / "media", tmp_path / "media"))


def _same_as_local(media: Path, tmp_path: Path, ray_dir: Path) -> None:
    local_dir = tmp_path / "local"
    index([media], index_dir=local_dir, options=IndexOptions(workers=0))
    want_files, want_vecs = _catalogue(local_dir)
    got_files, got_vecs = _catalogue(ray_dir)
    assert got_files == want_files and len(want_files) > 40
    assert sum(st == "indexed" for _, st in got_files.values()) > 30
    assert got_vecs.keys() == want_vecs.keys()
    for key, vec in want_vecs.items():
        np.testing.assert_allclose(got_vecs[key], vec, atol=1e-5)


def test_nodes_advertise_loopback_only(connected: Cluster) -> None:
    ray.init(address=connected.address)
    nodes = [n for n in ray.nodes() if n["Alive"]]
    assert len(nodes) == 2
    assert {n["NodeManagerAddress"] for n in nodes} == {"127.0.0.1"}


@pytest.mark.parametrize("transfer", ["path", "bytes"])
def test_a_two_node_cluster_indexes_like_a_local_run(
    connected: Cluster, media: Path, tmp_path: Path, transfer: str
) -> None:
    options = IndexOptions(workers=0)
    embedder = RayEmbedder(
        Settings.from_env(), options, address=connected.address, transfer=transfer, runtime_env=_runtime_env()
    )
    hosts = {ray.get(a.pid.remote()) for a in embedder.start()}
    assert len(embedder.actors) == 2 and len(hosts) == 2  # one actor per node
    index([media], index_dir=tmp_path / "ray", options=options, embedder=embedder)
    _same_as_local(media, tmp_path, tmp_path / "ray")


class _KillOnFirstCommit:
    """Progress that kills one actor's process when the first batch is committed."""

    def __init__(self, pid: int) -> None:
        self.pid, self.total, self.done, self.killed_at = pid, 0, 0, None

    def phase(self, name: str, total: int | None) -> None:
        if name == "indexing":
            self.total = total or 0

    def advance(self, n: int = 1) -> None:
        self.done += n
        if self.killed_at is None:
            os.kill(self.pid, signal.SIGKILL)
            self.killed_at = self.done

    def warn(self, message: str) -> None:
        pass


def test_a_worker_killed_mid_run_loses_and_duplicates_nothing(connected: Cluster, media: Path, tmp_path: Path) -> None:
    options = IndexOptions(workers=0)
    # slow encoders keep calls in flight on both actors when the kill comes
    env = _runtime_env(FAKE_ENCODER_DELAY="0.05")
    embedder = RayEmbedder(Settings.from_env(), options, address=connected.address, runtime_env=env)
    actors = embedder.start()
    victim = ray.get(actors[1].pid.remote())
    progress = _KillOnFirstCommit(victim)
    report = index([media], index_dir=tmp_path / "ray", options=options, embedder=embedder, progress=progress)
    assert progress.killed_at is not None and progress.killed_at < progress.total  # mid-run
    assert ray.get(actors[1].pid.remote()) != victim  # restarted
    assert not [e for e in report.errors if "Ray" in e.get("reason", "")]
    _same_as_local(media, tmp_path, tmp_path / "ray")  # every file once, no vector twice


def test_an_unknown_executor_is_a_usage_error(media: Path) -> None:
    from cli_helpers import invoke

    res = invoke("index", str(media), "--executor", "spark://x")
    assert res.exit_code != 0 and "--executor" in res.stderr and "ray" in res.stderr


def test_calls_grow_to_the_target_duration_and_shrink_near_the_end() -> None:
    from xmr.index.ray_embedder import CHUNK_FILES, MAX_CHUNK_FILES, TARGET_CALL_S, _ChunkSizer

    sizer = _ChunkSizer(total=100_000, actors=2)
    assert sizer.size() == CHUNK_FILES  # nothing measured: small first calls, results stream early
    sizer.observe(seconds=0.08, files=8)  # 10 ms a file
    assert sizer.size() == round(TARGET_CALL_S / 0.010)  # a call of ~TARGET_CALL_S
    for _ in range(50):
        sizer.observe(seconds=0.008, files=8)  # files got cheaper: calls grow, up to the cap
    assert sizer.size() == MAX_CHUNK_FILES
    for _ in range(50):
        sizer.observe(seconds=80.0, files=8)  # 10 s a file (long videos): the smallest calls
    assert sizer.size() == CHUNK_FILES
    sizer = _ChunkSizer(total=1_000, actors=2)
    sizer.observe(seconds=0.008, files=8)
    big = sizer.size()
    sizer.sent(1_000 - 60)  # 60 files left for 2 actors: no call takes more than its share
    assert CHUNK_FILES <= sizer.size() < big and sizer.size() * 2 * 3 <= 60
