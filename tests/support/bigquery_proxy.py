"""A recording HTTP proxy in front of the BigQuery emulator, on 127.0.0.1.

It forwards every request to the emulator and records what the client sent (method,
path, headers, JSON body), so tests can check the job configuration our client sends even
where the emulator ignores it (labels, maximumBytesBilled, connection properties). For the
few things the emulator cannot do at all, it answers itself, and says so here:

- `running_marker`: a query containing it becomes a job that stays RUNNING until it is
  cancelled (the emulator runs every job synchronously), then reads back as DONE with
  BigQuery's "stopped" error result, as a cancelled job does.
- `dry_run_bytes`: dry runs of queries containing a key report that many bytes processed
  (the emulator always reports 0).
- `CALL BQ.ABORT_SESSION()` is answered as a finished job (the emulator has no such
  procedure).
- `POST /token` plays Google's OAuth token endpoint for a service-account key whose
  `token_uri` points here, so the real credentials flow runs offline.
- A multipart upload's data part is relabelled `application/octet-stream` (the emulator
  rejects the client's `*/*`).
"""

from __future__ import annotations

import http.client
import json
import re
import socket
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Dict, List, Optional, Set
from urllib.parse import parse_qs, urlsplit

_JOBS = re.compile(r"/bigquery/v2/projects/(?P<project>[^/]+)/jobs(?:/(?P<job>[^/?]+))?(?P<cancel>/cancel)?")
_QUERY_RESULTS = re.compile(r"/bigquery/v2/projects/[^/]+/queries/(?P<job>[^/?]+)")
_JOBS_QUERY = re.compile(r"/bigquery/v2/projects/[^/]+/queries")

RUNNING_MARKER = "zenml-test:running"
TOKEN = "proxy-issued-token"


@dataclass
class Recorded:
    method: str
    path: str
    headers: Dict[str, str]
    body: Any

    @property
    def job_insert(self) -> Optional[Dict[str, Any]]:
        """The job resource of a jobs.insert request (also multipart uploads), else None."""
        if self.method != "POST" or not isinstance(self.body, dict):
            return None
        match = _JOBS.fullmatch(urlsplit(self.path).path.replace("/upload", "", 1))
        return self.body if match and not match.group("job") else None

    @property
    def query(self) -> Optional[str]:
        job = self.job_insert
        return job.get("configuration", {}).get("query", {}).get("query") if job else None


