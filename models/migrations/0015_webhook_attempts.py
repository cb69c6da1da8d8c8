from tortoise import migrations
from tortoise.migrations import operations as ops
from tortoise.fields.base import OnDelete
from tortoise import fields
from tortoise.indexes import Index

class Migration(migrations.Migration):
    dependencies = [('portico', '0014_webhooks')]

    initial = False

    operations = [
        ops.CreateModel(
            name='WebhookAttempt',
            fields=[
                ('id', fields.IntField(generated=True, primary_key=True, unique=True, db_index=True)),
                ('delivery', fields.ForeignKeyField('portico.WebhookDelivery', source_field='delivery_id', db_constraint=True, to_field='id', related_name='attempt_rows', on_delete=OnDelete.CASCADE)),
                ('started_at', fields.DatetimeField(auto_now=False, auto_now_add=False)),
                ('duration_ms', fields.IntField()),
                ('status_code', fields.IntField(null=True, description='null: no HTTP answer')),
                ('error', fields.TextField(null=True, unique=False)),
                ('succeeded', fields.BooleanField()),
            ],
            options={'table': 'webhook_attempt', 'app': 'portico', 'indexes': [Index(fields=['delivery_id', 'id'])], 'pk_attr': 'id', 'table_description': 'One POST of a delivery: when, how long, and what came back.'},
            bases=['Model'],
        ),
        ops.AddField(
            model_name='WebhookDelivery',
            name='lease_until',
            field=fields.DatetimeField(null=True, description='claimed by a worker until then', auto_now=False, auto_now_add=False),
        ),
        ops.AddField(
            model_name='WebhookDelivery',
            name='schedule_start',
            field=fields.IntField(default=0, description='attempts made before the current retry schedule began'),
        ),
        ops.AddField(
            model_name='WebhookEndpoint',
            name='failing_since',
            field=fields.DatetimeField(null=True, description='the first failed attempt since the last success', auto_now=False, auto_now_add=False),
        ),
    ]
