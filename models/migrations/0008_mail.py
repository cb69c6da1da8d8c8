from tortoise import migrations
from tortoise.migrations import operations as ops
from models.mail import SyncStatus
from orjson import loads
from tortoise.fields.base import OnDelete
from tortoise.fields.data import JSON_DUMPS
from tortoise import fields
from tortoise.indexes import Index

class Migration(migrations.Migration):
    dependencies = [('portico', '0007_document')]

    initial = False

    operations = [
        ops.CreateModel(
            name='Mailbox',
            fields=[
                ('id', fields.IntField(generated=True, primary_key=True, unique=True, db_index=True)),
                ('firm', fields.ForeignKeyField('portico.Firm', source_field='firm_id', db_constraint=True, to_field='id', related_name='mailboxes', on_delete=OnDelete.CASCADE)),
                ('address', fields.CharField(max_length=254)),
                ('address_normalized', fields.CharField(max_length=254)),
                ('imap_host', fields.CharField(max_length=255)),
                ('imap_port', fields.IntField()),
                ('imap_tls', fields.BooleanField(default=True)),
                ('smtp_host', fields.CharField(max_length=255)),
                ('smtp_port', fields.IntField()),
                ('smtp_tls', fields.BooleanField(default=True)),
                ('username', fields.CharField(max_length=255)),
                ('password_encrypted', fields.TextField(unique=False)),
                ('sync_status', fields.CharEnumField(default=SyncStatus.IDLE, description='IDLE: IDLE\nSYNCING: SYNCING\nFAILED: FAILED', enum_type=SyncStatus, max_length=16)),
                ('last_synced_at', fields.DatetimeField(null=True, auto_now=False, auto_now_add=False)),
                ('last_error', fields.TextField(null=True, unique=False)),
                ('lease_until', fields.DatetimeField(null=True, description='a worker is syncing it', auto_now=False, auto_now_add=False)),
                ('created_by', fields.ForeignKeyField('portico.StaffMember', source_field='created_by_id', null=True, db_constraint=True, to_field='id', related_name='mailboxes', on_delete=OnDelete.SET_NULL)),
                ('created_at', fields.DatetimeField(auto_now=False, auto_now_add=True)),
            ],
            options={'table': 'mailbox', 'app': 'portico', 'unique_together': (('firm', 'address_normalized'),), 'pk_attr': 'id', 'table_description': 'An IMAP/SMTP mailbox of the firm. The password is stored encrypted, never returned.'},
            bases=['Model'],
        ),
        ops.CreateModel(
            name='MailboxFolder',
            fields=[
                ('id', fields.IntField(generated=True, primary_key=True, unique=True, db_index=True)),
                ('mailbox', fields.ForeignKeyField('portico.Mailbox', source_field='mailbox_id', db_constraint=True, to_field='id', related_name='folders', on_delete=OnDelete.CASCADE)),
                ('name', fields.CharField(max_length=255)),
                ('role', fields.CharField(description='INBOX or SENT', max_length=16)),
                ('uidvalidity', fields.BigIntField(null=True)),
                ('last_uid', fields.BigIntField(default=0)),
                ('highest_modseq', fields.BigIntField(null=True)),
            ],
            options={'table': 'mailbox_folder', 'app': 'portico', 'unique_together': (('mailbox', 'name'),), 'pk_attr': 'id', 'table_description': 'Where the sync of one folder stands: UIDVALIDITY and the last UID seen.'},
            bases=['Model'],
        ),
        ops.CreateModel(
            name='Message',
            fields=[
                ('id', fields.IntField(generated=True, primary_key=True, unique=True, db_index=True)),
                ('firm', fields.ForeignKeyField('portico.Firm', source_field='firm_id', db_constraint=True, to_field='id', related_name='messages', on_delete=OnDelete.CASCADE)),
                ('message_id', fields.CharField(description='the header, or a stable hash', max_length=998)),
                ('message_key', fields.CharField(description='SHA-256 of message_id', max_length=64)),
                ('thread_key', fields.CharField(db_index=True, max_length=64)),
                ('subject', fields.TextField(unique=False)),
                ('from_address', fields.CharField(max_length=254)),
                ('to_addresses', fields.JSONField(default=list, encoder=JSON_DUMPS, decoder=loads)),
                ('cc_addresses', fields.JSONField(default=list, encoder=JSON_DUMPS, decoder=loads)),
                ('sent_at', fields.DatetimeField(auto_now=False, auto_now_add=False)),
                ('text_body', fields.TextField(null=True, unique=False)),
                ('html_body', fields.TextField(null=True, description='as received, sanitized when read', unique=False)),
                ('direction', fields.CharField(description='INBOUND or OUTBOUND', max_length=8)),
                ('created_at', fields.DatetimeField(auto_now=False, auto_now_add=True)),
            ],
            options={'table': 'message', 'app': 'portico', 'unique_together': (('firm', 'message_key'),), 'indexes': [Index(fields=['firm_id', 'sent_at', 'id'])], 'pk_attr': 'id', 'table_description': 'A synced (or sent) message, stored once per firm and found again by its Message-ID.'},
            bases=['Model'],
        ),
        ops.CreateModel(
            name='MessageAccount',
            fields=[
                ('id', fields.IntField(generated=True, primary_key=True, unique=True, db_index=True)),
                ('firm', fields.ForeignKeyField('portico.Firm', source_field='firm_id', db_constraint=True, to_field='id', related_name='message_accounts', on_delete=OnDelete.CASCADE)),
                ('message', fields.ForeignKeyField('portico.Message', source_field='message_id', db_constraint=True, to_field='id', related_name='account_links', on_delete=OnDelete.CASCADE)),
                ('account', fields.ForeignKeyField('portico.Account', source_field='account_id', db_index=True, db_constraint=True, to_field='id', related_name='message_links', on_delete=OnDelete.CASCADE)),
                ('sent_at', fields.DatetimeField(description='copied from the message: the Email tab sorts by it', auto_now=False, auto_now_add=False)),
            ],
            options={'table': 'message_account', 'app': 'portico', 'unique_together': (('message', 'account'),), 'indexes': [Index(fields=['account_id', 'sent_at', 'message_id'])], 'pk_attr': 'id', 'table_description': "A message shows in an account's Email tab (a participant has EMAIL SYNC on there)."},
            bases=['Model'],
        ),
    ]
