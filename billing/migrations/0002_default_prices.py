"""Ship the current list prices with a new site (editable afterwards in admin)."""

from django.db import migrations

from billing.default_prices import load_default_prices


def load(apps, schema_editor):
    load_default_prices(apps.get_model("billing", "ModelPrice"))


class Migration(migrations.Migration):
    dependencies = [("billing", "0001_initial")]
    operations = [migrations.RunPython(load, migrations.RunPython.noop)]
