"""Ship the image, speech and transcription prices (billing.default_prices): rows for the models
billed per call, and gpt-image-1 by tokens. Never overwrites a row the operator made."""

from django.db import migrations

from billing.default_prices import load_default_prices


def load(apps, schema_editor):
    load_default_prices(apps.get_model("billing", "ModelPrice"))


class Migration(migrations.Migration):
    dependencies = [("billing", "0007_subkey_ledger_carved_usage")]
    operations = [migrations.RunPython(load, migrations.RunPython.noop)]
