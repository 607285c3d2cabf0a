"""The Logs page (a person's calls and balance movements, and their CSV) and the built-in
Chat page (with the one endpoint that gives its owner a key in clear).

Views parse, ask ``accounts.logs``, and render. Every query is scoped to ``request.user``.
"""

import csv
from collections.abc import AsyncIterator, Iterator

from asgiref.sync import sync_to_async
from django import forms
from django.contrib.auth.decorators import login_required
from django.core.handlers.asgi import ASGIRequest
from django.http import Http404, JsonResponse, StreamingHttpResponse
from django.shortcuts import render
from django.urls import reverse
from django.utils import timezone
from django.utils.translation import gettext_lazy as _
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET, require_POST

from accounts import logs
from accounts.models import ApiKey
from accounts.templatetags.money import format_usd


class LogFilterForm(forms.Form):
    """The filter in the page's query string (GET, so a filtered view can be bookmarked)."""

    show = forms.ChoiceField(
        required=False,
        choices=[(logs.CALLS, _("Calls")), (logs.LEDGER, _("Balance movements"))],
    )
    start = forms.DateField(required=False, label=_("From"))
    end = forms.DateField(required=False, label=_("To"))
    key = forms.TypedChoiceField(required=False, coerce=int, empty_value=None, label=_("Key"))
    model = forms.CharField(required=False, max_length=128, label=_("Model"))
    kind = forms.ChoiceField(
        required=False,
        label=_("Kind"),
        choices=[("", _("All kinds")), *logs.KIND_LABELS.items()],
    )
    before = forms.IntegerField(required=False, min_value=1)
    after = forms.IntegerField(required=False, min_value=1)

    def __init__(self, data, *, key_names: dict[int, str]):
        super().__init__(data)
        # Only the person's own keys are valid choices; anyone else's id is an error here and,
        # even if it were not, every query is scoped to the person.
        self.fields["key"].choices = [("", _("All keys")), *key_names.items()]

    def clean(self):
        data = super().clean()
        start, end = data.get("start"), data.get("end")
        if start and end and start > end:
            self.add_error("end", _("The end date is before the start date."))
        return data

    def value(self, name: str):
        """A field's cleaned value, or its empty value when it was missing or invalid."""
        self.is_valid()
        return self.cleaned_data.get(name) or None

    def log_filter(self) -> logs.LogFilter:
        self.is_valid()
        data = self.cleaned_data
        dates_ok = "end" not in self.errors
        return logs.LogFilter(
            start=data.get("start") if dates_ok else None,
            end=data.get("end") if dates_ok else None,
            api_key_id=data.get("key") or None,
            model=(data.get("model") or "").strip(),
            kind=data.get("kind") or "",
        )


def _filter_form(request) -> tuple[LogFilterForm, dict[int, str]]:
    names = logs.key_names(request.user.id)
    return LogFilterForm(request.GET, key_names=names), names


def _query_without(request, *names: str) -> str:
    query = request.GET.copy()
    for name in names:
        query.pop(name, None)
    return query.urlencode()


def _selection(request):
    """The filter asked for, and the rows it selects (calls or ledger movements)."""
    form, names = _filter_form(request)
    wanted = form.log_filter()
    show = form.value("show") or logs.CALLS
    if show == logs.LEDGER:
        rows = logs.movements(request.user.id, wanted)
    else:
        rows = logs.calls(request.user.id, wanted)
    return form, names, show, wanted, rows


@login_required
@require_GET
def logs_page(request):
    """One page of rows. The totals come from ``logs_totals`` in a second request: summing a
    heavy user's half a million calls takes longer than the page may (README, "Logs page")."""
    form, names, show, wanted, rows = _selection(request)
    if show == logs.LEDGER:
        rows = rows.only("id", "created_at", "kind", "amount", "key_amount", "api_key_id", "note")
    else:
        rows = rows.defer("reported_usage")
    found = logs.page(rows, before=form.value("before"), after=form.value("after"))
    for row in found.rows:
        row.key_name = names.get(row.api_key_id, "")
        if show == logs.LEDGER:
            row.kind_label = logs.KIND_LABELS.get(row.kind, row.kind)
        else:
            row.status_label = logs.STATUS_LABELS.get(row.status, row.status)
    filter_query = _query_without(request, "before", "after")
    return render(
        request,
        "site/logs.html",
        {
            "form": form,
            "show": show,
            "wanted": wanted,
            "key_names": names,
            "models": logs.models_used(request.user.id) if show == logs.CALLS else [],
            "kinds": logs.KIND_LABELS,
            "page": found,
            "filter_query": filter_query,
            "tab_query": _query_without(request, "before", "after", "show"),
        },
    )


