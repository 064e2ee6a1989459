"""Alert states and events, rules made through the API, silences and notification
attempts."""

import functools
from json import dumps, loads

from tortoise import fields, migrations
from tortoise.indexes import Index
from tortoise.migrations import operations as ops

_json = {"encoder": functools.partial(dumps, separators=(",", ":")), "decoder": loads}


class Migration(migrations.Migration):
    dependencies = [("homelab", "0001_initial")]

    operations = [
        ops.CreateModel(
            name="AlertStateRecord",
            fields=[
                ("fingerprint", fields.CharField(primary_key=True, unique=True, db_index=True,
                                                 max_length=32)),
                ("rule_id", fields.CharField(db_index=True, max_length=64)),
                ("state", fields.CharField(max_length=16)),
                ("labels", fields.JSONField(default=dict, **_json)),
                ("series", fields.JSONField(default=dict, **_json)),
                ("instance_id", fields.CharField(null=True, max_length=64)),
                ("metric", fields.CharField(null=True, max_length=255)),
                ("value", fields.FloatField(null=True)),
                ("active_since", fields.FloatField(null=True)),
                ("fired_at", fields.FloatField(null=True)),
                ("resolved_at", fields.FloatField(null=True)),
                ("last_true_at", fields.FloatField(null=True)),
                ("notified_at", fields.FloatField(null=True)),
                ("resolved_notified", fields.BooleanField(default=False)),
                ("summary", fields.TextField(default="", unique=False)),
                ("description", fields.TextField(default="", unique=False)),
                ("updated_at", fields.FloatField()),
            ],
            options={"table": "homelab_alert_state", "app": "homelab", "pk_attr": "fingerprint",
                     "table_description": "An alert that is pending, firing or recently"
                     " resolved (restored at start)."},
            bases=["Model"],
        ),
        ops.CreateModel(
            name="AlertEventRecord",
            fields=[
                ("id", fields.BigIntField(generated=True, primary_key=True, unique=True,
                                          db_index=True)),
                ("ts", fields.FloatField(db_index=True)),
                ("fingerprint", fields.CharField(max_length=32)),
                ("rule_id", fields.CharField(max_length=64)),
                ("old_state", fields.CharField(max_length=16)),
                ("new_state", fields.CharField(max_length=16)),
                ("value", fields.FloatField(null=True)),
                ("labels", fields.JSONField(default=dict, **_json)),
                ("summary", fields.TextField(default="", unique=False)),
            ],
            options={"table": "homelab_alert_event", "app": "homelab", "pk_attr": "id",
                     "indexes": [Index(fields=["rule_id", "ts"],
                                       name="homelab_alert_event_rule_ts")],
                     "table_description": "A change of an alert's state."},
            bases=["Model"],
        ),
        ops.CreateModel(
            name="SilenceRecord",
            fields=[
                ("id", fields.CharField(primary_key=True, unique=True, db_index=True,
                                        max_length=32)),
                ("matchers", fields.JSONField(default=dict, **_json)),
                ("starts_at", fields.FloatField()),
                ("ends_at", fields.FloatField(db_index=True)),
                ("comment", fields.TextField(default="", unique=False)),
                ("author", fields.CharField(default="", max_length=255)),
                ("created_at", fields.FloatField()),
            ],
            options={"table": "homelab_silence", "app": "homelab", "pk_attr": "id",
                     "table_description": "A silence made through the API or the CLI."},
            bases=["Model"],
        ),
        ops.CreateModel(
            name="NotificationRecord",
            fields=[
                ("id", fields.BigIntField(generated=True, primary_key=True, unique=True,
                                          db_index=True)),
                ("ts", fields.FloatField(db_index=True)),
                ("notifier", fields.CharField(max_length=64)),
                ("group_key", fields.TextField(default="", unique=False)),
                ("status", fields.CharField(max_length=16)),
                ("outcome", fields.CharField(max_length=16)),
                ("attempt", fields.IntField(default=1)),
                ("error", fields.TextField(null=True, unique=False)),
                ("duration", fields.FloatField(default=0.0)),
                ("alerts", fields.JSONField(default=list, **_json)),
            ],
            options={"table": "homelab_notification", "app": "homelab", "pk_attr": "id",
                     "indexes": [Index(fields=["notifier", "ts"],
                                       name="homelab_notification_notifier_ts")],
                     "table_description": "One attempt to send a notification."},
            bases=["Model"],
        ),
        ops.CreateModel(
            name="AlertRuleRecord",
            fields=[
                ("id", fields.CharField(primary_key=True, unique=True, db_index=True,
                                        max_length=64)),
                ("body", fields.JSONField(default=dict, **_json)),
                ("created_at", fields.FloatField()),
                ("updated_at", fields.FloatField()),
            ],
            options={"table": "homelab_alert_rule", "app": "homelab", "pk_attr": "id",
                     "table_description": "A rule created through the API."},
            bases=["Model"],
        ),
    ]
