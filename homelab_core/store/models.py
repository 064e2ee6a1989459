"""Tortoise models of the store: the schema of record.

Timestamps are seconds since the epoch (floats), which keeps history arithmetic the same on
SQLite and PostgreSQL; raw samples keep them to the millisecond. The hot paths (sample
inserts, compaction, history) run as SQL on the same connection; these models define the
tables, indexes and migrations they use.
"""

from __future__ import annotations

from tortoise import fields
from tortoise.indexes import Index
from tortoise.models import Model


class InstanceRecord(Model):
    """A configured plugin instance and its persisted enabled state."""

    id = fields.CharField(max_length=64, primary_key=True)
    type = fields.CharField(max_length=64)
    enabled = fields.BooleanField(default=True)
    # ``enabled`` as the config file last said it: a change in the file wins over the store.
    config_enabled = fields.BooleanField(default=True)
    config: fields.Field[dict[str, object]] = fields.JSONField(default=dict)
    interval = fields.FloatField()
    updated_at = fields.FloatField()

    class Meta:
        table = "homelab_instance"


class SeriesRecord(Model):
    """One series: an instance's metric name with one set of labels."""

    id = fields.IntField(primary_key=True)
    instance_id = fields.CharField(max_length=64, db_index=True)
    name = fields.CharField(max_length=255)
    # Canonical JSON of the labels (sorted keys), part of the series identity.
    labels = fields.TextField()
    unit = fields.CharField(max_length=32, default="")
    kind = fields.CharField(max_length=16, default="gauge")
    device_class = fields.CharField(max_length=32, null=True)

    class Meta:
        table = "homelab_series"
        unique_together = (("instance_id", "name", "labels"),)


class HeadRecord(Model):
    """One raw sample not yet compacted into a chunk (see :mod:`.compaction`)."""

    id = fields.BigIntField(primary_key=True)
    series_id = fields.IntField()
    ts = fields.FloatField()
    value = fields.FloatField()

    class Meta:
        table = "homelab_head"
        indexes = (Index(fields=("series_id", "ts"), name="homelab_head_series_ts"),)


class ChunkRecord(Model):
    """One series over one window at one resolution, encoded by :mod:`.chunks`: raw samples
    (resolution 0), or the 1-minute or 1-hour rollups (60, 3600: min, max, sum, count)."""

    id = fields.BigIntField(primary_key=True)
    series_id = fields.IntField()
    resolution = fields.IntField()
    #: The window: from ``start``, ``span`` seconds (an hour, or a UTC day once merged).
    start = fields.FloatField()
    span = fields.IntField()
    first_ts = fields.FloatField()
    last_ts = fields.FloatField()
    count = fields.IntField()
    data = fields.BinaryField()

    class Meta:
        table = "homelab_chunk"
        indexes = (
            Index(fields=("series_id", "resolution", "start"), name="homelab_chunk_series_start"),
            Index(fields=("span", "start"), name="homelab_chunk_span_start"),
        )


class ExecutionRecord(Model):
    """One run (or skipped run) of a plugin instance."""

    id = fields.BigIntField(primary_key=True)
    instance_id = fields.CharField(max_length=64)
    started_at = fields.FloatField()
    duration = fields.FloatField()
    status = fields.CharField(max_length=16)
    error = fields.TextField(null=True)
    metric_count = fields.IntField(default=0)
    trigger = fields.CharField(max_length=16, default="schedule")
    lag = fields.FloatField(default=0.0)
    node = fields.CharField(max_length=64, null=True)
    fence = fields.BigIntField(null=True)
    cpu = fields.FloatField(null=True)
    peak_rss = fields.BigIntField(null=True)

    class Meta:
        table = "homelab_execution"
        indexes = (
            Index(fields=("instance_id", "started_at"), name="homelab_execution_instance_ts"),
        )


class HealthTransitionRecord(Model):
    """A change of an instance's health state."""

    id = fields.BigIntField(primary_key=True)
    instance_id = fields.CharField(max_length=64, db_index=True)
    ts = fields.FloatField()
    old_state = fields.CharField(max_length=16)
    new_state = fields.CharField(max_length=16)
    message = fields.TextField(default="")

    class Meta:
        table = "homelab_health_transition"


