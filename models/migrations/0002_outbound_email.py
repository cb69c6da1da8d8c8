from tortoise import migrations
from tortoise.migrations import operations as ops
from models.outbox import DeliveryStatus
from tortoise.fields.base import OnDelete
from tortoise import fields
from tortoise.indexes import Index

class Migration(migrations.Migration):
    dependencies = [('portico', '0001_initial')]

    initial = False

    operations = [
        ops.CreateModel(
            name='OutboundEmail',
            fields=[
                ('id', fields.IntField(generated=True, primary_key=True, unique=True, db_index=True)),
                ('firm', fields.ForeignKeyField('portico.Firm', source_field='firm_id', db_constraint=True, to_field='id', related_name='outbound_emails', on_delete=OnDelete.CASCADE)),
                ('account', fields.ForeignKeyField('portico.Account', source_field='account_id', null=True, db_index=True, db_constraint=True, to_field='id', related_name='outbound_emails', on_delete=OnDelete.SET_NULL)),
                ('kind', fields.CharField(max_length=32)),
                ('category', fields.CharField(null=True, max_length=32)),
                ('to_address', fields.CharField(max_length=254)),
                ('from_name', fields.CharField(max_length=200)),
                ('subject', fields.CharField(max_length=998)),
                ('body_encrypted', fields.TextField(unique=False)),
                ('message_id', fields.CharField(unique=True, max_length=255)),
                ('status', fields.CharEnumField(default=DeliveryStatus.QUEUED, description='QUEUED: QUEUED\nSENT: SENT\nFAILED: FAILED', enum_type=DeliveryStatus, max_length=16)),
                ('attempts', fields.IntField(default=0)),
                ('last_error', fields.TextField(null=True, unique=False)),
                ('next_attempt_at', fields.DatetimeField(auto_now=False, auto_now_add=False)),
                ('lease_until', fields.DatetimeField(null=True, auto_now=False, auto_now_add=False)),
                ('created_at', fields.DatetimeField(auto_now=False, auto_now_add=True)),
                ('sent_at', fields.DatetimeField(null=True, auto_now=False, auto_now_add=False)),
            ],
            options={'table': 'outbound_email', 'app': 'portico', 'indexes': [Index(fields=['status', 'next_attempt_at'])], 'pk_attr': 'id', 'table_description': 'One message to one recipient, written in the transaction of the change that caused it.'},
            bases=['Model'],
        ),
    ]
