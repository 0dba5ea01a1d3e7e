from __future__ import annotations

from datetime import date, datetime

from pydantic import Field

from safekeep.api.schemas import Schema
from safekeep.billing.events import StripeEventReceipt
from safekeep.tenants.models import MspStatus


class UsageReportOut(Schema):
    day: date = Field(description="The UTC day the seats were counted for")
    protected_seats: int = Field(description="Active, protected accounts")
    retained_seats: int = Field(description="Cancelled accounts whose backed-up data is kept")
    stored_bytes: int
    reported_at: datetime | None = Field(
        description="When Stripe took the day's usage; null while it is still to be sent"
    )


class BillingOut(Schema):
    status: MspStatus = Field(
        description="`past_due`: a payment failed, backups still run. `suspended`: backups "
        "and changes are paused (402), data stays and can still be read."
    )
    status_changed_at: datetime | None
    billing_enabled: bool = Field(description="Whether this deployment bills through Stripe")
    stripe_customer_id: str | None
    billing_email: str | None
    usage_reports: list[UsageReportOut] = Field(description="The last 30 days, newest first")


class StripeWebhookAck(Schema):
    received: bool = True
    event_id: str
    result: StripeEventReceipt = Field(
        description="`queued`: stored and handled shortly; `duplicate`: delivered before, "
        "nothing done; `ignored`: an event type Safekeep does not act on"
    )
