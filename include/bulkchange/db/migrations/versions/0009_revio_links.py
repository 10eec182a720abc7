"""Rev_Service / Rev_ServiceProduct: BulkChangeId and DeviceChangeId, the change that created the row.

Revision ID: 0009_revio_links
Revises: 0008_device_columns
Create Date: 2026-11-30
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0009_revio_links"
down_revision = "0008_device_columns"
branch_labels = None
depends_on = None


TABLES = ("Rev_Service", "Rev_ServiceProduct")


def upgrade() -> None:
    for table in TABLES:
        op.add_column(table, sa.Column("BulkChangeId", sa.BigInteger))
        op.add_column(table, sa.Column("DeviceChangeId", sa.BigInteger))


def downgrade() -> None:
    for table in TABLES:
        op.drop_column(table, "DeviceChangeId")
        op.drop_column(table, "BulkChangeId")
