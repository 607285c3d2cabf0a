"""Holds that were delivered but not settled; usage rows that can hold any upstream figure,
with a flag when the upstream's usage was not billed; prices for paid upstream options and each
model's largest output."""

from decimal import Decimal

from django.db import migrations, models

from billing.default_prices import fill_max_output_tokens


def fill(apps, schema_editor):
    fill_max_output_tokens(apps.get_model("billing", "ModelPrice"))


class Migration(migrations.Migration):
    dependencies = [("billing", "0002_default_prices")]

    operations = [
        migrations.RenameField("modelprice", "output_estimate", "max_output_tokens"),
        migrations.AlterField(
            model_name="modelprice",
            name="max_output_tokens",
            field=models.IntegerField(
                blank=True,
                null=True,
                help_text="The model's largest output: held (and, when the balance is short, "
                "lowered and sent) for a call that names no limit, and the most any call may "
                "ask (default: RELAY_DEFAULT_MAX_OUTPUT_TOKENS).",
            ),
        ),
        migrations.AddField(
            "modelprice",
            "cache_write_1h_ratio",
            models.DecimalField(
                decimal_places=6,
                default=Decimal(2),
                help_text="1-hour cache write / input.",
                max_digits=12,
            ),
        ),
        migrations.AddField(
            "modelprice",
            "audio_input_ratio",
            models.DecimalField(
                blank=True,
                decimal_places=6,
                help_text="Audio input / input. Empty: calls with audio input are refused.",
                max_digits=12,
                null=True,
            ),
        ),
        migrations.AddField(
            "modelprice",
            "audio_output_ratio",
            models.DecimalField(
                blank=True,
                decimal_places=6,
                help_text="Audio output / input. Empty: calls asking for audio output are refused.",
                max_digits=12,
                null=True,
            ),
        ),
        migrations.AddField(
            "modelprice",
            "web_search_quota",
            models.BigIntegerField(
                blank=True,
                help_text="Price of one server-side web search, quota units. Empty: web search "
                "refused.",
                null=True,
            ),
        ),
        migrations.AlterField(
            "hold",
            "status",
            models.CharField(
                choices=[
                    ("open", "Open"),
                    ("delivered", "delivered, not settled yet"),
                    ("settled", "Settled"),
                    ("released", "Released"),
                ],
                default="open",
                max_length=16,
            ),
        ),
        migrations.AddField(
            "hold",
            "delivered_quota",
            models.BigIntegerField(
                blank=True,
                help_text="Cost of a delivered answer not yet settled, quota units.",
                null=True,
            ),
        ),
        *[
            migrations.AlterField("usagelog", name, models.BigIntegerField(default=0, **extra))
            for name, extra in [
                ("input_tokens", {"help_text": "Uncached input."}),
                ("cached_input_tokens", {}),
                ("cache_write_tokens", {"help_text": "5-minute cache writes."}),
                ("output_tokens", {"help_text": "Includes reasoning tokens."}),
                ("reasoning_tokens", {}),
            ]
        ],
        *[
            migrations.AddField("usagelog", name, models.BigIntegerField(default=0))
            for name in (
                "cache_write_1h_tokens",
                "audio_input_tokens",
                "audio_output_tokens",
                "web_search_calls",
            )
        ],
        migrations.AddField(
            "usagelog", "service_tier", models.CharField(blank=True, max_length=16)
        ),
        migrations.AddField(
            "usagelog",
            "usage_flag",
            models.CharField(
                blank=True,
                choices=[
                    ("", "upstream usage billed"),
                    ("rejected", "upstream usage rejected, local counts billed"),
                    ("clamped", "upstream usage above the call's limits, clamped"),
                    ("settled_late", "settled by the expiry sweep after a failed settlement"),
                ],
                default="",
                max_length=16,
            ),
        ),
        migrations.AddField(
            "usagelog",
            "reported_usage",
            models.JSONField(
                blank=True,
                help_text="The upstream's figures, kept when they were not billed.",
                null=True,
            ),
        ),
        migrations.RunPython(fill, migrations.RunPython.noop),
    ]
