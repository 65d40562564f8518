"""A local OpenAI-compatible chat server for the litellm tests (real HTTP, no remote calls).

``ChatServer(answer)`` listens on 127.0.0.1; litellm reaches it with
``model="openai/whatever", api_base=server.url``. ``answer(body) -> str`` writes the
assistant's text for a request; ``server.plan`` queues failures for the next requests:
``"429"``, ``"500"``, ``"503"``, ``"401"`` (echoes the bearer key, as careless servers do),
``"sleep:SECONDS"`` (then answers), ``"garbage"`` (a 200 whose body is not JSON) and
``"truncate:N"`` (only the first N characters, ``finish_reason: length``); ``answer`` may
raise :class:`Fail` to reply with an error status for particular requests.
"""

from __future__ import annotations

import base64
import io
import json
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from PIL import Image


class Fail(Exception):
    """Raised by an ``answer`` function: the server replies with this HTTP status."""

    def __init__(self, status: int) -> None:
        super().__init__(status)
        self.status = status


class ChatServer:
    """An OpenAI-style ``/v1/chat/completions`` endpoint in a background thread."""

    def __init__(self, answer: Callable[[dict[str, Any]], str]) -> None:
        self.answer = answer
        self.plan: list[str] = []
        self.requests: list[dict[str, Any]] = []
        self.headers: list[dict[str, str]] = []
        self.lock = threading.Lock()
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:  # keep test output clean
                pass

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = json.loads(self.rfile.read(length) or b"{}")
                with server.lock:
                    server.requests.append(body)
                    server.headers.append({k.lower(): v for k, v in self.headers.items()})
                    step = server.plan.pop(0) if server.plan else "ok"
                server.respond(self, body, step)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"

    def __enter__(self) -> ChatServer:
        self.thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()

    def respond(self, handler: BaseHTTPRequestHandler, body: dict[str, Any], step: str) -> None:
        if step in ("429", "500", "503"):
            message = {"429": "Rate limit reached", "500": "internal error", "503": "overloaded"}
            self._send(handler, int(step), {"error": {"message": message[step], "type": step}})
            return
        if step == "401":
            key = handler.headers.get("Authorization", "").removeprefix("Bearer ")
            error = {"message": f"Incorrect API key provided: {key}", "type": "invalid_key"}
            self._send(handler, 401, {"error": error})
            return
        if step == "garbage":
            self._send_raw(handler, 200, b"<html>502 from a proxy</html>{")
            return
        if step.startswith("sleep:"):
            time.sleep(float(step.split(":")[1]))
        try:
            content = self.answer(body)
        except Fail as fail:
            self._send(handler, fail.status, {"error": {"message": "failed on purpose"}})
            return
        finish = "stop"
        if step.startswith("truncate:"):
            content, finish = content[: int(step.split(":")[1])], "length"
        self._send(
            handler,
            200,
            {
                "id": "chatcmpl-test",
                "object": "chat.completion",
                "created": int(time.time()),
                "model": body.get("model", "whatever"),
                "choices": [
                    {
                        "index": 0,
                        "message": {"role": "assistant", "content": content},
                        "finish_reason": finish,
                    }
                ],
                "usage": {"prompt_tokens": 50, "completion_tokens": 20, "total_tokens": 70},
            },
        )

    @staticmethod
    def _send(handler: BaseHTTPRequestHandler, status: int, payload: dict[str, Any]) -> None:
        ChatServer._send_raw(handler, status, json.dumps(payload).encode())

    @staticmethod
    def _send_raw(handler: BaseHTTPRequestHandler, status: int, data: bytes) -> None:
        try:
            handler.send_response(status)
            handler.send_header("Content-Type", "application/json")
            handler.send_header("Content-Length", str(len(data)))
            handler.end_headers()
            handler.wfile.write(data)
        except (BrokenPipeError, ConnectionResetError):  # the client timed out first
            pass


def user_text(body: dict[str, Any]) -> str:
    """The text of the last user message of a request."""
    content = body["messages"][-1]["content"]
    if isinstance(content, str):
        return content
    return " ".join(part["text"] for part in content if part.get("type") == "text")


def request_image(body: dict[str, Any]) -> Image.Image | None:
    """The image sent as a data URL in a request, decoded, or None."""
    content = body["messages"][-1]["content"]
    if isinstance(content, str):
        return None
    for part in content:
        if part.get("type") == "image_url":
            url = part["image_url"]["url"]
            header, _, data = url.partition(",")
            assert header == "data:image/jpeg;base64", header
            return Image.open(io.BytesIO(base64.b64decode(data))).convert("RGB")
    return None
