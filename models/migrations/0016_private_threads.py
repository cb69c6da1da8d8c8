from tortoise import migrations
from tortoise.migrations import operations as ops
from models.mail import MailboxVisibility
from tortoise.fields.base import OnDelete
from tortoise import fields

class Migration(migrations.Migration):
    dependencies = [('portico', '0015_webhook_attempts')]

    initial = False

    operations = [
        ops.CreateModel(
            name='SharedThread',
            fields=[
                ('id', fields.IntField(generated=True, primary_key=True, unique=True, db_index=True)),
                ('firm', fields.ForeignKeyField('portico.Firm', source_field='firm_id', db_constraint=True, to_field='id', related_name='shared_threads', on_delete=OnDelete.CASCADE)),
                ('owner', fields.ForeignKeyField('portico.StaffMember', source_field='owner_id', db_constraint=True, to_field='id', related_name='shared_threads', on_delete=OnDelete.CASCADE)),
                ('thread_key', fields.CharField(max_length=64)),
                ('shared_at', fields.DatetimeField(auto_now=False, auto_now_add=True)),
            ],
            options={'table': 'shared_thread', 'app': 'portico', 'unique_together': (('owner', 'thread_key'),), 'pk_attr': 'id', 'table_description': 'A thread of a personal mailbox that its owner shared with the whole firm.'},
            bases=['Model'],
        ),
        ops.AddField(
            model_name='Firm',
            name='owners_see_all_mail',
            field=fields.BooleanField(default=False, description='owners read private threads of personal mailboxes too'),
        ),
        ops.AddField(
            model_name='Mailbox',
            name='visibility',
            field=fields.CharEnumField(default=MailboxVisibility.SHARED, description='PERSONAL: private to created_by until a thread is shared', enum_type=MailboxVisibility, max_length=16),
        ),
        ops.AddField(
            model_name='Message',
            name='private_to',
            field=fields.ForeignKeyField('portico.StaffMember', source_field='private_to_id', null=True, description='the owner of the personal mailbox whose unshared thread holds it', db_constraint=True, to_field='id', related_name='private_messages', on_delete=OnDelete.CASCADE),
        ),
    ]
