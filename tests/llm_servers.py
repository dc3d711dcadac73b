"""Real HTTP servers on 127.0.0.1 for the LLM layer's tests and benchmarks.

- :class:`ScriptedChatServer`: a small chat-completions server (stdlib ``http.server``, one
  thread per connection) that answers each request as its script says:

  ========================  ==================================================================
  ``ok``                    a completion (its text from ``content``; default: ``answer ID``)
  ``429`` / ``429:SECONDS`` too many requests (with that Retry-After)
  ``400`` ``500`` ``502``   that status with an error body
  ``503``
  ``401``                   unauthorized, echoing the bearer token it got, as some APIs do
  ``slow``                  a completion sent only after ``slow_s``, beyond the client's
                            timeout: counted ``late``, never ``answered``
  ``malformed``             a 200 whose body is not JSON
  ``empty``                 valid JSON without choices
  ``reset``                 no reply: the connection is reset (TCP RST)
  ``truncated``             a 200 whose body stops half-way, then the connection closes
  ``bad-option``            a well-formed completion naming an option the question does not
                            have (choice 7 of 3, an unknown label)
  ``down``                  the server dies: this connection is reset, the port stops
                            listening and every kept-alive connection is reset, until
                            :meth:`ScriptedChatServer.come_back` listens on the same port again
  ========================  ==================================================================

  Optionally after a fixed latency, and optionally refusing ``json_schema`` response formats
  like servers that lack them. It counts hits per request id (the text after ``id=`` in the
  last message), so a test can prove that no request was lost or sent twice, and logs every
  exchange (:class:`Exchange`: when it arrived, a digest of the whole request body, the action
  and whether a completion went out) with the bearer tokens it was sent.
- :func:`valid_content` and :func:`bad_option_content`: replies that follow (or break) the
  JSON schema a request carries, for whole method runs against the scripted server.
- :class:`LlamaCppServer`: llama.cpp's OpenAI-compatible server (``python -m llama_cpp.server``)
  on a free port, started as a subprocess and stopped by its PID.

Fixtures ``scripted_server`` and ``llama_server`` wrap them (imported in conftest.py).
"""

from __future__ import annotations

import collections
import contextlib
import dataclasses
import hashlib
import json
import os
import re
import socket
import sqlite3
import struct
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator, Mapping, Sequence
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Self

import pytest

ID_PATTERN = re.compile(r"id=(\S+)")
#: behaviour for (request id, attempt number starting at 0)
Script = Callable[[str, int], str]
#: a completion's text for a request body
Content = Callable[[Mapping[str, Any]], str]
#: every action a script may return that is not ``ok``: a fault
STATUS_ACTIONS = ("400", "500", "502", "503")
FAULTS = (
    "429", *STATUS_ACTIONS, "401", "slow", "malformed", "empty", "reset", "truncated",
    "bad-option", "down",
)  # fmt: skip
ANSWERED, FAILED, LATE = "answered", "failed", "late"


def always_ok(request_id: str, attempt: int) -> str:
    return "ok"


def _error(message: str) -> bytes:
    return json.dumps({"error": {"message": message, "type": "scripted"}}).encode()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def body_digest(body: Mapping[str, Any]) -> str:
    """One request, as the server saw it: the same question asked again has the same digest."""
    return hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()[:16]


@dataclasses.dataclass(frozen=True)
class Exchange:
    """One request the server read: when (monotonic seconds), what, and how it ended."""

    at: float
    digest: str
    request_id: str
    attempt: int
    action: str
    outcome: str  # ANSWERED (a completion went out), FAILED, or LATE (after the timeout)


# -- completions that follow (or break) the request's schema -----------------------------------


def request_schema(body: Mapping[str, Any]) -> dict[str, Any]:
    """The JSON schema a request's ``response_format`` carries (json_schema or json_object)."""
    response_format = body.get("response_format") or {}
    # json_schema (OpenAI) carries the schema one level deeper than json_object (llama.cpp)
    return dict((response_format.get("json_schema") or response_format).get("schema") or {})


