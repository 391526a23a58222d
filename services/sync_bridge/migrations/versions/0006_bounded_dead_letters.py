"""dead letters keep at most a prefix of an oversized message, with its size and SHA-256

Revision ID: 0006
Revises: 0005
"""
from alembic import op

from shared.platform.migrations import bound_dead_letters, unbound_dead_letters

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    bound_dead_letters(op)


def downgrade() -> None:
    unbound_dead_letters(op)
