from tortoise import migrations
from tortoise.migrations import operations as ops
from orjson import loads
from tortoise.fields.base import OnDelete
from tortoise.fields.data import JSON_DUMPS
from tortoise import fields
from tortoise.indexes import Index

class Migration(migrations.Migration):
    dependencies = [('portico', '0002_outbound_email')]

    initial = False

    operations = [
        ops.CreateModel(
            name='Invitation',
            fields=[
                ('id', fields.IntField(generated=True, primary_key=True, unique=True, db_index=True)),
                ('firm', fields.ForeignKeyField('portico.Firm', source_field='firm_id', db_constraint=True, to_field='id', related_name='invitations', on_delete=OnDelete.CASCADE)),
                ('account', fields.ForeignKeyField('portico.Account', source_field='account_id', db_constraint=True, to_field='id', related_name='invitations', on_delete=OnDelete.CASCADE)),
                ('account_email', fields.ForeignKeyField('portico.AccountEmail', source_field='account_email_id', null=True, db_index=True, db_constraint=True, to_field='id', related_name='invitations', on_delete=OnDelete.SET_NULL)),
                ('email', fields.CharField(description='the address it was sent to', max_length=254)),
                ('email_normalized', fields.CharField(max_length=254)),
                ('token_hash', fields.CharField(unique=True, max_length=64)),
                ('created_at', fields.DatetimeField(auto_now=False, auto_now_add=True)),
                ('sent_at', fields.DatetimeField(null=True, auto_now=False, auto_now_add=False)),
                ('expires_at', fields.DatetimeField(auto_now=False, auto_now_add=False)),
                ('accepted_at', fields.DatetimeField(null=True, auto_now=False, auto_now_add=False)),
                ('revoked_at', fields.DatetimeField(null=True, auto_now=False, auto_now_add=False)),
            ],
            options={'table': 'invitation', 'app': 'portico', 'indexes': [Index(fields=['account_id', 'email_normalized'])], 'pk_attr': 'id', 'table_description': 'A single-use link to activate LOGIN for one address in one account.'},
            bases=['Model'],
        ),
        ops.CreateModel(
            name='PortalUser',
            fields=[
                ('id', fields.IntField(generated=True, primary_key=True, unique=True, db_index=True)),
                ('firm', fields.ForeignKeyField('portico.Firm', source_field='firm_id', db_constraint=True, to_field='id', related_name='portal_users', on_delete=OnDelete.CASCADE)),
                ('email', fields.CharField(max_length=254)),
                ('email_normalized', fields.CharField(max_length=254)),
                ('password_hash', fields.CharField(max_length=255)),
                ('activated_at', fields.DatetimeField(auto_now=False, auto_now_add=False)),
                ('created_at', fields.DatetimeField(auto_now=False, auto_now_add=True)),
            ],
            options={'table': 'portal_user', 'app': 'portico', 'unique_together': (('firm', 'email_normalized'),), 'pk_attr': 'id', 'table_description': "A client's sign-in, one per address (compared case-insensitively) per firm."},
            bases=['Model'],
        ),
        ops.CreateModel(
            name='AuditEntry',
            fields=[
                ('id', fields.IntField(generated=True, primary_key=True, unique=True, db_index=True)),
                ('firm', fields.ForeignKeyField('portico.Firm', source_field='firm_id', db_constraint=True, to_field='id', related_name='audit_entries', on_delete=OnDelete.CASCADE)),
                ('account', fields.ForeignKeyField('portico.Account', source_field='account_id', null=True, db_index=True, db_constraint=True, to_field='id', related_name='audit_entries', on_delete=OnDelete.CASCADE)),
                ('staff_member', fields.ForeignKeyField('portico.StaffMember', source_field='staff_member_id', null=True, db_constraint=True, to_field='id', related_name='audit_entries', on_delete=OnDelete.SET_NULL)),
                ('portal_user', fields.ForeignKeyField('portico.PortalUser', source_field='portal_user_id', null=True, db_constraint=True, to_field='id', related_name='audit_entries', on_delete=OnDelete.SET_NULL)),
                ('action', fields.CharField(max_length=64)),
                ('email', fields.CharField(null=True, description='the address concerned', max_length=254)),
                ('before', fields.JSONField(null=True, encoder=JSON_DUMPS, decoder=loads)),
                ('after', fields.JSONField(null=True, encoder=JSON_DUMPS, decoder=loads)),
                ('created_at', fields.DatetimeField(auto_now=False, auto_now_add=True)),
            ],
            options={'table': 'audit_entry', 'app': 'portico', 'pk_attr': 'id', 'table_description': 'Who changed whose access, when, from what to what.'},
            bases=['Model'],
        ),
        ops.CreateModel(
            name='PortalAccess',
            fields=[
                ('id', fields.IntField(generated=True, primary_key=True, unique=True, db_index=True)),
                ('firm', fields.ForeignKeyField('portico.Firm', source_field='firm_id', db_constraint=True, to_field='id', related_name='portal_accesses', on_delete=OnDelete.CASCADE)),
                ('account', fields.ForeignKeyField('portico.Account', source_field='account_id', db_constraint=True, to_field='id', related_name='portal_accesses', on_delete=OnDelete.CASCADE)),
                ('portal_user', fields.ForeignKeyField('portico.PortalUser', source_field='portal_user_id', db_index=True, db_constraint=True, to_field='id', related_name='accesses', on_delete=OnDelete.CASCADE)),
                ('created_at', fields.DatetimeField(auto_now=False, auto_now_add=True)),
            ],
            options={'table': 'portal_access', 'app': 'portico', 'unique_together': (('account', 'portal_user'),), 'pk_attr': 'id', 'table_description': 'A portal user may enter an account. The one source of truth for client access.'},
            bases=['Model'],
        ),
        ops.AlterModelOptions(
            name='Session',
            options={'table': 'session', 'app': 'portico', 'pk_attr': 'id', 'table_description': 'A signed-in staff member or client. Only the SHA-256 of the token is stored.'},
        ),
        ops.AddField(
            model_name='Session',
            name='current_account',
            field=fields.ForeignKeyField('portico.Account', source_field='current_account_id', null=True, db_constraint=True, to_field='id', related_name='+', on_delete=OnDelete.SET_NULL),
        ),
        ops.AddField(
            model_name='Session',
            name='notice_dismissed',
            field=fields.BooleanField(default=False),
        ),
        ops.AddField(
            model_name='Session',
            name='portal_user',
            field=fields.ForeignKeyField('portico.PortalUser', source_field='portal_user_id', null=True, db_index=True, db_constraint=True, to_field='id', related_name='sessions', on_delete=OnDelete.CASCADE),
        ),
    ]
