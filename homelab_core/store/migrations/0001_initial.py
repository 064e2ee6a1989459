from tortoise import migrations
from tortoise.migrations import operations as ops
import functools
from json import dumps, loads
from tortoise import fields
from tortoise.indexes import Index

class Migration(migrations.Migration):
    initial = True

    operations = [
        ops.CreateModel(
            name='ExecutionRecord',
            fields=[
                ('id', fields.BigIntField(generated=True, primary_key=True, unique=True, db_index=True)),
                ('instance_id', fields.CharField(max_length=64)),
                ('started_at', fields.FloatField()),
                ('duration', fields.FloatField()),
                ('status', fields.CharField(max_length=16)),
                ('error', fields.TextField(null=True, unique=False)),
                ('metric_count', fields.IntField(default=0)),
                ('trigger', fields.CharField(default='schedule', max_length=16)),
                ('lag', fields.FloatField(default=0.0)),
            ],
            options={'table': 'homelab_execution', 'app': 'homelab', 'indexes': [Index(fields=['instance_id', 'started_at'], name='homelab_execution_instance_ts')], 'pk_attr': 'id', 'table_description': 'One run (or skipped run) of a plugin instance.'},
            bases=['Model'],
        ),
        ops.CreateModel(
            name='HealthTransitionRecord',
            fields=[
                ('id', fields.BigIntField(generated=True, primary_key=True, unique=True, db_index=True)),
                ('instance_id', fields.CharField(db_index=True, max_length=64)),
                ('ts', fields.FloatField()),
                ('old_state', fields.CharField(max_length=16)),
                ('new_state', fields.CharField(max_length=16)),
                ('message', fields.TextField(default='', unique=False)),
            ],
            options={'table': 'homelab_health_transition', 'app': 'homelab', 'pk_attr': 'id', 'table_description': "A change of an instance's health state."},
            bases=['Model'],
        ),
        ops.CreateModel(
            name='InstanceRecord',
            fields=[
                ('id', fields.CharField(primary_key=True, unique=True, db_index=True, max_length=64)),
                ('type', fields.CharField(max_length=64)),
                ('enabled', fields.BooleanField(default=True)),
                ('config_enabled', fields.BooleanField(default=True)),
                ('config', fields.JSONField(default=dict, encoder=functools.partial(dumps, separators=(',', ':')), decoder=loads)),
                ('interval', fields.FloatField()),
                ('updated_at', fields.FloatField()),
            ],
            options={'table': 'homelab_instance', 'app': 'homelab', 'pk_attr': 'id', 'table_description': 'A configured plugin instance and its persisted enabled state.'},
            bases=['Model'],
        ),
        ops.CreateModel(
            name='RollupRecord',
            fields=[
                ('id', fields.BigIntField(generated=True, primary_key=True, unique=True, db_index=True)),
                ('series_id', fields.IntField()),
                ('resolution', fields.IntField()),
                ('bucket', fields.FloatField()),
                ('min', fields.FloatField()),
                ('max', fields.FloatField()),
                ('sum', fields.FloatField()),
                ('count', fields.IntField()),
            ],
            options={'table': 'homelab_rollup', 'app': 'homelab', 'unique_together': (('series_id', 'resolution', 'bucket'),), 'pk_attr': 'id', 'table_description': 'Aggregate of a series over one bucket of ``resolution`` seconds.'},
            bases=['Model'],
        ),
        ops.CreateModel(
            name='SampleRecord',
            fields=[
                ('id', fields.BigIntField(generated=True, primary_key=True, unique=True, db_index=True)),
                ('series_id', fields.IntField()),
                ('ts', fields.FloatField()),
                ('value', fields.FloatField()),
            ],
            options={'table': 'homelab_sample', 'app': 'homelab', 'indexes': [Index(fields=['series_id', 'ts'], name='homelab_sample_series_ts')], 'pk_attr': 'id', 'table_description': 'One raw sample of a series.'},
            bases=['Model'],
        ),
        ops.CreateModel(
            name='SeriesRecord',
            fields=[
                ('id', fields.IntField(generated=True, primary_key=True, unique=True, db_index=True)),
                ('instance_id', fields.CharField(db_index=True, max_length=64)),
                ('name', fields.CharField(max_length=255)),
                ('labels', fields.TextField(unique=False)),
                ('unit', fields.CharField(default='', max_length=32)),
                ('kind', fields.CharField(default='gauge', max_length=16)),
                ('device_class', fields.CharField(null=True, max_length=32)),
            ],
            options={'table': 'homelab_series', 'app': 'homelab', 'unique_together': (('instance_id', 'name', 'labels'),), 'pk_attr': 'id', 'table_description': "One series: an instance's metric name with one set of labels."},
            bases=['Model'],
        ),
        ops.CreateModel(
            name='StoreMeta',
            fields=[
                ('key', fields.CharField(primary_key=True, unique=True, db_index=True, max_length=64)),
                ('value', fields.FloatField()),
            ],
            options={'table': 'homelab_meta', 'app': 'homelab', 'pk_attr': 'key', 'table_description': 'Small key/value state of the store (rollup watermarks).'},
            bases=['Model'],
        ),
    ]
