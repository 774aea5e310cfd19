"""`xmr serve`'s security: token, ids only, nothing outside the index, same origin, upload cap, loopback."""

from __future__ import annotations

import http.client
import os
import shutil
import sqlite3
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from cli_helpers import invoke
from server_helpers import Server, index_media, running_server

from xmr.errors import ExitCode, UsageError
from xmr.server.run import check_host

SECRET = b"TOP-SECRET-OUTSIDE-THE-INDEX\n"


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Server, Path, Path]]:
    base = tmp_path_factory.mktemp("secure")
    secret = base / "outside" / "secret.txt"
    secret.parent.mkdir()
    secret.write_bytes(SECRET)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("XMR_BACKEND_CLIP", "fake_encoders:FakeClip")
        mp.setenv("XMR_BACKEND_CLAP", "fake_encoders:FakeClap")
        mp.setenv("XMR_OFFLINE", "1")
        media = index_media(base / "media", base / "index")
        with running_server(base / "index", "--max-upload-mb", "0.03") as server:  # ~31 KB
            yield server, media, secret


@pytest.fixture
def server(served: tuple[Server, Path, Path], fake_encoders: None) -> Server:
    return served[0]


def _ids(server: Server) -> dict[str, int]:
    doc = server.search({"q": "x", "k": 100}).json()
    return {r["path"]: r["file_id"] for r in doc["results"]}


def test_every_api_call_needs_the_token(server: Server) -> None:
    file_id = next(iter(_ids(server).values()))
    calls = [
        ("POST", "/api/search", b'{"q": "x"}'),
        ("GET", "/api/status", None),
        ("GET", f"/api/files/{file_id}", None),
        ("GET", f"/api/files/{file_id}?kind=thumb", None),
        ("GET", "/api/openapi.json", None),
        ("GET", "/api/ping", None),
    ]
    for method, path, body in calls:
        plain = server.request(method, path, body=body, token=False, headers={"Content-Type": "application/json"})
        assert plain.status == 401, path
        wrong = server.request(method, path, body=body, token=False, headers={"Authorization": "Bearer nope"})
        assert wrong.status == 401, path
        assert plain.body == b'{"error":"missing or wrong token"}'  # no data in the refusal
    assert server.request("GET", "/api/status").status == 200


def test_no_cookie_is_set_or_accepted_and_other_local_origins_are_refused(server: Server) -> None:
    page = server.request("GET", "/", token=False)
    assert page.status == 200 and server.token.encode() not in page.body  # the page holds no secret
    assert "set-cookie" not in page.headers
    assert "script-src 'self'" in page.headers["content-security-policy"]
    host, port = server.host_port
    file_id = next(iter(_ids(server).values()))
    # the cookie earlier versions set: a browser sends it to every port of 127.0.0.1, so it must not work
    old_cookie = {"Cookie": f"xmr_token_{port}={server.token}"}
    for path in ("/api/status", f"/api/files/{file_id}", f"/api/files/{file_id}?kind=thumb"):
        assert server.request("GET", path, token=False, headers=old_cookie).status == 401, path
    # the page load clears it
    cleared = server.request("GET", "/", token=False, headers=old_cookie).headers["set-cookie"]
    assert cleared.startswith(f"xmr_token_{port}=") and "max-age=0" in cleared.lower()
    # a page served by another local port, even one holding the token, is another origin
    other = {"Origin": f"http://127.0.0.1:{port + 1 if port < 65535 else port - 1}"}
    assert server.request("GET", "/api/status", headers=other).status == 403
    assert server.search({"q": "x"}, headers=other).status == 403
    assert server.request("POST", "/api/session").status == 404  # the cookie endpoint is gone


