"""Each execution of an isolated instance records its worker's CPU time and peak memory."""

from tortoise import fields, migrations
from tortoise.migrations import operations as ops


class Migration(migrations.Migration):
    dependencies = [("homelab", "0004_execution_node")]

    operations = [
        ops.AddField(
            model_name="ExecutionRecord",
            name="cpu",
            field=fields.FloatField(null=True),
        ),
        ops.AddField(
            model_name="ExecutionRecord",
            name="peak_rss",
            field=fields.BigIntField(null=True),
        ),
    ]
