"""Google clients from the configuration, for real GCP or the local emulators.

With ``STORAGE_EMULATOR_HOST`` / ``BIGQUERY_EMULATOR_HOST`` set (as
``bqspool local env`` prints), the clients talk to those endpoints with
anonymous credentials; otherwise they use Application Default Credentials.
Credentials are never read from bqspool's own configuration or logged.
"""

from __future__ import annotations

import os
from typing import Any

from bqspool.schemas.errors import ConfigError

from ..config import Config
from ..retry import RetryPolicy

CLOUD_PLATFORM = "https://www.googleapis.com/auth/cloud-platform"


def _endpoint(var: str) -> str | None:
    host = os.environ.get(var)
    if not host:
        return None
    return host if host.startswith("http") else f"http://{host}"


def credentials(config: Config) -> Any:
    """None (Application Default Credentials, as the clients find them), or with
    ``impersonate_service_account`` short-lived tokens of that service account,
    made by google-auth's impersonated credentials from the default ones."""
    if not config.impersonate_service_account:
        return None
    import google.auth
    from google.auth import impersonated_credentials

    source = _credentialed(lambda: google.auth.default(scopes=[CLOUD_PLATFORM])[0])
    return impersonated_credentials.Credentials(
        source_credentials=source,
        target_principal=config.impersonate_service_account,
        target_scopes=[CLOUD_PLATFORM],
        lifetime=3600,
    )


def storage_client(config: Config) -> Any:
    import google.cloud.storage as storage

    endpoint = _endpoint("STORAGE_EMULATOR_HOST")
    if endpoint:
        from google.auth.credentials import AnonymousCredentials

        return settled(
            storage.Client(
                project=config.project, credentials=AnonymousCredentials(), client_options={"api_endpoint": endpoint}
            )
        )
    return settled(_credentialed(lambda: storage.Client(project=config.project, credentials=credentials(config))))


def bigquery_client(config: Config) -> Any:
    from google.cloud import bigquery

    endpoint = _endpoint("BIGQUERY_EMULATOR_HOST")
    if endpoint:
        from google.auth.credentials import AnonymousCredentials

        return settled(
            bigquery.Client(
                project=config.project,
                credentials=AnonymousCredentials(),
                client_options={"api_endpoint": endpoint},
                location=config.location,
            )
        )
    # Jobs, lookups and queries run (and count against quota) in the job project;
    # every table is named with its own project (BigQueryWarehouse.table_ref).
    project = config.job_project or config.project
    return settled(
        _credentialed(
            lambda: bigquery.Client(project=project, location=config.location, credentials=credentials(config))
        )
    )


def settled(client: Any) -> Any:
    """``client``, its HTTP session's proxies, CA bundle and client certificate read
    from the environment once, for the one endpoint it talks to.

    requests reads them again for every request unless told not to: it scans the
    whole environment twice (``*_proxy`` and ``no_proxy``) and looks for a .netrc,
    about 0.25 ms of CPU a request. A committer reading 10,000 small objects to
    archive them spent a sixth of its CPU there. The environment a process
    starts with is what it keeps; token refreshes use a session of their own."""
    session = client._http
    found = session.merge_environment_settings(client._connection.API_BASE_URL, {}, None, None, None)
    session.proxies.update(found["proxies"])
    session.verify, session.cert = found["verify"], found["cert"]
    session.trust_env = False
    return client


def retry_policy(config: Config) -> RetryPolicy:
    """The configured retry policy, told which of Google's errors are transient and
    which a user can fix (see :func:`.google_errors.explain`)."""
    from .google_errors import explain, is_transient

    return RetryPolicy(
        config.retry_initial, config.retry_maximum, config.retry_deadline, classify=is_transient, explain=explain
    )


def _credentialed(make: Any) -> Any:
    """``make()``, a client; with no credentials to find, the one-line error that says how to get them."""
    from google.auth import exceptions as auth_exc

    from .google_errors import NO_CREDENTIALS

    try:
        return make()
    except auth_exc.DefaultCredentialsError:
        raise ConfigError(NO_CREDENTIALS) from None