def test_results_carry_signed_file_urls_that_only_open_what_they_name(server: Server) -> None:
    doc = server.search({"q": "x", "k": 100}).json()
    image = next(r for r in doc["results"] if r["modality"] == "image")
    audio = next(r for r in doc["results"] if r["modality"] == "audio")
    text = next(r for r in doc["results"] if r["modality"] == "text")
    assert set(image["urls"]) == {"original", "thumb"} and set(audio["urls"]) == {"original", "audio"}
    assert set(text["urls"]) == {"original"}
    original = server.request("GET", image["urls"]["original"], token=False)
    assert original.status == 200 and original.body == Path(image["path"]).read_bytes()
    thumb = server.request("GET", image["urls"]["thumb"], token=False)
    assert thumb.status == 200 and thumb.headers["content-type"] == "image/jpeg"
    assert server.request("GET", audio["urls"]["audio"], token=False).status == 200
    url = image["urls"]["thumb"]
    path, _, query = url.partition("?")
    params = dict(p.split("=", 1) for p in query.split("&"))
    sig = params["sig"]
    flipped = sig[:-1] + ("A" if sig[-1] != "A" else "B")
    forged = [
        url.replace(f"sig={sig}", f"sig={flipped}"),  # a wrong signature
        url.replace(f"sig={sig}", "sig="),  # none
        url.replace("kind=thumb", "kind=original"),  # another kind of the same file
        url.replace(path, f"/api/files/{text['file_id']}"),  # another file
        url.replace(f"exp={params['exp']}", f"exp={int(params['exp']) + 3600}"),  # a later expiry
        url.replace(f"exp={params['exp']}", f"exp={int(params['exp']) - 3600}"),  # an earlier one
        url + "&kind=original",  # a second kind
        path + "?kind=thumb",  # no signature at all
    ]
    for bad in forged:
        assert server.request("GET", bad, token=False).status == 401, bad
    # a signed URL is for reading only, and never reaches another endpoint
    assert server.request("POST", url, token=False).status == 401
    assert server.request("GET", "/api/status?" + query, token=False).status == 401
    # from another origin it is refused like any call
    other = {"Sec-Fetch-Site": "same-site"}
    assert server.request("GET", url, token=False, headers=other).status == 403


def test_an_expired_signed_url_is_refused(tmp_path: Path) -> None:
    import time

    from xmr.server.app import ServerConfig, _Guard
    from xmr.server.signing import UrlSigner

    signer = UrlSigner(b"k" * 32, ttl_s=60)
    guard = _Guard(None, ServerConfig(tmp_path, "s3cret", host="127.0.0.1", port=9, signer=signer))

    def refusal(url: str) -> object:
        path, _, query = url.partition("?")
        scope = {"type": "http", "path": path, "method": "GET", "query_string": query.encode()}
        return guard._refusal(scope, {"host": "127.0.0.1:9"})

    fresh = signer.url(7, "thumb")
    assert refusal(fresh) is None
    stale = signer.url(7, "thumb", now=time.time() - 2 * 3600 - 120)  # expired (the expiry rounds up to the hour)
    assert refusal(stale).status_code == 401
    assert UrlSigner(b"other" * 8).verify(*fresh.split("?")) is False  # another server's secret


def test_the_favicon_is_served_and_linked_so_the_page_logs_no_404(server: Server) -> None:
    icon = server.request("GET", "/favicon.ico", token=False)
    assert icon.status == 200 and icon.headers["content-type"].startswith("image/svg+xml")
    assert icon.body.startswith(b"<svg")
    page = server.request("GET", "/", token=False).body.decode()
    assert '<link rel="icon" href="/static/favicon.svg"' in page  # what the page asks for
    assert server.request("GET", "/static/favicon.svg", token=False).body == icon.body


def test_an_id_that_is_not_indexed_gets_404(server: Server, served: tuple[Server, Path, Path]) -> None:
    import sqlite3

    from xmr import paths

    db = sqlite3.connect(paths.catalogue_path(server.index_dir))
    failed = [i for (i,) in db.execute("SELECT id FROM files WHERE status != 'indexed'")]
    top = db.execute("SELECT MAX(id) FROM files").fetchone()[0]
    db.close()
    assert failed  # the broken fixtures are recorded as errors, not servable
    for file_id in [*failed, top + 1, 10**9, 0, -1]:
        for kind in ("original", "thumb", "audio"):
            reply = server.request("GET", f"/api/files/{file_id}?kind={kind}")
            assert reply.status == 404, (file_id, kind)


