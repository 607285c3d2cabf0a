"""What the benchmark sends: one chat completion per call, plain or streamed, to one model per
mode (the mock upstream serves each mode on its own path), and a bare HTTP client for it."""

import http.client
import json
from urllib.parse import urlsplit

UPSTREAM_KEY = "upstream-bench-key"
MODELS = {"plain": "bench-plain", "stream": "bench-stream"}
PROMPT = "Say hello from the mock upstream, in five words."


def request_body(mode: str) -> bytes:
    body = {
        "model": MODELS[mode],
        "messages": [{"role": "user", "content": PROMPT}],
        "max_tokens": 16,
    }
    if mode == "stream":
        body["stream"] = True
        body["stream_options"] = {"include_usage": True}
    return json.dumps(body).encode()


def post(url: str, body: bytes, key: str | None = None, timeout=30) -> tuple[int, bytes]:
    parts = urlsplit(url)
    connection = http.client.HTTPConnection(parts.hostname, parts.port, timeout=timeout)
    headers = {"Content-Type": "application/json"}
    if key:
        headers["Authorization"] = f"Bearer {key}"
    try:
        connection.request("POST", parts.path, body=body, headers=headers)
        response = connection.getresponse()
        return response.status, response.read()
    finally:
        connection.close()
