"""what the bridge keeps of each side's last answer to a reconciliation round (issue 28): a round
asks only for what changed after it

Revision ID: 0016
Revises: 0015
"""
import sqlalchemy as sa
from alembic import op

revision = "0016"
down_revision = "0015"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "kept_manifests",
        sa.Column("link_id", sa.String(36), primary_key=True),
        sa.Column("partner_id", sa.String(100), primary_key=True),
        sa.Column("as_of", sa.BigInteger, nullable=False),
    )
    op.create_table(
        "kept_manifest_entries",
        sa.Column("link_id", sa.String(36), primary_key=True),
        sa.Column("partner_id", sa.String(100), primary_key=True),
        sa.Column("entry_id", sa.String(36), primary_key=True),
        sa.Column("position", sa.BigInteger, sa.Identity(), nullable=False),
        sa.Column("mirror", sa.Boolean, nullable=False),
        sa.Column("version", sa.Integer, nullable=False),
        sa.Column("hash", sa.String(64), nullable=False),
        sa.Column("delivery", sa.String(10)),
    )


def downgrade() -> None:
    op.drop_table("kept_manifest_entries")
    op.drop_table("kept_manifests")
