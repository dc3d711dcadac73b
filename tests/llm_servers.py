"""Real HTTP servers on 127.0.0.1 for the LLM layer's tests and benchmarks.

- :class:`ScriptedChatServer`: a small chat-completions server (stdlib ``http.server``, one
  thread per connection) that answers each request as its script says: ``ok``, ``429`` or
  ``429:SECONDS`` (with that Retry-After), ``500``, ``400``, ``401`` (echoing the bearer token it
  got, as some APIs do), ``slow`` (beyond the client's timeout), ``malformed`` (a 200 whose body
  is not JSON) or ``empty`` (valid JSON without choices); optionally after a fixed latency, and
  optionally refusing ``json_schema`` response formats like servers that lack them. It
  counts hits per request id (the text after ``id=`` in the last message), so a test can prove
  that no request was lost or sent twice.
- :class:`LlamaCppServer`: llama.cpp's OpenAI-compatible server (``python -m llama_cpp.server``)
  on a free port, started as a subprocess and stopped by its PID.

Fixtures ``scripted_server`` and ``llama_server`` wrap them (imported in conftest.py).
"""

from __future__ import annotations

import collections
import contextlib
import json
import re
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator, Sequence
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

ID_PATTERN = re.compile(r"id=(\S+)")
#: behaviour for (request id, attempt number starting at 0)
Script = Callable[[str, int], str]


def always_ok(request_id: str, attempt: int) -> str:
    return "ok"


def _error(message: str) -> bytes:
    return json.dumps({"error": {"message": message, "type": "scripted"}}).encode()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    # the default backlog (5) drops connections when 32 clients connect at once
    request_queue_size = 256


class ScriptedChatServer:
    """A chat-completions endpoint whose failures follow a script; see the module doc."""

    def __init__(
        self,
        script: Script = always_ok,
        latency_s: float = 0.0,
        slow_s: float = 2.0,
        reject_json_schema: bool = False,
    ) -> None:
        self.script = script
        self.reject_json_schema = reject_json_schema
        self.latency_s = latency_s
        self.slow_s = slow_s
        self.hits: collections.Counter[str] = collections.Counter()
        self.answered: collections.Counter[str] = collections.Counter()
        self.max_in_flight = 0
        self._in_flight = 0
        self._lock = threading.Lock()
        self._server = _Server(("127.0.0.1", 0), self._handler_class())
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def base_url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}/v1"

    def __enter__(self) -> ScriptedChatServer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)

    def _reply(self, body: dict[str, Any], auth: str) -> tuple[int, dict[str, str], bytes]:
        messages = body.get("messages") or [{}]
        text = str(messages[-1].get("content", ""))
        match = ID_PATTERN.search(text)
        request_id = match.group(1) if match else text
        with self._lock:
            attempt = self.hits[request_id]
            self.hits[request_id] += 1
            self._in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self._in_flight)
        try:
            if self.latency_s:
                time.sleep(self.latency_s)
            action = self.script(request_id, attempt)
            json_type = {"Content-Type": "application/json"}
            if self.reject_json_schema and "json_schema" in json.dumps(body.get("response_format")):
                return 400, json_type, _error("response_format json_schema is not supported")
            if action.startswith("429"):
                wait = action.partition(":")[2] or "0"
                return 429, {**json_type, "Retry-After": wait}, _error("slow down")
            if action in ("400", "500"):
                return int(action), json_type, _error(f"scripted {action}")
            if action == "401":
                return 401, json_type, _error(f"Incorrect API key provided: {auth}")
            if action == "slow":
                time.sleep(self.slow_s)
            if action == "malformed":
                return 200, json_type, b'{"choices": [ {"message": '
            if action == "empty":
                return 200, json_type, b'{"object": "chat.completion"}'
            with self._lock:
                self.answered[request_id] += 1
            return 200, json_type, json.dumps(self._completion(body, request_id)).encode()
        finally:
            with self._lock:
                self._in_flight -= 1

    @staticmethod
    def _completion(body: dict[str, Any], request_id: str) -> dict[str, Any]:
        content = f"answer {request_id}"
        response_format = body.get("response_format") or {}
        # json_schema (OpenAI) carries the schema one level deeper than json_object (llama.cpp)
        schema = (response_format.get("json_schema") or response_format).get("schema") or {}
        enum = schema.get("properties", {}).get("answer", {}).get("enum")
        if enum:  # structured request: answer with the last allowed choice, as JSON
            content = json.dumps({"answer": enum[-1]})
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
                with contextlib.suppress(BrokenPipeError, ConnectionResetError):
                    self.send_response(status)
                    for key, value in headers.items():
                        self.send_header(key, value)
                    self.send_header("Content-Length", str(len(payload)))
                    self.end_headers()
                    self.wfile.write(payload)

            def log_message(self, format: str, *args: Any) -> None:
                pass  # keep test output clean

        return Handler


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
