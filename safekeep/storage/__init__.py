"""Blob storage: object stores, chunking, compression, encryption and tenant keys.

Knows nothing of tenants as database rows or of HTTP: callers pass a store, a tenant id and
key bytes.
"""

from safekeep.storage.blobstore import BlobInfo, BlobStore, BlobWriter, open_blobstore
from safekeep.storage.errors import (
    BlobLocked,
    BlobNotFound,
    BlobStoreError,
    BlobStoreUnavailable,
    IntegrityError,
    KeyUnwrapError,
    StorageError,
)
from safekeep.storage.keys import generate_data_key, unwrap_data_key, wrap_data_key
from safekeep.storage.repository import ChunkRef, ContentRef, PutStats, TenantRepository

__all__ = [
    "BlobInfo",
    "BlobLocked",
    "BlobNotFound",
    "BlobStore",
    "BlobStoreError",
    "BlobStoreUnavailable",
    "BlobWriter",
    "ChunkRef",
    "ContentRef",
    "IntegrityError",
    "KeyUnwrapError",
    "PutStats",
    "StorageError",
    "TenantRepository",
    "generate_data_key",
    "open_blobstore",
    "unwrap_data_key",
    "wrap_data_key",
]
