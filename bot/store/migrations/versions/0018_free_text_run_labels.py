"""`runs.strategy`, `runs.data_source`, `sweeps.strategy` and `sweeps.data_source` as
TEXT on PostgreSQL. A CSV market's source is `csv:<its directory>`, which can be a long
path: as VARCHAR(200), PostgreSQL refused to start the run. SQLite enforces no length and
keeps its VARCHAR columns: changing their type would rebuild `runs`, which every record
references (the rebuild fails its foreign keys).

Revision ID: 0018
Revises: 0017
Create Date: 2026-12-04
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0018"
down_revision = "0017"
branch_labels = None
depends_on = None

COLUMNS = (
    ("runs", "strategy", 100), ("runs", "data_source", 200),
    ("sweeps", "strategy", 100), ("sweeps", "data_source", 200),
)


def upgrade() -> None:
    if op.get_bind().dialect.name == "sqlite":
        return
    for table, column, length in COLUMNS:
        with op.batch_alter_table(table) as batch:
            batch.alter_column(column, existing_type=sa.String(length=length), type_=sa.Text(),
                               existing_nullable=False)


def downgrade() -> None:
    if op.get_bind().dialect.name == "sqlite":
        return
    for table, column, length in COLUMNS:
        with op.batch_alter_table(table) as batch:
            batch.alter_column(column, existing_type=sa.Text(), type_=sa.String(length=length),
                               existing_nullable=False)
