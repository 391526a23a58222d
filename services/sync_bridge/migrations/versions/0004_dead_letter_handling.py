"""dead letters keep their headers and who replayed or discarded them

Revision ID: 0004
Revises: 0003
"""
from alembic import op

from shared.platform.migrations import add_dead_letter_handling, drop_dead_letter_handling

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    add_dead_letter_handling(op)


def downgrade() -> None:
    drop_dead_letter_handling(op)