def _value(schema: Mapping[str, Any], name: str, tag: str) -> Any:
    kind = schema.get("type")
    if "enum" in schema:
        return schema["enum"][0]
    if kind == "integer":
        return int(schema.get("minimum", 1))
    if kind == "number":
        return min(max(0.9, schema.get("minimum", 0.0)), schema.get("maximum", 1.0))
    if kind == "boolean":
        return True
    if kind == "array":
        items = [_value(schema.get("items") or {}, f"{name} {i}", tag) for i in (1, 2)]
        return items[: schema.get("maxItems", 2)]
    if kind == "object":
        props = schema.get("properties") or {}
        return {key: _value(sub, key, tag) for key, sub in props.items()}
    return f"{name} {tag}"  # a name or description of its own for every question


def _schema_reply(body: Mapping[str, Any]) -> Any:
    messages = json.dumps(body.get("messages"), sort_keys=True).encode()
    return _value(request_schema(body), "answer", hashlib.sha256(messages).hexdigest()[:6])


def valid_content(body: Mapping[str, Any]) -> str:
    """A reply that keeps to the request's schema (the first allowed choice, option 1, a
    confidence of 0.9, text naming the question); without a schema, option 1 in the prompts'
    own answer format. A function of the request alone: asked again, the same answer."""
    if request_schema(body):
        return json.dumps(_schema_reply(body))
    return "Choice 1, Confidence: 0.9"


def bad_option_content(body: Mapping[str, Any]) -> str:
    """A well-formed reply naming an option the question does not have: a choice past the
    last one, a label outside the allowed list."""
    schema = request_schema(body)
    props = dict(schema.get("properties") or {})
    reply = _schema_reply(body) if schema else {}
    if "choice" in props:
        reply["choice"] = int(props["choice"].get("maximum", 5)) + 7
    if "answer" in props:
        reply["answer"] = "Choice 99"
    return json.dumps(reply) if reply else "Choice 99, Confidence: 0.9"


def echo_content(body: Mapping[str, Any], request_id: str) -> str:
    """The default: ``answer ID``, or the last allowed choice of a structured request."""
    schema = request_schema(body)
    enum = schema.get("properties", {}).get("answer", {}).get("enum")
    if enum:  # structured request: answer with the last allowed choice, as JSON
        return json.dumps({"answer": enum[-1]})
    return f"answer {request_id}"


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    # the default backlog (5) drops connections when 32 clients connect at once
    request_queue_size = 256

    def handle_error(self, request: Any, client_address: Any) -> None:
        # A client killed mid-request (the kill suites do it on purpose) resets its
        # connection: expected, so not printed as a traceback among the suites' output.
        if isinstance(sys.exc_info()[1], (ConnectionResetError, BrokenPipeError)):
            return
        super().handle_error(request, client_address)


#: (status, headers, body); status RESET: send nothing and reset the connection; a negative
#: status: send -status and half the body, then hang up (a truncated answer)
Reply = tuple[int, dict[str, str], bytes]
RESET = 0


