"""Automatic persisted queries (Apollo's protocol): a client sends the SHA-256 of a document
instead of the document; the server answers from its store, or asks for the document once
(PERSISTED_QUERY_NOT_FOUND) and keeps it for next time. In allow-list mode the documents of
an operations manifest are the only ones that run.

The store is this process's memory, or Redis when PORTICO_REDIS_URL is set, so every
process sees a document registered with any of them. Either is a least-recently-used cache
bounded in bytes (PORTICO_PERSISTED_QUERIES_CACHE_BYTES), each entry counted with its key
and bookkeeping, and documents over MAX_DOCUMENT_BYTES run but are never kept: anyone may
register a document, so nobody can fill the memory or the Redis the event bus shares. A
Redis outage only costs a lookup: the client sends the document again.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
import time
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from redis.asyncio import Redis
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialBackoff
from redis.exceptions import RedisError

from services.shared.errors import ErrorCode

log = logging.getLogger(__name__)

VERSION = 1  # the only version of Apollo's protocol
REDIS_PREFIX = "portico:apq:"
# Far above any real operation (an app's largest are a few KB): bigger ones are not kept.
MAX_DOCUMENT_BYTES = 32 * 1024
# What an entry costs beyond its document and key: dict slot, str headers, LRU links (Python),
# hash field and sorted-set member (Redis). Measured around 200 bytes in CPython.
ENTRY_OVERHEAD = 256
_SHA256_HEX = re.compile(r"^[0-9a-f]{64}$")

# Apollo's own messages: its link matches the message as well as the code.
NOT_FOUND_MESSAGE = "PersistedQueryNotFound"
NOT_SUPPORTED_MESSAGE = "PersistedQueryNotSupported"
MISMATCH_MESSAGE = "The persisted query's sha256Hash is not the SHA-256 of its query"
MANIFEST_FORMAT = "apollo-persisted-query-manifest"


class PersistedQueryRefused(Exception):
    """A persisted-query request the server will not run: `code` and `message` go to the
    client; `retry` tells the HTTP layer the client is expected to send the document next
    (answered 200, as Apollo Server does, so the client's link retries)."""

    def __init__(self, code: ErrorCode, message: str, *, retry: bool = False) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.retry = retry


def sha256_hex(document: str) -> str:
    return hashlib.sha256(document.encode("utf-8")).hexdigest()


class Store(Protocol):
    async def get(self, key: str) -> str | None: ...

    async def put(self, key: str, document: str) -> None: ...

    async def aclose(self) -> None: ...


def entry_size(key: str, document: str) -> int:
    """The bytes one stored document counts against the cache's budget."""
    return len(key) + len(document.encode("utf-8")) + ENTRY_OVERHEAD


def keepable(document: str) -> bool:
    return len(document.encode("utf-8")) <= MAX_DOCUMENT_BYTES


class MemoryStore:
    """The most recently used documents of this process, at most `max_bytes` of them."""

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self._documents: OrderedDict[str, str] = OrderedDict()
        self._bytes = 0

    async def get(self, key: str) -> str | None:
        document = self._documents.get(key)
        if document is not None:
            self._documents.move_to_end(key)
        return document

    async def put(self, key: str, document: str) -> None:
        size = entry_size(key, document)
        if not keepable(document) or size > self.max_bytes or key in self._documents:
            return
        self._documents[key] = document
        self._bytes += size
        while self._bytes > self.max_bytes:
            evicted_key, evicted = self._documents.popitem(last=False)
            self._bytes -= entry_size(evicted_key, evicted)

    async def aclose(self) -> None:
        self._documents.clear()
        self._bytes = 0


# One registration, atomically: keep the document, mark it the most recently used, and drop
# the least recently used while the namespace holds more than its budget. KEYS: the documents
# (a hash by SHA-256), their order of use (a sorted set), the bytes counted (a counter).
_REDIS_PUT = """
local documents, order, total = KEYS[1], KEYS[2], KEYS[3]
local key, document = ARGV[1], ARGV[2]
local now, budget, overhead = tonumber(ARGV[3]), tonumber(ARGV[4]), tonumber(ARGV[5])
if redis.call('HSETNX', documents, key, document) == 1 then
  redis.call('INCRBY', total, #key + #document + overhead)
end
redis.call('ZADD', order, now, key)
local used = tonumber(redis.call('GET', total) or '0')
while used > budget do
  local oldest = redis.call('ZPOPMIN', order)
  if #oldest == 0 then break end
  local length = redis.call('HSTRLEN', documents, oldest[1])
  if redis.call('HDEL', documents, oldest[1]) == 1 then
    used = redis.call('DECRBY', total, #oldest[1] + length + overhead)
  end
end
"""


class RedisStore:
    """Documents shared by every process through Redis: one least-recently-used cache of
    `max_bytes`, under the key prefix `prefix`."""

    def __init__(self, url: str, max_bytes: int, prefix: str = REDIS_PREFIX) -> None:
        self.max_bytes = max_bytes
        self.keys = [f"{prefix}documents", f"{prefix}order", f"{prefix}bytes"]
        # Short timeouts: a Redis outage costs a request a lookup, never a hang.
        self._redis = Redis.from_url(
            url,
            socket_connect_timeout=2,
            socket_timeout=2,
            retry=Retry(ExponentialBackoff(cap=0.5, base=0.05), 1),
        )
        self._put = self._redis.register_script(_REDIS_PUT)

    async def get(self, key: str) -> str | None:
        documents, order, _ = self.keys
        try:
            async with self._redis.pipeline(transaction=False) as pipe:
                pipe.hget(documents, key)
                pipe.zadd(order, {key: time.time()}, xx=True)  # used now, if still kept
                value, _ = await pipe.execute()
        except (RedisError, OSError) as exc:
            log.warning("persisted queries: Redis lookup failed (%s)", exc)
            return None
        return value.decode("utf-8") if isinstance(value, bytes) else value

    async def put(self, key: str, document: str) -> None:
        if not keepable(document) or entry_size(key, document) > self.max_bytes:
            return
        arguments = [key, document.encode("utf-8"), time.time(), self.max_bytes, ENTRY_OVERHEAD]
        try:
            await self._put(keys=self.keys, args=arguments)
        except (RedisError, OSError) as exc:
            log.warning("persisted queries: Redis store failed (%s)", exc)

    async def aclose(self) -> None:
        await self._redis.aclose()


@dataclass(frozen=True)
class Lookup:
    """What a request's persistedQuery extension resolved to: the document to run, and the
    hash to register it under once it parsed and validated (None: nothing to register)."""

    document: str
    register_as: str | None


def requested_hash(extensions: dict[str, Any] | None) -> str | None:
    """The sha256Hash a request names, or None when it carries no persistedQuery extension.
    A malformed extension or an unknown version is refused."""
    if not extensions or "persistedQuery" not in extensions:
        return None
    persisted = extensions["persistedQuery"]
    if not isinstance(persisted, dict):
        raise PersistedQueryRefused(ErrorCode.BAD_REQUEST, "`persistedQuery` must be an object")
    if persisted.get("version") != VERSION:
        raise PersistedQueryRefused(
            ErrorCode.BAD_REQUEST,
            f"Unsupported persisted query version: only version {VERSION} is supported",
        )
    digest = persisted.get("sha256Hash")
    if not isinstance(digest, str) or not _SHA256_HEX.match(digest):
        raise PersistedQueryRefused(
            ErrorCode.BAD_REQUEST,
            "`persistedQuery.sha256Hash` must be 64 lowercase hexadecimal characters",
        )
    return digest


async def resolve(store: Store, digest: str, document: str | None) -> Lookup:
    """The hash alone: the stored document, or PERSISTED_QUERY_NOT_FOUND. The hash with its
    document: the document, once its SHA-256 is checked."""
    if not document:
        stored = await store.get(digest)
        if stored is None:
            raise PersistedQueryRefused(
                ErrorCode.PERSISTED_QUERY_NOT_FOUND, NOT_FOUND_MESSAGE, retry=True
            )
        return Lookup(stored, None)
    if sha256_hex(document) != digest:
        raise PersistedQueryRefused(ErrorCode.BAD_REQUEST, MISMATCH_MESSAGE)
    return Lookup(document, digest)


def not_supported() -> PersistedQueryRefused:
    """Persisted queries are off: Apollo's link then sends the document, and stops hashing."""
    return PersistedQueryRefused(
        ErrorCode.PERSISTED_QUERY_NOT_SUPPORTED, NOT_SUPPORTED_MESSAGE, retry=True
    )


class AllowList:
    """The documents of an operations manifest (Apollo's persisted-query-manifest JSON): in
    allow-list mode the only ones that run, by hash or by their exact text."""

    def __init__(self, documents: dict[str, str]) -> None:
        self._by_hash = documents

    def __contains__(self, document: str) -> bool:
        return sha256_hex(document) in self._by_hash

    def admit(self, digest: str | None, document: str | None) -> Lookup:
        """The listed document a request names by hash, or its own text if listed."""
        if document:
            if digest is not None and sha256_hex(document) != digest:
                raise PersistedQueryRefused(ErrorCode.BAD_REQUEST, MISMATCH_MESSAGE)
            if document not in self:
                raise not_allowed()
            return Lookup(document, None)
        listed = self._by_hash.get(digest) if digest else None
        if listed is None:
            raise PersistedQueryRefused(
                ErrorCode.PERSISTED_QUERY_NOT_FOUND, NOT_FOUND_MESSAGE, retry=True
            )
        return Lookup(listed, None)


def not_allowed() -> PersistedQueryRefused:
    return PersistedQueryRefused(
        ErrorCode.OPERATION_NOT_ALLOWED,
        "This server runs only the operations of its operations manifest",
    )


def load_manifest(path: Path) -> AllowList:
    """Reads an Apollo persisted-query manifest: {"format": "apollo-persisted-query-manifest",
    "version": 1, "operations": [{"id", "name", "type", "body"}, ...]}. Each document is
    listed under the SHA-256 of its body (what Apollo's tools use as its id); a manifest
    whose id is anything else is refused, as no client could name that document by it."""
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ValueError(f"cannot read the operations manifest {path}: {exc}") from exc
    if not isinstance(manifest, dict) or manifest.get("format") != MANIFEST_FORMAT:
        raise ValueError(f"{path} is not an {MANIFEST_FORMAT} file")
    if manifest.get("version") != 1 or not isinstance(manifest.get("operations"), list):
        raise ValueError(f"{path}: only version 1 manifests, with an `operations` list, are read")
    documents: dict[str, str] = {}
    for operation in manifest["operations"]:
        body = operation.get("body") if isinstance(operation, dict) else None
        if not isinstance(body, str) or not body:
            raise ValueError(f"{path}: every operation needs a `body`")
        digest = sha256_hex(body)
        if operation.get("id", digest) != digest:
            raise ValueError(f"{path}: the id of {operation.get('name')!r} is not its SHA-256")
        documents[digest] = body
    return AllowList(documents)


def store_for(redis_url: str | None, max_bytes: int) -> Store:
    """Redis when PORTICO_REDIS_URL is set (several processes), else this process's memory."""
    if redis_url:
        return RedisStore(redis_url, max_bytes)
    return MemoryStore(max_bytes)
