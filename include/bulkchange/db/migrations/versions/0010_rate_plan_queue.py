"""Device_CustomerRatePlanOrRatePool_Queue: ServiceProviderId, BulkChangeId, DeviceChangeId, AppliedDate.

Revision ID: 0010_rate_plan_queue
Revises: 0009_revio_links
Create Date: 2026-11-30
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0010_rate_plan_queue"
down_revision = "0009_revio_links"
branch_labels = None
depends_on = None


TABLE = "Device_CustomerRatePlanOrRatePool_Queue"


def upgrade() -> None:
    op.add_column(TABLE, sa.Column("ServiceProviderId", sa.Integer))
    op.add_column(TABLE, sa.Column("BulkChangeId", sa.BigInteger))
    op.add_column(TABLE, sa.Column("DeviceChangeId", sa.BigInteger))
    op.add_column(TABLE, sa.Column("AppliedDate", sa.DateTime))


def downgrade() -> None:
    for name in ("AppliedDate", "DeviceChangeId", "BulkChangeId", "ServiceProviderId"):
        op.drop_column(TABLE, name)
