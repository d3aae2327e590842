"""The local Hub server under a careless or hostile client: raw HTTP requests, no huggingface_hub in between."""

import base64
import hashlib
import http.client
import json
import logging
import tracemalloc

import pytest

from local_hub import LocalHub


def request(hub, method, path, body=b"", token=True, headers=None):
    """(status, parsed JSON or raw bytes) of one request on a fresh connection."""
    host, port = hub.server.server_address[:2]
    connection = http.client.HTTPConnection(host, port, timeout=30)
    headers = dict(headers or {})
    if token:
        headers["Authorization"] = f"Bearer {hub.token if token is True else token}"
    if isinstance(body, (dict, list)):
        body = json.dumps(body).encode()
        headers.setdefault("Content-Type", "application/json")
    connection.request(method, path, body=body, headers=headers)
    response = connection.getresponse()
    content = response.read()
    connection.close()
    try:
        return response.status, json.loads(content)
    except ValueError:
        return response.status, content


def commit_body(*operations) -> bytes:
    lines = [{"key": "header", "value": {"summary": "probe"}}, *operations]
    return b"\n".join(json.dumps(line).encode() for line in lines)


def inline_file(path: str, content: bytes) -> dict:
    return {"key": "file", "value": {"path": path, "content": base64.b64encode(content).decode(), "encoding": "base64"}}


@pytest.fixture
def hub(tmp_path):
    with LocalHub(tmp_path / "storage", max_request_bytes=1 << 20, max_upload_bytes=32 << 20) as server:
        yield server


def test_it_listens_on_loopback_only(hub):
    assert hub.server.server_address[0] == "127.0.0.1"


def test_writes_need_the_token_it_printed(hub):
    create = {"name": "model", "type": "model"}
    for token in (False, "hf_guessed"):
        assert request(hub, "POST", "/api/repos/create", create, token=token)[0] == 401
        assert request(hub, "GET", "/api/whoami-v2", token=token)[0] == 401
    assert request(hub, "POST", "/api/repos/create", create)[0] == 200
    commit = commit_body(inline_file("notes.txt", b"hello"))
    assert request(hub, "POST", "/api/models/local-user/model/commit/main", commit, token=False)[0] == 401
    assert request(hub, "POST", "/api/models/local-user/model/commit/main", commit)[0] == 200
    # reading a public repository needs no token, as on the Hub
    assert request(hub, "GET", "/local-user/model/resolve/main/notes.txt", token=False) == (200, b"hello")


def test_private_repositories_are_hidden_without_the_token(hub):
    assert request(hub, "POST", "/api/repos/create", {"name": "secret", "private": True})[0] == 200
    assert request(hub, "GET", "/api/models/local-user/secret", token=False)[0] == 404
    assert request(hub, "GET", "/api/models/local-user/secret")[0] == 200


@pytest.mark.parametrize("name", ["..", "a..b", "-lead", "trail.", "x" * 97, "a--b", "model.git", "sp ace"])
def test_repository_names_the_hub_refuses_are_refused(hub, name):
    status, answer = request(hub, "POST", "/api/repos/create", {"name": name})
    assert status == 400 and "invalid repository id" in answer["error"]


@pytest.mark.parametrize("repo_path", ["local-user%2Fa/b", "local-user/..", "%2E%2E/model", "local-user/a%2F..%2Fb"])
def test_repository_ids_in_urls_are_validated(hub, repo_path):
    status, answer = request(hub, "GET", f"/api/models/{repo_path}")
    assert status == 400, answer


@pytest.mark.parametrize("path", ["../escape.txt", "/absolute.txt", "a/../../b", ".git/config", "a//b", "a\\b", ""])
def test_file_paths_the_hub_refuses_are_refused(hub, path):
    assert request(hub, "POST", "/api/repos/create", {"name": "model"})[0] == 200
    status, answer = request(hub, "POST", "/api/models/local-user/model/commit/main", commit_body(inline_file(path, b"x")))
    assert status == 400 and "invalid file path" in answer["error"]
    _, tree = request(hub, "GET", "/api/models/local-user/model/tree/main")
    assert [entry["path"] for entry in tree] == [".gitattributes"]


@pytest.mark.parametrize(
    "route, body",
    [
        ("/api/repos/create", b"{not json"),
        ("/api/repos/create", b"[1, 2]"),
        ("/api/models/local-user/model/preupload/main", b"{\"files\": 3}"),
        ("/api/models/local-user/model/commit/main", b"{\"key\": \"header\"\n garbage"),
        ("/local-user/model.git/info/lfs/objects/batch", b"\xff\xfe"),
        ("/api/validate-yaml", b"{\"content\": 5}"),
    ],
)
def test_malformed_json_gets_a_400_answer(hub, route, body):
    assert request(hub, "POST", "/api/repos/create", {"name": "model"})[0] == 200
    status, answer = request(hub, "POST", route, body, headers={"Content-Type": "application/json"})
    assert status == 400, answer
    assert request(hub, "GET", "/api/models/local-user/model")[0] == 200, "the server still answers"


