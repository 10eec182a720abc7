"""Per-attempt carrier call log columns and the processing lease.

`DeviceBulkChangeLog.AttemptNumber` / `DurationMs` / `Outcome` (applied, refused, unknown): one row
per attempt of a carrier call. `DeviceBulkChange.LeaseOwner` / `LeaseExpiresDate`: the run that
owns the bulk change while it processes. All nullable: existing rows and the portal need nothing.

Revision ID: 0012_attempts_and_leases
Revises: 0011_bulk_changes_page_indexes
Create Date: 2026-11-30 11:27:20.443244

"""
from typing import Sequence, Union

from alembic import op
import sqlalchemy as sa


# revision identifiers, used by Alembic.
revision: str = '0012_attempts_and_leases'
down_revision: Union[str, Sequence[str], None] = '0011_bulk_changes_page_indexes'
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None


def upgrade() -> None:
    """Upgrade schema."""
    op.add_column('DeviceBulkChange', sa.Column('LeaseOwner', sa.String(length=300), nullable=True))
    op.add_column('DeviceBulkChange', sa.Column('LeaseExpiresDate', sa.DateTime(), nullable=True))
    op.add_column('DeviceBulkChangeLog', sa.Column('AttemptNumber', sa.Integer(), nullable=True))
    op.add_column('DeviceBulkChangeLog', sa.Column('DurationMs', sa.Integer(), nullable=True))
    op.add_column('DeviceBulkChangeLog', sa.Column('Outcome', sa.String(length=16), nullable=True))


def downgrade() -> None:
    """Downgrade schema."""
    op.drop_column('DeviceBulkChangeLog', 'Outcome')
    op.drop_column('DeviceBulkChangeLog', 'DurationMs')
    op.drop_column('DeviceBulkChangeLog', 'AttemptNumber')
    op.drop_column('DeviceBulkChange', 'LeaseExpiresDate')
    op.drop_column('DeviceBulkChange', 'LeaseOwner')
