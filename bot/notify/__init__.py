"""Notifications of the daemon: trades, risk events, failed jobs, a daily summary."""

from bot.notify.sender import Notifier, NotifyError, load_urls

__all__ = ["Notifier", "NotifyError", "load_urls"]
