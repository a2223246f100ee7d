#!/usr/bin/env python3
"""Offline validation of the Kubernetes manifests in k8s/ (run by scripts/validate-k8s.sh).

For every overlay under k8s/overlays/ it renders the kustomization with a real kustomize
(`kustomize build`, else `kubectl kustomize`) and checks every rendered object:

* core kinds against the Kubernetes JSON schemas shipped by the PyPI package
  kubernetes-validate, in strict mode (unknown fields fail), for each --k8s-version;
* ServiceMonitor and PrometheusRule (CRDs, not in those schemas) against the hand-written
  subsets in scripts/k8s-schemas/, and the alert expressions with promtool when it is on PATH;
* the references between objects that no schema sees: Service, PDB, NetworkPolicy and
  ServiceMonitor selectors against the pods, named ports, the HPA's target, ConfigMaps used by
  the pods, the regions GeoJSON (the rules of src/geo/region.rs), environment variable names
  against src/config/, metric names in alerts against src/, the shutdown budget, non-root
  and read-only settings, no Secret rendered, image tags set, the region count of the alert on
  unowned regions against the regions file, and that a Deployment that may run more than one
  replica reads REDIS_URL from a required Secret key (replicas share the regions, and route
  commands to each other, only through Redis); the engine's settings, probes, shutdown budget
  and Redis rules apply to its own pods (app.kubernetes.io/name: mealkitz), not to OSRM's;
* an engine given MEALKITZ_OSRM_URL=http://<service>:<port> (k8s/components/maps): that Service
  is rendered with that port, a pod behind it listens there, and the engine's NetworkPolicy
  lets it out to it.

Files named *.example.yaml under k8s/ are validated on their own. Without any kustomize on
PATH it says so and validates each file separately (the issue allows that), which cannot check
the overlays' patches and generators. Exit status: 0 valid, 1 invalid, 2 could not run.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import jsonschema
import kubernetes_validate
import yaml

ROOT = Path(__file__).resolve().parent.parent
K8S = ROOT / "k8s"
SCHEMAS = Path(__file__).resolve().parent / "k8s-schemas"
DEFAULT_VERSIONS = ["1.30", "1.37"]

# Kinds without a namespace.
CLUSTER_SCOPED = {"Namespace", "ClusterRole", "ClusterRoleBinding", "CustomResourceDefinition"}
# Read by the engine but not declared in src/config/ (tracing's filter).
EXTRA_ENV = {"RUST_LOG"}
# Metrics from kube-state-metrics and Prometheus itself, which the alerts may use.
FOREIGN_METRIC_PREFIXES = ("kube_", "up")
# Shutdown: the engine exits within this many seconds of SIGTERM (docs/operations.md).
DRAIN_SECS = 10
# With it, replicas share the regions and route commands to each other (src/cluster.rs,
# src/actors/remote.rs); without it one replica holds every region and the others stand by.
REDIS_VAR = "REDIS_URL"
GEOJSON_TYPES = {"Polygon", "MultiPolygon"}
# The engine's pods carry this label (k8s/base); other workloads (OSRM, k8s/components/maps)
# are not held to the engine's settings, probes, shutdown budget and Redis rules.
ENGINE_LABEL = ("app.kubernetes.io/name", "mealkitz")
# The engine's setting naming the OSRM server (src/config/maps.rs).
OSRM_URL_VAR = "MEALKITZ_OSRM_URL"


class Report:
    def __init__(self) -> None:
        self.errors: list[str] = []
        self.notes: list[str] = []
        # (Secret name, key) read by the rendered pods, to check the example Secrets against.
        self.secret_keys: set[tuple[str, str]] = set()

    def error(self, where: str, message: str) -> None:
        self.errors.append(f"{where}: {message}")

    def note(self, message: str) -> None:
        if message not in self.notes:
            self.notes.append(message)


def ident(obj: dict) -> str:
    meta = obj.get("metadata") or {}
    return f"{obj.get('kind', '?')}/{meta.get('name', '?')}"


# --------------------------------------------------------------------------------------------
# Rendering


def find_renderer() -> tuple[list[str], str] | None:
    """The command that renders a kustomization directory, and its description."""
    if shutil.which("kustomize"):
        version = run_quiet(["kustomize", "version"])
        return ["kustomize", "build"], f"kustomize {version}"
    if shutil.which("kubectl"):
        out = run_quiet(["kubectl", "version", "--client"])
        match = re.search(r"Kustomize Version:\s*(\S+)", out)
        return ["kubectl", "kustomize"], f"kubectl kustomize ({match.group(1) if match else 'built-in'})"
    return None


def run_quiet(cmd: list[str]) -> str:
    try:
        return subprocess.run(cmd, check=False, capture_output=True, text=True, timeout=30).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "?"


def render(renderer: list[str], directory: Path) -> tuple[list[dict] | None, str]:
    proc = subprocess.run(renderer + [str(directory)], check=False, capture_output=True, text=True, timeout=120)
    if proc.returncode != 0:
        return None, proc.stderr.strip() or proc.stdout.strip()
    try:
        return [d for d in yaml.safe_load_all(proc.stdout) if d], ""
    except yaml.YAMLError as error:
        return None, f"rendered output is not YAML: {error}"


def load_yaml_file(path: Path, report: Report) -> list[dict]:
    try:
        docs = [d for d in yaml.safe_load_all(path.read_text()) if d]
    except (OSError, yaml.YAMLError) as error:
        report.error(rel(path), f"cannot be read as YAML: {error}")
        return []
    for doc in docs:
        if not isinstance(doc, dict):
            report.error(rel(path), "a document is not a mapping")
    return [d for d in docs if isinstance(d, dict)]


def rel(path: Path) -> str:
    try:
        return str(path.relative_to(ROOT))
    except ValueError:
        return str(path)


# --------------------------------------------------------------------------------------------
# Schemas


def crd_validators() -> dict[tuple[str, str], jsonschema.protocols.Validator]:
    validators = {}
    for path in sorted(SCHEMAS.glob("*.json")):
        schema = json.loads(path.read_text())
        jsonschema.Draft202012Validator.check_schema(schema)
        kind = schema["properties"]["kind"]["const"]
        api_version = schema["properties"]["apiVersion"]["const"]
        validators[(api_version, kind)] = jsonschema.Draft202012Validator(schema)
    return validators


def validate_schema(obj: dict, where: str, versions: list[str], crds: dict, report: Report) -> None:
    key = (obj.get("apiVersion"), obj.get("kind"))
    if key in crds:
        for error in sorted(crds[key].iter_errors(obj), key=lambda e: list(e.absolute_path)):
            path = ".".join(str(p) for p in error.absolute_path) or "(top)"
            report.error(where, f"{ident(obj)}: {path}: {error.message} (schema {SCHEMAS.name}/)")
        return
    for version in versions:
        try:
            kubernetes_validate.validate(obj, version, strict=True)
        except kubernetes_validate.SchemaNotFoundError:
            report.error(where, f"{ident(obj)}: no schema for {obj.get('apiVersion')} {obj.get('kind')} "
                                f"in Kubernetes {version} (add one under scripts/k8s-schemas/ if it is a CRD)")
            return
        except kubernetes_validate.ValidationError as error:
            path = ".".join(str(p) for p in error.path) or "(top)"
            report.error(where, f"{ident(obj)}: {path}: {error.message} (Kubernetes {version})")
            return


# --------------------------------------------------------------------------------------------
# Cross-object checks on one rendered overlay


def matches(selector: dict | None, labels: dict) -> bool:
    if not selector:
        return False
    for key, value in (selector.get("matchLabels") or {}).items():
        if labels.get(key) != value:
            return False
    for expr in selector.get("matchExpressions") or []:
        key, op, values = expr.get("key"), expr.get("operator"), expr.get("values") or []
        if op == "In" and labels.get(key) not in values:
            return False
        if op == "NotIn" and labels.get(key) in values:
            return False
        if op == "Exists" and key not in labels:
            return False
        if op == "DoesNotExist" and key in labels:
            return False
    return True


def config_env_names() -> set[str] | None:
    sources = sorted((ROOT / "src" / "config").glob("*.rs")) + [ROOT / "src" / "cli.rs"]
    if not any(source.is_file() for source in sources):
        return None
    names = set()
    for source in sources:
        if source.is_file():
            names |= set(re.findall(r'env\s*=\s*"([A-Z0-9_]+)"', source.read_text()))
    return names | EXTRA_ENV


def metric_defined_in_src(name: str) -> bool:
    base = re.sub(r"_(bucket|sum|count)$", "", name)
    needle = f'"{base}"'
    for path in (ROOT / "src").rglob("*.rs"):
        if needle in path.read_text():
            return True
    return False


def is_engine(template: dict) -> bool:
    labels = (template.get("metadata") or {}).get("labels") or {}
    return labels.get(ENGINE_LABEL[0]) == ENGINE_LABEL[1]


def pod_workloads(objects: list[dict]) -> list[tuple[dict, dict]]:
    """(workload, pod template) for Deployments and Jobs."""
    out = []
    for obj in objects:
        if obj.get("kind") in ("Deployment", "StatefulSet", "DaemonSet", "Job"):
            out.append((obj, ((obj.get("spec") or {}).get("template") or {})))
    return out


def check_objects(where: str, objects: list[dict], namespace: str | None, report: Report,
                  env_names: set[str] | None) -> None:
    by_kind: dict[str, list[dict]] = {}
    for obj in objects:
        by_kind.setdefault(obj.get("kind", "?"), []).append(obj)
    names = {(o.get("kind"), (o.get("metadata") or {}).get("name")) for o in objects}
    if len(names) != len(objects):
        report.error(where, "two objects share a kind and name")
    configmaps = {o["metadata"]["name"]: o for o in by_kind.get("ConfigMap", [])}

    for obj in objects:
        ns = (obj.get("metadata") or {}).get("namespace")
        if obj.get("kind") not in CLUSTER_SCOPED and namespace and ns != namespace:
            report.error(where, f"{ident(obj)}: namespace is {ns!r}, expected {namespace!r}")

    for secret in by_kind.get("Secret", []):
        report.error(where, f"{ident(secret)}: a Secret is rendered; secrets are created out of band "
                            "(only *.example.yaml files may hold placeholder Secrets)")

    workloads = pod_workloads(objects)
    servers = [(w, t) for w, t in workloads if w.get("kind") == "Deployment"]
    if not servers:
        report.error(where, "no Deployment rendered")
    for workload, template in workloads:
        check_pod(where, workload, template, configmaps, report, env_names)

    pod_labels = [((t.get("metadata") or {}).get("labels") or {}) for _, t in servers]
    for deployment, template in servers:
        selector = (deployment.get("spec") or {}).get("selector")
        if not matches(selector, (template.get("metadata") or {}).get("labels") or {}):
            report.error(where, f"{ident(deployment)}: selector does not match its pod template's labels")

    container_ports = {p.get("name"): p.get("containerPort")
                       for _, t in servers for c in (t.get("spec") or {}).get("containers", [])
                       for p in c.get("ports") or [] if p.get("name")}
    services = by_kind.get("Service", [])
    for service in services:
        spec = service.get("spec") or {}
        if not any(matches({"matchLabels": spec.get("selector") or {}}, labels) for labels in pod_labels):
            report.error(where, f"{ident(service)}: selector {spec.get('selector')} matches no pod template")
        for port in spec.get("ports") or []:
            target = port.get("targetPort", port.get("port"))
            if isinstance(target, str) and target not in container_ports:
                report.error(where, f"{ident(service)}: targetPort {target!r} is not a container port name "
                                    f"({sorted(container_ports)})")
            if isinstance(target, int) and target not in container_ports.values():
                report.error(where, f"{ident(service)}: targetPort {target} is not a container port")

    for pdb in by_kind.get("PodDisruptionBudget", []):
        if not any(matches((pdb.get("spec") or {}).get("selector"), labels) for labels in pod_labels):
            report.error(where, f"{ident(pdb)}: selector matches no pod template")

    for policy in by_kind.get("NetworkPolicy", []):
        spec = policy.get("spec") or {}
        if not any(matches(spec.get("podSelector"), labels) for labels in pod_labels):
            report.error(where, f"{ident(policy)}: podSelector matches no pod")
        allowed = {p.get("port") for rule in spec.get("ingress") or [] for p in rule.get("ports") or []}
        selected_ports = {(p.get("name"), p.get("containerPort"))
                          for _, t in servers
                          if matches(spec.get("podSelector"), (t.get("metadata") or {}).get("labels") or {})
                          for c in (t.get("spec") or {}).get("containers", []) for p in c.get("ports") or []}
        for name, number in sorted(selected_ports, key=str):
            if name not in allowed and number not in allowed:
                report.error(where, f"{ident(policy)}: ingress does not allow container port {name} ({number})")

    check_osrm_url(where, servers, services, by_kind.get("NetworkPolicy", []), configmaps, report)

    hpas = by_kind.get("HorizontalPodAutoscaler", [])
    for deployment, template in servers:
        if is_engine(template):
            check_sharing(where, deployment, template, hpas, configmaps, report)

    for hpa in hpas:
        spec = hpa.get("spec") or {}
        ref = spec.get("scaleTargetRef") or {}
        if (ref.get("kind"), ref.get("name")) not in names:
            report.error(where, f"{ident(hpa)}: scaleTargetRef {ref.get('kind')}/{ref.get('name')} is not rendered")
        if spec.get("minReplicas", 1) > spec.get("maxReplicas", 0):
            report.error(where, f"{ident(hpa)}: minReplicas is above maxReplicas")
        for deployment, _ in servers:
            if deployment["metadata"]["name"] == ref.get("name"):
                replicas = (deployment.get("spec") or {}).get("replicas", 1)
                if not spec.get("minReplicas", 1) <= replicas <= spec.get("maxReplicas", 0):
                    report.error(where, f"{ident(deployment)}: replicas {replicas} is outside the HPA's "
                                        f"{spec.get('minReplicas', 1)}–{spec.get('maxReplicas')}")

    for monitor in by_kind.get("ServiceMonitor", []):
        spec = monitor.get("spec") or {}
        selected = [s for s in services if matches(spec.get("selector"), (s.get("metadata") or {}).get("labels") or {})]
        if not selected:
            report.error(where, f"{ident(monitor)}: selector matches no Service's labels")
        port_names = {p.get("name") for s in selected for p in (s.get("spec") or {}).get("ports") or []}
        for endpoint in spec.get("endpoints") or []:
            if "port" in endpoint and endpoint["port"] not in port_names:
                report.error(where, f"{ident(monitor)}: endpoint port {endpoint['port']!r} is not a port name "
                                    f"of the selected Service ({sorted(n for n in port_names if n)})")

    region_counts = set()
    for config_map in configmaps.values():
        for key, text in ((config_map.get("data") or {}).items()):
            if key.endswith(".geojson") and not regions_problems(text):
                region_counts.add(len(json.loads(text)["features"]))
    for rule_object in by_kind.get("PrometheusRule", []):
        check_rules(where, rule_object, report)
        if len(region_counts) == 1:
            check_region_count(where, rule_object, next(iter(region_counts)), report)


def check_pod(where: str, workload: dict, template: dict, configmaps: dict, report: Report,
              env_names: set[str] | None) -> None:
    name = ident(workload)
    spec = template.get("spec") or {}
    pod_security = spec.get("securityContext") or {}
    if pod_security.get("runAsNonRoot") is not True:
        report.error(where, f"{name}: pod securityContext.runAsNonRoot is not true")
    if not isinstance(pod_security.get("runAsUser"), int) or pod_security.get("runAsUser") == 0:
        report.error(where, f"{name}: pod securityContext.runAsUser must be a non-zero uid (the image's is 10001)")
    volumes = {v.get("name"): v for v in spec.get("volumes") or []}
    for volume in volumes.values():
        ref = (volume.get("configMap") or {}).get("name")
        if ref is not None and ref not in configmaps and not (volume["configMap"].get("optional")):
            report.error(where, f"{name}: volume {volume.get('name')} uses ConfigMap {ref}, which is not rendered")

    for container in spec.get("containers") or []:
        cname = f"{name} container {container.get('name')}"
        image = container.get("image", "")
        if ":" not in image.rsplit("/", 1)[-1] and "@" not in image:
            report.error(where, f"{cname}: image {image!r} has no tag (the overlay's images: entry did not apply)")
        elif "/" not in image:
            report.error(where, f"{cname}: image {image!r} has no registry path (set it in the overlay's images:)")
        elif image.endswith(":latest"):
            report.error(where, f"{cname}: image {image!r} uses the tag latest")
        security = container.get("securityContext") or {}
        if security.get("allowPrivilegeEscalation") is not False:
            report.error(where, f"{cname}: allowPrivilegeEscalation is not false")
        mounts = {m.get("mountPath"): m for m in container.get("volumeMounts") or []}
        if security.get("readOnlyRootFilesystem") is True and "/tmp" not in mounts:
            report.error(where, f"{cname}: read-only root filesystem without a volume at /tmp")
        for mount in mounts.values():
            if mount.get("name") not in volumes:
                report.error(where, f"{cname}: volumeMount {mount.get('name')} has no volume")

        env: dict[str, str | None] = {}
        for source in container.get("envFrom") or []:
            ref = (source.get("configMapRef") or {}).get("name")
            if ref is not None:
                if ref not in configmaps:
                    report.error(where, f"{cname}: envFrom ConfigMap {ref} is not rendered")
                    continue
                env.update(configmaps[ref].get("data") or {})
        for var in container.get("env") or []:
            env[var.get("name")] = var.get("value")
            key_ref = (var.get("valueFrom") or {}).get("secretKeyRef")
            # A key marked optional may be left out of a Secret (the setting stays unset).
            if key_ref and not key_ref.get("optional"):
                report.secret_keys.add((key_ref.get("name"), key_ref.get("key")))
                report.note(f"{where}: {cname} reads {var.get('name')} from Secret "
                            f"{key_ref.get('name')} key {key_ref.get('key')}")
        if env_names is not None and is_engine(template):
            for var in env:
                if var not in env_names:
                    report.error(where, f"{cname}: environment variable {var} is not a setting of the engine "
                                        "(src/config/)")
        regions = env.get("MEALKITZ_REGIONS")
        if regions:
            check_regions_mount(where, cname, regions, mounts, volumes, configmaps, report)

        ports = {p.get("name") for p in container.get("ports") or []}
        for probe_name in ("livenessProbe", "readinessProbe", "startupProbe"):
            probe = container.get(probe_name)
            port = ((probe or {}).get("httpGet") or {}).get("port")
            if isinstance(port, str) and port not in ports:
                report.error(where, f"{cname}: {probe_name} port {port!r} is not a named container port")

        if workload.get("kind") == "Deployment" and is_engine(template):
            deployment_spec = workload.get("spec") or {}
            strategy = deployment_spec.get("strategy") or {}
            if deployment_spec.get("replicas", 1) == 1 and strategy.get("type", "RollingUpdate") == "RollingUpdate" \
                    and str((strategy.get("rollingUpdate") or {}).get("maxSurge", "25%")) not in ("0", "0%") \
                    and redis_problem(container, configmaps) is not None:
                report.error(where, f"{name}: one replica with a surging rolling update but without a required "
                                    f"{REDIS_VAR}: the new pod would stand by, never Ready, while the old one holds "
                                    "every region, and the rollout would stall; read REDIS_URL from a required "
                                    "Secret key, or use strategy Recreate (components/single-replica)")
            grace = spec.get("terminationGracePeriodSeconds", 30)
            command = ((((container.get("lifecycle") or {}).get("preStop") or {}).get("exec") or {})
                       .get("command") or [])
            pause = int(command[1]) if len(command) == 2 and command[0] == "sleep" and command[1].isdigit() else 0
            if grace < pause + DRAIN_SECS:
                report.error(where, f"{name}: terminationGracePeriodSeconds {grace} is less than the preStop "
                                    f"pause ({pause} s) plus the {DRAIN_SECS} s drain")
            for probe_name, path in (("livenessProbe", "/health"), ("readinessProbe", "/ready")):
                got = ((container.get(probe_name) or {}).get("httpGet") or {}).get("path")
                if got != path:
                    report.error(where, f"{cname}: {probe_name} should GET {path}, not {got!r}")


def redis_problem(container: dict, configmaps: dict) -> str | None:
    """Why `container` may start without REDIS_URL, or None when it reads it from a Secret key
    that must exist (secretKeyRef without `optional: true`)."""
    for var in container.get("env") or []:
        if var.get("name") != REDIS_VAR:
            continue
        key_ref = (var.get("valueFrom") or {}).get("secretKeyRef")
        if not key_ref:
            return (f"{REDIS_VAR} is not read from a Secret (it holds the Redis password; use "
                    "valueFrom.secretKeyRef)")
        if key_ref.get("optional") is True:
            return (f"{REDIS_VAR} comes from Secret {key_ref.get('name')} key {key_ref.get('key')} with "
                    "optional: true, so a pod without that key starts without Redis")
        return None
    for source in container.get("envFrom") or []:
        ref = (source.get("configMapRef") or {}).get("name")
        if ref and REDIS_VAR in ((configmaps.get(ref) or {}).get("data") or {}):
            return f"{REDIS_VAR} comes from ConfigMap {ref}, not from a Secret"
    return f"{REDIS_VAR} is not set"


def check_osrm_url(where: str, servers: list[tuple[dict, dict]], services: list[dict], policies: list[dict],
                   configmaps: dict, report: Report) -> None:
    """An engine told to ask OSRM at http://<service>:<port> (k8s/components/maps) must find that
    Service rendered with that port, selecting a pod that listens on it, and its NetworkPolicies
    must let it out to that port."""
    for deployment, template in servers:
        if not is_engine(template):
            continue
        labels = (template.get("metadata") or {}).get("labels") or {}
        for container in (template.get("spec") or {}).get("containers") or []:
            env: dict[str, str | None] = {}
            for source in container.get("envFrom") or []:
                ref = (source.get("configMapRef") or {}).get("name")
                env.update(((configmaps.get(ref) or {}).get("data") or {}) if ref else {})
            for var in container.get("env") or []:
                env[var.get("name")] = var.get("value")
            url = env.get(OSRM_URL_VAR)
            if not url:
                continue
            cname = f"{ident(deployment)} container {container.get('name')}"
            match = re.fullmatch(r"https?://([a-z0-9-]+)(?:\.[a-z0-9.-]+)?(?::(\d+))?/?", url)
            if not match:
                report.note(f"{where}: {cname}: {OSRM_URL_VAR}={url} is outside the cluster; not checked")
                continue
            host, port = match.group(1), int(match.group(2) or (443 if url.startswith("https") else 80))
            service = next((s for s in services if s["metadata"]["name"] == host), None)
            if service is None:
                report.error(where, f"{cname}: {OSRM_URL_VAR}={url} names Service {host}, which is not rendered")
                continue
            ports = [p for p in (service.get("spec") or {}).get("ports") or [] if p.get("port") == port]
            if not ports:
                report.error(where, f"{cname}: {OSRM_URL_VAR}={url}: Service {host} has no port {port}")
                continue
            selector = {"matchLabels": (service.get("spec") or {}).get("selector") or {}}
            backends = [t for _, t in servers if matches(selector, (t.get("metadata") or {}).get("labels") or {})]
            target = ports[0].get("targetPort", port)
            listening = {value for t in backends for c in (t.get("spec") or {}).get("containers") or []
                         for p in c.get("ports") or [] for value in (p.get("name"), p.get("containerPort"))}
            if target not in listening:
                report.error(where, f"{cname}: {OSRM_URL_VAR}={url}: no pod behind Service {host} listens on "
                                    f"{target!r}")
                continue
            target_number = next((p.get("containerPort") for t in backends
                                  for c in (t.get("spec") or {}).get("containers") or []
                                  for p in c.get("ports") or [] if target in (p.get("name"), p.get("containerPort"))),
                                 target)
            for policy in policies:
                spec = policy.get("spec") or {}
                if "Egress" not in (spec.get("policyTypes") or []) or not matches(spec.get("podSelector"), labels):
                    continue
                if not any(not rule.get("ports") or any(p.get("port") in (target_number, target)
                                                        for p in rule.get("ports") or [])
                           for rule in spec.get("egress") or []):
                    report.error(where, f"{ident(policy)}: no egress rule lets {ident(deployment)} reach "
                                        f"{OSRM_URL_VAR}={url} (port {target_number})")


def check_sharing(where: str, deployment: dict, template: dict, hpas: list[dict], configmaps: dict,
                  report: Report) -> None:
    """More than one replica needs Redis: without it a replica claims every region or none, so
    all but one stand by, never Ready, and rolling updates and node drains stall."""
    name = ident(deployment)
    most = (deployment.get("spec") or {}).get("replicas", 1)
    source = f"replicas {most}"
    for hpa in hpas:
        spec = hpa.get("spec") or {}
        ref = spec.get("scaleTargetRef") or {}
        if ref.get("kind") == "Deployment" and ref.get("name") == deployment["metadata"]["name"] \
                and spec.get("maxReplicas", 0) > most:
            most, source = spec["maxReplicas"], f"{ident(hpa)} maxReplicas {spec['maxReplicas']}"
    if most <= 1:
        return
    for container in (template.get("spec") or {}).get("containers") or []:
        problem = redis_problem(container, configmaps)
        if problem is not None:
            report.error(where, f"{name} container {container.get('name')}: runs up to {most} replicas "
                                f"({source}) but {problem}. Replicas share the regions and route commands "
                                f"to each other only through Redis; without it one replica holds every region "
                                f"and the others stand by, never Ready. Read {REDIS_VAR} from a Secret key "
                                "without optional: true, or run one replica (components/single-replica)")


def check_regions_mount(where: str, cname: str, path: str, mounts: dict, volumes: dict,
                        configmaps: dict, report: Report) -> None:
    for mount_path, mount in mounts.items():
        prefix = mount_path.rstrip("/") + "/"
        if not path.startswith(prefix):
            continue
        file_name = path[len(prefix):]
        config_map = (volumes.get(mount.get("name")) or {}).get("configMap")
        if not config_map:
            report.error(where, f"{cname}: MEALKITZ_REGIONS {path} is not on a ConfigMap volume")
            return
        items = config_map.get("items")
        key = next((i["key"] for i in items if i.get("path") == file_name), None) if items else file_name
        data = (configmaps.get(config_map.get("name")) or {}).get("data") or {}
        if key is None or key not in data:
            report.error(where, f"{cname}: MEALKITZ_REGIONS {path} is no key of ConfigMap {config_map.get('name')}")
            return
        for problem in regions_problems(data[key]):
            report.error(where, f"{cname}: regions GeoJSON ({config_map.get('name')}/{key}): {problem}")
        return
    report.error(where, f"{cname}: MEALKITZ_REGIONS {path} is under no volume mount")


def regions_problems(text: str) -> list[str]:
    """The rules of RegionMap::from_geojson (src/geo/region.rs), minus polygon validity."""
    try:
        doc = json.loads(text)
    except ValueError as error:
        return [f"not JSON: {error}"]
    if not isinstance(doc, dict) or doc.get("type") != "FeatureCollection" or not isinstance(doc.get("features"), list):
        return ["not a FeatureCollection with a features array"]
    if not doc["features"]:
        return ["no features"]
    problems, seen = [], set()
    for index, feature in enumerate(doc["features"]):
        if not isinstance(feature, dict) or feature.get("type") != "Feature":
            problems.append(f"feature {index} is not a Feature")
            continue
        fid = (feature.get("properties") or {}).get("id")
        if not isinstance(fid, str) or not fid:
            problems.append(f"feature {index} has no non-empty string properties.id")
            continue
        if fid in seen:
            problems.append(f"duplicate region id {fid!r}")
        seen.add(fid)
        geometry = feature.get("geometry") or {}
        kind = geometry.get("type")
        if kind not in GEOJSON_TYPES:
            problems.append(f"feature {fid!r} geometry is {kind!r}, not Polygon or MultiPolygon")
            continue
        polygons = [geometry.get("coordinates")] if kind == "Polygon" else geometry.get("coordinates")
        if not isinstance(polygons, list) or not polygons:
            problems.append(f"feature {fid!r} has malformed coordinates")
            continue
        for polygon in polygons:
            if not isinstance(polygon, list) or not polygon:
                problems.append(f"feature {fid!r} has a polygon without rings")
                continue
            for ring in polygon:
                problems.extend(ring_problems(fid, ring))
    return problems


def ring_problems(fid: str, ring: object) -> list[str]:
    if not isinstance(ring, list):
        return [f"feature {fid!r} has a ring that is not an array"]
    for position in ring:
        if not (isinstance(position, list) and len(position) >= 2
                and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in position[:2])):
            return [f"feature {fid!r} has a position that is not [lon, lat]"]
        lon, lat = position[0], position[1]
        if not (math.isfinite(lon) and math.isfinite(lat) and -180 <= lon <= 180 and -90 <= lat <= 90):
            return [f"feature {fid!r} has a position out of range [{lon}, {lat}]"]
    if len(ring) < 4:
        return [f"feature {fid!r} has a ring with {len(ring)} positions; a closed ring needs at least 4"]
    if ring[0][:2] != ring[-1][:2]:
        return [f"feature {fid!r} has a ring whose first and last positions differ"]
    return []


def check_rules(where: str, rule_object: dict, report: Report) -> None:
    groups = ((rule_object.get("spec") or {}).get("groups")) or []
    alerts = [r.get("alert") for g in groups for r in g.get("rules") or [] if r.get("alert")]
    for alert in {a for a in alerts if alerts.count(a) > 1}:
        report.error(where, f"{ident(rule_object)}: alert {alert} is defined twice")
    src_present = (ROOT / "src").is_dir()
    for group in groups:
        for rule in group.get("rules") or []:
            expr = str(rule.get("expr", ""))
            label = rule.get("alert") or rule.get("record")
            if not src_present:
                continue
            # Metric names: identifiers not followed by "(" or inside {...} / by (...) lists.
            stripped = re.sub(r'\{[^}]*\}|"[^"]*"|\b(by|without|on|ignoring)\s*\([^)]*\)', " ", expr)
            for token in re.findall(r"\b([a-z_][a-z0-9_]*)\b(?!\s*\()", stripped):
                if token in {"by", "without", "and", "or", "unless", "bool", "on", "ignoring", "offset",
                             "group_left", "group_right", "le"}:
                    continue
                if token.startswith(FOREIGN_METRIC_PREFIXES):
                    continue
                if not metric_defined_in_src(token):
                    report.error(where, f"{ident(rule_object)}: {label}: metric {token} is not recorded "
                                        "anywhere in src/")
    promtool = os.environ.get("PROMTOOL") or shutil.which("promtool")
    if not promtool:
        report.note("promtool not on PATH: alert expressions were not parsed as PromQL "
                    "(set PROMTOOL or install it to check them)")
        return
    with tempfile.NamedTemporaryFile("w", suffix=".yaml", delete=False) as handle:
        yaml.safe_dump({"groups": groups}, handle)
        rules_file = handle.name
    try:
        proc = subprocess.run([promtool, "check", "rules", rules_file],
                              check=False, capture_output=True, text=True, timeout=60)
    finally:
        os.unlink(rules_file)
    if proc.returncode != 0:
        detail = (proc.stdout + proc.stderr).strip().replace(rules_file, "rules")
        report.error(where, f"{ident(rule_object)}: promtool check rules failed:\n{detail}")
    else:
        report.note(f"promtool {promtool_version(promtool)} parsed the alert rules")


def check_region_count(where: str, rule_object: dict, regions: int, report: Report) -> None:
    """An alert comparing the regions held (`sum(cluster_regions_owned) < N`) must use the number
    of regions in the rendered regions file."""
    for group in ((rule_object.get("spec") or {}).get("groups")) or []:
        for rule in group.get("rules") or []:
            for number in re.findall(r"cluster_regions_owned\s*\)\s*<\s*(\d+)", str(rule.get("expr", ""))):
                if int(number) != regions:
                    report.error(where, f"{ident(rule_object)}: {rule.get('alert') or rule.get('record')}: compares "
                                        f"the regions held with {number}, but the regions file has {regions} "
                                        "regions; change both together")


def promtool_version(promtool: str) -> str:
    match = re.search(r"version (\S+)", run_quiet([promtool, "--version"]))
    return match.group(1) if match else ""


# --------------------------------------------------------------------------------------------
# Without a renderer: every file on its own


def kustomization(directory: Path) -> dict:
    for name in ("kustomization.yaml", "kustomization.yml", "Kustomization"):
        path = directory / name
        if path.is_file():
            return yaml.safe_load(path.read_text()) or {}
    return {}


def validate_files_separately(versions: list[str], crds: dict, report: Report) -> int:
    count = 0
    base = K8S / "base"
    k = kustomization(base)
    base_objects = []
    for entry in k.get("resources") or []:
        path = base / entry
        if path.is_dir():
            continue
        for obj in load_yaml_file(path, report):
            validate_schema(obj, rel(path), versions, crds, report)
            base_objects.append(obj)
            count += 1
    targets = {(o.get("kind"), o["metadata"]["name"]) for o in base_objects if o.get("metadata")}
    for generator in k.get("configMapGenerator") or []:
        for entry in generator.get("files") or []:
            if entry.endswith(".geojson"):
                for problem in regions_problems((base / entry).read_text()):
                    report.error(rel(base / entry), problem)
    env_names = config_env_names()
    if env_names is not None:
        for generator in k.get("configMapGenerator") or []:
            for entry in generator.get("envs") or []:
                for line in (base / entry).read_text().splitlines():
                    line = line.strip()
                    if line and not line.startswith("#"):
                        var = line.split("=", 1)[0]
                        if var not in env_names:
                            report.error(rel(base / entry), f"{var} is not a setting of the engine (src/config/)")
    for directory in [K8S / "components" / d.name for d in sorted((K8S / "components").glob("*"))] + \
            sorted(p for p in (K8S / "overlays").glob("*") if p.is_dir()):
        for entry in kustomization(directory).get("patches") or []:
            if "path" in entry:
                for obj in load_yaml_file(directory / entry["path"], report):
                    if (obj.get("kind"), (obj.get("metadata") or {}).get("name")) not in targets:
                        report.error(rel(directory / entry["path"]), f"patch target {ident(obj)} is not in the base")
    return count


def targets(overlays: list[Path], scratch: Path):
    """(name, directory, namespace) to render: each overlay, and each overlay that uses no
    component combined with each component under k8s/components/ (e.g. prod + single-replica,
    one pod for the whole city; prod + maps, OSRM beside the engine), rendered from a copy of
    k8s/ in the overlay's namespace."""
    for overlay in overlays:
        yield rel(overlay), overlay, kustomization(overlay).get("namespace")
    components = sorted(p for p in (K8S / "components").glob("*") if kustomization(p)) \
        if (K8S / "components").is_dir() else []
    if not components:
        return
    copy = scratch / "k8s"
    shutil.copytree(K8S, copy)
    for overlay in overlays:
        if kustomization(overlay).get("components"):
            continue
        for component in components:
            variant = copy / "variants" / f"{overlay.name}+{component.name}"
            variant.mkdir(parents=True)
            variant_kustomization = {
                "apiVersion": "kustomize.config.k8s.io/v1beta1",
                "kind": "Kustomization",
                "resources": [f"../../overlays/{overlay.name}"],
                "components": [f"../../components/{component.name}"],
            }
            # As in an overlay that lists the component: its objects land in the namespace too.
            if kustomization(overlay).get("namespace"):
                variant_kustomization["namespace"] = kustomization(overlay)["namespace"]
            (variant / "kustomization.yaml").write_text(yaml.safe_dump(variant_kustomization))
            yield (f"{rel(overlay)} + {rel(component)}", variant, kustomization(overlay).get("namespace"))


