"""a change point on every ticket item and a removal record for each deleted one (issue 28): a
reconciliation answer describes only what changed after the point the bridge last kept

Revision ID: 0012
Revises: 0011
"""
from alembic import op

from shared.platform.migrations import add_change_points, drop_change_points

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None


def upgrade() -> None:
    add_change_points(op)


def downgrade() -> None:
    drop_change_points(op)
