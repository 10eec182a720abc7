"""ThingSpace callbacks: ThingSpaceCallBackResponseLog and the lookup of a request's device changes.

``ThingSpaceCallBackResponseLog`` keeps the legacy columns (``RequestId``, ``TenantId``,
``ServiceProviderId``, ``APIStatus``, ``APIResponse``, ``CreatedDate``) plus ``ICCID`` (added: the
device a callback reports on). ``IX_M2M_DeviceChange_SP_CarrierRequestId`` lets a callback find the
device changes waiting on its request. A production database that already has the legacy table:
compare its columns (``./run db current``) and leave the ``CREATE TABLE`` out of the reviewed
script (docs/database.md).

Revision ID: 0014_thingspace_callbacks
Revises: 0013_mobility_inventory
Create Date: 2026-11-30
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0014_thingspace_callbacks"
down_revision = "0013_mobility_inventory"
branch_labels = None
depends_on = None

Id = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "ThingSpaceCallBackResponseLog",
        sa.Column("Id", Id, primary_key=True, autoincrement=True),
        sa.Column("RequestId", sa.String(128), nullable=False),
        sa.Column("TenantId", sa.Integer),
        sa.Column("ServiceProviderId", sa.Integer, nullable=False),
        sa.Column("APIStatus", sa.String(32)),
        sa.Column("APIResponse", sa.UnicodeText),
        sa.Column("CreatedDate", sa.DateTime, nullable=False),
        sa.Column("ICCID", sa.String(32)),
    )
    op.create_index("IX_ThingSpaceCallBackResponseLog_SP_RequestId", "ThingSpaceCallBackResponseLog",
                    ["ServiceProviderId", "RequestId"])
    op.create_index("IX_M2M_DeviceChange_SP_CarrierRequestId", "M2M_DeviceChange",
                    ["ServiceProviderId", "CarrierRequestId"])


def downgrade() -> None:
    op.drop_index("IX_M2M_DeviceChange_SP_CarrierRequestId", table_name="M2M_DeviceChange")
    op.drop_table("ThingSpaceCallBackResponseLog")
