"""Instances created through the API."""

import functools
from json import dumps, loads

from tortoise import fields, migrations
from tortoise.migrations import operations as ops

_json = {"encoder": functools.partial(dumps, separators=(",", ":")), "decoder": loads}


class Migration(migrations.Migration):
    dependencies = [("homelab", "0002_alerts")]

    operations = [
        ops.CreateModel(
            name="ApiInstanceRecord",
            fields=[
                ("id", fields.CharField(primary_key=True, unique=True, db_index=True,
                                        max_length=64)),
                ("type", fields.CharField(max_length=64)),
                ("body", fields.JSONField(default=dict, **_json)),
                ("created_at", fields.FloatField()),
                ("updated_at", fields.FloatField()),
            ],
            options={"table": "homelab_api_instance", "app": "homelab", "pk_attr": "id",
                     "table_description": "An instance created through the API."},
            bases=["Model"],
        ),
    ]
