"""dead letters keep a record's key and headers as bytes, and are known by the record's fingerprint

Revision ID: 0009
Revises: 0008
"""
from alembic import op

from shared.platform.migrations import keep_records_as_bytes, keep_records_as_text

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    keep_records_as_bytes(op)


def downgrade() -> None:
    keep_records_as_text(op)
