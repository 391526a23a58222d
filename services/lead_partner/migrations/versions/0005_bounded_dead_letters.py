"""dead letters keep at most a prefix of an oversized message, with its size and SHA-256

Revision ID: 0005
Revises: 0004
"""
from alembic import op

from shared.platform.migrations import bound_dead_letters, unbound_dead_letters

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    bound_dead_letters(op)


def downgrade() -> None:
    unbound_dead_letters(op)
