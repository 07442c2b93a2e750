"""Fake notification endpoints on 127.0.0.1: Discord and Slack webhooks, the Telegram
Bot API's sendMessage, and a plain JSON endpoint (apprise's json://), each answering as
the real service does on success. Pair with `point_apprise_at` to aim apprise's
service classes (whose hosts are fixed) at this server.

    fake.inject("POST", "/api/webhooks/{webhook_id}/{token}", Fault.error(500))
"""

from __future__ import annotations

from tests.fakes import FakeServer, Fault, Request, Response

__all__ = ["FakeWebhooks", "Fault", "point_apprise_at"]


class FakeWebhooks(FakeServer):
    def __init__(self) -> None:
        super().__init__()
        self.route("POST", "/api/webhooks/{webhook_id}/{token}", lambda r, **_: Response(204))
        self.route("POST", "/services/{a}/{b}/{c}", self._slack)
        self.route("POST", "/bot{token}/sendMessage", self._telegram)
        self.route("POST", "/notify", lambda r: Response(200, {"ok": True}))

    @staticmethod
    def _slack(request: Request, **_: str) -> Response:
        return Response(200, "ok", content_type="text/plain")

    @staticmethod
    def _telegram(request: Request, token: str) -> Response:
        return Response(200, {"ok": True, "result": {"message_id": 1, "chat": {"id": 1}}})

    def texts(self, method: str, route: str) -> list[str]:
        """The message text of every request on a route, whatever the service calls it."""
        out = []
        for request in self.calls(method, route):
            body = request.body if isinstance(request.body, dict) else {}
            embeds = body.get("embeds") or [{}]
            out.append(" ".join(str(v) for v in (
                body.get("content"), body.get("text"), body.get("message"), body.get("title"),
                embeds[0].get("title"), embeds[0].get("description"),
                *(a.get("text") for a in body.get("attachments") or []),
                *(a.get("title") for a in body.get("attachments") or []),
            ) if v))
        return out


def point_apprise_at(monkeypatch, base_url: str) -> None:
    """apprise's Discord, Slack and Telegram classes post to fixed hosts: aim them here."""
    from apprise.plugins.discord import NotifyDiscord
    from apprise.plugins.slack import NotifySlack
    from apprise.plugins.telegram import NotifyTelegram

    monkeypatch.setattr(NotifyDiscord, "notify_url", f"{base_url}/api/webhooks")
    monkeypatch.setattr(NotifySlack, "webhook_url", f"{base_url}/services")
    monkeypatch.setattr(NotifyTelegram, "notify_url", f"{base_url}/bot")
