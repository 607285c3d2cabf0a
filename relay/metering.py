"""What a call may use, decided once at admission, and what it is billed for at the end.

A call never costs more than its hold (beyond the gap between the local and the upstream
count of its input). Three things make that true, all here:

- ``output_limit``: the output a call may produce is decided once, from every spelling its
  format has (the smallest wins), capped by the model's largest output, and exactly that
  number is sent upstream in the upstream's spelling (``set_output_limit``), after any
  format conversion.
- ``choices`` and ``paid_options``: everything that multiplies the output (``n``, ``best_of``)
  or costs extra (service tiers, web search, cache writes, audio) is counted into the hold or
  refused with a 400 naming it; nothing dear passes through unpriced.
- ``billable_usage``: the upstream's reported usage is believed only when it is plausible
  for this call (within its limits and near the local input count); otherwise local counts
  are billed and the usage row is flagged with the raw figures.

No I/O here, and no Django beyond reading settings.
"""

from collections.abc import Callable
from dataclasses import dataclass, replace
from decimal import Decimal

from django.conf import settings

from billing.operations import UsageFlag
from billing.pricing import Price, TokenUsage
from relay.errors import RelayError, invalid_request
from relay.operations import Format, Operation
from relay.providers.base import CHAT, COMPLETIONS, EMBEDDINGS

# OpenAI models that take only `max_completion_tokens` (they refuse `max_tokens`).
COMPLETION_TOKENS_ONLY = ("o1", "o3", "o4", "gpt-5")
# Reported input this far above the local count (×, plus tokens of overhead such as tool
# definitions the provider adds) is not believed.
INPUT_TRUST_FACTOR = 4
INPUT_TRUST_MARGIN = 2048
# Reported output beyond this multiple of the call's own limit is not believed; between the
# limit and this, it is clamped to the limit.
OUTPUT_TRUST_FACTOR = 4


def field(body: dict, name: str):
    """``body[name]``, where a dotted name reaches into objects (Gemini's
    ``generationConfig.maxOutputTokens``); None when absent."""
    value: object = body
    for step in name.split("."):
        if not isinstance(value, dict):
            return None
        value = value.get(step)
    return value


def output_limit(operation: Operation, body: dict) -> int | None:
    """The output limit the client asked for: the smallest of its format's spellings."""
    named = [
        value
        for value in (field(body, name) for name in operation.output_limit_fields)
        if isinstance(value, int) and not isinstance(value, bool)
    ]
    return min(named) if named else None


def client_limit_spelling(operation: Operation, body: dict) -> str | None:
    """The spelling the client used for its limit (kept when the upstream speaks its format)."""
    for name in operation.output_limit_fields:
        if name in body or ("." in name and field(body, name) is not None):
            return name
    return None


def choices(operation: Operation, body: dict) -> int:
    """How many outputs the request asks for (``n``, ``best_of``): each one is billed."""
    return max((_positive(field(body, name)) for name in operation.choice_fields), default=1)


def _positive(value) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else 1


@dataclass(frozen=True)
class PaidOptions:
    """The paid upstream options a request uses, each priced or refused at admission."""

    service_tier: str = ""
    tier_ratio: Decimal | int = 1  # multiplies the whole charge
    web_searches: int = 0  # the most searches the call may run
    searches_per_call: bool = False  # OpenAI's web_search_options: one search per call
    audio_output: bool = False
    cache_writes: str = ""  # "", "5m" or "1h"


