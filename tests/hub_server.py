"""A local stand-in for the Hugging Face Hub's HTTP API, for tests of upload and download.

It speaks just enough of the Hub's API for ``huggingface_hub`` (2.x) to create a repo, push one
commit (regular files inline as base64, large files through the Git LFS "basic" transfer), read
model info and download files into its cache, so tests exercise the real client and the real
timm loading path without the network. It never offers Xet storage: downloads see no
``X-Xet-Hash`` header and use plain HTTP; uploads need ``HF_HUB_DISABLE_XET=1`` in the client's
environment, because ``huggingface_hub`` picks Xet for uploads whenever ``hf_xet`` is installed.

Bounded on purpose: loopback only, a free port, daemon threads, request bodies capped, and
``stop()`` shuts it down. Writes need ``Authorization: Bearer <token>`` with the server's token.
"""
from __future__ import annotations

import base64
import hashlib
import json
import re
import secrets
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Dict, List, Optional, Tuple
from urllib.parse import unquote, urlsplit

import yaml

__all__ = ["LocalHub", "git_blob_sha1"]

MAX_BODY_BYTES = 256 * 1024 * 1024
LFS_SUFFIXES = (".safetensors", ".bin", ".pth", ".pt", ".ckpt", ".npz")
LFS_MIN_SIZE = 10 * 1024 * 1024  # the Hub stores files this large in LFS whatever their name

_REPO = r"(?P<repo>[^/]+/[^/]+)"
_ROUTES = {
    "POST": [
        (re.compile(r"^/api/repos/create$"), "create_repo"),
        (re.compile(r"^/api/validate-yaml$"), "validate_yaml"),
        (re.compile(rf"^/api/models/{_REPO}/preupload/(?P<rev>[^/]+)$"), "preupload"),
        (re.compile(rf"^/api/models/{_REPO}/commit/(?P<rev>[^/]+)$"), "commit"),
        (re.compile(rf"^/{_REPO}\.git/info/lfs/objects/batch$"), "lfs_batch"),
        (re.compile(r"^/__lfs/(?P<oid>[0-9a-f]{64})/verify$"), "lfs_verify"),
    ],
    "PUT": [(re.compile(r"^/__lfs/(?P<oid>[0-9a-f]{64})$"), "lfs_put")],
    "GET": [
        (re.compile(rf"^/api/models/{_REPO}$"), "model_info"),
        (re.compile(rf"^/api/models/{_REPO}/revision/(?P<rev>[^/]+)$"), "model_info"),
        (re.compile(rf"^/{_REPO}/resolve/(?P<rev>[^/]+)/(?P<path>.+)$"), "resolve"),
    ],
    "HEAD": [(re.compile(rf"^/{_REPO}/resolve/(?P<rev>[^/]+)/(?P<path>.+)$"), "resolve")],
}


def git_blob_sha1(data: bytes) -> str:
    """The git object id of a file: what the Hub sends as the ETag of a regular (non-LFS) file."""
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


@dataclass
class _File:
    data: bytes
    lfs: bool

    @property
    def etag(self) -> str:
        return hashlib.sha256(self.data).hexdigest() if self.lfs else git_blob_sha1(self.data)


@dataclass
class _Repo:
    branches: Dict[str, str] = field(default_factory=dict)  # branch -> commit oid
    commits: Dict[str, Dict[str, _File]] = field(default_factory=dict)  # oid -> tree
    history: List[Tuple[str, str]] = field(default_factory=list)  # (oid, summary), oldest first


class _HubError(Exception):
    def __init__(self, status: int, message: str, error_code: Optional[str] = None, commit: Optional[str] = None):
        super().__init__(message)
        self.status, self.message, self.error_code, self.commit = status, message, error_code, commit


