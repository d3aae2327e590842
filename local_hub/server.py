"""
A Hub-compatible HTTP server for one machine.

It implements the routes that `huggingface_hub` (2.x, with `HF_HUB_DISABLE_XET=1`), `transformers` and `datasets` call
to create repositories, push commits (regular and LFS files), list and resolve files and pin revisions: enough for
`push_to_hub`, `upload_folder`, `from_pretrained`, `snapshot_download`, `Dataset.push_to_hub` and `load_dataset` to
run unchanged against it. Point the clients at it with `HF_ENDPOINT=http://127.0.0.1:PORT`, any `HF_TOKEN`, and
`HF_HUB_DISABLE_XET=1`, set before those libraries are imported.

Storage: file contents live in `STORAGE/blobs/<sha256>`; repositories, commits and branches in `STORAGE/state.json`,
rewritten atomically after every change (the state before the last change is kept as `state.previous.json`), so a
server restarted on the same folder serves the same repositories. A damaged `state.json` is set aside and the previous
state served, with an error in the log; blobs no commit refers to (uploads never committed) are removed at start.

Like the Hub it refuses: writes (and private reads) without the token the server prints at start (`Authorization:
Bearer TOKEN`, what `HF_TOKEN` makes the clients send); repository ids and file paths the Hub would refuse (`..`,
a leading `/`, `.git`, more than one `/` in an id); regular files over 10 MB inline in a commit, request bodies over
`max_request_bytes`, LFS uploads over `max_upload_bytes` (streamed to disk, never held in memory); malformed JSON
(400). It only listens on 127.0.0.1.
"""

import base64
import hashlib
import hmac
import json
import logging
import os
import re
import secrets
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, unquote, urlsplit

import yaml

logger = logging.getLogger(__name__)

USER = "local-user"
REPO_TYPES = {"models": "model", "datasets": "dataset", "spaces": "space"}
URL_PREFIXES = {"model": "", "dataset": "datasets/", "space": "spaces/"}
LFS_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".parquet", ".arrow", ".png", ".jpg", ".jpeg", ".npy", ".zip")
LFS_MIN_SIZE = 1 << 20
INITIAL_ATTRIBUTES = b"*.safetensors filter=lfs diff=lfs merge=lfs -text\n*.parquet filter=lfs diff=lfs merge=lfs -text\n"
HOST = "127.0.0.1"
MAX_REGULAR_FILE_BYTES = 10 * 1000 * 1000  # the Hub's limit for a file sent inline (larger ones go through LFS)
MAX_REQUEST_BYTES = 64 << 20
MAX_UPLOAD_BYTES = 5 << 30
NAME_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,95}")
CHUNK_BYTES = 1 << 20


def _safe_io():
    """The project's atomic writes, imported at the first write: importing `modeling_ivt` loads transformers, which
    takes seconds, and the server must listen at once (clients started right after it must find it)."""
    from modeling_ivt import safe_io

    return safe_io


def repo_id_problem(repo_id: str) -> str | None:
    """Why the Hub would refuse `repo_id` ("namespace/name"), or None."""
    parts = repo_id.split("/")
    if len(parts) != 2:
        return f"repository id {repo_id!r} must be namespace/name"
    for part in parts:
        if not NAME_PATTERN.fullmatch(part) or ".." in part or "--" in part or part.endswith((".", "-", ".git")):
            return (
                f"invalid repository id {repo_id!r}: letters, digits, '-', '_' and '.', at most 96 per part, "
                "starting with a letter or digit, no '--' or '..', not ending in '.', '-' or '.git'"
            )
    return None


def path_problem(path) -> str | None:
    """Why the Hub would refuse `path` as a file path in a repository, or None."""
    if not isinstance(path, str) or not path:
        return f"invalid file path {path!r}"
    parts = path.split("/")
    if path.startswith("/") or "\\" in path or "\0" in path or any(part in ("", ".", "..") for part in parts):
        return f"invalid file path {path!r}: a relative path without '.', '..', empty parts or backslashes"
    if parts[0] == ".git":
        return f"invalid file path {path!r}: nothing may be written under .git"
    return None


