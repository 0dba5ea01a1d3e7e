"""Every table, one module each, under one metadata (``Base.metadata``)."""

from safekeep.tenants.models.account import Account, AccountKind, AccountState
from safekeep.tenants.models.api_key import ApiKey
from safekeep.tenants.models.audit_event import AuditEvent
from safekeep.tenants.models.base import Base, utcnow
from safekeep.tenants.models.billing import StripeEvent, UsageReport
from safekeep.tenants.models.consent_request import ConsentRequest
from safekeep.tenants.models.delta_state import DeltaState
from safekeep.tenants.models.detection import (
    Detection,
    DetectionBaseline,
    DetectionKind,
    DetectionStatus,
    DetectionThreshold,
)
from safekeep.tenants.models.enumeration_seen import EnumerationSeen
from safekeep.tenants.models.export import Export, ExportStatus
from safekeep.tenants.models.graph_subscription import GraphSubscription, SubscriptionStatus
from safekeep.tenants.models.idempotency import IdempotencyRecord
from safekeep.tenants.models.item import Item
from safekeep.tenants.models.item_version import ItemVersion
from safekeep.tenants.models.job import FINISHED_JOB_STATUSES, Job, JobKind, JobStatus, JobTrigger
from safekeep.tenants.models.job_issue import JobIssue
from safekeep.tenants.models.job_task import JobTask, TaskStatus
from safekeep.tenants.models.msp import Msp, MspStatus
from safekeep.tenants.models.policy import Policy
from safekeep.tenants.models.skipped_item import SkippedItem
from safekeep.tenants.models.snapshot import UNFINISHED_SNAPSHOT, Snapshot, SnapshotStatus
from safekeep.tenants.models.tenant import ConsentState, Tenant, TenantStatus
from safekeep.tenants.models.webhook import DeliveryStatus, WebhookDelivery, WebhookEndpoint

__all__ = [
    "FINISHED_JOB_STATUSES",
    "UNFINISHED_SNAPSHOT",
    "Account",
    "AccountKind",
    "AccountState",
    "ApiKey",
    "AuditEvent",
    "Base",
    "ConsentRequest",
    "ConsentState",
    "DeliveryStatus",
    "DeltaState",
    "Detection",
    "DetectionBaseline",
    "DetectionKind",
    "DetectionStatus",
    "DetectionThreshold",
    "EnumerationSeen",
    "Export",
    "ExportStatus",
    "GraphSubscription",
    "IdempotencyRecord",
    "Item",
    "ItemVersion",
    "Job",
    "JobIssue",
    "JobKind",
    "JobStatus",
    "JobTask",
    "JobTrigger",
    "Msp",
    "MspStatus",
    "Policy",
    "SkippedItem",
    "Snapshot",
    "SnapshotStatus",
    "StripeEvent",
    "SubscriptionStatus",
    "TaskStatus",
    "Tenant",
    "TenantStatus",
    "UsageReport",
    "WebhookDelivery",
    "WebhookEndpoint",
    "utcnow",
]
