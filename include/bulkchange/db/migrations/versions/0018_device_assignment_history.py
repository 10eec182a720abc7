"""DeviceAssignmentHistory: one row per device a customer assignment changed (the customer, customer
rate plan / pool and from when), the port of the legacy end-of-assignment step
``usp_DeviceBulkChange_UpdateDeviceHistory``. A new table of ours: nothing existing changes.

Revision ID: 0018_device_assignment_history
Revises: 0017_telegence_pool_group
Create Date: 2026-11-30
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0018_device_assignment_history"
down_revision = "0017_telegence_pool_group"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "DeviceAssignmentHistory",
        sa.Column("Id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), primary_key=True, autoincrement=True),
        sa.Column("BulkChangeId", sa.BigInteger(), nullable=False),
        sa.Column("DeviceChangeId", sa.BigInteger(), nullable=False),
        sa.Column("PortalTypeId", sa.Integer(), nullable=False),
        sa.Column("DeviceId", sa.BigInteger()),
        sa.Column("ICCID", sa.String(32)),
        sa.Column("ServiceProviderId", sa.Integer(), nullable=False),
        sa.Column("TenantId", sa.Integer(), nullable=False),
        sa.Column("SiteId", sa.Integer()),
        sa.Column("RevCustomerId", sa.String(64)),
        sa.Column("CustomerRatePlanId", sa.Integer()),
        sa.Column("CustomerPoolId", sa.Integer()),
        sa.Column("EffectiveDate", sa.DateTime(), nullable=False),
        sa.Column("ChangedBy", sa.String(128)),
        sa.Column("CreatedDate", sa.DateTime(), nullable=False),
    )
    op.create_index("IX_DeviceAssignmentHistory_Device", "DeviceAssignmentHistory", ["PortalTypeId", "DeviceId"])
    op.create_index("IX_DeviceAssignmentHistory_BulkChange", "DeviceAssignmentHistory", ["BulkChangeId"])


def downgrade() -> None:
    op.drop_index("IX_DeviceAssignmentHistory_BulkChange", table_name="DeviceAssignmentHistory")
    op.drop_index("IX_DeviceAssignmentHistory_Device", table_name="DeviceAssignmentHistory")
    op.drop_table("DeviceAssignmentHistory")
