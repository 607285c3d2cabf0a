"""The models and the migrations agree: a model change always ships with its migration."""

import io

import pytest
from django.core.management import call_command


@pytest.mark.django_db
def test_no_model_change_is_missing_its_migration():
    out = io.StringIO()
    try:
        call_command("makemigrations", check=True, dry_run=True, stdout=out, stderr=out)
    except SystemExit:  # makemigrations --check exits 1 when it would write a migration
        pytest.fail(f"makemigrations would write new migrations:\n{out.getvalue()}")
    assert "No changes detected" in out.getvalue()
