"""Device change tables: CarrierRequestId (the asynchronous carrier request waited on) and CarrierCheckCount.

CarrierCheckCount is NOT NULL with a server default of 0, so the rows already there and the rows
the legacy portal inserts (it does not know the column) get 0.

Revision ID: 0005_carrier_requests
Revises: 0004_bulk_change_progress
Create Date: 2026-11-30
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005_carrier_requests"
down_revision = "0004_bulk_change_progress"
branch_labels = None
depends_on = None


TABLES = ("M2M_DeviceChange", "Mobility_DeviceChange")


def upgrade() -> None:
    for table in TABLES:
        op.add_column(table, sa.Column("CarrierRequestId", sa.String(128)))
        op.add_column(table, sa.Column("CarrierCheckCount", sa.Integer, nullable=False, server_default=sa.text("0")))


def downgrade() -> None:
    for table in TABLES:
        # SQL Server: drop the column's default constraint first (its name is looked up)
        op.drop_column(table, "CarrierCheckCount", mssql_drop_default=True)
        op.drop_column(table, "CarrierRequestId")
