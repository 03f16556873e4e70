"""What `bqspool doctor` asks of Google (or the local stack), as plain facts.

Each answer is a dict or a list; "cannot say" is None (an emulator without
IAM or soft delete), never an exception that stops the other checks.
"""

from __future__ import annotations

import logging
import os
from typing import Any

from google.api_core import exceptions as gexc

from ..config import Config

log = logging.getLogger("bqspool.loader")


class GoogleProbe:
    """The facts of one configuration's bucket, dataset and credentials."""

    def __init__(self, config: Config, store: Any | None, warehouse: Any | None):
        self.config, self.store, self.warehouse = config, store, warehouse

    def local_stack(self) -> dict[str, str]:
        """The emulator endpoints in force, if any."""
        return {k: v for k in ("STORAGE_EMULATOR_HOST", "BIGQUERY_EMULATOR_HOST") if (v := os.environ.get(k))}

    def identity(self) -> str:
        """Who the clients act as: a service account's email, a user, or anonymous (the local stack)."""
        if self.local_stack():
            return "anonymous (the local stack takes no credentials)"
        import google.auth

        credentials, project = google.auth.default()
        email = getattr(credentials, "service_account_email", None) or getattr(credentials, "signer_email", None)
        return f"{email or type(credentials).__name__} (project {project or 'not set'})"

    def bucket(self) -> dict | None:
        """{"location", "soft_delete_s"} of the bucket, or None when it does not exist."""
        assert self.store is not None
        found = self.store.client.lookup_bucket(self.store.bucket_name, timeout=30)
        if found is None:
            return None
        policy = getattr(found, "soft_delete_policy", None)
        seconds = getattr(policy, "retention_duration_seconds", None) if policy is not None else None
        return {"location": (found.location or "").upper() or None, "soft_delete_s": seconds}

    def bucket_grants(self, permissions: tuple[str, ...]) -> list[str] | None:
        """Which of ``permissions`` this identity holds on the bucket; None if the endpoint cannot say."""
        assert self.store is not None
        try:
            return list(self.store.bucket.test_iam_permissions(list(permissions), timeout=30))
        except (gexc.GoogleAPICallError, ValueError) as exc:
            log.debug("testIamPermissions on the bucket: %s", exc)
            return None

    def dataset(self) -> dict | None:
        """{"location"} of the dataset, or None when it does not exist."""
        assert self.warehouse is not None
        try:
            found = self.warehouse.client.get_dataset(f"{self.warehouse.project}.{self.warehouse.dataset}", timeout=30)
        except gexc.NotFound:
            return None
        return {"location": (found.location or "").upper() or None}
