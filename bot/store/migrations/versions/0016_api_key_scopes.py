"""API keys scoped to client accounts: `api_keys.all_accounts` (true for every key made
before, which read every account) and `api_key_accounts`, the accounts a scoped key may
read (`bot api-keys create --account ID`).

Revision ID: 0016
Revises: 0015
Create Date: 2026-12-04
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0016"
down_revision = "0015"
branch_labels = None
depends_on = None

ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    with op.batch_alter_table("api_keys") as batch:
        batch.add_column(sa.Column("all_accounts", sa.Boolean(), server_default=sa.true(),
                                   nullable=False))
    op.create_table(
        "api_key_accounts",
        sa.Column("api_key_id", ID, nullable=False),
        sa.Column("account_id", ID, nullable=False),
        sa.ForeignKeyConstraint(["api_key_id"], ["api_keys.id"],
                                name=op.f("fk_api_key_accounts_api_key_id_api_keys")),
        sa.ForeignKeyConstraint(["account_id"], ["accounts.id"],
                                name=op.f("fk_api_key_accounts_account_id_accounts")),
        sa.PrimaryKeyConstraint("api_key_id", "account_id", name=op.f("pk_api_key_accounts")),
    )


def downgrade() -> None:
    op.drop_table("api_key_accounts")
    with op.batch_alter_table("api_keys") as batch:
        batch.drop_column("all_accounts")
