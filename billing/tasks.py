"""Background money work, run by Celery beat."""

from celery import shared_task

from billing import services


@shared_task
def release_expired_holds() -> int:
    """Release holds whose call died with its worker (the backstop of every settle)."""
    return services.release_expired_holds()


@shared_task
def end_expired_tiers() -> int:
    """Put users whose VIP tier ran out back in the default group, each once."""
    from billing.tiers import end_expired_tiers as end

    return end()


@shared_task
def expire_trials() -> int:
    """Take back what is left of trial credit whose lifetime ended, each grant once."""
    from billing import trials

    return trials.expire_trials()


@shared_task
def return_subkey_balances() -> int:
    """Give resellers back what is left in their revoked or expired sub-keys (billing.subkeys)."""
    from billing import subkeys

    return subkeys.return_subkey_balances()


@shared_task
def notify_low_balances() -> int:
    """Email users whose balance fell to their threshold, each once (billing.notices)."""
    from billing import notices

    return notices.notify_low_balances()
