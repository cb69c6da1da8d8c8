from tortoise import migrations
from tortoise.migrations import operations as ops
from tortoise.fields.base import OnDelete
from tortoise import fields
from tortoise.indexes import Index

class Migration(migrations.Migration):
    dependencies = [('portico', '0010_account_archive_inbox_notification')]

    initial = False

    operations = [
        ops.CreateModel(
            name='ClientMailNotice',
            fields=[
                ('id', fields.IntField(generated=True, primary_key=True, unique=True, db_index=True)),
                ('firm', fields.ForeignKeyField('portico.Firm', source_field='firm_id', db_constraint=True, to_field='id', related_name='client_mail_notices', on_delete=OnDelete.CASCADE)),
                ('message', fields.ForeignKeyField('portico.Message', source_field='message_id', db_constraint=True, to_field='id', related_name='notices', on_delete=OnDelete.CASCADE)),
                ('account', fields.ForeignKeyField('portico.Account', source_field='account_id', db_constraint=True, to_field='id', related_name='mail_notices', on_delete=OnDelete.CASCADE)),
                ('created_at', fields.DatetimeField(auto_now=False, auto_now_add=True)),
            ],
            options={'table': 'client_mail_notice', 'app': 'portico', 'unique_together': (('message', 'account'),), 'indexes': [Index(fields=['firm_id', 'created_at'])], 'pk_attr': 'id', 'table_description': 'New client mail synced live, once per account: what staff alerts and digests list.'},
            bases=['Model'],
        ),
    ]