class LocalHub:
    """The stand-in Hub: ``with LocalHub() as hub: ...`` (``hub.url``, ``hub.token``)."""

    def __init__(self, token: Optional[str] = None):
        self.token = token or "hf_test_" + secrets.token_hex(12)
        self.repos: Dict[str, _Repo] = {}
        self.lfs_objects: Dict[str, bytes] = {}
        self.requests: List[Tuple[str, str]] = []  # (method, path) of every request served
        self._lock = threading.Lock()
        self._server: Optional[ThreadingHTTPServer] = None
        self._thread: Optional[threading.Thread] = None

    # ---- life cycle --------------------------------------------------------------------------
    def start(self) -> "LocalHub":
        hub = self

        class Handler(_Handler):
            server_hub = hub

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, name="local-hub", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._thread.join(timeout=10)
            self._server = self._thread = None

    def __enter__(self) -> "LocalHub":
        return self.start()

    def __exit__(self, *exc_info: Any) -> None:
        self.stop()

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    # ---- inspection for tests ----------------------------------------------------------------
    def commit_summaries(self, repo_id: str) -> List[str]:
        """Summaries of the commits pushed to ``repo_id`` (the repo's initial commit excluded)."""
        return [summary for _, summary in self.repos[repo_id].history[1:]]

    def files(self, repo_id: str, revision: str = "main") -> Dict[str, _File]:
        repo = self.repos[repo_id]
        return dict(repo.commits[repo.branches[revision]])

    # ---- state changes (under the lock) ------------------------------------------------------
    def _repo(self, repo_id: str) -> _Repo:
        repo = self.repos.get(repo_id)
        if repo is None:
            raise _HubError(404, f"Repository {repo_id} not found", "RepoNotFound")
        return repo

    def _resolve_revision(self, repo: _Repo, revision: str) -> str:
        revision = unquote(revision)
        if revision in repo.branches:
            return repo.branches[revision]
        if revision in repo.commits:
            return revision
        raise _HubError(404, f"Invalid rev id: {revision}", "RevisionNotFound")

    def _new_commit(self, repo: _Repo, branch: str, tree: Dict[str, _File], summary: str) -> str:
        parent = repo.branches.get(branch, "")
        digest = hashlib.sha1(parent.encode() + summary.encode())
        for path in sorted(tree):
            digest.update(path.encode() + tree[path].etag.encode())
        oid = digest.hexdigest()
        repo.commits[oid] = tree
        repo.branches[branch] = oid
        repo.history.append((oid, summary))
        return oid


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    timeout = 30
    server_hub: LocalHub

    def log_message(self, format: str, *args: Any) -> None:  # keep test output quiet
        pass

    # ---- plumbing ----------------------------------------------------------------------------
    def _dispatch(self, method: str) -> None:
        path = urlsplit(self.path).path
        self.server_hub.requests.append((method, path))
        try:
            for pattern, name in _ROUTES.get(method, []):
                match = pattern.match(path)
                if match:
                    with self.server_hub._lock:
                        getattr(self, "_" + name)(**{k: unquote(v) for k, v in match.groupdict().items()})
                    return
            raise _HubError(404, f"no route for {method} {path}")
        except _HubError as error:
            headers = {"X-Error-Message": error.message}
            if error.error_code:
                headers["X-Error-Code"] = error.error_code
            if error.commit:
                headers["X-Repo-Commit"] = error.commit
            self._send_json(error.status, {"error": error.message}, headers)

    do_GET = lambda self: self._dispatch("GET")  # noqa: E731
    do_HEAD = lambda self: self._dispatch("HEAD")  # noqa: E731
    do_POST = lambda self: self._dispatch("POST")  # noqa: E731
    do_PUT = lambda self: self._dispatch("PUT")  # noqa: E731

    def _read_body(self) -> bytes:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            chunks, total = [], 0
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass  # trailers
                    return b"".join(chunks)
                total += size
                if total > MAX_BODY_BYTES:
                    raise _HubError(413, "request body too large")
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
        length = int(self.headers.get("Content-Length") or 0)
        if length > MAX_BODY_BYTES:
            raise _HubError(413, "request body too large")
        return self.rfile.read(length) if length else b""

    def _json_body(self) -> Any:
        try:
            return json.loads(self._read_body() or b"{}")
        except json.JSONDecodeError:
            raise _HubError(400, "body is not JSON") from None

    def _send(self, status: int, body: bytes, headers: Dict[str, str], content_type: str) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        for key, value in headers.items():
            self.send_header(key, value)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _send_json(self, status: int, payload: Any, headers: Optional[Dict[str, str]] = None,
                   content_type: str = "application/json") -> None:
        self._send(status, json.dumps(payload).encode(), headers or {}, content_type)

    def _require_token(self) -> None:
        if self.headers.get("Authorization") != f"Bearer {self.server_hub.token}":
            raise _HubError(401, "Invalid credentials in Authorization header")

    # ---- endpoints ---------------------------------------------------------------------------
    def _create_repo(self) -> None:
        self._require_token()
        body = self._json_body()
        if body.get("type", "model") != "model":
            raise _HubError(400, "this stand-in Hub only hosts model repos")
        repo_id = f"{body.get('organization') or 'test-user'}/{body['name']}"
        url = f"{self.server_hub.url}/{repo_id}"
        if repo_id in self.server_hub.repos:  # the Hub answers 409 and still names the repo's url
            self._send_json(409, {"error": "You already created this model repo", "url": url},
                            {"X-Error-Message": "You already created this model repo"})
            return
        repo = _Repo()
        gitattributes = _File(b"*.safetensors filter=lfs diff=lfs merge=lfs -text\n", lfs=False)
        self.server_hub._new_commit(repo, "main", {".gitattributes": gitattributes}, "initial commit")
        self.server_hub.repos[repo_id] = repo
        self._send_json(200, {"url": url, "name": repo_id})

    def _validate_yaml(self) -> None:
        content = self._json_body().get("content", "")
        match = re.match(r"^---\n(.*?)\n---\n", content, re.DOTALL)
        if match:
            try:
                metadata = yaml.safe_load(match.group(1))
            except yaml.YAMLError as error:
                self._send_json(400, {"errors": [{"message": f"invalid YAML: {error}"}]})
                return
            if not isinstance(metadata, dict):
                self._send_json(400, {"errors": [{"message": "metadata must be a YAML mapping"}]})
                return
        self._send_json(200, {"warnings": []})

    def _preupload(self, repo: str, rev: str) -> None:
        self._require_token()
        hub_repo = self.server_hub._repo(repo)
        tree = hub_repo.commits[self.server_hub._resolve_revision(hub_repo, rev)]
        files = []
        for item in self._json_body().get("files", []):
            path, size = item["path"], int(item["size"])
            lfs = path.endswith(LFS_SUFFIXES) or size >= LFS_MIN_SIZE
            existing = tree.get(path)
            files.append(dict(path=path, uploadMode="lfs" if lfs else "regular", shouldIgnore=False,
                              oid=existing.etag if existing is not None else None))
        self._send_json(200, {"files": files})

    def _lfs_batch(self, repo: str) -> None:
        self._require_token()
        self.server_hub._repo(repo)
        body = self._json_body()
        if body.get("operation") != "upload":
            raise _HubError(400, "only LFS uploads are supported")
        objects = []
        for item in body.get("objects", []):
            oid, size = item["oid"], int(item["size"])
            entry: Dict[str, Any] = dict(oid=oid, size=size, authenticated=True)
            if oid not in self.server_hub.lfs_objects:
                base = f"{self.server_hub.url}/__lfs/{oid}"
                entry["actions"] = {"upload": {"href": base}, "verify": {"href": base + "/verify"}}
            objects.append(entry)
        self._send_json(200, {"transfer": "basic", "objects": objects}, content_type="application/vnd.git-lfs+json")

    def _lfs_put(self, oid: str) -> None:
        data = self._read_body()
        if hashlib.sha256(data).hexdigest() != oid:
            raise _HubError(400, "uploaded content does not match its oid")
        self.server_hub.lfs_objects[oid] = data
        self._send(200, b"", {}, "text/plain")

    def _lfs_verify(self, oid: str) -> None:
        self._require_token()
        body = self._json_body()
        data = self.server_hub.lfs_objects.get(oid)
        if data is None or len(data) != int(body.get("size", -1)):
            raise _HubError(404, f"LFS object {oid} was not uploaded")
        self._send_json(200, {"success": True})

    def _commit(self, repo: str, rev: str) -> None:
        self._require_token()
        hub = self.server_hub
        hub_repo = hub._repo(repo)
        branch = unquote(rev)
        if branch not in hub_repo.branches:
            raise _HubError(404, f"Invalid rev id: {branch}", "RevisionNotFound")
        tree = dict(hub_repo.commits[hub_repo.branches[branch]])
        summary = ""
        for line in self._read_body().splitlines():
            if not line.strip():
                continue
            item = json.loads(line)
            key, value = item["key"], item["value"]
            if key == "header":
                summary = value.get("summary", "")
            elif key == "file":
                if value.get("encoding") != "base64":
                    raise _HubError(400, "regular files must be base64 encoded")
                tree[value["path"]] = _File(base64.b64decode(value["content"]), lfs=False)
            elif key == "lfsFile":
                data = hub.lfs_objects.get(value["oid"])
                if data is None:
                    raise _HubError(422, f"LFS file {value['path']} was committed before its upload")
                tree[value["path"]] = _File(data, lfs=True)
            elif key == "deletedFile":
                if tree.pop(value["path"], None) is None:
                    raise _HubError(404, "A file with this name doesn't exist", "EntryNotFound")
            else:
                raise _HubError(400, f"unsupported commit operation {key!r}")
        oid = hub._new_commit(hub_repo, branch, tree, summary)
        self._send_json(200, {"success": True, "commitOid": oid, "commitUrl": f"{hub.url}/{repo}/commit/{oid}"})

    def _model_info(self, repo: str, rev: str = "main") -> None:
        hub_repo = self.server_hub._repo(repo)
        oid = self.server_hub._resolve_revision(hub_repo, rev)
        siblings = [{"rfilename": path} for path in sorted(hub_repo.commits[oid])]
        self._send_json(200, {"id": repo, "modelId": repo, "sha": oid, "private": False, "siblings": siblings,
                              "tags": [], "library_name": "timm"})

    def _resolve(self, repo: str, rev: str, path: str) -> None:
        hub_repo = self.server_hub._repo(repo)
        oid = self.server_hub._resolve_revision(hub_repo, rev)
        entry = hub_repo.commits[oid].get(path)
        if entry is None:
            raise _HubError(404, f"Entry not found: {path}", "EntryNotFound", commit=oid)
        headers = {"X-Repo-Commit": oid, "ETag": f'"{entry.etag}"', "Accept-Ranges": "bytes"}
        if entry.lfs:
            headers.update({"X-Linked-Etag": f'"{entry.etag}"', "X-Linked-Size": str(len(entry.data))})
        body, status = entry.data, 200
        range_match = re.match(r"bytes=(\d+)-$", self.headers.get("Range", ""))
        if range_match and self.command == "GET":
            start = int(range_match.group(1))
            body, status = entry.data[start:], 206
            headers["Content-Range"] = f"bytes {start}-{len(entry.data) - 1}/{len(entry.data)}"
        self._send(status, body, headers, "application/octet-stream")
