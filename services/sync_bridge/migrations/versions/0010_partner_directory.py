"""the partner directory: partners onboarded at run time and the signing keys the bridge shares with each

Revision ID: 0010
Revises: 0009
"""
import sqlalchemy as sa
from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "partners",
        sa.Column("id", sa.String(64), primary_key=True),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("role", sa.String(16), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("kafka_username", sa.String(100), nullable=True),
        sa.Column("kafka_credential_encrypted", sa.LargeBinary(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False),
        sa.Column("changed_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False),
        sa.Column("removed_at", sa.DateTime(timezone=True), nullable=True),
    )
    op.create_table(
        "partner_keys",
        sa.Column("partner_id", sa.String(64), primary_key=True),
        sa.Column("key_id", sa.String(32), primary_key=True),
        sa.Column("secret_encrypted", sa.LargeBinary(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False),
        sa.Column("valid_until", sa.DateTime(timezone=True), nullable=True),
    )


    op.create_table(
        "directory_version",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("version", sa.BigInteger(), nullable=False),
    )
    # From the time in milliseconds, then +1 a change: a hub whose database was made again still
    # announces a version above what its leads kept of the old one.
    op.execute("INSERT INTO directory_version (id, version) VALUES (1, (extract(epoch from now()) * 1000)::bigint)")


def downgrade() -> None:
    op.drop_table("directory_version")
    op.drop_table("partner_keys")
    op.drop_table("partners")
