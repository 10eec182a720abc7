"""What the pipeline adds to the Mobility inventory.

The legacy Mobility tables themselves (``MobilityDevice``, ``TelegenceDevice``) are in the baseline:
production has them, so the DBA's stamp covers them and no rollback ever drops them. This revision
adds only what is ours: the lookup indexes of Mobility changes (by number or SIM within the service
provider), ``MobilityDevice.RevCustomerId`` / ``LastUsageDate`` (as ``Device`` got in 0008), and
``DeviceStatusHistory.MobilityDeviceId`` / ``MSISDN`` (a Mobility line's history row names its
``MobilityDevice`` and its number). All nullable: existing rows and the portal need nothing.

Revision ID: 0013_mobility_inventory
Revises: 0012_attempts_and_leases
Create Date: 2026-12-01
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0013_mobility_inventory"
down_revision = "0012_attempts_and_leases"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("MobilityDevice", sa.Column("RevCustomerId", sa.String(64), nullable=True))
    op.add_column("MobilityDevice", sa.Column("LastUsageDate", sa.DateTime(), nullable=True))
    op.create_index("IX_MobilityDevice_SP_MSISDN", "MobilityDevice", ["ServiceProviderId", "MSISDN"])
    op.create_index("IX_MobilityDevice_SP_ICCID", "MobilityDevice", ["ServiceProviderId", "ICCID"])
    op.create_index("IX_TelegenceDevice_SP_SubscriberNumber", "TelegenceDevice",
                    ["ServiceProviderId", "SubscriberNumber"])
    op.add_column("DeviceStatusHistory", sa.Column("MobilityDeviceId", sa.BigInteger(), nullable=True))
    op.add_column("DeviceStatusHistory", sa.Column("MSISDN", sa.String(32), nullable=True))


def downgrade() -> None:
    op.drop_column("DeviceStatusHistory", "MSISDN")
    op.drop_column("DeviceStatusHistory", "MobilityDeviceId")
    op.drop_index("IX_TelegenceDevice_SP_SubscriberNumber", table_name="TelegenceDevice")
    op.drop_index("IX_MobilityDevice_SP_ICCID", table_name="MobilityDevice")
    op.drop_index("IX_MobilityDevice_SP_MSISDN", table_name="MobilityDevice")
    op.drop_column("MobilityDevice", "LastUsageDate")
    op.drop_column("MobilityDevice", "RevCustomerId")
