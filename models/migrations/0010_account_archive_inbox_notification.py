from tortoise import migrations
from tortoise.migrations import operations as ops
from models.firms import InboxNotification
from tortoise import fields

class Migration(migrations.Migration):
    dependencies = [('portico', '0009_mail_history_attachments_replies')]

    initial = False

    operations = [
        ops.AddField(
            model_name='Account',
            name='archived_at',
            field=fields.DatetimeField(null=True, description='archived: out of lists and the portal', auto_now=False, auto_now_add=False),
        ),
        ops.AddField(
            model_name='StaffMember',
            name='inbox_digest_through',
            field=fields.DatetimeField(null=True, description='the daily digest has covered mail synced up to here', auto_now=False, auto_now_add=False),
        ),
        ops.AddField(
            model_name='StaffMember',
            name='inbox_notification',
            field=fields.CharEnumField(default=InboxNotification.OFF, description='OFF: OFF\nIMMEDIATE: IMMEDIATE\nDAILY_DIGEST: DAILY_DIGEST', enum_type=InboxNotification, max_length=16),
        ),
    ]