class StoreMeta(Model):
    """Small key/value state of the store: its layout, and how far compaction has gone."""

    key = fields.CharField(max_length=64, primary_key=True)
    value = fields.FloatField()

    class Meta:
        table = "homelab_meta"


class AlertStateRecord(Model):
    """An alert that is pending, firing or recently resolved (restored at start)."""

    fingerprint = fields.CharField(max_length=32, primary_key=True)
    rule_id = fields.CharField(max_length=64, db_index=True)
    state = fields.CharField(max_length=16)
    labels: fields.Field[dict[str, object]] = fields.JSONField(default=dict)
    series: fields.Field[dict[str, object]] = fields.JSONField(default=dict)
    instance_id = fields.CharField(max_length=64, null=True)
    metric = fields.CharField(max_length=255, null=True)
    value = fields.FloatField(null=True)
    active_since = fields.FloatField(null=True)
    fired_at = fields.FloatField(null=True)
    resolved_at = fields.FloatField(null=True)
    last_true_at = fields.FloatField(null=True)
    notified_at = fields.FloatField(null=True)
    resolved_notified = fields.BooleanField(default=False)
    summary = fields.TextField(default="")
    description = fields.TextField(default="")
    updated_at = fields.FloatField()

    class Meta:
        table = "homelab_alert_state"


class AlertEventRecord(Model):
    """A change of an alert's state."""

    id = fields.BigIntField(primary_key=True)
    ts = fields.FloatField(db_index=True)
    fingerprint = fields.CharField(max_length=32)
    rule_id = fields.CharField(max_length=64)
    old_state = fields.CharField(max_length=16)
    new_state = fields.CharField(max_length=16)
    value = fields.FloatField(null=True)
    labels: fields.Field[dict[str, object]] = fields.JSONField(default=dict)
    summary = fields.TextField(default="")

    class Meta:
        table = "homelab_alert_event"
        indexes = (Index(fields=("rule_id", "ts"), name="homelab_alert_event_rule_ts"),)


class SilenceRecord(Model):
    """A silence made through the API or the CLI."""

    id = fields.CharField(max_length=32, primary_key=True)
    matchers: fields.Field[dict[str, object]] = fields.JSONField(default=dict)
    starts_at = fields.FloatField()
    ends_at = fields.FloatField(db_index=True)
    comment = fields.TextField(default="")
    author = fields.CharField(max_length=255, default="")
    created_at = fields.FloatField()

    class Meta:
        table = "homelab_silence"


class NotificationRecord(Model):
    """One attempt to send a notification (or a message dropped before any attempt)."""

    id = fields.BigIntField(primary_key=True)
    ts = fields.FloatField(db_index=True)
    notifier = fields.CharField(max_length=64)
    group_key = fields.TextField(default="")
    status = fields.CharField(max_length=16)
    outcome = fields.CharField(max_length=16)
    attempt = fields.IntField(default=1)
    error = fields.TextField(null=True)
    duration = fields.FloatField(default=0.0)
    alerts: fields.Field[list[object]] = fields.JSONField(default=list)

    class Meta:
        table = "homelab_notification"
        indexes = (Index(fields=("notifier", "ts"), name="homelab_notification_notifier_ts"),)


class AlertRuleRecord(Model):
    """A rule created through the API (rules of the file are not stored)."""

    id = fields.CharField(max_length=64, primary_key=True)
    body: fields.Field[dict[str, object]] = fields.JSONField(default=dict)
    created_at = fields.FloatField()
    updated_at = fields.FloatField()

    class Meta:
        table = "homelab_alert_rule"


class ApiInstanceRecord(Model):
    """An instance created through the API: its table as given (secrets included, so that
    it can be built again at start; the API never returns them). Instances of the file are
    not stored here."""

    id = fields.CharField(max_length=64, primary_key=True)
    type = fields.CharField(max_length=64)
    body: fields.Field[dict[str, object]] = fields.JSONField(default=dict)
    created_at = fields.FloatField()
    updated_at = fields.FloatField()

    class Meta:
        table = "homelab_api_instance"
