"""Device.DeviceDescription (legacy column): a ThingSpace activation with the subscriber's first and
last name writes the primary place of use it sent (JSON) here and "First Last" in Username, as the
legacy did. A new nullable column: existing rows are untouched.

Revision ID: 0019_device_description
Revises: 0018_device_assignment_history
Create Date: 2026-11-30
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0019_device_description"
down_revision = "0018_device_assignment_history"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("Device", sa.Column("DeviceDescription", sa.UnicodeText))


def downgrade() -> None:
    op.drop_column("Device", "DeviceDescription")