def test_request_bodies_over_the_limit_are_refused_before_they_are_read(hub):
    host, port = hub.server.server_address[:2]
    connection = http.client.HTTPConnection(host, port, timeout=30)
    connection.putrequest("POST", "/api/models/local-user/model/commit/main")
    connection.putheader("Authorization", f"Bearer {hub.token}")
    connection.putheader("Content-Length", str(150 * 1000 * 1000))
    connection.endheaders()  # the 150 MB body is never sent
    response = connection.getresponse()
    assert response.status == 413 and b"over the limit" in response.read()
    connection.close()


def _lfs_upload_url(hub, content: bytes) -> tuple[str, dict]:
    oid = hashlib.sha256(content).hexdigest()
    batch = {"operation": "upload", "objects": [{"oid": oid, "size": len(content)}], "transfers": ["basic"]}
    status, answer = request(hub, "POST", "/local-user/model.git/info/lfs/objects/batch", batch)
    assert status == 200, answer
    return oid, answer["objects"][0]


def test_lfs_uploads_are_size_limited_signed_and_streamed(hub, tmp_path):
    assert request(hub, "POST", "/api/repos/create", {"name": "model"})[0] == 200
    too_big = {"oid": "0" * 64, "size": (32 << 20) + 1}
    _, answer = request(hub, "POST", "/local-user/model.git/info/lfs/objects/batch", {"operation": "upload", "objects": [too_big]})
    assert answer["objects"][0]["error"]["code"] == 413 and "actions" not in answer["objects"][0]

    content = bytes(range(256)) * (24 << 12)  # 24 MiB
    oid, entry = _lfs_upload_url(hub, content)
    href = entry["actions"]["upload"]["href"].split(str(hub.server.server_address[1]), 1)[1]
    forged = href[: -64] + "0" * 64
    assert request(hub, "PUT", forged, b"x", token=False)[0] == 403
    source = tmp_path / "weights.bin"
    source.write_bytes(content)
    tracemalloc.start()
    with open(source, "rb") as stream:
        status, _ = request(hub, "PUT", href, stream, token=False, headers={"Content-Length": str(len(content))})
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert status == 200
    assert peak < 8 << 20, f"the server held {peak / 2**20:.0f} MiB of a 24 MiB upload in memory"
    assert (hub.server.store.blobs / oid).read_bytes() == content


def test_a_regular_file_over_10_mb_must_go_through_lfs(tmp_path):
    with LocalHub(tmp_path / "storage", max_request_bytes=64 << 20) as hub:
        assert request(hub, "POST", "/api/repos/create", {"name": "model"})[0] == 200
        status, answer = request(
            hub, "POST", "/api/models/local-user/model/commit/main", commit_body(inline_file("big.txt", b"x" * 10_000_001))
        )
        assert status == 400 and "upload it with LFS" in answer["error"]


def test_blobs_no_commit_refers_to_are_removed_at_start(tmp_path):
    storage = tmp_path / "storage"
    with LocalHub(storage) as hub:
        assert request(hub, "POST", "/api/repos/create", {"name": "model"})[0] == 200
        kept_oid = hashlib.sha256(b"kept").hexdigest()
        assert request(hub, "POST", "/api/models/local-user/model/commit/main", commit_body(inline_file("a.txt", b"kept")))[0] == 200
        orphan = b"uploaded, never committed"
        oid, entry = _lfs_upload_url(hub, orphan)
        href = entry["actions"]["upload"]["href"].split(str(hub.server.server_address[1]), 1)[1]
        assert request(hub, "PUT", href, orphan, token=False)[0] == 200
        assert (storage / "blobs" / oid).exists()
    with LocalHub(storage) as hub:
        assert not (storage / "blobs" / oid).exists()
        assert (storage / "blobs" / kept_oid).exists()
        assert request(hub, "GET", "/local-user/model/resolve/main/a.txt", token=False) == (200, b"kept")


def test_a_truncated_state_file_does_not_stop_the_server(tmp_path, caplog):
    storage = tmp_path / "storage"
    with LocalHub(storage) as hub:
        assert request(hub, "POST", "/api/repos/create", {"name": "first"})[0] == 200
        assert request(hub, "POST", "/api/repos/create", {"name": "second"})[0] == 200
    state = storage / "state.json"
    state.write_bytes(state.read_bytes()[:40])
    with caplog.at_level(logging.ERROR, logger="local_hub.server"):
        with LocalHub(storage) as hub:
            assert "state.json is damaged" in caplog.text and "state before the last change" in caplog.text
            assert request(hub, "GET", "/api/models/local-user/first")[0] == 200
            assert request(hub, "POST", "/api/repos/create", {"name": "third"})[0] == 200
    assert list(storage.glob("state.damaged-*.json")), "the damaged file is kept for inspection"
