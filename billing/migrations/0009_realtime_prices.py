"""Ship the realtime models' prices (text and audio ratios) and the Agents SDK's default model
(billing.default_prices). Never overwrites a row the operator made."""

from django.db import migrations

from billing.default_prices import load_default_prices


def load(apps, schema_editor):
    load_default_prices(apps.get_model("billing", "ModelPrice"))


class Migration(migrations.Migration):
    dependencies = [("billing", "0008_media_prices")]
    operations = [migrations.RunPython(load, migrations.RunPython.noop)]
