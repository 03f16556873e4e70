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

    def dataset_grants(self, permissions: tuple[str, ...], table: str) -> list[str] | None:
        """Which of ``permissions`` this identity holds on ``table`` (the dataset's grants
        reach its tables); None if the endpoint cannot say or the table does not exist yet."""
        assert self.warehouse is not None
        try:
            found = self.warehouse.client.test_iam_permissions(self.warehouse.table_ref(table), list(permissions))
        except (gexc.GoogleAPICallError, ValueError) as exc:
            log.debug("testIamPermissions on %s: %s", table, exc)
            return None
        return list(found.get("permissions", []))

    def project_grants(self, permissions: tuple[str, ...], project: str) -> list[str] | None:
        """Which of ``permissions`` this identity holds on ``project`` (Resource Manager's
        testIamPermissions); None on the local stack, or when it does not answer 200."""
        if self.local_stack():
            return None
        from google.auth.transport.requests import AuthorizedSession

        assert self.warehouse is not None
        session = AuthorizedSession(self.warehouse.client._credentials)
        answer = session.post(
            f"https://cloudresourcemanager.googleapis.com/v1/projects/{project}:testIamPermissions",
            json={"permissions": list(permissions)},
            timeout=30,
        )
        if answer.status_code != 200:
            log.debug("testIamPermissions on project %s: HTTP %s %s", project, answer.status_code, answer.text)
            return None
        return list(answer.json().get("permissions", []))

    def dataset(self) -> dict | None:
        """{"location"} of the dataset, or None when it does not exist."""
        assert self.warehouse is not None
        try:
            found = self.warehouse.client.get_dataset(f"{self.warehouse.project}.{self.warehouse.dataset}", timeout=30)
        except gexc.NotFound:
            return None
        return {"location": (found.location or "").upper() or None}

    def impersonation_error(self) -> str | None:
        """Why a short-lived token of ``impersonate_service_account`` cannot be had, or None
        when one was issued (one call to the IAM Credentials API)."""
        from google.auth import exceptions as auth_exc
        from google.auth.transport.requests import Request

        from .google_clients import credentials

        try:
            credentials(self.config).refresh(Request())
        except (auth_exc.RefreshError, auth_exc.TransportError) as exc:
            log.debug("impersonation: %s", exc)
            return _first_line(exc)
        return None

    def key_users(self, keys: list[str]) -> dict | None:
        """Which service agents each key's IAM policy lets encrypt and decrypt:
        {"agents": [Cloud Storage's, BigQuery's], KEY: [members], ...}; {"error": ...}
        when a policy cannot be read; None on the local stack (no Cloud KMS)."""
        if self.local_stack():
            return None
        from google.auth.transport.requests import AuthorizedSession

        assert self.store is not None and self.warehouse is not None
        agents = [self.store.client.get_service_account_email(), self.warehouse.client.get_service_account_email()]
        session = AuthorizedSession(self.store.client._credentials)
        out: dict[str, Any] = {"agents": agents}
        for key in keys:
            answer = session.get(f"https://cloudkms.googleapis.com/v1/{key}:getIamPolicy", timeout=30)
            if answer.status_code != 200:
                return {"error": f"{key}: HTTP {answer.status_code} {_first_line(answer.text)}"}
            out[key] = [
                m.split(":", 1)[-1]
                for b in answer.json().get("bindings", [])
                if b.get("role") == "roles/cloudkms.cryptoKeyEncrypterDecrypter"
                for m in b.get("members", [])
            ]
        return out


def _first_line(text: object) -> str:
    return (str(text).strip().splitlines() or [""])[0][:300]
