"""Central AWS credentials: the chain, refresh before expiry, SigV4 re-signing, masking."""

from __future__ import annotations

import datetime
import threading
import time
from pathlib import Path

import pytest
from botocore.credentials import Credentials, RefreshableCredentials
from mitmproxy import http
from mitmproxy.test import tutils

from aibridge.admission.credential import resolve_credential
from aibridge.config import BridgeConfig, ConfigError
from aibridge.intercept import Actor, CredentialKind
from aibridge.keys import aws
from aibridge.keys.aws import AwsCredentials, AwsCredentialsError
from aibridge.providers import Provider, build_registry
from aibridge.upstream import sigv4
from aibridge.upstream.rewrite import rewrite_for_upstream
from aibridge.upstream.scrub import hint, is_masked, mask_request, scrub
from tests.fakeprovider import FakeBedrock, Seen

ACCESS_KEY = "AKIAIOSFODNN7EXAMPLE"
SECRET_KEY = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"
TOKEN = "FwoGZXIvYXdzEXAMPLESESSIONTOKEN0123456789"
CLIENT_SIG = ("AWS4-HMAC-SHA256 Credential=AKIDCLIENTDUMMY00000/20250101/us-east-1/bedrock/"
              "aws4_request, SignedHeaders=host;x-amz-date, Signature=" + "0" * 64)
ENV = {"AWS_ACCESS_KEY_ID": ACCESS_KEY, "AWS_SECRET_ACCESS_KEY": SECRET_KEY,
       "AWS_SESSION_TOKEN": TOKEN}


@pytest.fixture(autouse=True)
def _no_aws_files(monkeypatch, tmp_path):
    # The machine's own AWS set-up must not leak into what the chain finds.
    for name in ("AWS_PROFILE", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY",
                 "AWS_SESSION_TOKEN", "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI",
                 "AWS_CONTAINER_CREDENTIALS_FULL_URI", "AWS_WEB_IDENTITY_TOKEN_FILE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")


def bedrock(environ: dict[str, str] | None = None, **fields) -> Provider:
    config = BridgeConfig.model_validate({"providers": {"bedrock": {
        "type": "bedrock", "hosts": ["bedrock-runtime.us-east-1.amazonaws.com"],
        "upstream": "http://127.0.0.1:9", **fields}}})
    registry = build_registry(config, Path("/nonexistent"),
                              environ=ENV if environ is None else environ)
    return next(p for p in registry.providers if p.name == "bedrock")


def client_request(body: bytes = b'{"messages":[]}') -> http.Request:
    return tutils.treq(
        method=b"POST", scheme=b"https", host="bedrock-runtime.us-east-1.amazonaws.com",
        port=443, authority=b"bedrock-runtime.us-east-1.amazonaws.com",
        path=b"/model/us.anthropic.claude-sonnet-4-5-v1%3A0/invoke",
        headers=http.Headers([
            (b"Host", b"bedrock-runtime.us-east-1.amazonaws.com"),
            (b"Content-Type", b"application/json"), (b"Authorization", CLIENT_SIG.encode()),
            (b"X-Amz-Date", b"20250101T000000Z"), (b"X-Amz-Security-Token", b"client-token"),
            (b"amz-sdk-invocation-id", b"abc")]),
        content=body)


def seen(request: http.Request) -> Seen:
    return Seen(request.method, request.path, list(request.headers.items(multi=True)),
                request.raw_content or b"")


def test_central_credentials_from_the_environment_are_the_default():
    p = bedrock()
    assert p.signer is not None and p.pool is None and p.credentials == "centralized"
    assert p.signer.hint == "AKIA...MPLE" and ACCESS_KEY not in repr(p.signer)


def test_no_credentials_anywhere_is_a_config_error_when_centralized():
    with pytest.raises(ConfigError, match="AWS credentials"):
        bedrock(environ={}, credentials="centralized")
    assert bedrock(environ={}).credentials == "byok"  # nothing central: callers sign


def test_api_keys_make_a_pool_and_no_signer():
    p = bedrock({**ENV, "AIBRIDGE_BEDROCK_KEYS": "bedrock-api-key-0123456789abcdef"})
    assert p.pool is not None and p.signer is None
    cred = resolve_credential(p, http.Headers(), None)
    assert (cred.header, cred.value) == ("Authorization", "Bearer bedrock-api-key-0123456789abcdef")


