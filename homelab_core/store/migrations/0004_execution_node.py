"""Each execution records the node that ran it and the fencing token of its lease."""

from tortoise import fields, migrations
from tortoise.migrations import operations as ops


class Migration(migrations.Migration):
    dependencies = [("homelab", "0003_api_instances")]

    operations = [
        ops.AddField(
            model_name="ExecutionRecord",
            name="node",
            field=fields.CharField(max_length=64, null=True),
        ),
        ops.AddField(
            model_name="ExecutionRecord",
            name="fence",
            field=fields.BigIntField(null=True),
        ),
    ]
