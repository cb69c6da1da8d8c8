from tortoise import migrations
from tortoise.migrations import operations as ops
from models.outbox import DeliveryStatus
from tortoise.fields.base import OnDelete
from tortoise import fields

class Migration(migrations.Migration):
    dependencies = [('portico', '0004_password_link')]

    initial = False

    operations = [
        ops.AlterField(
            model_name='OutboundEmail',
            name='status',
            field=fields.CharEnumField(default=DeliveryStatus.QUEUED, description='QUEUED: QUEUED\nSENT: SENT\nFAILED: FAILED\nCANCELLED: CANCELLED', enum_type=DeliveryStatus, max_length=16),
        ),
        ops.AddField(
            model_name='OutboundEmail',
            name='invitation',
            field=fields.ForeignKeyField('portico.Invitation', source_field='invitation_id', null=True, db_index=True, db_constraint=True, to_field='id', related_name='outbound_emails', on_delete=OnDelete.SET_NULL),
        ),
    ]
