"""Alert notifications to a webhook: a JSON POST with Slack's ``text`` field."""

from __future__ import annotations

import logging
from collections.abc import Callable

from bqspool.schemas.errors import BackendUnavailableError, BqspoolError

from ..retry import RetryPolicy

log = logging.getLogger("bqspool.loader")


class Webhook:
    """POSTs ``{"text": ..., "status": ..., "alert": {...}}`` as JSON to ``url``."""

    def __init__(
        self,
        url: str,
        retry: RetryPolicy | None = None,
        timeout: float = 5.0,
        should_stop: Callable[[], bool] = lambda: False,
    ):
        self.url = url
        self.retry = retry or RetryPolicy(initial=0.5, maximum=5.0, deadline=20.0)
        self.timeout = timeout
        self.should_stop = should_stop  # checked between attempts: stopping cuts the retries short

    def send(self, note: dict) -> bool:
        """Deliver one notification (retried); False, logged, if it could not be."""
        import requests

        def attempt() -> None:
            try:
                answer = requests.post(self.url, json=note, timeout=self.timeout)
            except requests.RequestException as exc:
                raise BackendUnavailableError(f"webhook unreachable: {type(exc).__name__}") from None
            if answer.status_code >= 500 or answer.status_code == 429:
                raise BackendUnavailableError(f"webhook answered {answer.status_code}")
            if answer.status_code >= 400:
                raise BqspoolError(f"webhook refused the notification: {answer.status_code}")

        try:
            self.retry.call("send an alert to the webhook", attempt, should_stop=self.should_stop)
            return True
        except BqspoolError as exc:
            log.error("alert notification not delivered (%s); it is kept for the next cycle", exc)
            return False
