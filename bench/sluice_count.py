"""What Sluice wrote during the benchmark: usage rows (by status and model) and holds.

Run by bench/sluice.py in Sluice's environment after the last run; prints one line,
``COUNT_RESULT {...}``. Open holds without a usage row are calls cut while being admitted
(only the expiry sweep releases them: bench/README.md).
"""

import json

from sluice_setup import django_setup


def main() -> None:
    django_setup()
    from django.db.models import Count

    from billing.models import Hold, UsageLog

    open_holds = Hold.objects.filter(status=Hold.Status.OPEN)
    answered = UsageLog.objects.exclude(hold_id=None).values("hold_id")
    counts = {
        "usage_rows": UsageLog.objects.count(),
        "usage_by_status": dict(UsageLog.objects.values_list("status").annotate(n=Count("id"))),
        "usage_by_model": dict(UsageLog.objects.values_list("model").annotate(n=Count("id"))),
        "holds_total": Hold.objects.count(),
        "holds_open": open_holds.count(),
        "holds_open_without_usage_row": open_holds.exclude(id__in=answered).count(),
    }
    print("COUNT_RESULT " + json.dumps(counts))


if __name__ == "__main__":
    main()
