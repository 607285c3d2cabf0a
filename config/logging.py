"""Log filter that keeps API keys out of every log line."""

import logging
import re

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
