"""the statement a link ended with (approved, or the lead's Complete at any time) and its invoice (SPEC section 12)

Revision ID: 0008
Revises: 0007
"""
import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("statements", sa.Column("settled", sa.String(16)))
    op.add_column("statements", sa.Column("settled_at", sa.DateTime(timezone=True)))
    op.add_column("statements", sa.Column("invoice_number", sa.String(64)))
    op.add_column("statements", sa.Column("invoiced_at", sa.DateTime(timezone=True)))
    # The reports: settled statements, newest first.
    op.create_index("ix_statements_settled", "statements", ["settled_at", "link_id"],
                    postgresql_where=sa.text("settled IS NOT NULL"))
    # A link ends with one statement: never two settled (the reports would count it twice).
    op.create_index("ux_statements_one_settled", "statements", ["link_id"], unique=True,
                    postgresql_where=sa.text("settled IS NOT NULL"))


def downgrade() -> None:
    op.drop_index("ux_statements_one_settled", "statements")
    op.drop_index("ix_statements_settled", "statements")
    for column in ("invoiced_at", "invoice_number", "settled_at", "settled"):
        op.drop_column("statements", column)
