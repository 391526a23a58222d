"""received work and attachment mirror staging

Revision ID: 0002
Revises: 0001
"""
import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

from shared.platform.migrations import create_mirror_tables, create_notification_table

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    create_mirror_tables(op)
    create_notification_table(op)
    op.create_table(
        "received_work",
        sa.Column("link_id", sa.String(36), primary_key=True),
        sa.Column("lead_partner_id", sa.String(100), nullable=False),
        sa.Column("lead_partner_name", sa.String(255), nullable=False),
        sa.Column("lead_ticket_number", sa.String(32), nullable=False),
        sa.Column("title", sa.String(255), nullable=False),
        sa.Column("description", sa.Text, nullable=False),
        sa.Column("instructions", sa.Text, nullable=False),
        sa.Column("terms", postgresql.JSONB),
        sa.Column("status", sa.String(32), nullable=False),
        sa.Column("ticket_id", sa.String(36), sa.ForeignKey("tickets.id", ondelete="SET NULL")),
        sa.Column("reason", sa.Text),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False),
    )
    op.create_index("ix_received_work_ticket", "received_work", ["ticket_id"])
    op.create_index("ix_received_work_status", "received_work", ["status"])


def downgrade() -> None:
    op.drop_table("received_work")
    op.drop_table("notifications")
    op.drop_table("incoming_chunks")
    op.drop_table("incoming_attachments")
