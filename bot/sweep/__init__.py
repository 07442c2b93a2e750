"""Parameter sweeps and walk-forward (`bot sweep`): every combination of a grid of config
values run through the one backtest engine, in parallel on local processes or a Dask
cluster, ranked, and optionally picked window by window out of sample.

Kept light: `bot --help` imports the command registration only (bot.sweep.cli).
"""
