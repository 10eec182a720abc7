"""Notification outbox DeviceBulkChangeNotification (docs/notifications.md).

Revision ID: 0006_notification_outbox
Revises: 0005_carrier_requests
Create Date: 2026-11-30
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006_notification_outbox"
down_revision = "0005_carrier_requests"
branch_labels = None
depends_on = None

Id = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "DeviceBulkChangeNotification",
        sa.Column("Id", Id, primary_key=True, autoincrement=True),
        sa.Column("BulkChangeId", sa.BigInteger, nullable=False),
        sa.Column("Channel", sa.String(16), nullable=False),
        sa.Column("FromStatus", sa.String(32)),
        sa.Column("ToStatus", sa.String(32), nullable=False),
        sa.Column("State", sa.String(16), nullable=False),
        sa.Column("Attempts", sa.Integer, nullable=False),
        sa.Column("LastError", sa.UnicodeText),
        sa.Column("CreatedDate", sa.DateTime, nullable=False),
        sa.Column("ClaimedDate", sa.DateTime),
        sa.Column("SentDate", sa.DateTime),
    )
    op.create_index("IX_DeviceBulkChangeNotification_State", "DeviceBulkChangeNotification",
                    ["State", "BulkChangeId"])


def downgrade() -> None:
    op.drop_table("DeviceBulkChangeNotification")
