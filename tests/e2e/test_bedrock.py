"""Amazon Bedrock through a real mitmdump: boto3's bedrock-runtime client and Claude Code in
Bedrock mode sign with dummy credentials; the bridge re-signs with its central AWS credentials,
which the fake Bedrock verifies (recomputing the SigV4 signature with botocore), and streams
AWS event-stream frames through while reading them. Records, costs and saved flows name the
provider `bedrock` and the model, and never hold an AWS secret."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from decimal import Decimal
from pathlib import Path

import boto3
import pytest
import sqlalchemy as sa
from botocore.config import Config
from botocore.exceptions import ClientError

from aibridge.pricing import PriceBook, Tokens
from tests.e2e.harness import ALICE_TOKEN, BridgeProcess, provider_config
from tests.e2e.test_agents import AGENTS, run
from tests.fakeprovider import FakeBedrock, FakeProvider, Reply, bedrock_error

ACCESS_KEY = "AKIAIOSFODNN7EXAMPLE"
SECRET_KEY = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"
SESSION_TOKEN = "FwoGZXIvYXdzEXAMPLESESSIONTOKENforthebridge0123456789"
CLIENT_KEY, CLIENT_SECRET = "AKIDCLIENTDUMMY00000", "client-dummy-secret-0123456789"
HOST = "bedrock-runtime.us-east-1.amazonaws.com"
MODEL = "us.anthropic.claude-sonnet-4-5-20250929-v1:0"
ARN = ("arn:aws:bedrock:us-east-1:123456789012:application-inference-profile/"
       "anthropic.claude-sonnet-4-5-20250929-v1:0")
BODY = {"anthropic_version": "bedrock-2023-05-31", "max_tokens": 64,
        "messages": [{"role": "user", "content": "hi"}]}
HI = [{"role": "user", "content": [{"text": "hi"}]}]
# The bridge's own AWS credentials; nothing of the machine's AWS set-up may stand in.
AWS_ENV = {"AWS_ACCESS_KEY_ID": ACCESS_KEY, "AWS_SECRET_ACCESS_KEY": SECRET_KEY,
           "AWS_SESSION_TOKEN": SESSION_TOKEN, "AWS_CONFIG_FILE": "/nonexistent",
           "AWS_SHARED_CREDENTIALS_FILE": "/nonexistent", "AWS_EC2_METADATA_DISABLED": "true"}


def bedrock_config(fake: FakeProvider, extra: str = "") -> str:
    # A regional wildcard, as in production; the fake stands in for every region.
    return provider_config(fake.url, extra=f"""
