"""Static checks of the many-machine set-ups: deploy/compose.yaml with deploy/haproxy.cfg, and
deploy/k8s/ (no Docker engine or cluster here). They must parse, and name the same image, paths,
port and health endpoint as deploy/Dockerfile; `aibridge serve`'s HAProxy config must be one
HAProxy accepts."""

from __future__ import annotations

import ipaddress
import json
import shutil
import subprocess
from pathlib import Path

import pytest
from ruamel.yaml import YAML

from aibridge.ops import serve
from tests.unit.test_deploy import docker_command, instructions

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
HEALTH_PATH = "/healthz"
PORT = 8080


def load_all(path: Path) -> list[dict]:
    return [doc for doc in YAML(typ="safe").load_all(path.read_text()) if doc]


def dockerfile() -> dict[str, str]:
    return dict(instructions())


def test_the_dockerfile_is_what_the_others_are_checked_against():
    by_name = dockerfile()
    assert by_name["EXPOSE"] == str(PORT)
    assert f"http://127.0.0.1:{PORT}{HEALTH_PATH}" in by_name["HEALTHCHECK"]
    assert set(json.loads(by_name["VOLUME"])) == {"/etc/aibridge", "/var/lib/aibridge"}


def test_compose_runs_the_image_behind_haproxy_with_redis_and_postgres():
    (compose,) = load_all(DEPLOY / "compose.yaml")
    services = compose["services"]
    assert set(services) == {"bridge", "haproxy", "redis", "postgres"}
    bridge = services["bridge"]
    assert bridge["image"] == "aibridge"
    assert bridge["build"] == {"context": "..", "dockerfile": "deploy/Dockerfile"}
    assert (DEPLOY / ".." / bridge["build"]["dockerfile"]).resolve() == DEPLOY / "Dockerfile"
    assert "entrypoint" not in bridge  # the image's own; its CMD with HAProxy's address:
    image_cmd = json.loads(dockerfile()["CMD"])
    assert bridge["command"] == [*image_cmd, "--set", "bridge_proxy_protocol=172.30.0.2"]
    haproxy_address = services["haproxy"]["networks"]["default"]["ipv4_address"]
    assert haproxy_address == "172.30.0.2"  # the PROXY headers believed are HAProxy's alone
    (pool,) = compose["networks"]["default"]["ipam"]["config"]
    assert ipaddress.ip_address(haproxy_address) in ipaddress.ip_network(pool["subnet"])
    assert ipaddress.ip_address(haproxy_address) not in ipaddress.ip_network(pool["ip_range"])
    mounts = {m.split(":")[1] for m in bridge["volumes"]}
    assert {"/etc/aibridge", "/etc/aibridge/certs", "/var/lib/aibridge"} <= mounts
    assert all(m.endswith(":ro") for m in bridge["volumes"] if ":/etc/aibridge" in m)
    assert f"http://127.0.0.1:{PORT}{HEALTH_PATH}" in bridge["healthcheck"]["test"]
    assert bridge["expose"] == [str(PORT)] and "ports" not in bridge  # only via HAProxy
    assert services["haproxy"]["ports"] == [f"{PORT}:{PORT}"]
    assert any(m.endswith(":/usr/local/etc/haproxy/haproxy.cfg:ro")
               for m in services["haproxy"]["volumes"])
    assert services["redis"]["image"].startswith("redis:7")
    postgres = services["postgres"]
    assert "POSTGRES_PASSWORD" not in postgres["environment"]  # a secret file, not the YAML
    assert postgres["environment"]["POSTGRES_PASSWORD_FILE"].startswith("/run/secrets/")


def test_compose_haproxy_checks_the_bridge_health_endpoint():
    cfg = (DEPLOY / "haproxy.cfg").read_text()
    assert "mode tcp" in cfg
    assert f"bind :{PORT}" in cfg
    assert f"uri {HEALTH_PATH}" in cfg and "http-check expect status 200" in cfg
    assert f"bridge:{PORT} check send-proxy-v2 check-send-proxy" in cfg  # the client's address
    if shutil.which("haproxy") or Path("/usr/sbin/haproxy").exists():
        haproxy = shutil.which("haproxy") or "/usr/sbin/haproxy"
        done = subprocess.run([haproxy, "-c", "-f", str(DEPLOY / "haproxy.cfg")],
                              capture_output=True, text=True, timeout=30)
        assert done.returncode == 0, done.stderr


def k8s() -> dict[tuple[str, str], dict]:
    found = {}
    for path in sorted((DEPLOY / "k8s").glob("*.yaml")):
        for doc in load_all(path):
            found[(doc["kind"], doc.get("metadata", {}).get("name", ""))] = doc
    return found


def test_kustomization_lists_every_manifest():
    (kustomization,) = load_all(DEPLOY / "k8s" / "kustomization.yaml")
    files = {p.name for p in (DEPLOY / "k8s").glob("*.yaml")} - {"kustomization.yaml"}
    assert set(kustomization["resources"]) == files


