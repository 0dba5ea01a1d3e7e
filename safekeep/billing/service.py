"""An MSP's billing: its Stripe customer and what the API shows of its billing state."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy.ext.asyncio import AsyncSession

from safekeep.billing import repository
from safekeep.billing.stripe_client import BillingClient
from safekeep.tenants.audit import service as audit
from safekeep.tenants.models import MspStatus, UsageReport
from safekeep.tenants.msp import repository as msp_repository

RECENT_REPORTS = 30


@dataclass(frozen=True)
class BillingOverview:
    status: MspStatus
    status_changed_at: datetime | None
    stripe_customer_id: str | None
    billing_email: str | None
    usage_reports: list[UsageReport]


async def ensure_customer(session: AsyncSession, client: BillingClient, msp_id: uuid.UUID) -> str:
    """The MSP's Stripe customer id, creating the customer the first time.

    The MSP row is locked while Stripe is asked, so two callers cannot both create one; and
    the request carries an idempotency key derived from the MSP, so a crash between Stripe's
    answer and our commit is repaired by the next call (within Stripe's 24 hours) instead of
    leaving a second customer behind."""
    msp = await repository.get_msp_for_update(session, msp_id)
    if msp is None:
        raise LookupError(f"no MSP {msp_id}")
    if msp.stripe_customer_id:
        return msp.stripe_customer_id
    customer_id = await client.create_customer(
        msp_id=msp.id, name=msp.name, email=msp.billing_email
    )
    msp.stripe_customer_id = customer_id
    await audit.record_on_msp(
        session,
        msp,
        "msp.stripe_customer_created",
        actor="system",
        details={"stripe_customer_id": customer_id},
    )
    return customer_id


async def overview(session: AsyncSession, msp_id: uuid.UUID) -> BillingOverview:
    msp = await msp_repository.get(session, msp_id)
    if msp is None:
        raise LookupError(f"no MSP {msp_id}")
    reports = await repository.recent_usage_reports(session, msp_id, limit=RECENT_REPORTS)
    return BillingOverview(
        status=msp.status,
        status_changed_at=msp.status_changed_at,
        stripe_customer_id=msp.stripe_customer_id,
        billing_email=msp.billing_email,
        usage_reports=reports,
    )
