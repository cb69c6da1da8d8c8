from tortoise import migrations
from tortoise.migrations import operations as ops
from tortoise import fields

class Migration(migrations.Migration):
    dependencies = [('portico', '0012_mail_pipeline')]

    initial = False

    operations = [
        ops.CreateModel(
            name='FileChunk',
            fields=[
                ('id', fields.BigIntField(generated=True, primary_key=True, unique=True, db_index=True)),
                ('sha256', fields.CharField(max_length=64)),
                ('seq', fields.IntField()),
                ('data', fields.BinaryField()),
            ],
            options={'table': 'file_chunk', 'app': 'portico', 'unique_together': (('sha256', 'seq'),), 'pk_attr': 'id', 'table_description': 'A piece of a file content kept in the database.'},
            bases=['Model'],
        ),
        ops.CreateModel(
            name='StoredFile',
            fields=[
                ('sha256', fields.CharField(primary_key=True, unique=True, db_index=True, max_length=64)),
                ('size', fields.BigIntField()),
                ('chunks', fields.IntField(description='how many FileChunk rows hold it, numbered from 0')),
                ('created_at', fields.DatetimeField(auto_now=False, auto_now_add=True)),
            ],
            options={'table': 'stored_file', 'app': 'portico', 'pk_attr': 'sha256', 'table_description': 'A file content kept in the database, by its SHA-256.'},
            bases=['Model'],
        ),
    ]