# --------------------------------------------------------------------------------------------


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--k8s-version", action="append", dest="versions",
                        help="Kubernetes version to validate against (repeatable; default "
                             f"{' '.join(DEFAULT_VERSIONS)}, or $K8S_VERSIONS)")
    parser.add_argument("--verbose", "-v", action="store_true", help="also print notes")
    args = parser.parse_args()
    versions = args.versions or os.environ.get("K8S_VERSIONS", " ".join(DEFAULT_VERSIONS)).split()
    report = Report()
    try:
        crds = crd_validators()
    except (OSError, ValueError, jsonschema.SchemaError) as error:
        print(f"FAIL: the schemas in {rel(SCHEMAS)} are broken: {error}")
        return 2
    env_names = config_env_names()
    if env_names is None:
        report.note("src/config/ not found: environment variable names were not checked")

    summary = []
    renderer = find_renderer()
    if renderer is None:
        print("WARNING: neither kustomize nor kubectl is on PATH, so the overlays cannot be rendered: "
              "validating each file under k8s/base on its own. Patches, generators, namespaces and "
              "image tags of the overlays are NOT checked.")
        count = validate_files_separately(versions, crds, report)
        status = "ok  " if not report.errors else "FAIL"
        summary.append(f"{status} k8s/base: {count} objects, file by file (overlays not rendered)")
    else:
        command, description = renderer
        print(f"renderer: {description}; schemas: kubernetes-validate {kubernetes_validate.__version__}, "
              f"Kubernetes {', '.join(versions)}, strict; CRDs: {', '.join(sorted(k for _, k in crds))} "
              f"({rel(SCHEMAS)}/)")
        overlays = sorted(p for p in (K8S / "overlays").glob("*") if kustomization(p))
        if not overlays:
            report.error("k8s/overlays", "no overlay found")
        with tempfile.TemporaryDirectory() as scratch:
            for where, directory, namespace in targets(overlays, Path(scratch)):
                objects, problem = render(command, directory)
                if objects is None:
                    report.error(where, f"does not render:\n{problem}")
                    summary.append(f"FAIL {where}: does not render")
                    continue
                before = len(report.errors)
                for obj in objects:
                    validate_schema(obj, where, versions, crds, report)
                check_objects(where, objects, namespace, report, env_names)
                kinds: dict[str, int] = {}
                for obj in objects:
                    kinds[obj.get("kind", "?")] = kinds.get(obj.get("kind", "?"), 0) + 1
                status = "ok  " if len(report.errors) == before else "FAIL"
                summary.append(f"{status} {where}: {len(objects)} objects ("
                               + ", ".join(f"{k}{'×' + str(n) if n > 1 else ''}" for k, n in sorted(kinds.items()))
                               + ")")

    for example in sorted(K8S.rglob("*.example.yaml")):
        before = len(report.errors)
        objects = load_yaml_file(example, report)
        for obj in objects:
            validate_schema(obj, rel(example), versions, crds, report)
            if obj.get("kind") == "Secret":
                annotations = (obj.get("metadata") or {}).get("annotations") or {}
                if not any("dev-only" in key for key in annotations):
                    report.error(rel(example), f"{ident(obj)}: an example Secret must carry a dev-only annotation")
                name = obj["metadata"].get("name")
                keys = set(obj.get("stringData") or {}) | set(obj.get("data") or {})
                for secret, key in sorted(report.secret_keys):
                    if secret == name and key not in keys:
                        report.error(rel(example), f"{ident(obj)}: has no key {key}, which the pods read")
        status = "ok  " if len(report.errors) == before else "FAIL"
        summary.append(f"{status} {rel(example)}: {len(objects)} object{'s' if len(objects) != 1 else ''}, on its own")

    for line in summary:
        print(line)
    if args.verbose:
        for note in report.notes:
            print(f"note: {note}")
    else:
        for note in report.notes:
            if "promtool" in note:
                print(f"note: {note}")
    for error in report.errors:
        print(f"ERROR {error}")
    if report.errors:
        print(f"{len(report.errors)} problem(s) in the Kubernetes manifests")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