def test_k8s_deployment_runs_the_image_command_with_readiness_on_healthz():
    docs = k8s()
    deployment = docs[("Deployment", "aibridge")]
    pod = deployment["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    assert container["image"] == "aibridge"
    assert container["command"] + container["args"] == docker_command()
    assert container["readinessProbe"]["httpGet"] == {"path": HEALTH_PATH, "port": PORT}
    assert container["livenessProbe"]["httpGet"]["path"] == "/livez"
    assert container["ports"][0]["containerPort"] == PORT
    assert pod["securityContext"]["runAsUser"] == 10001  # the image's aibridge user
    mounts = {m["mountPath"]: m for m in container["volumeMounts"]}
    assert set(mounts) == {"/etc/aibridge", "/etc/aibridge/certs", "/var/lib/aibridge"}
    volumes = {v["name"]: v for v in pod["volumes"]}
    ca = volumes[mounts["/etc/aibridge/certs"]["name"]]
    assert ca["secret"]["secretName"] == "aibridge-ca"  # one CA for every pod, as a Secret
    sources = volumes[mounts["/etc/aibridge"]["name"]]["projected"]["sources"]
    assert {"configMap": {"name": "aibridge-config"}} in sources
    assert ("Secret", "aibridge-keys") in docs
    assert container["envFrom"] == [{"secretRef": {"name": "aibridge-keys"}}]
    env = {e["name"]: e["value"] for e in container["env"]}
    assert env["AIBRIDGE_DATA_DIR"] == "/var/lib/aibridge"


def test_k8s_config_service_and_redis_fit_together():
    docs = k8s()
    config = docs[("ConfigMap", "aibridge-config")]["data"]
    assert set(config) == {"aibridge.toml"}  # the file bridge_config names
    import tomllib
    parsed = tomllib.loads(config["aibridge.toml"])
    redis_service = docs[("Service", "aibridge-redis")]
    assert parsed["state"]["url"] == \
        f"redis://{redis_service['metadata']['name']}:{redis_service['spec']['ports'][0]['port']}/0"
    actors = docs[("Secret", "aibridge-actors")]["stringData"]
    assert parsed["auth"]["actors_file"] in actors
    service = docs[("Service", "aibridge")]
    assert service["spec"]["selector"] == \
        docs[("Deployment", "aibridge")]["spec"]["template"]["metadata"]["labels"]
    assert service["spec"]["ports"][0]["targetPort"] == PORT
    assert service["spec"]["externalTrafficPolicy"] == "Local"  # client addresses survive
    ca = docs[("Secret", "aibridge-ca")]["stringData"]
    assert set(ca) == {"mitmproxy-ca.pem", "mitmproxy-ca-cert.pem"}


def test_serve_writes_a_haproxy_config_haproxy_accepts(tmp_path):
    cfg = serve.haproxy_config(listen_host="127.0.0.1", listen_port=18080,
                               workers=[18081, 18082], per_source=256, maxconn=1000,
                               control=tmp_path / "haproxy.sock")
    assert "server w1 127.0.0.1:18081 check" in cfg and "server w2 127.0.0.1:18082" in cfg
    assert cfg.count("send-proxy-v2 check-send-proxy") == 2  # the workers read it (127.0.0.1)
    assert f"uri {HEALTH_PATH}" in cfg and "sc0_conn_cur gt 256" in cfg
    haproxy = shutil.which("haproxy") or "/usr/sbin/haproxy"
    if not Path(haproxy).exists():
        pytest.fail("haproxy is not installed: run scripts/setup")
    (tmp_path / "haproxy.cfg").write_text(cfg)
    done = subprocess.run([haproxy, "-c", "-f", str(tmp_path / "haproxy.cfg")],
                          capture_output=True, text=True, timeout=30)
    assert done.returncode == 0, done.stderr


def test_serve_adds_the_bridge_and_refuses_listeners_of_its_own():
    args = serve.worker_args(["--", "--set", "bridge_config=x.toml"], 9999)
    assert args[:2] == ["-s", str(serve.BRIDGE_SCRIPT)] and serve.BRIDGE_SCRIPT.exists()
    assert args[-4:] == ["--listen-host", "127.0.0.1", "--listen-port", "9999"]
    assert args[-6:-4] == ["--set", f"bridge_proxy_protocol={serve.BALANCER}"]
    assert serve.worker_args(["-s", "mine.py"], 1)[:2] == ["-s", "mine.py"]
    assert "loopback ports" in (serve.refusal(["--mode", "regular@0.0.0.0:1"], "") or "")
    assert "loopback ports" in (serve.refusal(["-p", "1"], "127.0.0.1") or "")
    assert serve.refusal([], "127.0.0.1") is None
    assert "open proxy" in (serve.refusal([], "0.0.0.0") or "")


def test_worker_ports_are_distinct_and_never_the_listen_port(monkeypatch):
    """The public port is bound by HAProxy only after the workers answer, so the system may
    offer it to a worker meanwhile (a run where it did ended with HAProxy unable to bind)."""
    import socket as socket_module

    offered = iter([41409, 41409, 50001, 41409, 50002, 50003])

    class Fake:
        def __init__(self, *_a) -> None:
            self.port = 0

        def bind(self, _address) -> None:
            self.port = next(offered)

        def getsockname(self):
            return ("127.0.0.1", self.port)

        def close(self) -> None:
            pass

    monkeypatch.setattr(socket_module, "socket", Fake)
    assert serve.free_ports(3, avoid={41409}) == [50001, 50002, 50003]
    monkeypatch.undo()
    real = serve.free_ports(8)
    assert len(set(real)) == 8
