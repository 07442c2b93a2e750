"""Broker adapters: the simulated venue used by backtests and replay, Alpaca for live."""
