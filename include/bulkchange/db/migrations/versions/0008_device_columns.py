"""Device: RevCustomerId (customer assignment) and LastUsageDate (archival refuses recent usage).

Revision ID: 0008_device_columns
Revises: 0007_dry_run_reports
Create Date: 2026-11-30
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0008_device_columns"
down_revision = "0007_dry_run_reports"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("Device", sa.Column("RevCustomerId", sa.String(64)))
    op.add_column("Device", sa.Column("LastUsageDate", sa.DateTime))


def downgrade() -> None:
    op.drop_column("Device", "LastUsageDate")
    op.drop_column("Device", "RevCustomerId")