def git_blob_oid(content: bytes) -> str:
    """The git object id of a file, as the Hub reports it for regular (non-LFS) files."""
    return hashlib.sha1(b"blob %d\0" % len(content) + content).hexdigest()


class HubError(Exception):
    def __init__(self, status: int, message: str, error_code: str | None = None, **extra):
        super().__init__(message)
        self.status, self.message, self.error_code, self.extra = status, message, error_code, extra


class HubStore:
    """Repositories as chains of commits, each a full mapping path -> file record; contents in a blob folder."""

    def __init__(self, storage: Path):
        self.storage = Path(storage)
        self.blobs = self.storage / "blobs"
        self.blobs.mkdir(parents=True, exist_ok=True)
        self.lock = threading.RLock()
        self.state_file = self.storage / "state.json"
        self.previous_state_file = self.storage / "state.previous.json"
        self.repos, trusted = self._load_state()
        if trusted:
            self._remove_orphan_blobs()

    @staticmethod
    def _read_state(path: Path) -> dict:
        repos = json.loads(path.read_text(encoding="utf-8"))["repos"]
        if not isinstance(repos, dict):
            raise ValueError("'repos' is not an object")
        return repos

    def _load_state(self) -> tuple[dict, bool]:
        """The repositories, and whether they are the full record (so that unreferenced blobs are garbage)."""
        if not self.state_file.exists():
            return {}, not self.previous_state_file.exists()
        try:
            return self._read_state(self.state_file), True
        except (OSError, ValueError, KeyError, TypeError) as error:
            damaged = self.state_file.with_name(f"state.damaged-{time.strftime('%Y%m%d-%H%M%S')}.json")
            os.replace(self.state_file, damaged)
            logger.error("%s is damaged (%s): set aside as %s", self.state_file, error, damaged.name)
        try:
            repos = self._read_state(self.previous_state_file)
        except (OSError, ValueError, KeyError, TypeError) as error:
            logger.error("no usable previous state (%s): serving no repositories; blobs are kept", error)
            return {}, False
        logger.error("serving %s, the state before the last change", self.previous_state_file.name)
        return repos, False

    def _remove_orphan_blobs(self) -> None:
        referenced = {
            record["sha256"]
            for repo in self.repos.values()
            for commit in repo["commits"].values()
            for record in commit["files"].values()
        }
        removed = 0
        for path in self.blobs.iterdir():
            if path.name not in referenced:
                path.unlink()
                removed += 1
        if removed:
            logger.info("removed %d blobs that no commit refers to (uploads never committed)", removed)

    def _save(self):
        if self.state_file.exists():
            self.previous_state_file.unlink(missing_ok=True)
            os.link(self.state_file, self.previous_state_file)
        _safe_io().write_text_atomic(self.state_file, json.dumps({"repos": self.repos}))

    @staticmethod
    def key(repo_type: str, repo_id: str) -> str:
        return f"{repo_type}:{repo_id}"

    def put_blob(self, content: bytes) -> str:
        digest = hashlib.sha256(content).hexdigest()
        if not (self.blobs / digest).exists():
            with _safe_io().atomic_output(self.blobs / digest) as staged:
                staged.write_bytes(content)
        return digest

    def put_blob_stream(self, stream, size: int, sha256: str) -> None:
        """Copy `size` bytes from `stream` to the blob `sha256` in chunks, checking the hash before keeping it."""
        digest = hashlib.sha256()
        with _safe_io().atomic_output(self.blobs / sha256) as staged:
            with open(staged, "wb") as blob:
                remaining = size
                while remaining:
                    chunk = stream.read(min(CHUNK_BYTES, remaining))
                    if not chunk:
                        raise HubError(400, f"upload of {sha256} ended after {size - remaining} of {size} bytes")
                    digest.update(chunk)
                    blob.write(chunk)
                    remaining -= len(chunk)
            if digest.hexdigest() != sha256:
                raise HubError(400, f"uploaded content does not hash to {sha256}")

    def has_blob(self, sha256: str) -> bool:
        return bool(re.fullmatch(r"[0-9a-f]{64}", sha256)) and (self.blobs / sha256).is_file()

    def read_blob(self, sha256: str) -> bytes:
        return (self.blobs / sha256).read_bytes()

    def repo(self, repo_type: str, repo_id: str) -> dict:
        repo = self.repos.get(self.key(repo_type, repo_id))
        if repo is None:
            raise HubError(404, f"Repository {repo_id} ({repo_type}) not found", "RepoNotFound")
        return repo

    def create_repo(self, repo_type: str, repo_id: str, private: bool) -> bool:
        """Create with an initial commit (as the Hub does); False when it already exists."""
        with self.lock:
            if self.key(repo_type, repo_id) in self.repos:
                return False
            self.repos[self.key(repo_type, repo_id)] = {"private": private, "commits": {}, "branches": {}}
            self.commit(repo_type, repo_id, "main", "initial commit", {".gitattributes": INITIAL_ATTRIBUTES}, {}, [])
            return True

    def resolve_revision(self, repo: dict, revision: str) -> str:
        revision = unquote(revision)
        if revision in repo["branches"]:
            return repo["branches"][revision]
        matches = [oid for oid in repo["commits"] if oid.startswith(revision)] if len(revision) >= 7 else []
        if len(matches) == 1:
            return matches[0]
        raise HubError(404, f"Invalid rev id: {revision}", "RevisionNotFound")

    def files_at(self, repo_type: str, repo_id: str, revision: str) -> tuple[str, dict]:
        repo = self.repo(repo_type, repo_id)
        oid = self.resolve_revision(repo, revision)
        return oid, repo["commits"][oid]["files"]

    def commit(self, repo_type, repo_id, branch, message, regular: dict, lfs: dict, deleted: list, parent=None) -> str:
        """Apply additions (regular: path -> bytes; lfs: path -> (sha256, size)) and deletions on top of `branch`."""
        with self.lock:
            repo = self.repo(repo_type, repo_id)
            head = repo["branches"].get(branch)
            if parent is not None and head is not None and parent != head:
                raise HubError(412, f"parent commit {parent} is not the head of {branch} ({head})")
            files = dict(repo["commits"][head]["files"]) if head else {}
            for path in deleted:
                prefix = path.rstrip("/") + "/"
                for existing in [p for p in files if p == path or p.startswith(prefix)]:
                    del files[existing]
            for path, content in regular.items():
                sha256 = self.put_blob(content)
                files[path] = {"sha256": sha256, "size": len(content), "lfs": False, "oid": git_blob_oid(content)}
            for path, (sha256, size) in lfs.items():
                if not self.has_blob(sha256):
                    raise HubError(422, f"LFS object {sha256} for {path} was never uploaded")
                pointer = f"version https://git-lfs.github.com/spec/v1\noid sha256:{sha256}\nsize {size}\n".encode()
                files[path] = {"sha256": sha256, "size": size, "lfs": True, "oid": git_blob_oid(pointer)}
            stamp = f"{repo_type}/{repo_id}/{head}/{message}/{time.time_ns()}/{sorted(files.items())}"
            oid = hashlib.sha1(stamp.encode()).hexdigest()
            repo["commits"][oid] = {"parent": head, "message": message, "files": files, "date": time.time()}
            repo["branches"][branch] = oid
            self._save()
            return oid


