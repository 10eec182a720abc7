"""Indexes the Bulk changes page reads through (bulkchange.db.views): every query it makes is paged.

On a large production table, SQL Server Enterprise can build them with ONLINE = ON
(docs/database.md); the script builds them offline (a schema lock for the duration).

Revision ID: 0011_bulk_changes_page_indexes
Revises: 0010_rate_plan_queue
Create Date: 2026-11-30
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0011_bulk_changes_page_indexes"
down_revision = "0010_rate_plan_queue"
branch_labels = None
depends_on = None


INDEXES = [
    ("IX_DeviceBulkChange_ServiceProvider", "DeviceBulkChange", ["ServiceProviderId", "Id"]),
    ("IX_DeviceBulkChange_CreatedDate", "DeviceBulkChange", ["CreatedDate"]),
    ("IX_M2M_DeviceChange_BulkChange_Status_Id", "M2M_DeviceChange", ["BulkChangeId", "Status", "Id"]),
    ("IX_M2M_DeviceChange_BulkChange_Id", "M2M_DeviceChange", ["BulkChangeId", "Id"]),
    ("IX_Mobility_DeviceChange_BulkChange_Status_Id", "Mobility_DeviceChange", ["BulkChangeId", "Status", "Id"]),
    ("IX_Mobility_DeviceChange_BulkChange_Id", "Mobility_DeviceChange", ["BulkChangeId", "Id"]),
    ("IX_DeviceBulkChangeLog_M2MDeviceChange", "DeviceBulkChangeLog", ["M2MDeviceChangeId"]),
    ("IX_DeviceBulkChangeLog_MobilityDeviceChange", "DeviceBulkChangeLog", ["MobilityDeviceChangeId"]),
]


def upgrade() -> None:
    for name, table, columns in INDEXES:
        op.create_index(name, table, columns)


def downgrade() -> None:
    for name, table, _columns in reversed(INDEXES):
        op.drop_index(name, table_name=table)
