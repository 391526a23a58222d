"""the lead's ticket number on the link, beside the insourcing one, for the operator's search by number;
both as text (the contract sets no length); the link list's order (newest first, a page at a time)

Revision ID: 0011
Revises: 0010
"""
import sqlalchemy as sa
from alembic import op

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("links", sa.Column("lead_ticket_number", sa.Text(), nullable=True))
    # Every link kept the work request it passed on, and the lead's number with it.
    op.execute("UPDATE links SET lead_ticket_number = request->>'lead_ticket_number' WHERE request IS NOT NULL")
    op.alter_column("links", "insourcing_ticket_number", type_=sa.Text(), existing_type=sa.String(32))
    op.create_index("ix_links_created", "links", ["created_at", "id"])


def downgrade() -> None:
    op.drop_index("ix_links_created", table_name="links")
    op.execute("UPDATE links SET insourcing_ticket_number = left(insourcing_ticket_number, 32)")
    op.alter_column("links", "insourcing_ticket_number", type_=sa.String(32), existing_type=sa.Text())
    op.drop_column("links", "lead_ticket_number")
