from tortoise import migrations
from tortoise.migrations import operations as ops
from tortoise.fields.base import OnDelete
from tortoise import fields
from tortoise.indexes import Index

class Migration(migrations.Migration):
    dependencies = [('portico', '0011_client_mail_notice')]

    initial = False

    operations = [
        ops.CreateModel(
            name='MailboxSkip',
            fields=[
                ('id', fields.IntField(generated=True, primary_key=True, unique=True, db_index=True)),
                ('firm', fields.ForeignKeyField('portico.Firm', source_field='firm_id', db_constraint=True, to_field='id', related_name='mailbox_skips', on_delete=OnDelete.CASCADE)),
                ('mailbox', fields.ForeignKeyField('portico.Mailbox', source_field='mailbox_id', db_constraint=True, to_field='id', related_name='skips', on_delete=OnDelete.CASCADE)),
                ('folder', fields.CharField(max_length=255)),
                ('uidvalidity', fields.BigIntField(null=True)),
                ('uid', fields.BigIntField()),
                ('reason', fields.TextField(unique=False)),
                ('attempts', fields.IntField(default=1)),
                ('first_seen_at', fields.DatetimeField(auto_now=False, auto_now_add=True)),
                ('last_attempt_at', fields.DatetimeField(auto_now=False, auto_now_add=False)),
                ('skipped_at', fields.DatetimeField(null=True, description='when it was given up on (null: not yet)', auto_now=False, auto_now_add=False)),
                ('retry_after', fields.DatetimeField(null=True, description='a skipped message is tried again then', auto_now=False, auto_now_add=False)),
            ],
            options={'table': 'mailbox_skip', 'app': 'portico', 'unique_together': (('mailbox', 'folder', 'uidvalidity', 'uid'),), 'pk_attr': 'id', 'table_description': 'A message that failed to fetch, parse or store: its attempts, then skipped for a while.'},
            bases=['Model'],
        ),
        ops.CreateModel(
            name='Mailing',
            fields=[
                ('id', fields.IntField(generated=True, primary_key=True, unique=True, db_index=True)),
                ('firm', fields.ForeignKeyField('portico.Firm', source_field='firm_id', db_constraint=True, to_field='id', related_name='mailings', on_delete=OnDelete.CASCADE)),
                ('kind', fields.CharField(max_length=32)),
                ('subject', fields.CharField(max_length=998)),
                ('total', fields.IntField(default=0, description='messages queued for it')),
                ('created_at', fields.DatetimeField(auto_now=False, auto_now_add=True)),
            ],
            options={'table': 'mailing', 'app': 'portico', 'indexes': [Index(fields=['firm_id', 'created_at'])], 'pk_attr': 'id', 'table_description': 'One sendFirmEmail: its rows in the outbox say how far it has gone (progress).'},
            bases=['Model'],
        ),
        ops.AddField(
            model_name='Mailbox',
            name='sync_done',
            field=fields.IntField(default=0, description='messages the current or last pass read'),
        ),
        ops.AddField(
            model_name='Mailbox',
            name='sync_total',
            field=fields.IntField(null=True, description='messages the current or last pass had to read (null before one)'),
        ),
        ops.AddField(
            model_name='Message',
            name='content_skipped',
            field=fields.TextField(null=True, description='why the body and attachments were not stored (too large)', unique=False),
        ),
        ops.AddField(
            model_name='Message',
            name='sender_auth',
            field=fields.CharField(null=True, description='PASS or FAIL: DMARC as the receiving server of the firm reported it', max_length=8),
        ),
        ops.AlterField(
            model_name='OutboundEmail',
            name='thread_message',
            field=fields.ForeignKeyField('portico.Message', source_field='thread_message_id', null=True, db_index=True, db_constraint=True, to_field='id', related_name='outbound_emails', on_delete=OnDelete.SET_NULL),
        ),
        ops.AddField(
            model_name='OutboundEmail',
            name='mailing',
            field=fields.ForeignKeyField('portico.Mailing', source_field='mailing_id', null=True, db_index=True, db_constraint=True, to_field='id', related_name='outbound_emails', on_delete=OnDelete.SET_NULL),
        ),
        ops.AddIndex(
            model_name='OutboundEmail',
            index=Index(fields=['firm_id', 'status', 'thread_message_id']),
        ),
    ]
