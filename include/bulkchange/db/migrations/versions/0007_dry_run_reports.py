"""Dry-run reports DeviceBulkChangeDryRun (docs/operations.md#dry-run).

Revision ID: 0007_dry_run_reports
Revises: 0006_notification_outbox
Create Date: 2026-11-30
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0007_dry_run_reports"
down_revision = "0006_notification_outbox"
branch_labels = None
depends_on = None

Id = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "DeviceBulkChangeDryRun",
        sa.Column("Id", Id, primary_key=True, autoincrement=True),
        sa.Column("BulkChangeId", sa.BigInteger),
        sa.Column("ServiceProviderId", sa.Integer),
        sa.Column("ChangeRequestTypeId", sa.Integer),
        sa.Column("RequestedBy", sa.String(128)),
        sa.Column("Report", sa.UnicodeText, nullable=False),
        sa.Column("CreatedDate", sa.DateTime, nullable=False),
    )
    op.create_index("IX_DeviceBulkChangeDryRun_BulkChange", "DeviceBulkChangeDryRun", ["BulkChangeId"])


def downgrade() -> None:
    op.drop_table("DeviceBulkChangeDryRun")
