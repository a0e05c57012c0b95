"""The stack's files, checked by the real tools and against the package's names.

Generated files must equal what ``tools.stackgen`` generates now; rules pass
``promtool check`` and their unit tests; the collector and Jaeger configs are
validated by the binaries themselves; dashboards and Grafana alert rules
survive a round trip through grafana-foundation-sdk's models; the compose
file binds to loopback with pinned images and no default credentials.
(Grafana and Docker cannot run here; these are the checks that can.)
"""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml
from grafana_foundation_sdk.models.alerting import Rule
from grafana_foundation_sdk.models.dashboard import Dashboard
from tools.stack import ROOT, binary
from tools.stackgen import __main__ as stackgen
from tools.stackgen import alerts, dashboard
from tools.stackgen._encoding import plain

from poolscope import semconv
from poolscope._analysis import _promql as p

COLLECTOR_CONFIG = ROOT / "collector" / "config.yaml"
RULES = ROOT / "prometheus" / "rules" / "poolscope.rules.yaml"


def _run(argv: list[str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, capture_output=True, text=True, timeout=120, check=False, cwd=ROOT)


def _yaml(path: Path) -> Any:
    return yaml.safe_load(path.read_text())


def test_generated_files_are_committed_as_generated() -> None:
    messages: list[str] = []
    assert stackgen.check(stackgen.generated(), messages.append), "\n".join(messages)


def test_promtool_accepts_the_config_and_the_rules() -> None:
    promtool = binary("promtool")
    result = _run([promtool, "check", "rules", str(RULES)])
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"SUCCESS: {len(alerts.ALERTS)} rules found" in result.stdout
    result = _run([promtool, "check", "config", str(ROOT / "prometheus" / "prometheus.yml")])
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_rules_unit_tests_pass() -> None:
    result = _run(
        [binary("promtool"), "test", "rules", "prometheus/tests/poolscope.rules.test.yaml"]
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_every_alert_has_unit_tests_that_fire_it() -> None:
    tests = _yaml(ROOT / "prometheus" / "tests" / "poolscope.rules.test.yaml")["tests"]
    firing: set[str] = set()
    quiet: set[str] = set()
    for case in tests:
        for check in case["alert_rule_test"]:
            (firing if check["exp_alerts"] else quiet).add(check["alertname"])
    names = {alert.name for alert in alerts.ALERTS}
    assert firing == names and quiet == names


@pytest.mark.parametrize("config", ["config.yaml", "agent.yaml", "gateway.yaml"])
def test_our_collector_validates_each_of_its_configs(config: str) -> None:
    path = ROOT / "collector" / config
    result = _run([binary("collector"), "validate", "--config", str(path)])
    assert result.returncode == 0, result.stdout + result.stderr


def test_jaeger_validates_its_config() -> None:
    result = _run([binary("jaeger"), "validate", "--config", str(ROOT / "jaeger" / "config.yaml")])
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("name", ["config.yaml", "gateway.yaml"])
def test_the_span_metrics_buckets_are_the_packages(name: str) -> None:
    span_metrics = _yaml(ROOT / "collector" / name)["connectors"]["span_metrics"]
    assert span_metrics["namespace"] == p.SPAN_METRICS_NAMESPACE
    assert span_metrics["histogram"]["unit"] == semconv.UNIT_SECONDS
    buckets = [float(b.removesuffix("s")) for b in span_metrics["histogram"]["explicit"]["buckets"]]
    assert buckets == list(semconv.DURATION_BUCKETS)


def test_the_collector_config_matches_the_package() -> None:
    config = _yaml(COLLECTOR_CONFIG)
    span_metrics = config["connectors"]["span_metrics"]
    dimensions = {d["name"] for d in span_metrics["dimensions"]}
    assert {
        semconv.ATTR_EXECUTOR_NAME,
        semconv.ATTR_EXECUTOR_TYPE,
        semconv.ATTR_EXECUTOR_WORKER_LIMIT,
    } <= dimensions
    assert config["exporters"]["prometheus"]["enable_open_metrics"] is True
    # every exporter goes somewhere a user reads (no debug copy the log level hides)
    pipelines = config["service"]["pipelines"]
    assert set(pipelines["traces"]["exporters"]) == {"otlp_grpc", "span_metrics"}
    assert set(config["exporters"]) == {"prometheus", "otlp_grpc"}


def test_the_collector_readme_names_every_component_it_is_built_with() -> None:
    readme = (ROOT / "collector" / "README.md").read_text()
    table = readme.split("| kind |", 1)[1].split("\n\n", 1)[0]
    manifest = (ROOT / "collector" / "manifest.yaml").read_text()
    modules = re.findall(
        r"^\s*- gomod: \S+/(\w+?)(receiver|processor|connector|exporter) v",
        manifest,
        flags=re.MULTILINE,
    )
    assert modules
    named = {name.replace("_", "") for name in re.findall(r"`(\w+)`", table)}
    for module, _kind in modules:
        assert module in named, (module, table)


def test_collector_modules_are_on_one_release_matching_the_compose_image() -> None:
    manifest = (ROOT / "collector" / "manifest.yaml").read_text()
    versions = set(re.findall(r"^\s*- gomod: \S+ (v\S+)$", manifest, flags=re.MULTILINE))
    assert len(versions) == 1, versions
    [version] = versions
    compose = _yaml(ROOT / "compose.yaml")
    image = compose["services"]["collector"]["image"]
    assert image == f"otel/opentelemetry-collector-contrib:{version.removeprefix('v')}"


def test_dashboards_load_into_the_grafana_model_without_loss() -> None:
    for path in sorted((ROOT / "grafana" / "dashboards").glob("*.json")):
        committed = json.loads(path.read_text())
        assert plain(Dashboard.from_json(committed)) == committed, path.name


def test_dashboards_use_the_provisioned_datasources_and_template_variables() -> None:
    datasources = _yaml(ROOT / "grafana" / "provisioning" / "datasources" / "poolscope.yaml")
    types = {d["type"] for d in datasources["datasources"]}
    uids = {d["uid"] for d in datasources["datasources"]}
    assert alerts.PROMETHEUS_UID in uids
    [board] = dashboard.dashboards().values()
    variables = {v["name"] for v in board["templating"]["list"]}
    for panel in board["panels"]:
        if panel["type"] == "row":
            continue
        source = panel["datasource"]
        assert source["type"] in types, panel["title"]
        assert source["uid"].removeprefix("${").removesuffix("}") in variables, panel["title"]
    # a trace search takes one service: those panels use a single-value variable
    [trace_service] = [v for v in board["templating"]["list"] if v["name"] == "trace_service"]
    assert not trace_service.get("includeAll") and not trace_service.get("multi")
    for panel in board["panels"]:
        if panel.get("datasource", {}).get("type") in ("jaeger", "tempo"):
            text = json.dumps(panel["targets"])
            assert "$trace_service" in text and "$service" not in text, panel["title"]
    expressions = [expr for _, _, expr in dashboard.expressions(board)]
    assert expressions
    for expr in expressions:
        used = set(re.findall(r"\$(\w+)", expr)) - {"__rate_interval", "__range"}
        assert used <= variables, expr


def test_grafana_alert_rules_are_the_prometheus_rules() -> None:
    prometheus = {r["alert"]: r for r in _yaml(RULES)["groups"][0]["rules"]}
    [group] = _yaml(ROOT / "grafana" / "provisioning" / "alerting" / "poolscope.yaml")["groups"]
    grafana = {r["title"]: r for r in group["rules"]}
    assert grafana.keys() == prometheus.keys()
    for name, rule in grafana.items():
        [measure] = [q for q in rule["data"] if q["refId"] == rule["condition"]]
        assert measure["model"]["expression"] == "A"
        [query] = [q for q in rule["data"] if q["refId"] == "A"]
        assert query["model"]["expr"] == prometheus[name]["expr"]
        assert query["datasourceUid"] == alerts.PROMETHEUS_UID
        assert rule["for"] == prometheus[name]["for"]
        assert rule["labels"] == prometheus[name]["labels"]
        # the SDK's model is the API's rule; a provisioning file's group carries these
        loaded = plain(Rule.from_json(rule))
        assert {k: v for k, v in loaded.items() if k not in alerts.GRAFANA_API_ONLY} == rule


def test_every_rule_names_its_pool_and_limit_and_has_a_runbook() -> None:
    runbook = (ROOT / "docs" / "stack.md").read_text()
    for rule in _yaml(RULES)["groups"][0]["rules"]:
        summary = rule["annotations"]["summary"]
        assert "$labels.instance" in summary and "$labels.job" in summary
        if p.POOL in rule["expr"]:
            assert "$labels.executor_name" in summary
            assert p.LIMIT in summary or p.WORKER_LIMIT in summary
        anchor = rule["annotations"]["runbook"].split("#")[1]
        assert f"### {rule['alert']}" in runbook and anchor == rule["alert"].lower()


def _published_ports(service: dict[str, Any]) -> list[str]:
    return [str(port) for port in service.get("ports", [])]


def test_compose_binds_to_loopback_pins_images_and_has_no_default_credentials() -> None:
    compose = _yaml(ROOT / "compose.yaml")
    for name, service in compose["services"].items():
        for port in _published_ports(service):
            assert port.startswith("127.0.0.1:"), (name, port)
        image = service["image"]
        if "build" in service:  # built here, on a base pinned to its patch release
            dockerfile = ROOT / service["build"]["context"] / service["build"]["dockerfile"]
            [base] = re.findall(r"^FROM (\S+)$", dockerfile.read_text(), flags=re.MULTILINE)
            assert re.fullmatch(r"[\w./-]+:\d+\.\d+\.\d+(-[\w.-]+)?", base), (name, base)
        else:
            assert re.fullmatch(r"[\w./-]+:v?\d+\.\d+\.\d+(-[\w.]+)?", image), (name, image)
        for volume in service.get("volumes", []):
            source = volume.split(":")[0]
            assert (ROOT / source).exists(), (name, source)
    grafana = compose["services"]["grafana"]["environment"]
    assert "GF_SECURITY_ADMIN_PASSWORD" not in grafana
    assert grafana["GF_SECURITY_DISABLE_INITIAL_ADMIN_CREATION"] == "true"
    assert grafana["GF_AUTH_ANONYMOUS_ORG_ROLE"] == "Viewer"
    # Jaeger's Go module and its v2 release are numbered apart: v1.76.0 is 2.13.0
    build = (ROOT / "jaeger" / "build.sh").read_text()
    module = re.search(r'^version="(v[\d.]+)"', build, re.MULTILINE)
    assert module is not None
    release = {"v1.76.0": "2.13.0"}[module.group(1)]
    assert compose["services"]["jaeger"]["image"] == f"jaegertracing/jaeger:{release}"
    # Prometheus evaluates the alert rules; Grafana's copies are not loaded too
    grafana_volumes = compose["services"]["grafana"]["volumes"]
    assert not any("provisioning/alerting" in volume for volume in grafana_volumes)


@pytest.mark.parametrize(
    "path",
    [
        "collector/config.yaml",
        "collector/agent.yaml",
        "collector/gateway.yaml",
        "jaeger/config.yaml",
    ],
)
def test_our_listeners_default_to_loopback(path: str) -> None:
    text = (ROOT / path).read_text()
    defaults = re.findall(r"\$\{env:\w+:-([\d.]+):\d+\}", text)
    assert defaults and set(defaults) == {"127.0.0.1"}, defaults