def test_crafted_paths_read_nothing_outside_the_index(server: Server, served: tuple[Server, Path, Path]) -> None:
    _, media, secret = served
    rel = os.path.relpath(secret, media)
    some_id = next(iter(_ids(server).values()))
    for path in [
        f"/api/files/{rel}",
        f"/api/files/..%2F..%2F{rel}",
        f"/api/files/{some_id}/../../{rel}",
        f"/api/files/{secret}",
        f"/api/files/{some_id}?kind=../../{rel}",
        f"/api/files/{some_id}?kind=original&path={secret}",
        f"/static/../../{rel}",
        f"/static/%2e%2e/%2e%2e/{rel}",
        f"/{rel}",
    ]:
        reply = server.request("GET", path)
        assert SECRET not in reply.body, path
        assert reply.status in (400, 404) or (reply.status == 200 and "kind=original&path" in path), path
    for q in [str(secret), "../../" + rel, f"./{rel}", "~/.ssh/id_rsa"]:
        doc = server.search({"q": q, "k": 3}).json()
        assert [p["kind"] for p in doc["query"]] == ["text"], q  # a query string never names a file
        assert SECRET.decode().strip() not in str(doc)
    assert server.search({"q": "x", "under": str(secret.parent)}).json()["results"] == []
    bad_part = server.search({"parts": [{"kind": "text_file", "value": str(secret)}]})
    assert bad_part.status == 400
    concepts = server.search({"q": "x", "concepts_file": str(secret)})
    assert concepts.status == 400 and SECRET not in concepts.body


def test_a_symlink_swapped_in_for_an_indexed_file_is_refused(
    server: Server, served: tuple[Server, Path, Path], tmp_path: Path
) -> None:
    _, media, secret = served
    ids = _ids(server)
    target = media / "text" / "bread.md"
    file_id = ids[str(target)]
    saved = tmp_path / "saved"
    shutil.copy2(target, saved)
    st = target.stat()
    try:
        target.unlink()
        target.symlink_to(secret)  # the final component is a link
        reply = server.request("GET", f"/api/files/{file_id}")
        assert reply.status == 409 and SECRET not in reply.body
        target.unlink()
        # the parent folder replaced by a link to a folder holding a same-named file of the same size and mtime
        text_dir = media / "text"
        moved = tmp_path / "text-moved"
        text_dir.rename(moved)
        decoy = tmp_path / "decoy"
        decoy.mkdir()
        (decoy / "bread.md").write_bytes(SECRET.ljust(st.st_size, b"!")[: st.st_size])
        os.utime(decoy / "bread.md", ns=(st.st_atime_ns, st.st_mtime_ns))
        text_dir.symlink_to(decoy)
        reply = server.request("GET", f"/api/files/{file_id}")
        assert reply.status == 409 and SECRET not in reply.body
        assert "outside" in reply.json()["error"]
        text_dir.unlink()
        moved.rename(text_dir)
    finally:
        if target.is_symlink():
            target.unlink()
        if not target.exists():
            shutil.copy2(saved, target)
    assert server.request("GET", f"/api/files/{file_id}").body == saved.read_bytes()


def test_a_changed_file_is_not_served(server: Server, served: tuple[Server, Path, Path], tmp_path: Path) -> None:
    media = served[1]
    target = media / "text" / "astronomy.txt"
    file_id = _ids(server)[str(target)]
    saved = tmp_path / "saved"
    shutil.copy2(target, saved)
    try:
        target.write_bytes(SECRET)
        reply = server.request("GET", f"/api/files/{file_id}")
        assert reply.status == 409 and "changed since indexing" in reply.json()["error"]
    finally:
        shutil.copy2(saved, target)


def test_cross_origin_requests_are_refused(server: Server) -> None:
    own = server.url
    body = b'{"q": "x"}'
    json_ct = {"Content-Type": "application/json"}
    for headers in [
        {"Origin": "http://evil.example"},
        {"Origin": own.replace("127.0.0.1", "127.0.0.2")},
        {"Origin": "null"},
        {"Origin": own, "Sec-Fetch-Site": "cross-site"},
        {"Sec-Fetch-Site": "same-site"},
    ]:
        reply = server.request("POST", "/api/search", body=body, headers={**json_ct, **headers})
        assert reply.status == 403, headers
        assert b"results" not in reply.body
    assert server.request("POST", "/api/search", body=body, headers={**json_ct, "Origin": own}).status == 200
    same = {**json_ct, "Origin": own, "Sec-Fetch-Site": "same-origin"}
    assert server.request("POST", "/api/search", body=body, headers=same).status == 200
    # DNS rebinding: a foreign name that resolves to 127.0.0.1 still carries its own Host
    host, port = server.host_port
    assert server.request("GET", "/api/status", headers={"Host": f"evil.example:{port}"}).status == 421


