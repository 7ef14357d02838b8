from django.db import migrations, models


def fill_refs(apps, schema_editor):
    Subscription = apps.get_model("billing", "Subscription")
    for subscription in Subscription.objects.filter(ref=""):
        subscription.ref = f"sub_{subscription.pk}"
        subscription.save(update_fields=["ref"])


class Migration(migrations.Migration):
    dependencies = [("billing", "0001_initial")]

    operations = [
        migrations.AddField(
            model_name="subscription",
            name="ref",
            field=models.CharField(default="", max_length=40, help_text="Stable reference, sub_…"),
            preserve_default=False,
        ),
        migrations.RunPython(fill_refs, migrations.RunPython.noop),
        migrations.AlterField(
            model_name="subscription",
            name="ref",
            field=models.CharField(help_text="Stable reference, sub_…", max_length=40, unique=True),
        ),
    ]
