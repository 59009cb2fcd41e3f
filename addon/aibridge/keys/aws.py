"""Central AWS credentials for providers whose requests the bridge signs (Amazon Bedrock).

They come from botocore's standard chain, as the AWS CLI finds them: environment
(`AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`, `AWS_SESSION_TOKEN`), the shared config and
credentials files (a profile, SSO, `credential_process`), web identity, the container and
instance metadata services. With `role_arn` the bridge assumes that role with them (STS
AssumeRole) and keeps the temporary credentials fresh.

Temporary credentials are refreshed before they expire, off the event loop: from 15 minutes
before expiry a request starts one background refresh (botocore's call, in a thread) and keeps
signing with the current credentials; only credentials within a minute of expiry, when every
refresh so far failed, are refreshed in the request's own path.

Nothing here ever writes a secret anywhere: `hint` is the access key id masked.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping

from botocore.credentials import (
    AssumeRoleCredentialFetcher,
    Credentials,
    DeferredRefreshableCredentials,
    EnvProvider,
    ReadOnlyCredentials,
    RefreshableCredentials,
)

from aibridge.intercept import mask_secret

log = logging.getLogger("aibridge")

ADVISORY = 15 * 60  # seconds before expiry a background refresh starts
MANDATORY = 60  # seconds before expiry a request refreshes in its own path


class AwsCredentialsError(Exception):
    """No usable AWS credentials (the message names why, never a secret)."""


class AwsCredentials:
    def __init__(self, credentials: Credentials, *, source: str,
                 clock: Callable[[], float] = time.time) -> None:
        self._credentials = credentials
        self.source = source  # for people: "environment", "profile dev", "role arn:…"
        self._clock = clock
        self._lock = threading.Lock()
        self._refreshing: threading.Thread | None = None
        try:
            self._frozen = credentials.get_frozen_credentials()
        except Exception as e:
            raise AwsCredentialsError(f"cannot get AWS credentials from {source}: "
                                      f"{type(e).__name__}: {e}") from None
        if not self._frozen.access_key or not self._frozen.secret_key:
            raise AwsCredentialsError(f"AWS credentials from {source} are incomplete")

    def __repr__(self) -> str:
        return f"AwsCredentials({self.source}, {self.hint})"

    @property
    def hint(self) -> str:
        """The access key id, masked (`AKIA...MPLE`)."""
        return mask_secret(self._frozen.access_key)

    @property
    def expires_in(self) -> float | None:
        """Seconds until temporary credentials expire; None for long-lived ones."""
        credentials = self._credentials
        if not isinstance(credentials, RefreshableCredentials):
            return None
        expiry = credentials._expiry_time  # botocore keeps no public accessor
        return None if expiry is None else expiry.timestamp() - self._clock()

    def frozen(self) -> ReadOnlyCredentials:
        """The credentials to sign with now. Raises AwsCredentialsError when temporary
        credentials ran out and cannot be renewed."""
        left = self.expires_in
        if left is None or left > ADVISORY:
            return self._frozen
        if left > MANDATORY:
            self._refresh_in_background()
            return self._frozen
        try:  # every background refresh failed so far: the request waits for this one
            self._frozen = self._credentials.get_frozen_credentials()
        except Exception as e:
            raise AwsCredentialsError(f"cannot refresh AWS credentials from {self.source}: "
                                      f"{type(e).__name__}") from None
        return self._frozen

    def _refresh_in_background(self) -> None:
        with self._lock:
            if self._refreshing is not None and self._refreshing.is_alive():
                return
            self._refreshing = threading.Thread(target=self._refresh, daemon=True,
                                                name="aibridge-aws-refresh")
            self._refreshing.start()

    def _refresh(self) -> None:
        try:
            self._frozen = self._credentials.get_frozen_credentials()
        except Exception as e:  # the next request tries again; the log never names a secret
            log.warning(f"aibridge: refreshing AWS credentials from {self.source} failed: "
                        f"{type(e).__name__}")

    def wait_for_refresh(self, timeout: float = 10.0) -> None:
        """Tests: wait for a background refresh to end."""
        thread = self._refreshing
        if thread is not None:
            thread.join(timeout)


def from_chain(*, profile: str | None = None, role_arn: str | None = None,
               region: str | None = None, environ: Mapping[str, str] | None = None,
               session_name: str = "aibridge") -> AwsCredentials | None:
    """The standard chain's credentials (assuming `role_arn` with them when given); None when
    the chain finds nothing. Raises AwsCredentialsError for credentials that do not work (a
    profile that does not exist, a role that cannot be assumed)."""
    import botocore.session
    from botocore.exceptions import BotoCoreError, ClientError

    try:
        session = botocore.session.Session(profile=profile)
        if environ is not None:
            # The bridge's own environment mapping (tests pass one): where the env provider
            # reads (botocore leaves it out when a profile is named).
            for provider in session.get_component("credential_provider").providers:
                if isinstance(provider, EnvProvider):
                    provider.environ = environ
        credentials = session.get_credentials()
    except BotoCoreError as e:
        raise AwsCredentialsError(f"AWS credentials: {e}") from None
    if credentials is None:
        return None
    source = f"profile {profile}" if profile else credentials.method or "the AWS chain"
    if role_arn is None:
        return AwsCredentials(credentials, source=source)
    if region:
        session.set_config_variable("region", region)
    fetcher = AssumeRoleCredentialFetcher(
        client_creator=session.create_client, source_credentials=credentials,
        role_arn=role_arn, extra_args={"RoleSessionName": session_name})
    assumed = DeferredRefreshableCredentials(method="assume-role",
                                             refresh_using=fetcher.fetch_credentials)
    try:
        return AwsCredentials(assumed, source=f"role {role_arn}")
    except (BotoCoreError, ClientError) as e:
        raise AwsCredentialsError(f"cannot assume role {role_arn}: {e}") from None