@dataclass
class RecordingProxy:
    target: str
    running_marker: str = RUNNING_MARKER
    dry_run_bytes: Dict[str, int] = field(default_factory=dict)
    requests: List[Recorded] = field(default_factory=list)
    fake_jobs: Dict[str, Dict[str, Any]] = field(default_factory=dict)
    tokens_issued: int = 0
    port: int = 0  # 0: a free one; an earlier proxy's port brings the endpoint back there

    def __post_init__(self) -> None:
        self._lock = threading.Lock()
        self._connections: Set[socket.socket] = set()
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def setup(self) -> None:
                super().setup()
                with proxy._lock:
                    proxy._connections.add(self.connection)

            def finish(self) -> None:
                with proxy._lock:
                    proxy._connections.discard(self.connection)
                super().finish()

            def log_message(self, *args: Any) -> None:
                pass

            def _serve(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length) if length else b""
                status, headers, body = proxy._handle(self.command, self.path, dict(self.headers), raw)
                self.send_response(status)
                for key, value in headers.items():
                    if key.lower() not in ("content-length", "transfer-encoding", "connection"):
                        self.send_header(key, value)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = _serve

        self._server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, name="bq-proxy", daemon=True)
        self._thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def stop(self) -> None:
        """Go away as a dead endpoint does: no new connections, and the kept-alive ones end too."""
        self._server.shutdown()
        self._server.server_close()
        with self._lock:
            connections = list(self._connections)
        for connection in connections:
            try:
                connection.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def clear(self) -> None:
        with self._lock:
            self.requests.clear()
            self.fake_jobs.clear()
            self.dry_run_bytes.clear()

    # ---- what the tests read ---------------------------------------------------------

    def job_inserts(self) -> List[Dict[str, Any]]:
        with self._lock:
            return [r.job_insert for r in self.requests if r.job_insert is not None]

    def query_requests(self) -> List[Dict[str, Any]]:
        """Bodies of jobs.query calls (what `query_and_wait` sends)."""
        with self._lock:
            return [
                r.body for r in self.requests
                if r.method == "POST" and _JOBS_QUERY.fullmatch(urlsplit(r.path).path) and isinstance(r.body, dict)
            ]

    def authorizations(self) -> List[str]:
        """The Authorization headers the client sent to the BigQuery API."""
        with self._lock:
            return [
                v for r in self.requests if urlsplit(r.path).path != "/token"
                for k, v in r.headers.items() if k.lower() == "authorization"
            ]

    def cancels(self) -> List[str]:
        with self._lock:
            found = []
            for r in self.requests:
                match = _JOBS.fullmatch(urlsplit(r.path).path)
                if r.method == "POST" and match and match.group("cancel"):
                    found.append(match.group("job"))
            return found

    def row_reads(self) -> List[Dict[str, List[str]]]:
        """Query parameters of every REST read of table rows (tabledata.list)."""
        with self._lock:
            return [parse_qs(urlsplit(r.path).query) for r in self.requests if urlsplit(r.path).path.endswith("/data")]

    def row_bytes(self, previews: bool = True) -> int:
        """Bytes of table rows the emulator sent (tabledata.list and query result pages);
        without `previews`, reads of at most 10 rows (visualizations, schema probes) are left out."""
        with self._lock:
            return sum(
                getattr(r, "response_bytes", 0)
                for r in self.requests
                if _carries_rows(r.path) and (previews or not is_preview(r.path))
            )

    # ---- forwarding and the few answers of our own --------------------------------------

    def _handle(self, method: str, path: str, headers: Dict[str, str], raw: bytes):  # noqa: ANN202
        body: Any = _json_or_none(raw)
        content_type = next((v for k, v in headers.items() if k.lower() == "content-type"), "")
        if body is None and "multipart" in content_type:
            body = _multipart_json(raw)
            raw = raw.replace(b"content-type: */*", b"content-type: application/octet-stream")
        record = Recorded(method, path, headers, body)
        with self._lock:
            self.requests.append(record)
        own = self._own_answer(record)
        if own is not None:
            return 200, {"Content-Type": "application/json"}, json.dumps(own).encode()
        status, answer_headers, answer = self._forward(method, path, headers, raw)
        if _carries_rows(path):
            record.response_bytes = len(answer)  # type: ignore[attr-defined]
        job = record.job_insert
        if job and job.get("configuration", {}).get("dryRun") and status == 200:
            answer = self._patch_dry_run(job, answer)
        return status, answer_headers, answer

    def _forward(self, method: str, path: str, headers: Dict[str, str], raw: bytes):  # noqa: ANN202
        target = urlsplit(self.target)
        connection = http.client.HTTPConnection(target.hostname, target.port, timeout=300)
        forwarded = {k: v for k, v in headers.items() if k.lower() not in ("host", "content-length", "connection")}
        forwarded["Content-Length"] = str(len(raw))
        try:
            connection.request(method, path, body=raw, headers=forwarded)
            response = connection.getresponse()
            return response.status, dict(response.getheaders()), response.read()
        finally:
            connection.close()

    def _patch_dry_run(self, job: Dict[str, Any], answer: bytes) -> bytes:
        query = job["configuration"].get("query", {}).get("query", "")
        for marker, estimate in self.dry_run_bytes.items():
            if marker in query:
                resource = json.loads(answer)
                statistics = resource.setdefault("statistics", {})
                statistics["totalBytesProcessed"] = str(estimate)
                statistics.setdefault("query", {})["totalBytesProcessed"] = str(estimate)
                return json.dumps(resource).encode()
        return answer

    def _own_answer(self, record: Recorded) -> Optional[Dict[str, Any]]:
        path = urlsplit(record.path).path
        if record.method == "POST" and path == "/token":
            with self._lock:
                self.tokens_issued += 1
            return {"access_token": TOKEN, "expires_in": 3600, "token_type": "Bearer"}
        query = record.query
        if query is not None:
            if "BQ.ABORT_SESSION" in query:
                return self._fake_job(record.job_insert, done=True)
            if self.running_marker in query and not record.job_insert["configuration"].get("dryRun"):
                return self._fake_job(record.job_insert, done=False)
        match = _JOBS.fullmatch(path) or _QUERY_RESULTS.fullmatch(path)
        job_id = match.groupdict().get("job") if match else None
        with self._lock:
            fake = self.fake_jobs.get(job_id) if job_id else None
        if fake is None:
            return None
        if match.groupdict().get("cancel"):
            fake["status"] = {
                "state": "DONE",
                "errorResult": {"reason": "stopped", "message": "Job execution was cancelled: User requested cancellation"},
            }
            return {"kind": "bigquery#jobCancelResponse", "job": fake}
        if _QUERY_RESULTS.fullmatch(path):
            return {"kind": "bigquery#getQueryResultsResponse", "jobReference": fake["jobReference"], "jobComplete": False}
        return fake

    def _fake_job(self, job: Dict[str, Any], done: bool) -> Dict[str, Any]:
        reference = dict(job.get("jobReference") or {})
        reference.setdefault("jobId", f"proxy_{time.time_ns()}")
        reference.setdefault("location", "US")
        resource = {
            "kind": "bigquery#job",
            "id": f"{reference.get('projectId')}:{reference['jobId']}",
            "jobReference": reference,
            "configuration": job.get("configuration", {}),
            "status": {"state": "DONE" if done else "RUNNING"},
            "statistics": {"creationTime": str(int(time.time() * 1000))},
        }
        with self._lock:
            self.fake_jobs[reference["jobId"]] = resource
        return resource


def _carries_rows(path: str) -> bool:
    plain = urlsplit(path).path
    return plain.endswith("/data") or bool(_QUERY_RESULTS.fullmatch(plain))


def is_preview(path: str) -> bool:
    limit = parse_qs(urlsplit(path).query).get("maxResults", [""])[0]
    return limit.isdigit() and int(limit) <= 10


def _json_or_none(raw: bytes) -> Any:
    try:
        return json.loads(raw) if raw else None
    except ValueError:
        return None


def _multipart_json(raw: bytes) -> Any:
    """The JSON metadata part of a multipart upload (a load job's configuration)."""
    start = raw.find(b"{")
    end = raw.find(b"\r\n--", start)
    return _json_or_none(raw[start:end]) if 0 <= start < end else None
