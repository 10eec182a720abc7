"""DeviceRatePlanHistory: carrier rate plan drift that reconciliation found and recorded.

Reconciliation compares each device's carrier rate plan with ``CarrierRatePlan`` as it compares
statuses; a difference updates the inventory and leaves one row here (as ``DeviceStatusHistory``
holds status drift), so it is recorded once. A new table of ours: nothing existing changes.

Revision ID: 0015_rate_plan_history
Revises: 0014_thingspace_callbacks
Create Date: 2026-11-30
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0015_rate_plan_history"
down_revision = "0014_thingspace_callbacks"
branch_labels = None
depends_on = None

Id = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "DeviceRatePlanHistory",
        sa.Column("Id", Id, primary_key=True, autoincrement=True),
        sa.Column("DeviceId", sa.BigInteger),
        sa.Column("MobilityDeviceId", sa.BigInteger),
        sa.Column("ICCID", sa.String(32)),
        sa.Column("MSISDN", sa.String(32)),
        sa.Column("PreviousRatePlan", sa.String(128)),
        sa.Column("CurrentRatePlan", sa.String(128)),
        sa.Column("ChangedBy", sa.String(128)),
        sa.Column("Source", sa.String(64)),
        sa.Column("ChangedDate", sa.DateTime, nullable=False),
    )
    op.create_index("IX_DeviceRatePlanHistory_Device", "DeviceRatePlanHistory", ["DeviceId"])


def downgrade() -> None:
    op.drop_table("DeviceRatePlanHistory")