class ScriptedChatServer:
    """A chat-completions endpoint whose failures follow a script; see the module doc."""

    def __init__(
        self,
        script: Script = always_ok,
        latency_s: float = 0.0,
        slow_s: float = 2.0,
        reject_json_schema: bool = False,
        content: Content | None = None,
    ) -> None:
        self.script = script
        self.reject_json_schema = reject_json_schema
        self.latency_s = latency_s
        self.slow_s = slow_s
        self.content = content
        self.hits: collections.Counter[str] = collections.Counter()
        self.answered: collections.Counter[str] = collections.Counter()
        self.late: collections.Counter[str] = collections.Counter()
        self.bearers: collections.Counter[str] = collections.Counter()
        self.log: list[Exchange] = []
        self.max_in_flight = 0
        self._in_flight = 0
        self._lock = threading.Lock()
        self._down = threading.Event()
        self._server = _Server(("127.0.0.1", 0), self._handler_class())
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def port(self) -> int:
        return int(self._server.server_address[1])

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    @property
    def is_down(self) -> bool:
        return self._down.is_set()

    def __enter__(self) -> Self:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if not self.is_down:
            self._stop_listening()

    def _stop_listening(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)

    def go_down(self) -> None:
        """Die: stop listening (new connections are refused) and reset every request that
        comes on a connection kept alive from before, until :meth:`come_back`."""
        if self.is_down:
            return
        self._down.set()
        # From another thread: a handler that calls this must not wait for its own server.
        threading.Thread(target=self._stop_listening, daemon=True).start()

    def come_back(self) -> None:
        """Listen again on the same port (the host:port is part of the ledger's keys)."""
        self._thread.join(timeout=5)  # the old listener is closed
        port = self.port
        self._server = _Server(("127.0.0.1", port), self._handler_class())
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._down.clear()
        self._thread.start()

    def faults(self) -> list[Exchange]:
        """The exchanges that did not go as ``ok``."""
        with self._lock:
            return [e for e in self.log if e.action != "ok"]

    def answered_digests(self) -> collections.Counter[str]:
        """Request digest -> completions the client received for it."""
        with self._lock:
            return collections.Counter(e.digest for e in self.log if e.outcome == ANSWERED)

    def _begin(self, body: dict[str, Any], auth: str) -> tuple[str, int, str, float]:
        messages = body.get("messages") or [{}]
        text = str(messages[-1].get("content", ""))
        match = ID_PATTERN.search(text)
        request_id = match.group(1) if match else text
        with self._lock:
            attempt = self.hits[request_id]
            self.hits[request_id] += 1
            self.bearers[auth] += 1
            self._in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self._in_flight)
        return request_id, attempt, body_digest(body), time.monotonic()

    def _reply(self, body: dict[str, Any], auth: str) -> Reply:
        request_id, attempt, digest, at = self._begin(body, auth)
        action, outcome = "down", FAILED
        try:
            if self.is_down:
                return RESET, {}, b""
            if self.latency_s:
                time.sleep(self.latency_s)
            action = self.script(request_id, attempt)
            reply, outcome = self._act(action, body, request_id, auth)
            return reply
        finally:
            with self._lock:
                self._in_flight -= 1
                if outcome == ANSWERED:
                    self.answered[request_id] += 1
                elif outcome == LATE:
                    self.late[request_id] += 1
                self.log.append(Exchange(at, digest, request_id, attempt, action, outcome))

    def _act(
        self, action: str, body: dict[str, Any], request_id: str, auth: str
    ) -> tuple[Reply, str]:
        json_type = {"Content-Type": "application/json"}
        if self.reject_json_schema and "json_schema" in json.dumps(body.get("response_format")):
            return (400, json_type, _error("response_format json_schema is not supported")), FAILED
        if action.startswith("429"):
            wait = action.partition(":")[2] or "0"
            return (429, {**json_type, "Retry-After": wait}, _error("slow down")), FAILED
        if action in STATUS_ACTIONS:
            return (int(action), json_type, _error(f"scripted {action}")), FAILED
        if action == "401":
            return (401, json_type, _error(f"Incorrect API key provided: {auth}")), FAILED
        if action == "malformed":
            return (200, json_type, b'{"choices": [ {"message": '), FAILED
        if action == "empty":
            return (200, json_type, b'{"object": "chat.completion"}'), FAILED
        if action in ("reset", "down"):
            if action == "down":
                self.go_down()
            return (RESET, {}, b""), FAILED
        content = self._content(action, body, request_id)
        payload = json.dumps(self._completion(body, request_id, content)).encode()
        if action == "truncated":
            return (-200, json_type, payload), FAILED
        if action == "slow":
            time.sleep(self.slow_s)
            return (200, json_type, payload), LATE
        return (200, json_type, payload), ANSWERED

    def _content(self, action: str, body: dict[str, Any], request_id: str) -> str:
        if action == "bad-option":
            return bad_option_content(body)
        if self.content is not None:
            return self.content(body)
        return echo_content(body, request_id)

    @staticmethod
    def _completion(body: dict[str, Any], request_id: str, content: str) -> dict[str, Any]:
        choice: dict[str, Any] = {
            "index": 0,
            "message": {"role": "assistant", "content": content},
            "finish_reason": "stop",
        }
        if body.get("logprobs"):
            top = [{"token": "A", "logprob": -0.1, "bytes": None}]
            top.append({"token": " B", "logprob": -2.5, "bytes": None})
            first = {"token": "A", "logprob": -0.1, "bytes": None, "top_logprobs": top}
            choice["logprobs"] = {"content": [first]}
        return {
            "id": f"chatcmpl-{request_id}",
            "object": "chat.completion",
            "created": 0,
            "model": f"{body.get('model')}-served",
            "choices": [choice],
            "usage": {"prompt_tokens": 7, "completion_tokens": 2, "total_tokens": 9},
        }

    def _handler_class(self) -> type[BaseHTTPRequestHandler]:
        outer = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"  # keep-alive, as a real endpoint

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length", 0))
                body = json.loads(self.rfile.read(length) or b"{}")
                auth = self.headers.get("Authorization", "").removeprefix("Bearer ")
                status, headers, payload = outer._reply(body, auth)
                if status == RESET:
                    self._reset()
                    return
                with contextlib.suppress(BrokenPipeError, ConnectionResetError):
                    self.send_response(abs(status))
                    for key, value in headers.items():
                        self.send_header(key, value)
                    self.send_header("Content-Length", str(len(payload)))
                    self.end_headers()
                    if status < 0:  # promise the whole body, send half of it, hang up
                        self.wfile.write(payload[: len(payload) // 2])
                        self.close_connection = True
                        return
                    self.wfile.write(payload)

            def _reset(self) -> None:
                """Close with SO_LINGER 0: the kernel sends RST, not FIN."""
                self.close_connection = True
                self.connection.setsockopt(
                    socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0)
                )
                self.rfile.close()  # the last reference: close() below closes the socket
                self.connection.close()

            def log_message(self, format: str, *args: Any) -> None:
                pass  # keep test output clean

        return Handler


# -- what a reliability suite counts ------------------------------------------------------------

#: ``GCDBENCH_RELIABILITY_SUMMARY=FILE``: each suite also appends its summary line there
SUMMARY_ENV = "GCDBENCH_RELIABILITY_SUMMARY"


@dataclasses.dataclass
class SuiteSummary:
    """A suite's counts, printed as one JSON line (``RELIABILITY {...}``) when it ends: those
    in ``zero`` must be 0, those in ``positive`` above 0 (the suite did what it claims)."""

    suite: str
    zero: tuple[str, ...]
    positive: tuple[str, ...]
    counts: collections.Counter[str] = dataclasses.field(default_factory=collections.Counter)

    def add(self, **counts: int) -> None:
        self.counts.update(counts)

    def count_run(self, output: str, exception: BaseException | None) -> None:
        """One gcdbench invocation: a traceback in its output, or an exception other than
        the CLI's exit, counts as a traceback."""
        crashed = exception is not None and not isinstance(exception, SystemExit)
        self.add(runs=1, tracebacks=int(crashed or "Traceback (most recent call last)" in output))

    def to_dict(self) -> dict[str, Any]:
        keys = dict.fromkeys([*self.positive, *self.zero, *sorted(self.counts)])
        return {"suite": self.suite, **{key: self.counts[key] for key in keys}}

    def publish(self) -> str:
        line = "RELIABILITY " + json.dumps(self.to_dict())
        print(line)
        target = os.environ.get(SUMMARY_ENV)
        if target:
            with open(target, "a", encoding="utf-8") as handle:
                handle.write(line + "\n")
        return line

    def problems(self) -> list[str]:
        wrong = [f"{key}={self.counts[key]} (must be 0)" for key in self.zero if self.counts[key]]
        return wrong + [f"{key}=0 (must be > 0)" for key in self.positive if not self.counts[key]]


@dataclasses.dataclass(frozen=True)
class LedgerAudit:
    """A ledger against the server that filled it: every completion the client received is
    one row, once."""

    rows: int
    answered: int  # distinct requests the server sent a completion for
    asked_twice: int  # completions for a request already answered

    @property
    def lost(self) -> int:
        return max(0, self.answered - self.rows)

    @property
    def duplicates(self) -> int:
        return max(0, self.rows - self.answered)


def ledger_rows(path: Path) -> int:
    if not path.exists():
        return 0
    with contextlib.closing(sqlite3.connect(path, timeout=10)) as db:
        return int(db.execute("SELECT COUNT(*) FROM answers").fetchone()[0])


def audit_ledger(server: ScriptedChatServer, ledger: Path, summary: SuiteSummary) -> LedgerAudit:
    """Compare ``ledger`` with what ``server`` answered, and add the counts to ``summary``."""
    answered = server.answered_digests()
    audit = LedgerAudit(
        rows=ledger_rows(ledger),
        answered=len(answered),
        asked_twice=sum(n - 1 for n in answered.values()),
    )
    summary.add(
        faults_injected=len(server.faults()),
        results_lost=audit.lost,
        duplicates=audit.duplicates,
        questions_asked_twice=audit.asked_twice,
    )
    return audit


def smollm2_gguf() -> Path:
    from gcdbench.llm.models import packaged_gguf

    return packaged_gguf("smollm2-135m").path


class LlamaCppServer:
    """``python -m llama_cpp.server`` on 127.0.0.1, ready when /v1/models answers."""

    def __init__(
        self, model: Path, alias: str = "smollm2", threads: int = 2, extra: Sequence[str] = ()
    ) -> None:
        self.port = free_port()
        self.alias = alias
        self.command = [
            sys.executable, "-m", "llama_cpp.server", "--model", str(model),
            "--model_alias", alias, "--host", "127.0.0.1", "--port", str(self.port),
            "--n_ctx", "2048", "--n_threads", str(threads), *extra,
        ]  # fmt: skip
        self.process: subprocess.Popen[bytes] | None = None
        # a file, not a pipe: llama.cpp logs enough at load to fill a pipe and block the server
        self.log = tempfile.TemporaryFile()  # noqa: SIM115 - lives as long as the server

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def start(self, timeout_s: float = 90.0) -> None:
        self.process = subprocess.Popen(self.command, stdout=self.log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(
                    f"llama_cpp.server exited with {self.process.returncode}: {self.log_tail()}"
                )
            with (
                contextlib.suppress(OSError),
                urllib.request.urlopen(f"{self.base_url}/models", timeout=2) as reply,
            ):
                if reply.status == 200:
                    return
            time.sleep(0.3)
        self.stop()
        raise RuntimeError(f"llama_cpp.server did not answer within {timeout_s:.0f} s")

    def log_tail(self, chars: int = 2000) -> str:
        self.log.seek(0)
        return self.log.read().decode(errors="replace")[-chars:]

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self.process.terminate()  # the PID we started, nothing else
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=10)

    def __enter__(self) -> LlamaCppServer:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


@pytest.fixture(scope="session")
def llama_server() -> Iterator[LlamaCppServer]:
    """A real llama.cpp server with SmolLM2-135M (skips without llama-cpp-python[server])."""
    pytest.importorskip("llama_cpp.server", reason="needs llama-cpp-python[server]")
    try:
        model = smollm2_gguf()
    except Exception as exc:  # the package is missing: say how to get it
        pytest.skip(f"SmolLM2 GGUF unavailable ({exc})")
    # One thread: on a shared 2-core machine two spinning llama.cpp threads ran 10x slower.
    server = LlamaCppServer(model, threads=1)
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def scripted_server() -> Iterator[Callable[..., ScriptedChatServer]]:
    """A factory: ``scripted_server(script, latency_s=..., slow_s=...)``, started and stopped
    around the test."""
    with contextlib.ExitStack() as stack:

        def make(script: Script = always_ok, **kwargs: Any) -> ScriptedChatServer:
            return stack.enter_context(ScriptedChatServer(script, **kwargs))

        yield make