def paid_options(
    operation: str, body: dict, raw_body: bytes, headers: dict, price: Price, *, anthropic: bool
) -> PaidOptions:
    """The paid options of a request, or a 400 naming the one this site does not sell.

    ``anthropic``: a channel of Anthropic's family may serve the call (its cache writes and
    betas then matter). Server-side web search tools without ``max_uses`` get
    RELAY_WEB_SEARCH_MAX_USES set in ``body`` (the hold covers that many searches).
    """
    tier = body.get("service_tier")
    tier_ratio: Decimal | int = 1
    if tier is not None:
        ratios = settings.RELAY_SERVICE_TIER_RATIOS
        if tier not in ratios:
            raise invalid_request(
                f"service_tier '{str(tier)[:32]}' is not offered on this site "
                f"(offered: {', '.join(sorted(ratios))}).",
                param="service_tier",
            )
        tier_ratio = ratios[tier]

    web_searches, per_call = 0, False
    if operation == CHAT and body.get("web_search_options") is not None:
        _require(price.web_search_quota is not None, "web_search_options", "Web search")
        web_searches, per_call = 1, True
    for index, tool in enumerate(body.get("tools") or ()):
        kind = str(tool.get("type") or "") if isinstance(tool, dict) else ""
        if kind.startswith("web_search"):
            _require(price.web_search_quota is not None, f"tools[{index}]", "Web search")
            if not isinstance(tool.get("max_uses"), int) or tool["max_uses"] < 1:
                tool["max_uses"] = settings.RELAY_WEB_SEARCH_MAX_USES
            web_searches += tool["max_uses"]
        elif isinstance(tool, dict) and ({"googleSearch", "googleSearchRetrieval"} & set(tool)):
            # Google bills grounded prompts apart; this site has no price for them.
            raise invalid_request(
                f"tools[{index}]: Google Search grounding is not offered on this site.",
                param=f"tools[{index}]",
            )
        elif kind.startswith("code_execution"):
            raise invalid_request(
                f"tools[{index}]: the server-side code execution tool is not offered on this site.",
                param=f"tools[{index}]",
            )

    audio_output = operation == CHAT and (
        "audio" in (body.get("modalities") or ()) or body.get("audio") is not None
    )
    if audio_output:
        _require(price.audio_output_ratio is not None, "modalities", "Audio output")

    cache_writes = ""
    if anthropic and b'"cache_control"' in raw_body:
        cache_writes = "1h" if b'"1h"' in raw_body else "5m"
    if anthropic:
        for beta in _betas(headers.get("anthropic-beta", "")):
            if beta not in settings.RELAY_ANTHROPIC_BETAS:
                raise invalid_request(
                    f"anthropic-beta '{beta[:64]}' is not offered on this site.",
                    param="anthropic-beta",
                )
    return PaidOptions(
        service_tier=tier or "",
        tier_ratio=tier_ratio,
        web_searches=web_searches,
        searches_per_call=per_call,
        audio_output=audio_output,
        cache_writes=cache_writes,
    )


def _betas(header: str) -> list[str]:
    return [beta.strip() for beta in header.split(",") if beta.strip()]


def _require(priced: bool, param: str, what: str) -> None:
    if not priced:
        raise invalid_request(
            f"{param}: {what} is not priced for this model on this site.", param=param
        )


def refuse_audio_input(price: Price, audio_tokens: int) -> None:
    """Audio input is billed at its own price, or refused."""
    if audio_tokens and price.audio_input_ratio is None:
        raise invalid_request(
            "messages: audio input is not priced for this model on this site.", param="messages"
        )


def refuse_unpriced_tokens(operation: Operation, price: Price) -> None:
    """A model priced only per call (an image or audio model: no token ratio) is refused on
    the endpoints billed by tokens, where its zero ratio would make the call free."""
    if operation.media or price.is_free or price.per_call_quota is not None:
        return
    if price.model_ratio <= 0:
        raise RelayError(
            404,
            f"The model '{price.model}' has no price for {operation.path} on this site.",
            code="model_not_found",
            retry=False,
        )


