from tortoise import migrations
from tortoise.migrations import operations as ops
from models.mail import HistoryStatus
from orjson import loads
from tortoise.fields.base import OnDelete
from tortoise.fields.data import JSON_DUMPS
from tortoise import fields
from tortoise.indexes import Index

class Migration(migrations.Migration):
    dependencies = [('portico', '0008_mail')]

    initial = False

    operations = [
        ops.CreateModel(
            name='Attachment',
            fields=[
                ('id', fields.IntField(generated=True, primary_key=True, unique=True, db_index=True)),
                ('firm', fields.ForeignKeyField('portico.Firm', source_field='firm_id', db_constraint=True, to_field='id', related_name='attachments', on_delete=OnDelete.CASCADE)),
                ('message', fields.ForeignKeyField('portico.Message', source_field='message_id', db_constraint=True, to_field='id', related_name='attachments', on_delete=OnDelete.CASCADE)),
                ('position', fields.IntField(description='order within the message')),
                ('filename', fields.CharField(max_length=255)),
                ('content_type', fields.CharField(max_length=127)),
                ('size', fields.BigIntField()),
                ('sha256', fields.CharField(null=True, description='null when not kept', max_length=64)),
                ('skipped_reason', fields.TextField(null=True, description='why the content was not kept', unique=False)),
            ],
            options={'table': 'attachment', 'app': 'portico', 'unique_together': (('message', 'position'),), 'pk_attr': 'id', 'table_description': 'A file attached to a synced message, stored by content hash as documents are.'},
            bases=['Model'],
        ),
        ops.CreateModel(
            name='HistoryImport',
            fields=[
                ('id', fields.IntField(generated=True, primary_key=True, unique=True, db_index=True)),
                ('firm', fields.ForeignKeyField('portico.Firm', source_field='firm_id', db_constraint=True, to_field='id', related_name='history_imports', on_delete=OnDelete.CASCADE)),
                ('mailbox', fields.ForeignKeyField('portico.Mailbox', source_field='mailbox_id', db_constraint=True, to_field='id', related_name='history_imports', on_delete=OnDelete.CASCADE)),
                ('address_normalized', fields.CharField(max_length=254)),
                ('status', fields.CharEnumField(default=HistoryStatus.PENDING, description='PENDING: PENDING\nRUNNING: RUNNING\nDONE: DONE\nFAILED: FAILED', enum_type=HistoryStatus, max_length=16)),
                ('found', fields.IntField(default=0, description='messages the server matched')),
                ('imported', fields.IntField(default=0, description='messages stored or linked')),
                ('last_error', fields.TextField(null=True, unique=False)),
                ('lease_until', fields.DatetimeField(null=True, auto_now=False, auto_now_add=False)),
                ('created_at', fields.DatetimeField(auto_now=False, auto_now_add=True)),
                ('finished_at', fields.DatetimeField(null=True, auto_now=False, auto_now_add=False)),
            ],
            options={'table': 'history_import', 'app': 'portico', 'indexes': [Index(fields=['mailbox_id', 'status'])], 'pk_attr': 'id', 'table_description': 'Earlier mail of one address to import from one mailbox (EMAIL SYNC turned on).'},
            bases=['Model'],
        ),
        ops.AddField(
            model_name='Document',
            name='attachment',
            field=fields.ForeignKeyField('portico.Attachment', source_field='attachment_id', null=True, db_constraint=True, to_field='id', related_name='documents', on_delete=OnDelete.SET_NULL),
        ),
        ops.AddField(
            model_name='Message',
            name='mailbox',
            field=fields.ForeignKeyField('portico.Mailbox', source_field='mailbox_id', null=True, db_constraint=True, to_field='id', related_name='messages', on_delete=OnDelete.SET_NULL),
        ),
        ops.AddField(
            model_name='Message',
            name='references',
            field=fields.JSONField(default=list, description='Message-IDs it answers, oldest first, for replies', encoder=JSON_DUMPS, decoder=loads),
        ),
        ops.AddField(
            model_name='OutboundEmail',
            name='filed_at',
            field=fields.DatetimeField(null=True, description='copy appended to the Sent folder', auto_now=False, auto_now_add=False),
        ),
        ops.AddField(
            model_name='OutboundEmail',
            name='headers',
            field=fields.JSONField(null=True, description='extra headers such as In-Reply-To', encoder=JSON_DUMPS, decoder=loads),
        ),
        ops.AddField(
            model_name='OutboundEmail',
            name='mailbox',
            field=fields.ForeignKeyField('portico.Mailbox', source_field='mailbox_id', null=True, db_constraint=True, to_field='id', related_name='outbound_emails', on_delete=OnDelete.SET_NULL),
        ),
        ops.AddField(
            model_name='OutboundEmail',
            name='thread_message',
            field=fields.ForeignKeyField('portico.Message', source_field='thread_message_id', null=True, db_constraint=True, to_field='id', related_name='outbound_emails', on_delete=OnDelete.SET_NULL),
        ),
    ]
