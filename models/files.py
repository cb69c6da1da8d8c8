"""The database file store (PORTICO_FILE_STORE=database): contents by SHA-256, in chunks, so
every host of a deployment reads the same files without a shared disk."""

from __future__ import annotations

from tortoise import fields
from tortoise.models import Model


class StoredFile(Model):
    """One content of the database store, written in the transaction of its last chunk: a
    reader never finds a content whose chunks are not all there."""

    sha256 = fields.CharField(max_length=64, primary_key=True)
    size = fields.BigIntField()
    chunks = fields.IntField(description="how many FileChunk rows hold it, numbered from 0")
    created_at = fields.DatetimeField(auto_now_add=True)

    class Meta:
        table = "stored_file"
        table_description = "A file content kept in the database, by its SHA-256."


class FileChunk(Model):
    """A piece of a content (up to 1 MiB), read in order by `seq`."""

    id = fields.BigIntField(primary_key=True)
    sha256 = fields.CharField(max_length=64)
    seq = fields.IntField()
    data = fields.BinaryField()

    class Meta:
        table = "file_chunk"
        unique_together = (("sha256", "seq"),)
        table_description = "A piece of a file content kept in the database."