@login_required
@require_GET
def logs_totals(request):
    """The totals of every row the filter selects (not just one page), as JSON."""
    _form, _names, show, _wanted, rows = _selection(request)
    if show == logs.LEDGER:
        totals = logs.movement_totals(rows)
        totals["net"] = ("+" if totals["amount"] > 0 else "") + format_usd(totals["amount"])
    else:
        totals = logs.call_totals(rows)
        totals["cost"] = format_usd(totals["quota"])
    response = JsonResponse(totals)
    response["Cache-Control"] = "private, no-cache"
    return response


@login_required
@require_GET
def logs_csv(request):
    """The filtered rows as CSV, streamed in keyset chunks (a million rows never sit in
    memory): the same filter as the page, every row rather than one page."""
    _form, names, show, _wanted, rows = _selection(request)
    if show == logs.LEDGER:
        header, fields, record = logs.LEDGER_COLUMNS, logs.LEDGER_FIELDS, logs.movement_record
    else:
        header, fields, record = logs.CALL_COLUMNS, logs.CALL_FIELDS, logs.call_record

    def blocks() -> Iterator[str]:
        yield _csv_text([header])
        for chunk in logs.in_chunks(rows, fields):
            yield _csv_text(record(row, names) for row in chunk)

    # Under ASGI a synchronous iterator would be read whole into memory before the first byte
    # is sent (Django's StreamingHttpResponse does so to serve it asynchronously): hand it an
    # asynchronous one that fetches each chunk in the database thread.
    content = _async_blocks(blocks()) if isinstance(request, ASGIRequest) else blocks()
    response = StreamingHttpResponse(content, content_type="text/csv; charset=utf-8")
    stamp = timezone.localtime().strftime("%Y%m%d-%H%M")
    response["Content-Disposition"] = f'attachment; filename="sluice-{show}-{stamp}.csv"'
    response["Cache-Control"] = "no-store"
    return response


class _Lines:
    """A file-like object csv.writer writes into, emptied after each block."""

    def __init__(self):
        self.parts: list[str] = []

    def write(self, text: str) -> None:
        self.parts.append(text)


def _csv_text(records) -> str:
    lines = _Lines()
    csv.writer(lines).writerows(records)
    return "".join(lines.parts)


async def _async_blocks(blocks: Iterator[str]) -> AsyncIterator[str]:
    done = object()
    while True:
        block = await sync_to_async(next)(blocks, done)
        if block is done:
            return
        yield block


# --- Chat ------------------------------------------------------------------------------------


# What chat.js says, in the page's language.
CHAT_TEXT = {
    "you": _("You"),
    "assistant": _("Assistant"),
    "copy": _("Copy"),
    "copied": _("Copied"),
    "noModels": _("This key can call no model."),
    "keyFailed": _("Could not use this key:"),
    "failed": _("The call failed:"),
    "stopped": _("Stopped."),
    "thinking": _("Waiting for the answer…"),
    "confirmClear": _("Start a new chat? This conversation will be deleted from this browser."),
    "pickModel": _("Pick a model first."),
    "network": _("The connection failed."),
}


@login_required
@require_GET
def chat_page(request):
    """The built-in chat: the conversation lives in the browser (localStorage) and goes
    through /v1/chat/completions with one of the person's keys, billed like any call."""
    now = timezone.now()
    keys = [
        {"id": key.id, "name": key.name or key.hint, "hint": key.hint}
        for key in ApiKey.objects.filter(user=request.user, status=ApiKey.Status.ENABLED)
        .order_by("-created_at")
        .only("id", "name", "hint", "expires_at")
        if key.expires_at is None or key.expires_at > now
    ]
    wanted = request.GET.get("key", "")
    selected = next((key["id"] for key in keys if str(key["id"]) == wanted), None)
    if selected is None and keys:
        selected = keys[0]["id"]
    return render(
        request,
        "site/chat.html",
        {
            "keys": keys,
            "chat_config": {
                "keys": keys,
                "selected": selected,
                "user": request.user.id,
                "apiBase": "/v1",
                "revealUrl": reverse("reveal_key", args=[0]),
                "text": {name: str(text) for name, text in CHAT_TEXT.items()},
            },
        },
    )


@never_cache
@require_POST
def reveal_key(request, key_id: int):
    """The person's own key in clear, for the chat page to call with (POST + CSRF, so another
    site cannot make a browser fetch it; anyone else's key id is a 404)."""
    if not request.user.is_authenticated:
        return JsonResponse({"error": "login required"}, status=401)
    key = ApiKey.objects.filter(id=key_id, user=request.user).first()
    if key is None:
        raise Http404
    return JsonResponse({"id": key.id, "key": key.reveal()})