def _entry(path: str, record: dict, expand: bool = False) -> dict:
    entry = {"type": "file", "oid": record["oid"], "size": record["size"], "path": path}
    if record["lfs"]:
        entry["lfs"] = {"oid": record["sha256"], "size": record["size"], "pointerSize": 134}
    if expand:
        entry["lastCommit"] = None
        entry["securityFileStatus"] = None
    return entry


def _directories(files: dict) -> set[str]:
    return {"/".join(parts[:i]) for path in files for parts in [path.split("/")] for i in range(1, len(parts))}


class HubRequestHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: "LocalHubServer"

    def log_message(self, format, *args):
        logger.debug("%s %s", self.address_string(), format % args)

    # -- plumbing -------------------------------------------------------------------------------------------------
    @property
    def store(self) -> HubStore:
        return self.server.store

    @property
    def base_url(self) -> str:
        host, port = self.server.server_address[:2]
        return f"http://{host}:{port}"

    def _content_length(self, limit: int) -> int:
        try:
            length = int(self.headers.get("Content-Length") or 0)
        except ValueError:
            raise HubError(400, "Content-Length is not a number") from None
        if length < 0:
            raise HubError(400, "Content-Length is negative")
        if length > limit:
            self.close_connection = True
            raise HubError(413, f"request body of {length} bytes is over the limit of {limit} bytes")
        return length

    def _body(self) -> bytes:
        length = self._content_length(self.server.max_request_bytes)
        return self.rfile.read(length) if length else b""

    def _json_body(self, default=None):
        body = self._body()
        if not body and default is not None:
            return default
        try:
            payload = json.loads(body)
        except (json.JSONDecodeError, UnicodeDecodeError) as error:
            raise HubError(400, f"malformed JSON body: {error}") from None
        if not isinstance(payload, dict):
            raise HubError(400, "the JSON body must be an object")
        return payload

    def _authenticated(self) -> bool:
        header = self.headers.get("Authorization", "")
        scheme, _, token = header.partition(" ")
        return scheme.lower() == "bearer" and hmac.compare_digest(token.strip().encode(), self.server.token.encode())

    def _require_token(self) -> None:
        if not self._authenticated():
            raise HubError(401, "Invalid credentials in Authorization header: pass the token the server printed (HF_TOKEN)")

    def _readable(self, repo_type: str, repo_id: str) -> dict:
        repo = self.store.repo(repo_type, repo_id)
        if repo["private"] and not self._authenticated():
            raise HubError(404, f"Repository {repo_id} ({repo_type}) not found", "RepoNotFound")
        return repo

    def _send(self, status: int, body: bytes = b"", headers: dict | None = None, head_only: bool = False):
        self.send_response(status)
        headers = dict(headers or {})
        headers.setdefault("Content-Type", "application/json")
        headers.setdefault("Content-Length", str(len(body)))
        for name, value in headers.items():
            self.send_header(name, value)
        self.end_headers()
        if body and not head_only:
            self.wfile.write(body)

    def _json(self, payload, status: int = 200, headers: dict | None = None):
        self._send(status, json.dumps(payload).encode(), headers)

    def _dispatch(self, method: str):
        url = urlsplit(self.path)
        self.query = parse_qs(url.query)
        try:
            for pattern, methods, handler in ROUTES:
                match = pattern.fullmatch(url.path)
                if match and method in methods:
                    arguments = match.groupdict()
                    if "repo_id" in arguments:
                        arguments["repo_id"] = unquote(arguments["repo_id"])
                        problem = repo_id_problem(arguments["repo_id"])
                        if problem:
                            raise HubError(400, problem)
                    if method in ("POST", "PUT") and handler is not HubRequestHandler.lfs_upload:
                        self._require_token()
                    return handler(self, method, **arguments)
            raise HubError(404, f"no route for {method} {url.path}")
        except (KeyError, TypeError, ValueError, AttributeError) as error:
            logger.warning("%s %s: malformed request (%r)", method, url.path, error)
            self.close_connection = True
            body = json.dumps({"error": f"malformed request: {error!r}"}).encode()
            self._send(400, body, {"Connection": "close"}, head_only=method == "HEAD")
        except HubError as error:
            self.close_connection = True  # the request body may be unread
            headers = {"X-Error-Code": error.error_code} if error.error_code else {}
            headers["X-Error-Message"] = error.message
            headers["Connection"] = "close"
            self._send(error.status, json.dumps({"error": error.message, **error.extra}).encode(), headers, head_only=method == "HEAD")

    def do_GET(self):
        self._dispatch("GET")

    def do_HEAD(self):
        self._dispatch("HEAD")

    def do_POST(self):
        self._dispatch("POST")

    def do_PUT(self):
        self._dispatch("PUT")

    # -- routes ---------------------------------------------------------------------------------------------------
    def whoami(self, method):
        self._require_token()
        self._json({
            "type": "user", "id": "0", "name": USER, "fullname": "Local Hub user", "orgs": [],
            "auth": {"type": "access_token", "accessToken": {"displayName": "local", "role": "write"}},
        })

    def validate_yaml(self, method):
        """Check a README's front matter the way the Hub does before accepting a commit that changes it."""
        content = self._json_body(default={}).get("content", "")
        if not isinstance(content, str):
            raise HubError(400, "'content' must be a string")
        match = re.match(r"^---\n(.*?)\n---", content, re.DOTALL)
        try:
            metadata = yaml.safe_load(match.group(1)) if match else {}
        except yaml.YAMLError as error:
            self._json({"errors": [{"message": f"invalid YAML: {error}"}], "warnings": []}, status=400)
            return
        if metadata is not None and not isinstance(metadata, dict):
            self._json({"errors": [{"message": "metadata must be a mapping"}], "warnings": []}, status=400)
            return
        self._json({"errors": [], "warnings": []})

    def create_repo(self, method):
        payload = self._json_body(default={})
        repo_type = payload.get("type") or "model"
        if repo_type not in URL_PREFIXES:
            raise HubError(400, f"unknown repo type {repo_type!r}")
        name, organization = payload.get("name"), payload.get("organization") or USER
        if not isinstance(name, str) or not isinstance(organization, str):
            raise HubError(400, f"invalid repository name {name!r}")
        repo_id = f"{organization}/{name}"
        problem = repo_id_problem(repo_id)
        if problem:
            raise HubError(400, problem)
        url = f"{self.base_url}/{URL_PREFIXES[repo_type]}{repo_id}"
        if not self.store.create_repo(repo_type, repo_id, bool(payload.get("private"))):
            raise HubError(409, f"You already created this {repo_type} repo", url=url)
        self._json({"url": url, "name": repo_id, "id": repo_id})

    def repo_info(self, method, kind, repo_id, revision="main"):
        repo_type = REPO_TYPES[kind]
        repo = self._readable(repo_type, repo_id)
        oid, files = self.store.files_at(repo_type, repo_id, revision)
        info = {
            "id": repo_id, "_id": repo_id, "author": repo_id.split("/")[0], "sha": oid, "private": repo["private"],
            "disabled": False, "gated": False, "downloads": 0, "likes": 0, "tags": [],
            "lastModified": time.strftime("%Y-%m-%dT%H:%M:%S.000Z", time.gmtime(repo["commits"][oid]["date"])),
            "siblings": [{"rfilename": path} for path in sorted(files)],
        }
        if repo_type == "model":
            info["modelId"] = repo_id
        self._json(info)

    def preupload(self, method, kind, repo_id, revision):
        repo_type = REPO_TYPES[kind]
        _, files = self.store.files_at(repo_type, repo_id, revision)
        answer = []
        for item in self._json_body()["files"]:
            path, size = item["path"], int(item.get("size", 0))
            problem = path_problem(path)
            if problem:
                raise HubError(400, problem)
            lfs = path.lower().endswith(LFS_SUFFIXES) or size >= LFS_MIN_SIZE
            answer.append({
                "path": path, "uploadMode": "lfs" if lfs else "regular", "shouldIgnore": False,
                "oid": files[path]["oid"] if path in files else None,
            })
        self._json({"files": answer, "commitOid": self.store.files_at(repo_type, repo_id, revision)[0]})

    def lfs_batch(self, method, prefix, repo_id):
        repo_type = {"": "model", "datasets/": "dataset", "spaces/": "space"}[prefix or ""]
        self.store.repo(repo_type, repo_id)
        payload = self._json_body()
        if payload.get("operation") != "upload":
            raise HubError(400, "only LFS uploads are supported")
        objects = []
        for item in payload["objects"]:
            oid, size = item["oid"], int(item["size"])
            if not isinstance(oid, str) or not re.fullmatch(r"[0-9a-f]{64}", oid):
                raise HubError(400, f"LFS oid {oid!r} is not a sha256")
            entry = {"oid": oid, "size": size, "authenticated": True}
            if size > self.server.max_upload_bytes:
                entry["error"] = {"code": 413, "message": f"over the upload limit of {self.server.max_upload_bytes} bytes"}
            elif not self.store.has_blob(oid):
                href = f"{self.base_url}/lfs-upload/{oid}/{size}/{self.server.upload_signature(oid, size)}"
                entry["actions"] = {"upload": {"href": href, "header": {}}}
            objects.append(entry)
        self._json({"transfer": "basic", "objects": objects, "hash_algo": "sha256"})

    def lfs_upload(self, method, oid, size, signature):
        """An upload URL handed out by an authenticated LFS batch: signed for this object and size only."""
        size = int(size)
        if not hmac.compare_digest(signature, self.server.upload_signature(oid, size)):
            raise HubError(403, "this upload URL was not issued by this server")
        if self._content_length(self.server.max_upload_bytes) != size:
            raise HubError(400, f"the upload of {oid} must be {size} bytes")
        self.store.put_blob_stream(self.rfile, size, oid)
        self._send(200, b"")

    def commit(self, method, kind, repo_id, revision):
        repo_type = REPO_TYPES[kind]
        regular, lfs, deleted, header = {}, {}, [], {}
        for line in self._body().splitlines():
            if not line.strip():
                continue
            try:
                item = json.loads(line)
            except (json.JSONDecodeError, UnicodeDecodeError) as error:
                raise HubError(400, f"malformed JSON line in the commit: {error}") from None
            key, value = item["key"], item["value"]
            if key == "header":
                header = value
                continue
            if key == "deletedFolder" and isinstance(value.get("path"), str):
                value["path"] = value["path"].rstrip("/")
            problem = path_problem(value.get("path"))
            if problem:
                raise HubError(400, problem)
            if key == "file":
                if value.get("encoding", "base64") != "base64":
                    raise HubError(400, f"unsupported encoding for {value['path']}")
                content = base64.b64decode(value["content"], validate=True)
                if len(content) > MAX_REGULAR_FILE_BYTES:
                    raise HubError(400, f"{value['path']} is over {MAX_REGULAR_FILE_BYTES} bytes: upload it with LFS")
                regular[value["path"]] = content
            elif key == "lfsFile":
                lfs[value["path"]] = (value["oid"], int(value["size"]))
            elif key in ("deletedFile", "deletedFolder"):
                deleted.append(value["path"])
            else:
                raise HubError(400, f"unsupported commit operation {key!r}")
        branch = unquote(revision)
        repo = self.store.repo(repo_type, repo_id)
        if branch not in repo["branches"]:
            raise HubError(404, f"Invalid rev id: {branch} (commits go to a branch)", "RevisionNotFound")
        message = header.get("summary") or "commit"
        oid = self.store.commit(repo_type, repo_id, branch, message, regular, lfs, deleted, header.get("parentCommit"))
        url = f"{self.base_url}/{URL_PREFIXES[repo_type]}{repo_id}/commit/{oid}"
        self._json({"success": True, "commitOid": oid, "commitUrl": url, "pullRequestUrl": None})

    def list_commits(self, method, kind, repo_id, revision):
        repo = self._readable(REPO_TYPES[kind], repo_id)
        oid, history = self.store.resolve_revision(repo, revision), []
        while oid:
            commit = repo["commits"][oid]
            stamp = time.strftime("%Y-%m-%dT%H:%M:%S.000Z", time.gmtime(commit["date"]))
            history.append({"id": oid, "title": commit["message"], "message": "", "authors": [{"user": USER}], "date": stamp})
            oid = commit["parent"]
        self._json(history)

    def tree(self, method, kind, repo_id, revision, path=""):
        self._readable(REPO_TYPES[kind], repo_id)
        _, files = self.store.files_at(REPO_TYPES[kind], repo_id, revision)
        path = unquote(path or "").strip("/")
        recursive = self.query.get("recursive", ["false"])[0].lower() in ("1", "true")
        expand = self.query.get("expand", ["false"])[0].lower() in ("1", "true")
        prefix = f"{path}/" if path else ""
        if path and path not in _directories(files):
            raise HubError(404, f"{path} does not exist at {revision}", "EntryNotFound")
        entries = []
        for directory in sorted(_directories(files)):
            rest = directory[len(prefix):] if directory.startswith(prefix) else None
            if rest and (recursive or "/" not in rest):
                entries.append({"type": "directory", "oid": hashlib.sha1(directory.encode()).hexdigest(), "size": 0, "path": directory})
        for file_path, record in sorted(files.items()):
            rest = file_path[len(prefix):] if file_path.startswith(prefix) else None
            if rest and (recursive or "/" not in rest):
                entries.append(_entry(file_path, record, expand))
        self._json(entries)

    def paths_info(self, method, kind, repo_id, revision):
        self._readable(REPO_TYPES[kind], repo_id)
        _, files = self.store.files_at(REPO_TYPES[kind], repo_id, revision)
        body = self._body()
        if self.headers.get("Content-Type", "").startswith("application/json"):
            try:
                payload = json.loads(body)
            except (json.JSONDecodeError, UnicodeDecodeError) as error:
                raise HubError(400, f"malformed JSON body: {error}") from None
            paths, expand = payload.get("paths", []), bool(payload.get("expand"))
        else:
            form = parse_qs(body.decode())
            paths, expand = form.get("paths", []), form.get("expand", ["false"])[0] in ("1", "true", "True")
        directories = _directories(files)
        entries = []
        for path in paths:
            path = path.strip("/")
            if path in files:
                entries.append(_entry(path, files[path], expand))
            elif path in directories:
                entries.append({"type": "directory", "oid": hashlib.sha1(path.encode()).hexdigest(), "size": 0, "path": path})
        self._json(entries)

    def resolve(self, method, prefix, repo_id, revision, path):
        repo_type = {"": "model", "datasets/": "dataset", "spaces/": "space"}[prefix or ""]
        self._readable(repo_type, repo_id)
        oid, files = self.store.files_at(repo_type, repo_id, revision)
        path = unquote(path)
        record = files.get(path)
        headers = {"X-Repo-Commit": oid, "Accept-Ranges": "bytes", "Content-Type": "application/octet-stream"}
        if record is None:
            raise HubError(404, f"Entry not found: {path}", "EntryNotFound")
        etag = record["sha256"] if record["lfs"] else record["oid"]
        headers["ETag"] = f'"{etag}"'
        if record["lfs"]:
            headers["X-Linked-Etag"] = f'"{etag}"'
            headers["X-Linked-Size"] = str(record["size"])
        content = self.store.read_blob(record["sha256"])
        status = 200
        byte_range = re.fullmatch(r"bytes=(\d*)-(\d*)", self.headers.get("Range", "") or "")
        if byte_range and (byte_range.group(1) or byte_range.group(2)):
            start_text, end_text = byte_range.groups()
            if start_text:
                start, end = int(start_text), min(int(end_text) if end_text else len(content) - 1, len(content) - 1)
            else:
                start, end = max(len(content) - int(end_text), 0), len(content) - 1
            if start >= len(content) and len(content) > 0:
                headers["Content-Range"] = f"bytes */{len(content)}"
                return self._send(416, b"", headers, head_only=method == "HEAD")
            headers["Content-Range"] = f"bytes {start}-{end}/{len(content)}"
            content, status = content[start : end + 1], 206
        headers["Content-Length"] = str(len(content))
        self._send(status, content, headers, head_only=method == "HEAD")


