from tortoise import migrations
from tortoise.migrations import operations as ops
from tortoise.fields.base import OnDelete
from tortoise import fields

class Migration(migrations.Migration):
    dependencies = [('portico', '0003_portal_access')]

    initial = False

    operations = [
        ops.CreateModel(
            name='PasswordLink',
            fields=[
                ('id', fields.IntField(generated=True, primary_key=True, unique=True, db_index=True)),
                ('firm', fields.ForeignKeyField('portico.Firm', source_field='firm_id', db_constraint=True, to_field='id', related_name='password_links', on_delete=OnDelete.CASCADE)),
                ('staff_member', fields.ForeignKeyField('portico.StaffMember', source_field='staff_member_id', db_constraint=True, to_field='id', related_name='password_links', on_delete=OnDelete.CASCADE)),
                ('token_hash', fields.CharField(unique=True, max_length=64)),
                ('created_at', fields.DatetimeField(auto_now=False, auto_now_add=True)),
                ('expires_at', fields.DatetimeField(auto_now=False, auto_now_add=False)),
                ('used_at', fields.DatetimeField(null=True, auto_now=False, auto_now_add=False)),
                ('revoked_at', fields.DatetimeField(null=True, auto_now=False, auto_now_add=False)),
            ],
            options={'table': 'password_link', 'app': 'portico', 'pk_attr': 'id', 'table_description': 'A single-use link that lets a new staff member set their first password.'},
            bases=['Model'],
        ),
    ]
