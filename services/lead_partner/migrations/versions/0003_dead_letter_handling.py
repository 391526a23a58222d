"""dead letters keep their headers and who replayed or discarded them

Revision ID: 0003
Revises: 0002
"""
from alembic import op

from shared.platform.migrations import add_dead_letter_handling, drop_dead_letter_handling

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    add_dead_letter_handling(op)


def downgrade() -> None:
    drop_dead_letter_handling(op)