REPO = r"(?P<repo_id>[^/]+/[^/]+)"
KIND = r"(?P<kind>models|datasets|spaces)"
PREFIX = r"(?P<prefix>(?:datasets/|spaces/)?)"
ROUTES = [
    (re.compile(r"/api/whoami-v2"), {"GET"}, HubRequestHandler.whoami),
    (re.compile(r"/api/repos/create"), {"POST"}, HubRequestHandler.create_repo),
    (re.compile(r"/api/validate-yaml"), {"POST"}, HubRequestHandler.validate_yaml),
    (re.compile(rf"/api/{KIND}/{REPO}"), {"GET"}, HubRequestHandler.repo_info),
    (re.compile(rf"/api/{KIND}/{REPO}/revision/(?P<revision>.+)"), {"GET"}, HubRequestHandler.repo_info),
    (re.compile(rf"/api/{KIND}/{REPO}/preupload/(?P<revision>[^/]+)"), {"POST"}, HubRequestHandler.preupload),
    (re.compile(rf"/api/{KIND}/{REPO}/commit/(?P<revision>[^/]+)"), {"POST"}, HubRequestHandler.commit),
    (re.compile(rf"/api/{KIND}/{REPO}/commits/(?P<revision>[^/]+)"), {"GET"}, HubRequestHandler.list_commits),
    (re.compile(rf"/api/{KIND}/{REPO}/tree/(?P<revision>[^/]+)(?:/(?P<path>.*))?"), {"GET"}, HubRequestHandler.tree),
    (re.compile(rf"/api/{KIND}/{REPO}/paths-info/(?P<revision>[^/]+)"), {"POST"}, HubRequestHandler.paths_info),
    (re.compile(rf"/{PREFIX}{REPO}\.git/info/lfs/objects/batch"), {"POST"}, HubRequestHandler.lfs_batch),
    (
        re.compile(r"/lfs-upload/(?P<oid>[0-9a-f]{64})/(?P<size>\d+)/(?P<signature>[0-9a-f]{64})"),
        {"PUT"},
        HubRequestHandler.lfs_upload,
    ),
    (re.compile(rf"/{PREFIX}{REPO}/resolve/(?P<revision>[^/]+)/(?P<path>.+)"), {"GET", "HEAD"}, HubRequestHandler.resolve),
]


class LocalHubServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, port: int, store: HubStore, token: str, max_request_bytes: int, max_upload_bytes: int):
        super().__init__((HOST, port), HubRequestHandler)
        self.store, self.token = store, token
        self.max_request_bytes, self.max_upload_bytes = max_request_bytes, max_upload_bytes

    def upload_signature(self, oid: str, size: int) -> str:
        return hmac.new(self.token.encode(), f"{oid}/{size}".encode(), hashlib.sha256).hexdigest()


class LocalHub:
    """
    Run the server on 127.0.0.1 in a background thread; writes need `hub.token` (a new random one unless given)::

        with LocalHub(storage_dir) as hub:
            os.environ.update(HF_ENDPOINT=hub.endpoint, HF_TOKEN=hub.token)  # before importing huggingface_hub
    """

    def __init__(
        self,
        storage,
        port: int = 0,
        token: str | None = None,
        max_request_bytes: int = MAX_REQUEST_BYTES,
        max_upload_bytes: int = MAX_UPLOAD_BYTES,
    ):
        self.token = token or f"hf_local_{secrets.token_urlsafe(24)}"
        store = HubStore(Path(storage))
        self.server = LocalHubServer(port, store, self.token, max_request_bytes, max_upload_bytes)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def endpoint(self) -> str:
        host, port = self.server.server_address[:2]
        return f"http://{host}:{port}"

    def start(self) -> "LocalHub":
        self.thread.start()
        return self

    def stop(self):
        self.server.shutdown()
        self.server.server_close()

    def __enter__(self) -> "LocalHub":
        return self.start()

    def __exit__(self, *exc_info):
        self.stop()
