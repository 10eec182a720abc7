"""POND packages per device (PondDeviceCarrierRatePlan) and Telegence line features (TelegenceDeviceMobilityFeature).

Revision ID: 0003_pond_telegence_tables
Revises: 0002_tenant_references
Create Date: 2026-11-30
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003_pond_telegence_tables"
down_revision = "0002_tenant_references"
branch_labels = None
depends_on = None

Id = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "PondDeviceCarrierRatePlan",
        sa.Column("Id", Id, primary_key=True, autoincrement=True),
        sa.Column("ICCID", sa.String(32), nullable=False),
        sa.Column("PackageId", sa.String(64), nullable=False),
        sa.Column("PackageTypeId", sa.String(64)),
        sa.Column("Status", sa.String(32), nullable=False),
        sa.Column("DataUsageRemainingInBytes", sa.BigInteger),
        sa.Column("ServiceProviderId", sa.Integer, nullable=False),
        sa.Column("ProcessedBy", sa.String(128)),
        sa.Column("CreatedDate", sa.DateTime, nullable=False),
        sa.Column("ModifiedDate", sa.DateTime),
    )
    op.create_index("IX_PondDeviceCarrierRatePlan_SP_ICCID", "PondDeviceCarrierRatePlan",
                    ["ServiceProviderId", "ICCID"])
    op.create_table(
        "TelegenceDeviceMobilityFeature",
        sa.Column("Id", Id, primary_key=True, autoincrement=True),
        sa.Column("DeviceId", sa.BigInteger),
        sa.Column("ICCID", sa.String(32)),
        sa.Column("SubscriberNumber", sa.String(32)),
        sa.Column("OfferingCode", sa.String(64), nullable=False),
        sa.Column("ServiceProviderId", sa.Integer, nullable=False),
        sa.Column("BulkChangeId", sa.BigInteger),
        sa.Column("CreatedDate", sa.DateTime, nullable=False),
    )
    op.create_index("IX_TelegenceDeviceMobilityFeature_Device", "TelegenceDeviceMobilityFeature", ["DeviceId"])


def downgrade() -> None:
    op.drop_table("TelegenceDeviceMobilityFeature")
    op.drop_table("PondDeviceCarrierRatePlan")
