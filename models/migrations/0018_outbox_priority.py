from tortoise import migrations
from tortoise.migrations import operations as ops
from tortoise import fields
from tortoise.indexes import Index

class Migration(migrations.Migration):
    dependencies = [('portico', '0017_two_factor')]

    initial = False

    operations = [
        ops.AddField(
            model_name='OutboundEmail',
            name='priority',
            field=fields.SmallIntField(default=1, description='lower is sent first', db_default=1),
        ),
        ops.AddIndex(
            model_name='OutboundEmail',
            index=Index(fields=['status', 'priority', 'next_attempt_at', 'id']),
        ),
    ]
