from tortoise import migrations
from tortoise.migrations import operations as ops
from models.crm import AccountType
from models.firms import StaffRole
from orjson import loads
from tortoise.fields.base import OnDelete
from tortoise.fields.data import JSON_DUMPS
from tortoise import fields
from tortoise.indexes import Index

class Migration(migrations.Migration):
    initial = True

    operations = [
        ops.CreateModel(
            name='Firm',
            fields=[
                ('id', fields.IntField(generated=True, primary_key=True, unique=True, db_index=True)),
                ('name', fields.CharField(max_length=200)),
                ('slug', fields.CharField(unique=True, max_length=64)),
                ('created_at', fields.DatetimeField(auto_now=False, auto_now_add=True)),
            ],
            options={'table': 'firm', 'app': 'portico', 'pk_attr': 'id'},
            bases=['Model'],
        ),
        ops.CreateModel(
            name='Account',
            fields=[
                ('id', fields.IntField(generated=True, primary_key=True, unique=True, db_index=True)),
                ('firm', fields.ForeignKeyField('portico.Firm', source_field='firm_id', db_constraint=True, to_field='id', related_name='accounts', on_delete=OnDelete.CASCADE)),
                ('name', fields.CharField(max_length=200)),
                ('type', fields.CharEnumField(description='INDIVIDUAL: INDIVIDUAL\nFAMILY: FAMILY\nCOMPANY: COMPANY', enum_type=AccountType, max_length=16)),
                ('auto_save_attachments', fields.BooleanField(default=False)),
                ('created_at', fields.DatetimeField(auto_now=False, auto_now_add=True)),
            ],
            options={'table': 'account', 'app': 'portico', 'indexes': [Index(fields=['firm_id', 'name'])], 'pk_attr': 'id'},
            bases=['Model'],
        ),
        ops.CreateModel(
            name='Contact',
            fields=[
                ('id', fields.IntField(generated=True, primary_key=True, unique=True, db_index=True)),
                ('firm', fields.ForeignKeyField('portico.Firm', source_field='firm_id', db_constraint=True, to_field='id', related_name='contacts', on_delete=OnDelete.CASCADE)),
                ('first_name', fields.CharField(max_length=100)),
                ('last_name', fields.CharField(max_length=100)),
                ('created_at', fields.DatetimeField(auto_now=False, auto_now_add=True)),
            ],
            options={'table': 'contact', 'app': 'portico', 'indexes': [Index(fields=['firm_id', 'last_name', 'first_name'])], 'pk_attr': 'id'},
            bases=['Model'],
        ),
        ops.CreateModel(
            name='AccountContact',
            fields=[
                ('id', fields.IntField(generated=True, primary_key=True, unique=True, db_index=True)),
                ('firm', fields.ForeignKeyField('portico.Firm', source_field='firm_id', db_constraint=True, to_field='id', related_name='account_contacts', on_delete=OnDelete.CASCADE)),
                ('account', fields.ForeignKeyField('portico.Account', source_field='account_id', db_constraint=True, to_field='id', related_name='contact_links', on_delete=OnDelete.CASCADE)),
                ('contact', fields.ForeignKeyField('portico.Contact', source_field='contact_id', db_index=True, db_constraint=True, to_field='id', related_name='account_links', on_delete=OnDelete.CASCADE)),
                ('created_at', fields.DatetimeField(auto_now=False, auto_now_add=True)),
            ],
            options={'table': 'account_contact', 'app': 'portico', 'unique_together': (('account', 'contact'),), 'pk_attr': 'id'},
            bases=['Model'],
        ),
        ops.CreateModel(
            name='EmailAddress',
            fields=[
                ('id', fields.IntField(generated=True, primary_key=True, unique=True, db_index=True)),
                ('firm', fields.ForeignKeyField('portico.Firm', source_field='firm_id', db_constraint=True, to_field='id', related_name='email_addresses', on_delete=OnDelete.CASCADE)),
                ('contact', fields.ForeignKeyField('portico.Contact', source_field='contact_id', db_index=True, db_constraint=True, to_field='id', related_name='email_addresses', on_delete=OnDelete.CASCADE)),
                ('address', fields.CharField(description='as typed, for display', max_length=254)),
                ('address_normalized', fields.CharField(description='lower-cased, for lookups', max_length=254)),
                ('label', fields.CharField(default='Email', max_length=100)),
                ('created_at', fields.DatetimeField(auto_now=False, auto_now_add=True)),
            ],
            options={'table': 'email_address', 'app': 'portico', 'unique_together': (('firm', 'address_normalized'),), 'pk_attr': 'id'},
            bases=['Model'],
        ),
        ops.CreateModel(
            name='AccountEmail',
            fields=[
                ('id', fields.IntField(generated=True, primary_key=True, unique=True, db_index=True)),
                ('firm', fields.ForeignKeyField('portico.Firm', source_field='firm_id', db_constraint=True, to_field='id', related_name='account_emails', on_delete=OnDelete.CASCADE)),
                ('account', fields.ForeignKeyField('portico.Account', source_field='account_id', db_constraint=True, to_field='id', related_name='emails', on_delete=OnDelete.CASCADE)),
                ('email_address', fields.ForeignKeyField('portico.EmailAddress', source_field='email_address_id', db_index=True, db_constraint=True, to_field='id', related_name='account_emails', on_delete=OnDelete.CASCADE)),
                ('login', fields.BooleanField(default=False)),
                ('notify', fields.BooleanField(default=False)),
                ('email_sync', fields.BooleanField(default=False)),
                ('notify_all', fields.BooleanField(default=True)),
                ('notify_categories', fields.JSONField(default=list, encoder=JSON_DUMPS, decoder=loads)),
                ('created_at', fields.DatetimeField(auto_now=False, auto_now_add=True)),
            ],
            options={'table': 'account_email', 'app': 'portico', 'unique_together': (('account', 'email_address'),), 'pk_attr': 'id', 'table_description': 'One address as it stands in one account: the LOGIN, NOTIFY and EMAIL SYNC toggles.'},
            bases=['Model'],
        ),
        ops.CreateModel(
            name='SignInThrottle',
            fields=[
                ('key', fields.CharField(primary_key=True, unique=True, db_index=True, max_length=64)),
                ('failures', fields.IntField(default=0)),
                ('locked_until', fields.DatetimeField(null=True, auto_now=False, auto_now_add=False)),
                ('updated_at', fields.DatetimeField(auto_now=True, auto_now_add=False)),
            ],
            options={'table': 'signin_throttle', 'app': 'portico', 'pk_attr': 'key', 'table_description': 'Failed sign-ins per (firm, email), known or not, so throttling reveals nothing.'},
            bases=['Model'],
        ),
        ops.CreateModel(
            name='StaffMember',
            fields=[
                ('id', fields.IntField(generated=True, primary_key=True, unique=True, db_index=True)),
                ('firm', fields.ForeignKeyField('portico.Firm', source_field='firm_id', db_constraint=True, to_field='id', related_name='staff', on_delete=OnDelete.CASCADE)),
                ('email', fields.CharField(max_length=254)),
                ('email_normalized', fields.CharField(max_length=254)),
                ('name', fields.CharField(max_length=200)),
                ('role', fields.CharEnumField(default=StaffRole.EMPLOYEE, description='OWNER: OWNER\nADMIN: ADMIN\nEMPLOYEE: EMPLOYEE', enum_type=StaffRole, max_length=16)),
                ('can_manage_accounts', fields.BooleanField(default=False)),
                ('can_use_inbox', fields.BooleanField(default=False)),
                ('active', fields.BooleanField(default=True)),
                ('password_hash', fields.CharField(null=True, max_length=255)),
                ('created_at', fields.DatetimeField(auto_now=False, auto_now_add=True)),
            ],
            options={'table': 'staff_member', 'app': 'portico', 'unique_together': (('firm', 'email_normalized'),), 'pk_attr': 'id'},
            bases=['Model'],
        ),
        ops.CreateModel(
            name='Session',
            fields=[
                ('id', fields.IntField(generated=True, primary_key=True, unique=True, db_index=True)),
                ('token_hash', fields.CharField(unique=True, max_length=64)),
                ('firm', fields.ForeignKeyField('portico.Firm', source_field='firm_id', db_constraint=True, to_field='id', related_name='sessions', on_delete=OnDelete.CASCADE)),
                ('staff_member', fields.ForeignKeyField('portico.StaffMember', source_field='staff_member_id', null=True, db_index=True, db_constraint=True, to_field='id', related_name='sessions', on_delete=OnDelete.CASCADE)),
                ('created_at', fields.DatetimeField(auto_now=False, auto_now_add=True)),
                ('expires_at', fields.DatetimeField(auto_now=False, auto_now_add=False)),
                ('revoked_at', fields.DatetimeField(null=True, auto_now=False, auto_now_add=False)),
            ],
            options={'table': 'session', 'app': 'portico', 'pk_attr': 'id', 'table_description': 'A signed-in browser or API client. Only the SHA-256 of the token is stored.'},
            bases=['Model'],
        ),
    ]
