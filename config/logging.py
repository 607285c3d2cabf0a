"""How the server's log lines look, and the filters every line passes: the request id of
the /v1 call being served, and API keys cut out.

Every line, Django's, the relay's, uvicorn's and Celery's alike, reads

    2026-11-30 19:02:29,123 WARNING relay.database [req_5f0c...] database unavailable (...)

timestamp, level, logger, then the request id (``x-request-id`` of the /v1 call whose code
wrote the line, ``-`` outside one), then the message. Settings' LOGGING gives Django's and
Celery's loggers this format (Celery is told not to install its own, CELERY_WORKER_HIJACK_ROOT_
LOGGER); scripts/serve gives uvicorn's (``--log-config``, ``config/uvicorn-logging.json``), so
its supervisor's lines, written before Django is loaded, look the same.
"""

import logging
import re
import sys

FORMAT = "%(asctime)s %(levelname)s %(name)s [%(request_id)s] %(message)s"

# A key may travel in a query string (?key=, Gemini clients) or in a header that an error
# message echoes; both are cut before the line is written.
SECRET_PATTERNS = [
    (re.compile(r"([?&](?:key|api_key|api-key)=)[^&\s\"']+", re.IGNORECASE), r"\1[redacted]"),
    (
        re.compile(
            r"((?:authorization|x-api-key|mj-api-secret|x-goog-api-key)['\"]?\s*[:=]\s*['\"]?)"
            r"(?:bearer\s+)?[^\s'\",}]+",
            re.IGNORECASE,
        ),
        r"\1[redacted]",
    ),
    (re.compile(r"\bsk-[A-Za-z0-9]{16,}"), "sk-[redacted]"),
]


def redact(text: str) -> str:
    for pattern, replacement in SECRET_PATTERNS:
        text = pattern.sub(replacement, text)
    return text


class RedactSecrets(logging.Filter):
    """Rewrite a record's message (and access-log arguments) with secrets cut out."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        cleaned = redact(message)
        if cleaned != message:
            record.msg = cleaned
            record.args = ()
        return True


def redact_access_logs() -> None:
    """Filter uvicorn's access log (when it is on) without taking over its handlers: naming
    the logger in LOGGING would give it a handler and so turn on the access log that
    ``--no-access-log`` turned off."""
    logging.getLogger("uvicorn.access").addFilter(RedactSecrets())


class RequestId(logging.Filter):
    """Give every record ``request_id``: the /v1 call being served (relay.responses), or "-".

    relay.responses is read only once something imported it: the uvicorn supervisor, which
    loads no app, logs with "-" and imports nothing of Sluice's but this module."""

    def filter(self, record: logging.LogRecord) -> bool:
        if not hasattr(record, "request_id"):
            responses = sys.modules.get("relay.responses")
            current = responses.request_id.get() if responses is not None else None
            record.request_id = current or "-"
        return True
