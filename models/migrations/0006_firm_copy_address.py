from tortoise import migrations
from tortoise.migrations import operations as ops
from tortoise import fields

class Migration(migrations.Migration):
    dependencies = [('portico', '0005_cancel_invitation_mail')]

    initial = False

    operations = [
        ops.AddField(
            model_name='Firm',
            name='copy_address',
            field=fields.CharField(null=True, description='receives a copy of every email to clients', max_length=254),
        ),
    ]
