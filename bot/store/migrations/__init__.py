"""Alembic migrations of the trade-log schema, shipped inside the package.

They run from `bot.store.schema` with a Config built in code, so no alembic.ini is
needed and an installed wheel carries only .py files. To add a revision from a
checkout: change bot/store/models.py, then run `bot db revision -m "what changed"`,
which autogenerates a file in versions/ against a scratch database at head; review it
(keep types explicit per dialect, as the initial revision does) before committing.
"""