def set_output_limit(
    body: dict,
    *,
    operation: str,
    upstream_format: Format,
    upstream_model: str,
    limit: int | None,
    client_spelling: str | None,
) -> dict:
    """The upstream body with exactly ``limit`` as its only output limit, in the upstream's
    spelling (``operation`` is the upstream's). ``limit`` None leaves the body as it is."""
    if limit is None or operation == EMBEDDINGS:
        return body
    body = dict(body)
    if upstream_format == "anthropic":
        body["max_tokens"] = limit
        return body
    if upstream_format == "responses":
        body["max_output_tokens"] = limit
        return body
    if upstream_format == "gemini":
        body["generationConfig"] = dict(body.get("generationConfig") or {}, maxOutputTokens=limit)
        return body
    if operation == COMPLETIONS:
        body["max_tokens"] = limit
        return body
    body.pop("max_tokens", None)
    body.pop("max_completion_tokens", None)
    if client_spelling in ("max_tokens", "max_completion_tokens"):
        spelling = client_spelling
    elif upstream_model.startswith(COMPLETION_TOKENS_ONLY):
        spelling = "max_completion_tokens"
    else:
        # What every OpenAI-compatible upstream understands.
        spelling = "max_tokens"
    body[spelling] = limit
    return body


def _input_total(usage: TokenUsage) -> int:
    return (
        usage.input_tokens
        + usage.cached_input_tokens
        + usage.cache_write_tokens
        + usage.cache_write_1h_tokens
        + usage.audio_input_tokens
    )


def billable_usage(
    reported: TokenUsage | None,
    *,
    local: Callable[[], TokenUsage],
    local_input: int,
    output_cap: int,
    web_search_cap: int,
    problem: dict | None = None,
) -> tuple[TokenUsage, str, dict | None]:
    """The usage to bill, its flag and the raw figures kept when they were not billed.

    ``local()`` is the call's own count (input counted at admission, output counted from what
    was sent; called only when needed, as counting output costs a tokenizer pass);
    ``local_input`` its input part; ``output_cap`` the most output the call could produce
    (limit × choices); ``problem`` the raw figures of a usage the adapter could not read.
    """
    flag = UsageFlag
    if problem is not None:
        return within_output_cap(local(), output_cap), flag.REJECTED, problem
    if reported is None:
        # An upstream that ignored the limit it was sent and reported nothing: what was counted
        # past the limit is not billed (the hold covered the limit, not more).
        counted = local()
        usage = within_output_cap(counted, output_cap)
        if usage is counted:
            return usage, flag.TRUSTED, None
        return usage, flag.CLAMPED, _figures(counted)
    raw = _figures(reported)
    output = reported.output_tokens + reported.audio_output_tokens
    if (
        _input_total(reported) > local_input * INPUT_TRUST_FACTOR + INPUT_TRUST_MARGIN
        or output > output_cap * OUTPUT_TRUST_FACTOR
    ):
        return within_output_cap(local(), output_cap), flag.REJECTED, raw
    usage = within_output_cap(reported, output_cap)
    clamped = usage is not reported
    if usage.reasoning_tokens > usage.output_tokens:
        usage, clamped = replace(usage, reasoning_tokens=usage.output_tokens), True
    if usage.web_search_calls > web_search_cap:
        usage, clamped = replace(usage, web_search_calls=web_search_cap), True
    if clamped:
        return usage, flag.CLAMPED, raw
    return usage, flag.TRUSTED, None


def within_output_cap(usage: TokenUsage, output_cap: int) -> TokenUsage:
    """``usage`` with its output (text first, then audio) clamped to ``output_cap``, the most
    the call's hold covered; the same object when it is within it."""
    if usage.output_tokens + usage.audio_output_tokens <= output_cap:
        return usage
    text = min(usage.output_tokens, output_cap)
    return replace(
        usage,
        output_tokens=text,
        audio_output_tokens=min(usage.audio_output_tokens, output_cap - text),
    )


def _figures(usage: TokenUsage) -> dict:
    return {name: value for name, value in vars(usage).items() if value}


def too_many_in_flight(scope: str) -> RelayError:
    if scope == "key":
        return RelayError(
            429,
            "Too many calls in flight for this API key. Wait for one to finish.",
            code="rate_limit_exceeded",
            error_type="rate_limit_error",
        )
    return RelayError(
        503,
        "The server is busy. Try again shortly.",
        code="server_busy",
        error_type="server_error",
    )
