"""the statement of the link's latest Insource Complete, as the bridge passed it on: reconciliation
sends it again to a lead that lacks it; and the statement the link ended with, as the lead named it,
for a completion sent again (SPEC section 12)

Revision ID: 0012
Revises: 0011
"""
import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("links", sa.Column("statement", postgresql.JSONB(), nullable=True))
    op.add_column("links", sa.Column("completion", postgresql.JSONB(), nullable=True))


def downgrade() -> None:
    op.drop_column("links", "completion")
    op.drop_column("links", "statement")