def test_an_oversize_upload_gets_413(server: Server, served: tuple[Server, Path, Path]) -> None:
    media = served[1]
    big = (media / "audio" / "chord_a_minor.flac").read_bytes()  # 48 KB > 31 KB cap
    assert server.upload("file", "big.flac", big).status == 413
    # without a Content-Length (chunked), the cap holds while the body streams in
    host, port = server.host_port
    conn = http.client.HTTPConnection(host, port, timeout=30)
    try:
        conn.putrequest("POST", "/api/search")
        conn.putheader("Authorization", f"Bearer {server.token}")
        conn.putheader("Content-Type", "application/json")
        conn.putheader("Transfer-Encoding", "chunked")
        conn.endheaders()
        for _ in range(8):
            chunk = b" " * 8192
            conn.send(b"%x\r\n%s\r\n" % (len(chunk), chunk))
        conn.send(b"0\r\n\r\n")
        assert conn.getresponse().status == 413
    finally:
        conn.close()
    small = media / "images" / "cmyk.jpg"
    assert server.upload("file", small.name, small.read_bytes()).status == 200


def _cache_rows(index_dir: Path) -> tuple[int, int]:
    db = index_dir / "cache" / "queries.db"
    if not db.exists():
        return (0, 0)
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as conn:
        return tuple(conn.execute(f"SELECT count(*) FROM {t}").fetchone()[0] for t in ("embeddings", "answers"))


def test_uploads_are_never_stored(server: Server, served: tuple[Server, Path, Path]) -> None:
    media = served[1]
    before = {p for p in server.index_dir.rglob("*") if "thumbnails" not in p.parts}
    tmp_before = set(os.listdir(tempfile.gettempdir()))
    cached_before = _cache_rows(server.index_dir)
    upload = media / "images" / "rgba.png"
    assert server.upload("image", "mine.png", upload.read_bytes()).status == 200
    # nothing derived from it either: no query embedding, no cached answer
    assert _cache_rows(server.index_dir) == cached_before
    after = {p for p in server.index_dir.rglob("*") if "thumbnails" not in p.parts}
    assert {p.name for p in after - before} <= {p.name for p in before} | {"catalogue.db-wal", "catalogue.db-shm"}
    leftovers = [n for n in set(os.listdir(tempfile.gettempdir())) - tmp_before if n.startswith("xmr-upload-")]
    assert leftovers == []
    assert server.search({"q": "a text query is cached", "k": 3}).status == 200
    assert _cache_rows(server.index_dir) != cached_before  # (the count can see a new entry)


def test_a_non_loopback_host_needs_allow_remote(monkeypatch: pytest.MonkeyPatch) -> None:
    res = invoke("serve", "--host", "0.0.0.0")
    assert res.exit_code == ExitCode.USAGE
    assert "refusing to listen on 0.0.0.0" in res.stderr and "--allow-remote" in res.stderr
    assert len(res.stderr.strip().splitlines()) == 1
    for host in ("192.168.1.10", "::", "example.com"):
        with pytest.raises(UsageError):
            check_host(host, allow_remote=False)
    for host in ("127.0.0.1", "localhost", "::1", "127.0.0.5"):
        check_host(host, allow_remote=False)
    started: list[object] = []
    monkeypatch.setattr("xmr.server.run.serve", lambda *a, **k: started.append(a[2]))
    res = invoke("serve", "--host", "0.0.0.0", "--allow-remote", "--port", "0")
    assert res.exit_code == 0 and started and started[0].host == "0.0.0.0"
    assert "warning: listening on 0.0.0.0" in res.stderr


def test_allow_remote_on_a_wildcard_accepts_the_name_clients_use_and_still_checks_origin(tmp_path: Path) -> None:
    from xmr.server.app import ServerConfig, _Guard

    token = "s3cret"
    scope = {"type": "http", "path": "/api/search"}
    auth = {"authorization": f"Bearer {token}"}
    remote = _Guard(None, ServerConfig(tmp_path, token, host="0.0.0.0", port=9, any_host=True))
    assert remote._refusal(scope, {**auth, "host": "192.168.1.5:9", "origin": "http://192.168.1.5:9"}) is None
    assert remote._refusal(scope, {**auth, "host": "192.168.1.5:9"}) is None
    assert remote._refusal(scope, {**auth, "host": "192.168.1.5:9", "origin": "http://evil.example"}).status_code == 403
    assert remote._refusal(scope, {"host": "192.168.1.5:9"}).status_code == 401
    local = _Guard(None, ServerConfig(tmp_path, token, host="127.0.0.1", port=9))
    assert local._refusal(scope, {**auth, "host": "192.168.1.5:9"}).status_code == 421
    assert local._refusal(scope, {**auth, "host": "127.0.0.1:9", "origin": "http://127.0.0.1:9"}) is None
