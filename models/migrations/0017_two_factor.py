from tortoise import migrations
from tortoise.migrations import operations as ops
from models.firms import SecondFactorRequirement
from tortoise.fields.base import OnDelete
from tortoise import fields
from tortoise.indexes import Index

class Migration(migrations.Migration):
    dependencies = [('portico', '0016_private_threads')]

    initial = False

    operations = [
        ops.CreateModel(
            name='Authenticator',
            fields=[
                ('id', fields.IntField(generated=True, primary_key=True, unique=True, db_index=True)),
                ('firm', fields.ForeignKeyField('portico.Firm', source_field='firm_id', db_constraint=True, to_field='id', related_name='authenticators', on_delete=OnDelete.CASCADE)),
                ('staff_member', fields.ForeignKeyField('portico.StaffMember', source_field='staff_member_id', null=True, db_index=True, db_constraint=True, to_field='id', related_name='authenticators', on_delete=OnDelete.CASCADE)),
                ('portal_user', fields.ForeignKeyField('portico.PortalUser', source_field='portal_user_id', null=True, db_index=True, db_constraint=True, to_field='id', related_name='authenticators', on_delete=OnDelete.CASCADE)),
                ('secret_encrypted', fields.TextField(unique=False)),
                ('confirmed_at', fields.DatetimeField(null=True, auto_now=False, auto_now_add=False)),
                ('last_step', fields.BigIntField(default=0, description='the last TOTP step used (no replay)')),
                ('created_at', fields.DatetimeField(auto_now=False, auto_now_add=True)),
            ],
            options={'table': 'authenticator', 'app': 'portico', 'pk_attr': 'id', 'table_description': "A person's TOTP secret (encrypted), pending until a first code confirms it."},
            bases=['Model'],
        ),
        ops.CreateModel(
            name='KnownDevice',
            fields=[
                ('id', fields.IntField(generated=True, primary_key=True, unique=True, db_index=True)),
                ('firm', fields.ForeignKeyField('portico.Firm', source_field='firm_id', db_constraint=True, to_field='id', related_name='known_devices', on_delete=OnDelete.CASCADE)),
                ('staff_member', fields.ForeignKeyField('portico.StaffMember', source_field='staff_member_id', null=True, db_index=True, db_constraint=True, to_field='id', related_name='known_devices', on_delete=OnDelete.CASCADE)),
                ('portal_user', fields.ForeignKeyField('portico.PortalUser', source_field='portal_user_id', null=True, db_index=True, db_constraint=True, to_field='id', related_name='known_devices', on_delete=OnDelete.CASCADE)),
                ('token_hash', fields.CharField(unique=True, max_length=64)),
                ('created_at', fields.DatetimeField(auto_now=False, auto_now_add=True)),
                ('last_seen_at', fields.DatetimeField(auto_now=False, auto_now_add=True)),
            ],
            options={'table': 'known_device', 'app': 'portico', 'pk_attr': 'id', 'table_description': 'A browser or script a person has signed in from: only the SHA-256 of its token.'},
            bases=['Model'],
        ),
        ops.CreateModel(
            name='RecoveryCode',
            fields=[
                ('id', fields.IntField(generated=True, primary_key=True, unique=True, db_index=True)),
                ('authenticator', fields.ForeignKeyField('portico.Authenticator', source_field='authenticator_id', db_constraint=True, to_field='id', related_name='recovery_codes', on_delete=OnDelete.CASCADE)),
                ('code_hash', fields.CharField(max_length=64)),
                ('used_at', fields.DatetimeField(null=True, auto_now=False, auto_now_add=False)),
            ],
            options={'table': 'recovery_code', 'app': 'portico', 'indexes': [Index(fields=['authenticator_id', 'code_hash'])], 'pk_attr': 'id', 'table_description': 'One single-use recovery code of an authenticator (only its SHA-256 stored).'},
            bases=['Model'],
        ),
        ops.CreateModel(
            name='SecondFactorChallenge',
            fields=[
                ('id', fields.IntField(generated=True, primary_key=True, unique=True, db_index=True)),
                ('firm', fields.ForeignKeyField('portico.Firm', source_field='firm_id', db_constraint=True, to_field='id', related_name='second_factor_challenges', on_delete=OnDelete.CASCADE)),
                ('staff_member', fields.ForeignKeyField('portico.StaffMember', source_field='staff_member_id', null=True, db_index=True, db_constraint=True, to_field='id', related_name='second_factor_challenges', on_delete=OnDelete.CASCADE)),
                ('portal_user', fields.ForeignKeyField('portico.PortalUser', source_field='portal_user_id', null=True, db_index=True, db_constraint=True, to_field='id', related_name='second_factor_challenges', on_delete=OnDelete.CASCADE)),
                ('token_hash', fields.CharField(unique=True, max_length=64)),
                ('code_hash', fields.CharField(null=True, description='SHA-256 of the challenge id and the mailed code', max_length=64)),
                ('methods', fields.CharField(description='comma-separated SecondFactorMethod', max_length=64)),
                ('tries', fields.IntField(default=0)),
                ('throttle_key', fields.CharField(description='the sign-in throttle row', max_length=64)),
                ('current_account_id', fields.IntField(null=True, description='where a client lands')),
                ('created_at', fields.DatetimeField(auto_now=False, auto_now_add=True)),
                ('expires_at', fields.DatetimeField(auto_now=False, auto_now_add=False)),
                ('used_at', fields.DatetimeField(null=True, auto_now=False, auto_now_add=False)),
            ],
            options={'table': 'second_factor_challenge', 'app': 'portico', 'pk_attr': 'id', 'table_description': 'A password accepted, a second factor pending. Only hashes of its id and code stored.'},
            bases=['Model'],
        ),
        ops.AddField(
            model_name='Firm',
            name='client_second_factor',
            field=fields.CharEnumField(default=SecondFactorRequirement.NONE, description='NONE: NONE\nEMAIL_CODE: EMAIL_CODE\nAUTHENTICATOR: AUTHENTICATOR', enum_type=SecondFactorRequirement, max_length=16),
        ),
        ops.AddField(
            model_name='Firm',
            name='second_factor_from',
            field=fields.DatetimeField(null=True, description="the firm's requirements hold from here (null at once)", auto_now=False, auto_now_add=False),
        ),
        ops.AddField(
            model_name='Firm',
            name='staff_second_factor',
            field=fields.CharEnumField(default=SecondFactorRequirement.NONE, description='NONE: NONE\nEMAIL_CODE: EMAIL_CODE\nAUTHENTICATOR: AUTHENTICATOR', enum_type=SecondFactorRequirement, max_length=16),
        ),
        ops.AddField(
            model_name='StaffMember',
            name='second_factor',
            field=fields.CharEnumField(default=SecondFactorRequirement.NONE, description="this member's own requirement (the stricter of it and the firm's holds)", enum_type=SecondFactorRequirement, max_length=16),
        ),
    ]