def test_re_signing_replaces_the_client_signature_with_a_valid_one():
    p = bedrock()
    request = client_request()
    cred = resolve_credential(p, request.headers, None)
    assert cred.info.kind is CredentialKind.CENTRALIZED and cred.info.hint == "AKIA...MPLE"
    rewrite_for_upstream(request, p, cred, Actor("alice", {}))
    assert request.headers["Authorization"].startswith(
        f"AWS4-HMAC-SHA256 Credential={ACCESS_KEY}/")
    assert "/us-east-1/bedrock/aws4_request" in request.headers["Authorization"]
    assert request.headers["X-Amz-Security-Token"] == TOKEN
    assert len(request.headers.get_all("x-amz-date")) == 1
    assert request.headers["X-AI-Bridge-Actor-ID"] == "alice"  # unsigned, and fine
    fake = FakeBedrock(ACCESS_KEY, SECRET_KEY, TOKEN)
    assert fake.check(seen(request), "http://127.0.0.1:9") is None, fake.verdicts
    # The recomputation catches a change after signing (the check can fail).
    request.content = b'{"messages":[1]}'
    assert fake.check(seen(request), "http://127.0.0.1:9") is not None


def test_the_region_comes_from_the_host_or_the_configuration():
    p = bedrock(region="eu-central-1")
    request = client_request()
    rewrite_for_upstream(request, p, resolve_credential(p, request.headers, None),
                         Actor("a", {}))
    assert "/eu-central-1/bedrock/" in request.headers["Authorization"]


def test_byok_passes_the_client_signature_untouched():
    p = bedrock(credentials="byok")
    request = client_request()
    cred = resolve_credential(p, request.headers, None)
    assert cred.info.kind is CredentialKind.BYOK and cred.signer is None
    rewrite_for_upstream(request, p, cred, Actor("a", {}))
    assert request.headers["Authorization"] == CLIENT_SIG
    assert request.headers["X-Amz-Date"] == "20250101T000000Z"
    assert request.headers["X-Amz-Security-Token"] == "client-token"


def test_flows_and_logs_see_only_the_masked_access_key_id():
    assert hint(CLIENT_SIG) == "AWS4-HMAC-SHA256 AKID...0000"
    assert is_masked(hint(CLIENT_SIG))
    request = client_request()
    secrets = mask_request(request)
    assert request.headers["Authorization"] == "AWS4-HMAC-SHA256 AKID...0000"
    assert request.headers["X-Amz-Security-Token"] == "cl...en"
    assert CLIENT_SIG.split(" ", 1)[1] in secrets  # what an answer could echo
    # What the bridge signed with: after sending, the hint of its own access key id, and the
    # session token masked.
    p = bedrock()
    sent = client_request()
    cred = resolve_credential(p, sent.headers, None)
    rewrite_for_upstream(sent, p, cred, Actor("a", {}))
    scrub(sent, cred.header, cred.info)
    assert sent.headers["Authorization"] == "AWS4-HMAC-SHA256 AKIA...MPLE"
    assert sent.headers["X-Amz-Security-Token"] == "FwoG...6789"
    assert SECRET_KEY not in str(sent.headers) and TOKEN not in str(sent.headers)


def test_presigned_url_credentials_are_masked():
    request = client_request()
    request.path = "/model/x/invoke?X-Amz-Signature=" + "f" * 64 + "&X-Amz-Security-Token=tok12345"
    mask_request(request)
    assert "f" * 64 not in request.path and "tok12345" not in request.path


def test_strip_client_signature():
    request = client_request()
    sigv4.strip_client_signature(request)
    assert not any(n.lower() in sigv4.CLIENT_SIGNATURE for n in request.headers)


# -- refresh ---------------------------------------------------------------------------------


class Clock:
    def __init__(self) -> None:
        self.now = time.time()

    def __call__(self) -> float:
        return self.now

    def utc(self) -> datetime.datetime:
        return datetime.datetime.fromtimestamp(self.now, datetime.UTC)


def refreshable(clock: Clock, calls: list[int], *, fail: bool = False,
                gate: threading.Event | None = None) -> RefreshableCredentials:
    def refresh() -> dict[str, str]:
        calls.append(1)
        if gate is not None and len(calls) > 1:
            assert gate.wait(10)
        if fail and len(calls) > 1:
            raise RuntimeError("sts down")
        expiry = datetime.datetime.fromtimestamp(clock.now + 3600, datetime.UTC)
        return {"access_key": f"ASIATEMPORARY{len(calls):07d}", "secret_key": "s",
                "token": "t", "expiry_time": expiry.isoformat()}

    credentials = RefreshableCredentials.create_from_metadata(refresh(), refresh, "test")
    credentials._time_fetcher = clock.utc  # botocore reads its own clock: it follows ours
    return credentials