[providers.bedrock]
type = "bedrock"
hosts = ["bedrock-runtime.*.amazonaws.com"]
upstream = "{fake.url}"
{extra}
""")


@pytest.fixture(scope="module")
def signed(fake: FakeProvider, make_bridge: Callable[..., BridgeProcess]
           ) -> Iterator[BridgeProcess]:
    yield make_bridge(bedrock_config(fake), env=AWS_ENV)


@pytest.fixture(autouse=True)
def _verifying(fake: FakeProvider) -> Iterator[None]:
    fake.bedrock = FakeBedrock(ACCESS_KEY, SECRET_KEY, SESSION_TOKEN)
    yield
    fake.bedrock = None


def client(bridge: BridgeProcess, region: str = "us-east-1", **kw):
    return boto3.client(
        "bedrock-runtime", region_name=region, aws_access_key_id=CLIENT_KEY,
        aws_secret_access_key=CLIENT_SECRET, verify=bridge.ca,
        config=Config(proxies={"https": bridge.proxy_url()}, retries={"total_max_attempts": 1},
                      **kw))


def test_boto3_invoke_and_converse_streamed_and_not(signed: BridgeProcess, fake: FakeProvider):
    runtime = client(signed)
    answer = json.loads(runtime.invoke_model(modelId=MODEL, body=json.dumps(BODY))["body"].read())
    assert answer["content"][0]["text"] == "Hello from fake"

    stream = runtime.invoke_model_with_response_stream(modelId=MODEL, body=json.dumps(BODY))
    events = [json.loads(e["chunk"]["bytes"]) for e in stream["body"]]
    text = "".join(e["delta"]["text"] for e in events if e["type"] == "content_block_delta")
    assert text == "Hello from fake"
    assert events[-1]["amazon-bedrock-invocationMetrics"]["outputTokenCount"] == 7

    answer = runtime.converse(modelId=ARN, messages=HI)
    assert answer["output"]["message"]["content"][0]["text"] == "Hello from fake"

    parts = [e for e in runtime.converse_stream(modelId=MODEL, messages=HI)["stream"]]
    assert "".join(p["contentBlockDelta"]["delta"]["text"] for p in parts
                   if "contentBlockDelta" in p) == "Hello from fake"
    assert parts[-1]["metadata"]["usage"]["outputTokens"] == 7

    # Every request reached the fake signed with the central credentials, none with the
    # client's; the ARN's slash arrived escaped, inside its path segment.
    assert fake.bedrock is not None and fake.bedrock.verdicts == ["ok"] * 4
    seen = [r for r in fake.requests if r.path.startswith("/model/")]
    assert [r.path.rsplit("/", 1)[-1] for r in seen] == [
        "invoke", "invoke-with-response-stream", "converse", "converse-stream"]
    assert seen[2].path == "/model/" + ARN.replace(":", "%3A").replace("/", "%2F") + "/converse"
    assert all(r.header("authorization").startswith(f"AWS4-HMAC-SHA256 Credential={ACCESS_KEY}/")
               and r.header("X-AI-Bridge-Actor-ID") == "alice" for r in seen)
    for _route, stream_ in (("invoke", False), ("invoke", True), ("converse", False),
                           ("converse", True)):
        signed.wait_for_log(rf"provider=bedrock model=\S+ stream={stream_} status=200 "
                            r"credential=centralized:AKIA\.\.\.MPLE in 11 out 7 "
                            r"outcome=completed cost=\$0\.000")
    signed.wait_for_log(r"provider=bedrock model=arn:aws:bedrock:us-east-1:123456789012:"
                        r"application-inference-profile/anthropic\.claude-sonnet-4-5-20250929"
                        r"-v1:0 stream=False")


def test_claude_code_in_bedrock_mode(signed: BridgeProcess, fake: FakeProvider, tmp_path: Path):
    assert (AGENTS / "claude").exists(), "claude missing: run scripts/setup (install-agents)"
    home = tmp_path / "home"
    home.mkdir()
    result = run([str(AGENTS / "claude"), "-p", "say hi", "--output-format", "json",
                  "--max-turns", "1"], {
        "HOME": str(home), "CLAUDE_CONFIG_DIR": str(home / ".claude"),
        "HTTPS_PROXY": signed.proxy_url(), "NODE_EXTRA_CA_CERTS": signed.ca,
        "CLAUDE_CODE_USE_BEDROCK": "1", "AWS_REGION": "us-east-1",
        # Dummy client credentials: the bridge signs with its own.
        "AWS_ACCESS_KEY_ID": CLIENT_KEY, "AWS_SECRET_ACCESS_KEY": CLIENT_SECRET,
        "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC": "1", "DISABLE_AUTOUPDATER": "1",
        "DISABLE_TELEMETRY": "1", "DISABLE_ERROR_REPORTING": "1"})
    assert result.returncode == 0, result.stdout + result.stderr
    assert json.loads(result.stdout)["result"] == "Hello from fake"
    streams = [r for r in fake.requests if r.path.endswith("/invoke-with-response-stream")]
    assert streams, [r.path for r in fake.requests]
    assert fake.bedrock is not None and set(fake.bedrock.verdicts) == {"ok"}
    assert all(CLIENT_KEY not in (r.header("authorization") or "") for r in fake.requests)
    assert streams[-1].json()["anthropic_version"] == "bedrock-2023-05-31"
    signed.wait_for_log(r"provider=bedrock model=\S+anthropic\.claude\S+ stream=True "
                        r"status=200 credential=centralized:AKIA\.\.\.MPLE in 11 out 7 "
                        r"outcome=completed")


def test_errors_in_the_aws_shape(signed: BridgeProcess, fake: FakeProvider):
    runtime = client(signed)
    # Bedrock's own error passes as it is: boto3 raises its exception.
    fake.enqueue(bedrock_error(429, "ThrottlingException", "Too many requests, please wait."))
    with pytest.raises(ClientError) as e:
        runtime.invoke_model(modelId=MODEL, body=json.dumps(BODY))
    assert e.value.response["Error"]["Code"] == "ThrottlingException"
    assert e.value.response["Error"]["Message"] == "Too many requests, please wait."
    # The bridge's own refusal (a body that is no JSON object) in AWS's shape.
    with pytest.raises(ClientError) as e:
        runtime.invoke_model(modelId=MODEL, body=b"[1, 2]")
    assert e.value.response["Error"]["Code"] == "ValidationException"
    assert "JSON object" in e.value.response["Error"]["Message"]
    assert e.value.response["ResponseMetadata"]["HTTPStatusCode"] == 400
    # An upstream's HTML page becomes an AWS error too.
    fake.enqueue(Reply(status=502, headers=[("Content-Type", "text/html")],
                       body="<html><title>502 Bad Gateway</title></html>"))
    with pytest.raises(ClientError) as e:
        runtime.converse(modelId=MODEL, messages=HI)
    assert e.value.response["Error"]["Code"] in ("InternalServerException", "502")
    assert "bedrock returned HTTP 502" in e.value.response["Error"]["Message"]


def test_a_stream_broken_mid_way_ends_with_an_exception_the_sdk_raises(
        signed: BridgeProcess, fake: FakeProvider):
    from tests.fakeprovider import bedrock_reply

    reply = bedrock_reply(1, MODEL, "converse-stream", {})
    reply.close_after_events = 2
    fake.enqueue(reply)
    runtime = client(signed)
    stream = runtime.converse_stream(modelId=MODEL, messages=HI)["stream"]
    with pytest.raises(Exception) as e:  # botocore's EventStreamError
        for _ in stream:
            pass
    assert "internalServerException" in str(e.value) or "InternalServer" in str(e.value)
    signed.wait_for_log(r"provider=bedrock .* stream=True status=200 .* outcome=failed")


def test_byok_passes_the_client_signature_untouched(fake: FakeProvider,
                                                    make_bridge: Callable[..., BridgeProcess]):
    bridge = make_bridge(bedrock_config(fake, 'credentials = "byok"'), env=AWS_ENV)
    fake.bedrock = None  # the client signed for the real host, which the fake is not
    runtime = client(bridge)
    runtime.converse(modelId=MODEL, messages=HI)
    seen = [r for r in fake.requests if r.path.endswith("/converse")][-1]
    auth = seen.header("authorization")
    assert auth.startswith(f"AWS4-HMAC-SHA256 Credential={CLIENT_KEY}/")
    assert seen.header("x-amz-date") is not None
    bridge.wait_for_log(r"provider=bedrock .* credential=byok:AWS4\.\.\.\S{4} ")


def test_bedrock_api_keys_are_central_keys(fake: FakeProvider,
                                           make_bridge: Callable[..., BridgeProcess]):
    keys = ("bedrock-api-key-first-0123456789abcdef", "bedrock-api-key-second-0123456789abcd")
    bridge = make_bridge(bedrock_config(fake), env={**AWS_ENV,
                                                    "AIBRIDGE_BEDROCK_KEYS": ",".join(keys)})
    fake.bedrock = FakeBedrock(api_keys=keys)
    # The first key is rate-limited: the bridge fails over to the second one.
    fake.enqueue(bedrock_error(429, "ThrottlingException", "Too many requests"))
    result = bridge.curl("-X", "POST", "-H", "Authorization: Bearer users-own-placeholder",
                         "-H", "Content-Type: application/json", "--data", json.dumps(BODY),
                         f"https://{HOST}/model/{MODEL.replace(':', '%3A')}/invoke")
    assert json.loads(result.stdout)["content"][0]["text"] == "Hello from fake", result.stderr
    auths = [r.header("authorization") for r in fake.requests if r.path.startswith("/model/")]
    assert auths == [f"Bearer {keys[0]}", f"Bearer {keys[1]}"]
    bridge.wait_for_log(r"provider=bedrock .* credential=centralized:bedr\.\.\.abcd ")


def test_records_costs_and_saved_flows(fake: FakeProvider,
                                       make_bridge: Callable[..., BridgeProcess]):
    bridge = make_bridge(bedrock_config(fake), env=AWS_ENV)
    runtime = client(bridge)
    runtime.converse(modelId=MODEL, messages=HI)
    for _ in runtime.invoke_model_with_response_stream(modelId=MODEL, body=json.dumps(BODY))[
            "body"]:
        pass
    bridge.wait_for_log(r"provider=bedrock .* stream=True .* outcome=completed")
    assert bridge.stop() == 0
    engine = sa.create_engine(f"sqlite:///{bridge.workdir / 'data' / 'aibridge.db'}")
    with engine.connect() as db:
        rows = [dict(r._mapping) for r in db.execute(sa.text(
            "SELECT i.provider, i.provider_type, i.model, i.route, i.streaming, "
            "i.credential_hint, e.outcome, e.cost_usd, e.price_source FROM interceptions i "
            "JOIN interception_ends e ON e.id = i.id ORDER BY i.started_at"))]
        tokens = [tuple(r) for r in db.execute(sa.text(
            "SELECT input_tokens, output_tokens, cache_read_tokens, cache_write_tokens "
            "FROM token_usages"))]
        dump = "\n".join(str(tuple(r)) for table in ("interceptions", "interception_ends")
                         for r in db.execute(sa.text(f"SELECT * FROM {table}")))
    engine.dispose()
    assert [(r["provider"], r["provider_type"], r["model"], r["streaming"]) for r in rows] == [
        ("bedrock", "bedrock", MODEL, 0), ("bedrock", "bedrock", MODEL, 1)]
    assert all(r["outcome"] == "completed" and r["credential_hint"] == "AKIA...MPLE"
               and r["cost_usd"] is not None
               and r["price_source"].startswith("genai-prices:aws/") for r in rows)
    assert tokens == [(11, 7, 3, 2)] * 2
    # Bedrock counts input as Anthropic does (cache reads and writes apart): 11 uncached.
    expected = PriceBook().cost("bedrock", "bedrock", MODEL, Tokens(
        input=11, output=7, cache_read=3, cache_write=2)).usd
    assert expected is not None and Decimal(rows[0]["cost_usd"]) == expected
    saved = bridge.flows_path.read_bytes()
    for secret in (SECRET_KEY, SESSION_TOKEN, ACCESS_KEY, CLIENT_SECRET):
        assert secret.encode() not in saved
        assert secret not in dump and secret not in bridge.log()
    assert b"AKIA...MPLE" in saved


def test_no_aws_credentials_anywhere_refuses_to_start(fake: FakeProvider, tmp_path: Path):
    bridge = BridgeProcess(tmp_path, bedrock_config(fake, 'credentials = "centralized"'),
                           env={k: "" for k in AWS_ENV} | {
                               "AWS_CONFIG_FILE": "/nonexistent",
                               "AWS_SHARED_CREDENTIALS_FILE": "/nonexistent",
                               "AWS_EC2_METADATA_DISABLED": "true"})
    (tmp_path / "actors.toml").write_text(f'[[actors]]\nid = "a"\ntoken = "{ALICE_TOKEN}"\n')
    with pytest.raises(Exception, match="AWS credentials"):
        bridge.start()
