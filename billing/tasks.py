"""Background money work, run by Celery beat."""

from celery import shared_task

from billing import services


@shared_task
def release_expired_holds() -> int:
    """Release holds whose call died with its worker (the backstop of every settle)."""
    return services.release_expired_holds()