def test_temporary_credentials_refresh_in_the_background_before_they_expire():
    clock = Clock()
    calls: list[int] = []
    sts = threading.Event()  # the STS call in flight until set
    creds = AwsCredentials(refreshable(clock, calls, gate=sts), source="test", clock=clock)
    first = creds.frozen().access_key
    assert first == "ASIATEMPORARY0000001" and len(calls) == 1
    clock.now += 3600 - 10 * 60  # within 15 minutes of expiry: refreshed off the request
    assert creds.frozen().access_key == first  # the request signs with what it has, at once
    assert creds.frozen().access_key == first  # and one refresh is under way, not two
    sts.set()
    creds.wait_for_refresh()
    assert len(calls) == 2
    assert creds.frozen().access_key == "ASIATEMPORARY0000002"


def test_credentials_that_ran_out_and_cannot_be_renewed_refuse_the_request():
    clock = Clock()
    calls: list[int] = []
    creds = AwsCredentials(refreshable(clock, calls, fail=True), source="test", clock=clock)
    clock.now += 3600 - 30
    with pytest.raises(AwsCredentialsError, match="cannot refresh") as e:
        creds.frozen()
    assert "sts down" not in str(e.value)  # the type only: an error text might hold anything


def test_long_lived_credentials_never_refresh():
    creds = AwsCredentials(Credentials(ACCESS_KEY, SECRET_KEY), source="env")
    assert creds.expires_in is None and creds.frozen().access_key == ACCESS_KEY


def test_the_chain_finds_a_profile(tmp_path, monkeypatch):
    (tmp_path / "credentials").write_text(
        f"[dev]\naws_access_key_id = {ACCESS_KEY}\naws_secret_access_key = {SECRET_KEY}\n")
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "credentials"))
    found = aws.from_chain(profile="dev", environ={})
    assert found is not None and found.frozen().secret_key == SECRET_KEY
    with pytest.raises(AwsCredentialsError):
        aws.from_chain(profile="nope", environ={})
    assert aws.from_chain(environ={}) is None


STS_ANSWER = """<AssumeRoleResponse xmlns="https://sts.amazonaws.com/doc/2011-06-15/">
  <AssumeRoleResult>
    <Credentials>
      <AccessKeyId>ASIAASSUMEDROLE00001</AccessKeyId>
      <SecretAccessKey>assumed-secret</SecretAccessKey>
      <SessionToken>assumed-session-token</SessionToken>
      <Expiration>2099-01-01T00:00:00Z</Expiration>
    </Credentials>
    <AssumedRoleUser>
      <AssumedRoleId>AROAEXAMPLE:aibridge</AssumedRoleId>
      <Arn>arn:aws:sts::123456789012:assumed-role/bedrock-bridge/aibridge</Arn>
    </AssumedRoleUser>
  </AssumeRoleResult>
  <ResponseMetadata><RequestId>fake</RequestId></ResponseMetadata>
</AssumeRoleResponse>"""


def test_role_arn_is_assumed_with_the_chain_credentials(monkeypatch):
    from tests.fakeprovider import FakeProvider, Reply

    role = "arn:aws:iam::123456789012:role/bedrock-bridge"
    with FakeProvider() as sts:
        sts.enqueue(Reply(body=STS_ANSWER, headers=[("Content-Type", "text/xml")]))
        monkeypatch.setenv("AWS_ENDPOINT_URL_STS", sts.url)
        p = bedrock(role_arn=role, region="us-east-1")
        assert p.signer is not None and p.signer.source == f"role {role}"
        assert p.signer.frozen().access_key == "ASIAASSUMEDROLE00001"
        (call,) = sts.requests
        form = call.body.decode()
        assert "Action=AssumeRole" in form and "RoleSessionName=aibridge" in form
        # STS was asked with the chain's credentials, signed.
        assert (call.header("authorization") or "").startswith(
            f"AWS4-HMAC-SHA256 Credential={ACCESS_KEY}/")
        sts.enqueue(Reply(status=403, headers=[("Content-Type", "text/xml")], body=(
            "<ErrorResponse><Error><Type>Sender</Type><Code>AccessDenied</Code><Message>"
            "not allowed</Message></Error></ErrorResponse>")))
        with pytest.raises(ConfigError, match=r"cannot (assume|get)"):
            bedrock(role_arn=role, region="us-east-1")
