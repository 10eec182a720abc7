"""The service provider's default site.

``ServiceProvider.DefaultSiteId``: the site (AMOP customer) a ThingSpace "pending activation" or
"inventory" bulk change, or an activation without IsIgnoreCurrentStatus, gives the devices it
processed when they have none (legacy ``usp_Device_Bulk_Change_Set_Default_Site``). Nullable: no
default site, nothing assigned.

Revision ID: 0016_sp_default_site
Revises: 0015_rate_plan_history
Create Date: 2026-11-30
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0016_sp_default_site"
down_revision = "0015_rate_plan_history"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("ServiceProvider", sa.Column("DefaultSiteId", sa.Integer(), nullable=True))


def downgrade() -> None:
    op.drop_column("ServiceProvider", "DefaultSiteId")
