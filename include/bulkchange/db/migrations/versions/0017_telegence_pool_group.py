"""TelegenceDevice.CarrierRatePool / CarrierDataGroup: where a new Telegence line's carrier rate pool
and data group (named by its ActivateNewService request) are kept, as the legacy's new-activation
staging load did. Nullable: existing rows and the legacy sync need nothing.

Revision ID: 0017_telegence_pool_group
Revises: 0016_sp_default_site
Create Date: 2026-11-30
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0017_telegence_pool_group"
down_revision = "0016_sp_default_site"
branch_labels = None
depends_on = None

def upgrade() -> None:
    op.add_column("TelegenceDevice", sa.Column("CarrierRatePool", sa.String(128), nullable=True))
    op.add_column("TelegenceDevice", sa.Column("CarrierDataGroup", sa.String(128), nullable=True))


def downgrade() -> None:
    op.drop_column("TelegenceDevice", "CarrierDataGroup")
    op.drop_column("TelegenceDevice", "CarrierRatePool")
