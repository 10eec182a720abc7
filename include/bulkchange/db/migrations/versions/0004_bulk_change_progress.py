"""DeviceBulkChange: ModifiedDate (last status change) and the progress counts a portal draws its bar from.

All nullable: existing rows and the legacy portal's inserts need nothing.

Revision ID: 0004_bulk_change_progress
Revises: 0003_pond_telegence_tables
Create Date: 2026-11-30
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004_bulk_change_progress"
down_revision = "0003_pond_telegence_tables"
branch_labels = None
depends_on = None


COLUMNS = ("ModifiedDate", "TotalCount", "ProcessedCount", "ErrorCount", "PendingCount")


def upgrade() -> None:
    op.add_column("DeviceBulkChange", sa.Column("ModifiedDate", sa.DateTime))
    for name in COLUMNS[1:]:
        op.add_column("DeviceBulkChange", sa.Column(name, sa.Integer))


def downgrade() -> None:
    for name in reversed(COLUMNS):
        op.drop_column("DeviceBulkChange", name)
