"""item id mapping

Revision ID: 0002
Revises: 0001
"""
import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "item_mirrors",
        sa.Column("link_id", sa.String(36), primary_key=True),
        sa.Column("source_item_id", sa.String(36), primary_key=True),
        sa.Column("source_partner_id", sa.String(100), nullable=False),
        sa.Column("mirror_id", sa.String(36), nullable=False),
        sa.Column("kind", sa.String(20), nullable=False),
        sa.Column("deleted", sa.Boolean, nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False),
    )
    op.create_index("ix_links_state", "links", ["state"])


def downgrade() -> None:
    op.drop_index("ix_links_state", "links")
    op.drop_table("item_mirrors")
