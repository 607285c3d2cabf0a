"""The benchmark's upstream: fixed OpenAI chat-completion answers, as cheap to serve as possible.

Two paths, because the cheapest server (nginx ``return``) cannot look inside a request body to
tell a stream from a plain call:

    POST /plain/v1/chat/completions   -> one JSON chat completion (6 output tokens)
    POST /stream/v1/chat/completions  -> the same answer as SSE: role, 5 content deltas, finish,
                                         a usage chunk (include_usage) and ``data: [DONE]``

The relays get one model per path (``bench-plain`` -> /plain, ``bench-stream`` -> /stream).

``bench/run.py`` serves these bytes with nginx when it is installed (see ``nginx_conf``), else
with the minimal aiohttp server below (``python bench/mock_upstream.py PORT``).
"""

import json
import sys

PROMPT_TOKENS = 14
WORDS = ["Hello", " from", " the", " mock", " upstream."]
CREATED = 1700000000


def plain_body(model: str = "bench-plain") -> bytes:
    return json.dumps(
        {
            "id": "chatcmpl-bench",
            "object": "chat.completion",
            "created": CREATED,
            "model": model,
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": "".join(WORDS)},
                    "logprobs": None,
                    "finish_reason": "stop",
                }
            ],
            "usage": {
                "prompt_tokens": PROMPT_TOKENS,
                "completion_tokens": len(WORDS) + 1,
                "total_tokens": PROMPT_TOKENS + len(WORDS) + 1,
            },
        },
        separators=(",", ":"),
    ).encode()


def stream_body(model: str = "bench-stream") -> bytes:
    def chunk(delta, finish=None, usage=None, choices=True):
        payload = {
            "id": "chatcmpl-bench",
            "object": "chat.completion.chunk",
            "created": CREATED,
            "model": model,
            "choices": (
                [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}]
                if choices
                else []
            ),
        }
        if usage is not None:
            payload["usage"] = usage
        return "data: " + json.dumps(payload, separators=(",", ":")) + "\n\n"

    events = [chunk({"role": "assistant", "content": ""})]
    events += [chunk({"content": word}) for word in WORDS]
    events.append(chunk({}, finish="stop"))
    events.append(
        chunk(
            None,
            usage={
                "prompt_tokens": PROMPT_TOKENS,
                "completion_tokens": len(WORDS) + 1,
                "total_tokens": PROMPT_TOKENS + len(WORDS) + 1,
            },
            choices=False,
        )
    )
    events.append("data: [DONE]\n\n")
    return "".join(events).encode()


def _nginx_string(data: bytes) -> str:
    """A single-quoted nginx string: nginx turns \\n back into a newline; no $ may appear."""
    text = data.decode()
    assert "$" not in text and "'" not in text and "\\" not in text
    return "'" + text.replace("\n", "\\n") + "'"


def nginx_conf(*, port: int, prefix: str) -> str:
    """A one-worker nginx answering both paths from memory (no file, no body read, no log)."""
    return f"""
worker_processes 1;
daemon off;
pid {prefix}/nginx.pid;
error_log {prefix}/nginx-error.log warn;
events {{ worker_connections 4096; }}
http {{
    access_log off;
    client_body_temp_path {prefix}/tmp-body;
    proxy_temp_path {prefix}/tmp-proxy;
    fastcgi_temp_path {prefix}/tmp-fastcgi;
    uwsgi_temp_path {prefix}/tmp-uwsgi;
    scgi_temp_path {prefix}/tmp-scgi;
    keepalive_requests 100000000;
    keepalive_timeout 300s;
    server_tokens off;
    server {{
        listen 127.0.0.1:{port} backlog=4096;
        location = /plain/v1/chat/completions {{
            default_type application/json;
            return 200 {_nginx_string(plain_body())};
        }}
        location = /stream/v1/chat/completions {{
            default_type text/event-stream;
            return 200 {_nginx_string(stream_body())};
        }}
        location / {{ return 404; }}
    }}
}}
"""


def serve_aiohttp(port: int) -> None:
    """The fallback upstream: aiohttp, one process, one handler per path, no body parsing."""
    from aiohttp import web

    plain, stream = plain_body(), stream_body()

    async def answer_plain(request):
        await request.read()
        return web.Response(body=plain, content_type="application/json")

    async def answer_stream(request):
        await request.read()
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        await response.write(stream)
        await response.write_eof()
        return response

    app = web.Application()
    app.router.add_post("/plain/v1/chat/completions", answer_plain)
    app.router.add_post("/stream/v1/chat/completions", answer_stream)
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass
    web.run_app(app, host="127.0.0.1", port=port, access_log=None, print=None)


if __name__ == "__main__":
    serve_aiohttp(int(sys.argv[1]))
