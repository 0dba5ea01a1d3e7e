"""The Helm chart, rendered by the real helm binary (built by scripts/helm on first use).

The chart and the application must agree on configuration names: every SAFEKEEP_* variable
the chart can render is a field of Settings, and what it renders for production builds a
Settings that points at the scale-out services, not at the embedded defaults.
"""

from __future__ import annotations

import base64
import json
import os
import re
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest
import redis
import yaml
from pydantic import SecretStr

import safekeep.workers.actors
from graphsim import Simulator
from graphsim.entra import admin_upn
from safekeep.backup.subscriptions import LIFECYCLE_PATH, NOTIFICATIONS_PATH
from safekeep.cli import app as cli_app
from safekeep.settings import DEV_APP_CLIENT_ID, DEV_MASTER_KEY, Environment, Settings
from tests.fixtures.live import free_port

ROOT = Path(__file__).resolve().parents[1]
VENV_BIN = Path(sys.executable).parent
CHART = ROOT / "helm" / "safekeep"
PRODUCTION_VALUES = CHART / "ci" / "production-values.yaml"
RELEASE = "acme"
NAMESPACE = "backup"

# The first build of helm compiles it from source (minutes on a cold Go cache); the default
# per-test timeout would cut it short.
pytestmark = pytest.mark.timeout(1200)

PREFIX = Settings.model_config.get("env_prefix", "")
SETTING_NAMES = {f"{PREFIX}{name}".upper() for name in Settings.model_fields}
AWS_CREDENTIALS = {"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"}
SECRET_NAMES = {
    "SAFEKEEP_MASTER_KEY",
    "SAFEKEEP_PREVIOUS_MASTER_KEYS",
    "SAFEKEEP_APP_CLIENT_SECRET",
    "SAFEKEEP_DATABASE_URL",
    "SAFEKEEP_BROKER_URL",
    "SAFEKEEP_REDIS_URL",
    "SAFEKEEP_SEARCH_URL",
    "SAFEKEEP_STRIPE_API_KEY",
    "SAFEKEEP_STRIPE_WEBHOOK_SECRET",
    "SAFEKEEP_METRICS_TOKEN",
    *AWS_CREDENTIALS,
}

# Every option of the chart set at once, so that every branch that emits a variable renders.
FULL_VALUES: dict[str, Any] = {
    "config": {
        "env": "production",
        "publicUrl": "https://backup.example.com",
        "notificationBaseUrl": "https://graph-hooks.example.com",
        "appClientId": "4f1c2a9e-7b3d-4e5f-8a6b-1c2d3e4f5a6b",
        "blobstoreUrl": "s3://safekeep-backups/prod",
        "s3EndpointUrl": "http://seaweedfs.storage:8333",
        "s3Region": "eu-central-1",
        "searchIndexPrefix": "acme",
        "loginUrl": "https://login.microsoftonline.us",
        "graphUrl": "https://graph.microsoft.us",
        "stripeApiBase": "https://stripe-proxy.example.com",
        "schedulerIntervalSeconds": 30.5,
        "notificationDebounceSeconds": 12.5,
        "exportTtlHours": 48,
        "searchBodyMaxChars": 1000000,
        "logLevel": "debug",
        "logJson": False,
        "extra": {"SAFEKEEP_DATA_DIR": "/tmp/safekeep"},
    },
    "secrets": {
        "masterKey": base64.urlsafe_b64encode(b"k" * 32).decode(),
        "previousMasterKeys": base64.urlsafe_b64encode(b"o" * 32).decode(),
        "appClientSecret": "full-app-secret",
        "databaseUrl": "postgresql://safekeep:full-db-password@pg:5432/safekeep",
        "brokerUrl": "redis://:full-redis-password@redis:6379/0",
        "redisUrl": "redis://:full-redis-password@redis:6379/1",
        "searchUrl": "https://admin:full-search-password@opensearch:9200",
        "stripeApiKey": "sk_test_full_stripe_key",
        "stripeWebhookSecret": "whsec_full_webhook_secret",
        "metricsToken": "full-metrics-token-0123456789abcdef",
        "awsAccessKeyId": "AKIAFULLACCESSKEY000",
        "awsSecretAccessKey": "full-aws-secret-access-key",
    },
    "caBundle": {"configMap": "corporate-ca", "key": "ca.pem"},
    "worker": {"queues": ["backup", "restore"], "threads": 4},
    "ingress": {
        "enabled": True,
        "className": "nginx",
        "tls": [{"secretName": "tls", "hosts": ["backup.example.com"]}],
    },
    "networkPolicy": {
        "enabled": True,
        "apiIngressFrom": [{"namespaceSelector": {"matchLabels": {"name": "ingress"}}}],
        "metricsFrom": [{"namespaceSelector": {"matchLabels": {"name": "monitoring"}}}],
        "egress": [{"to": [{"ipBlock": {"cidr": "0.0.0.0/0"}}]}],
    },
    "serviceMonitor": {"enabled": True},
    "prometheusRule": {"enabled": True, "labels": {"release": "kube-prometheus"}},
    "grafanaDashboard": {"enabled": True},
}


def installed(tool: str) -> str:
    """The path of a pinned tool, fetched on first use by its script under scripts/."""
    return subprocess.run(
        [str(ROOT / "scripts" / tool), "--install-only"],
        capture_output=True,
        text=True,
        check=True,
        timeout=1100,
    ).stdout.strip()


@pytest.fixture(scope="module")
def helm(
    tmp_path_factory: pytest.TempPathFactory,
) -> Callable[..., subprocess.CompletedProcess[str]]:
    """Run helm with its cache and config kept out of the user's home."""
    binary = installed("helm")
    home = tmp_path_factory.mktemp("helm-home")
    env = {
        **os.environ,
        "HELM_CACHE_HOME": str(home / "cache"),
        "HELM_CONFIG_HOME": str(home / "config"),
        "HELM_DATA_HOME": str(home / "data"),
    }

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [binary, *args], capture_output=True, text=True, env=env, timeout=120, check=False
        )

    return run


@pytest.fixture(scope="module")
def render(
    helm: Callable[..., subprocess.CompletedProcess[str]], tmp_path_factory: pytest.TempPathFactory
) -> Callable[..., list[dict[str, Any]]]:
    """Render the chart (production values plus any overrides) into parsed manifests."""
    folder = tmp_path_factory.mktemp("values")

    def run(*overrides: dict[str, Any], args: tuple[str, ...] = ()) -> list[dict[str, Any]]:
        out = helm(*template_args(folder, overrides, args))
        assert out.returncode == 0, out.stderr
        return [doc for doc in yaml.safe_load_all(out.stdout) if doc]

    return run


def template_args(
    folder: Path, overrides: tuple[dict[str, Any], ...], args: tuple[str, ...]
) -> list[str]:
    files = ["-f", str(PRODUCTION_VALUES)]
    for overide in overrides:
        path = folder / f"values-{len(list(folder.iterdir()))}.yaml"
        path.write_text(json.dumps(overide))  # JSON is YAML
        files += ["-f", str(path)]
    return ["template", RELEASE, str(CHART), "--namespace", NAMESPACE, *files, *args]


def render_error(
    helm: Callable[..., subprocess.CompletedProcess[str]],
    tmp_path: Path,
    *overrides: dict[str, Any],
) -> str:
    out = helm(*template_args(tmp_path, overrides, ()))
    assert out.returncode != 0, "the chart rendered although it should have refused"
    return out.stderr


def of_kind(docs: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [doc for doc in docs if doc["kind"] == kind]


def named(docs: list[dict[str, Any]], kind: str, name: str) -> dict[str, Any]:
    [doc] = [d for d in of_kind(docs, kind) if d["metadata"]["name"] == name]
    return doc


def pod_specs(docs: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {
        doc["metadata"]["name"]: doc["spec"]["template"]["spec"]
        for doc in docs
        if doc["kind"] in ("Deployment", "Job")
    }


def secret_data(secret: dict[str, Any]) -> dict[str, str]:
    return {k: base64.b64decode(v).decode() for k, v in secret.get("data", {}).items()}


def pod_environment(docs: list[dict[str, Any]], container: dict[str, Any]) -> dict[str, str]:
    """The variables a container gets, resolved as the kubelet would from its envFrom."""
    env: dict[str, str] = {}
    for source in container["envFrom"]:
        if "configMapRef" in source:
            env.update(named(docs, "ConfigMap", source["configMapRef"]["name"])["data"])
        else:
            env.update(secret_data(named(docs, "Secret", source["secretRef"]["name"])))
    for item in container.get("env", []):
        env[item["name"]] = item["value"]
    return env


def settings_from(env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> Settings:
    for name in list(os.environ):
        if name.startswith(PREFIX):
            monkeypatch.delenv(name)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    return Settings()


def test_lint_with_default_values(helm: Callable[..., subprocess.CompletedProcess[str]]) -> None:
    out = helm("lint", str(CHART))
    assert out.returncode == 0, out.stdout + out.stderr
    assert "0 chart(s) failed" in out.stdout


def test_lint_strict_with_production_values(
    helm: Callable[..., subprocess.CompletedProcess[str]],
) -> None:
    out = helm("lint", "--strict", "-f", str(PRODUCTION_VALUES), str(CHART))
    assert out.returncode == 0, out.stdout + out.stderr
    assert "[WARNING]" not in out.stdout and "[ERROR]" not in out.stdout


def test_production_render_has_every_component(render: Callable[..., list[dict[str, Any]]]) -> None:
    docs = render()
    deployments = {d["metadata"]["name"]: d for d in of_kind(docs, "Deployment")}
    assert set(deployments) == {f"{RELEASE}-safekeep-{c}" for c in ("api", "worker", "scheduler")}
    assert deployments[f"{RELEASE}-safekeep-scheduler"]["spec"]["replicas"] == 2
    assert {d["metadata"]["name"] for d in of_kind(docs, "PodDisruptionBudget")} == set(deployments)
    assert [d["metadata"]["name"] for d in of_kind(docs, "Service")] == [f"{RELEASE}-safekeep-api"]
    assert len(of_kind(docs, "ServiceAccount")) == 1
    assert len(of_kind(docs, "Job")) == 1
    # Options that are off by default render nothing.
    for kind in ("Ingress", "HorizontalPodAutoscaler", "NetworkPolicy", "ServiceMonitor"):
        assert of_kind(docs, kind) == [], kind


def test_every_rendered_setting_is_a_settings_field(
    render: Callable[..., list[dict[str, Any]]],
) -> None:
    for values in ({}, FULL_VALUES):
        docs = render(values)
        text = yaml.safe_dump_all(docs)
        for secret in of_kind(docs, "Secret"):
            text += "\n".join(secret_data(secret).values())
        names = set(re.findall(r"\bSAFEKEEP_[A-Z0-9_]+", text))
        assert names, "no SAFEKEEP_* variable rendered at all"
        assert names <= SETTING_NAMES, names - SETTING_NAMES
        for doc in of_kind(docs, "ConfigMap") + of_kind(docs, "Secret"):
            if doc["metadata"]["name"].endswith("-dashboard"):  # Grafana's, not the app's
                continue
            assert set(doc["data"]) <= SETTING_NAMES | AWS_CREDENTIALS, doc["metadata"]["name"]


def test_every_chart_option_reaches_the_environment(
    render: Callable[..., list[dict[str, Any]]], monkeypatch: pytest.MonkeyPatch
) -> None:
    docs = render(FULL_VALUES)
    api = pod_specs(docs)[f"{RELEASE}-safekeep-api"]["containers"][0]
    env = pod_environment(docs, api)
    settings = settings_from(env, monkeypatch)
    config, secrets = FULL_VALUES["config"], FULL_VALUES["secrets"]
    # Each chart option is the camelCase of the Settings field it sets; AWS keys go to boto3.
    aws = {"awsAccessKeyId", "awsSecretAccessKey"}
    options = {k: v for k, v in (config | secrets).items() if k != "extra" and k not in aws}
    for option, value in options.items():
        field = re.sub(r"(?<!^)(?=[A-Z])", "_", option).lower()
        got = getattr(settings, field)
        assert got is not None, option
        assert (got.get_secret_value() if isinstance(got, SecretStr) else got) == value, option
    assert settings.log_json is False
    assert settings.resolved_notification_base_url == config["notificationBaseUrl"]
    assert settings.notifications_possible
    # Helm reads YAML numbers as floats; a large integer must not come out as 1e+06.
    assert env["SAFEKEEP_SEARCH_BODY_MAX_CHARS"] == "1000000"
    assert settings.data_dir == Path("/tmp/safekeep")
    assert settings.ca_bundle == Path("/etc/safekeep/ca/ca.pem")
    assert {"name": "ca-bundle", "mountPath": "/etc/safekeep/ca", "readOnly": True} in api[
        "volumeMounts"
    ]
    assert env["AWS_ACCESS_KEY_ID"] == secrets["awsAccessKeyId"]
    assert env["AWS_SECRET_ACCESS_KEY"] == secrets["awsSecretAccessKey"]


def test_production_settings_point_at_the_scale_out_services(
    render: Callable[..., list[dict[str, Any]]], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each Settings field whose default only suits the embedded single process is set."""
    docs = render()
    defaults = Settings.model_construct()
    for name, spec in pod_specs(docs).items():
        env = pod_environment(docs, spec["containers"][0])
        settings = settings_from(env, monkeypatch)  # validates: no development secrets
        assert settings.env is Environment.production, name
        assert settings.master_key.get_secret_value() != DEV_MASTER_KEY
        assert settings.app_client_id != DEV_APP_CLIENT_ID
        assert settings.public_url != defaults.public_url
        assert settings.resolved_database_url.startswith("postgresql"), name
        assert not settings.embedded_queue, name
        assert settings.resolved_redis_url is not None
        assert settings.resolved_blobstore_url.startswith("s3://"), name
        assert settings.resolved_search_url.startswith("https://"), name


def test_rendering_without_a_master_key_fails_clearly(
    helm: Callable[..., subprocess.CompletedProcess[str]], tmp_path: Path
) -> None:
    error = render_error(helm, tmp_path, {"secrets": {"masterKey": ""}})
    assert "secrets.masterKey is required" in error
    assert "existingSecret" in error


def test_the_development_master_key_is_refused(
    helm: Callable[..., subprocess.CompletedProcess[str]], tmp_path: Path
) -> None:
    error = render_error(helm, tmp_path, {"secrets": {"masterKey": DEV_MASTER_KEY}})
    assert "development key" in error


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ({"secrets": {"masterKey": "dG9vLXNob3J0"}}, "/secrets/masterKey"),
        ({"secrets": {"appClientSecret": ""}}, "secrets.appClientSecret"),
        ({"secrets": {"databaseUrl": "sqlite:///data/safekeep.db"}}, "/secrets/databaseUrl"),
        ({"secrets": {"brokerUrl": ""}}, "secrets.brokerUrl"),
        ({"secrets": {"brokerUrl": "amqp://u:p@rabbit:5672/sk"}}, "set secrets.redisUrl too"),
        ({"secrets": {"awsSecretAccessKey": ""}}, "awsAccessKeyId and secrets.awsSecretAccessKey"),
        ({"config": {"publicUrl": ""}}, "config.publicUrl"),
        ({"config": {"blobstoreUrl": "file:///data/blobs"}}, "/config/blobstoreUrl"),
        ({"config": {"extra": {"LOG_LEVEL": "DEBUG"}}}, "'LOG_LEVEL' does not match pattern"),
        ({"config": {"masterKey": "x"}}, "additional properties 'masterKey'"),
        ({"worker": {"queues": ["backups"]}}, "/worker/queues/0"),
        ({"config": {"notificationBaseUrl": "http://hooks.example.com"}}, "must be https://"),
        ({"config": {"notificationBaseUrl": "hooks.example.com"}}, "/config/notificationBaseUrl"),
        ({"config": {"notificationDebounceSeconds": 0}}, "/config/notificationDebounceSeconds"),
        ({"config": {"notificationDebounceSeconds": 7200}}, "/config/notificationDebounceSeconds"),
        ({"api": {"podDisruptionBudget": {"maxUnavailable": 1}}}, "not both"),
        # Prometheus must have the token the API's /metrics asks for.
        ({"serviceMonitor": {"enabled": True}}, "needs secrets.metricsToken"),
        ({"secrets": {"metricsToken": "short"}}, "/secrets/metricsToken"),
    ],
)
def test_values_that_cannot_run_are_refused(
    helm: Callable[..., subprocess.CompletedProcess[str]],
    tmp_path: Path,
    override: dict[str, Any],
    message: str,
) -> None:
    assert message in render_error(helm, tmp_path, override)


def test_existing_secret_replaces_the_rendered_secret(
    render: Callable[..., list[dict[str, Any]]],
) -> None:
    no_secrets = {key: "" for key in FULL_VALUES["secrets"]}
    docs = render(
        {"secrets": {**no_secrets, "existingSecret": "ops-safekeep"}},
        {"serviceMonitor": {"enabled": True}},
    )
    assert of_kind(docs, "Secret") == []
    # Prometheus reads the metrics token from the operator's Secret too.
    [monitor] = of_kind(docs, "ServiceMonitor")
    credentials = monitor["spec"]["endpoints"][0]["authorization"]["credentials"]
    assert credentials == {"name": "ops-safekeep", "key": "SAFEKEEP_METRICS_TOKEN"}
    for doc in of_kind(docs, "Deployment") + of_kind(docs, "Job"):
        template = doc["spec"]["template"]
        sources = template["spec"]["containers"][0]["envFrom"]
        refs = [source["secretRef"]["name"] for source in sources if "secretRef" in source]
        assert refs == ["ops-safekeep"], doc["metadata"]["name"]
        # Helm cannot see inside a Secret it does not render: no checksum pretends to.
        assert "checksum/secret" not in template["metadata"].get("annotations", {})


def test_migration_runs_as_a_pre_install_and_pre_upgrade_hook(
    render: Callable[..., list[dict[str, Any]]],
) -> None:
    docs = render()
    [job] = of_kind(docs, "Job")
    annotations = job["metadata"]["annotations"]
    assert set(annotations["helm.sh/hook"].split(",")) == {"pre-install", "pre-upgrade"}
    container = job["spec"]["template"]["spec"]["containers"][0]
    assert [*container["command"], *container["args"]] == ["safekeep", "migrate"]
    assert job["spec"]["template"]["spec"]["restartPolicy"] == "Never"
    # What the job reads must exist before it: hooks of a lower weight, same content as the
    # release's own ConfigMap and Secret (which are created only after pre-install hooks).
    for source in container["envFrom"]:
        kind = "ConfigMap" if "configMapRef" in source else "Secret"
        ref = source["configMapRef" if kind == "ConfigMap" else "secretRef"]["name"]
        hook = named(docs, kind, ref)
        hook_annotations = hook["metadata"]["annotations"]
        assert hook_annotations["helm.sh/hook"] == annotations["helm.sh/hook"]
        assert int(hook_annotations["helm.sh/hook-weight"]) < int(
            annotations["helm.sh/hook-weight"]
        )
        assert hook["data"] == named(docs, kind, f"{RELEASE}-safekeep")["data"]
    # On a first install the chart's ServiceAccount does not exist yet when the hook runs.
    assert job["spec"]["template"]["spec"]["serviceAccountName"] == "default"
    hooks = [d for d in docs if "helm.sh/hook" in d["metadata"].get("annotations", {})]
    assert {d["metadata"]["name"] for d in hooks} == {f"{RELEASE}-safekeep-migration"}


def test_containers_run_as_non_root_on_a_read_only_root(
    render: Callable[..., list[dict[str, Any]]],
) -> None:
    docs = render(FULL_VALUES)
    specs = pod_specs(docs)
    assert len(specs) == 4
    for name, spec in specs.items():
        pod_context = spec["securityContext"]
        assert pod_context["runAsNonRoot"] is True, name
        assert pod_context["runAsUser"] != 0, name
        assert spec["automountServiceAccountToken"] is False, name
        volumes = {v["name"]: v for v in spec["volumes"]}
        for container in spec["containers"]:
            context = container["securityContext"]
            assert context["runAsNonRoot"] is True, name
            assert context["allowPrivilegeEscalation"] is False, name
            assert context["readOnlyRootFilesystem"] is True, name
            assert context["capabilities"]["drop"] == ["ALL"], name
            [tmp] = [m for m in container["volumeMounts"] if m["mountPath"] == "/tmp"]
            assert "emptyDir" in volumes[tmp["name"]], name
            assert container["resources"]["requests"], name


def test_secrets_never_appear_outside_secrets(render: Callable[..., list[dict[str, Any]]]) -> None:
    for values in ({}, FULL_VALUES):
        docs = render(values)
        secret_values = {
            value for secret in of_kind(docs, "Secret") for value in secret_data(secret).values()
        }
        assert secret_values
        for configmap in of_kind(docs, "ConfigMap"):
            assert not set(configmap["data"]) & SECRET_NAMES, configmap["metadata"]["name"]
        elsewhere = yaml.safe_dump_all([d for d in docs if d["kind"] != "Secret"])
        for value in secret_values:
            assert value not in elsewhere
            assert base64.b64encode(value.encode()).decode() not in elsewhere


def test_api_probes_and_entry_points_exist(render: Callable[..., list[dict[str, Any]]]) -> None:
    docs = render({"worker": {"queues": ["backup", "export"], "threads": 3}})
    specs = pod_specs(docs)
    api = specs[f"{RELEASE}-safekeep-api"]["containers"][0]
    assert api["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert api["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert api["command"] == ["uvicorn"]
    factory = api["args"][api["args"].index("--factory") + 1]
    module, attribute = factory.split(":")
    assert callable(getattr(__import__(module, fromlist=[attribute]), attribute))
    worker = specs[f"{RELEASE}-safekeep-worker"]["containers"][0]
    assert [*worker["command"], *worker["args"]] == [
        "safekeep",
        "worker",
        "--threads",
        "3",
        "--queues",
        "backup",
        "--queues",
        "export",
        "--metrics-port",
        "9102",
    ]
    worker_command = next(
        c
        for c in cli_app.registered_commands
        if c.name == "worker" or (c.callback is not None and c.callback.__name__ == "worker")
    )
    assert worker_command.callback is not None
    assert "metrics_port" in worker_command.callback.__code__.co_varnames
    scheduler = specs[f"{RELEASE}-safekeep-scheduler"]["containers"][0]
    assert [*scheduler["command"], *scheduler["args"]] == ["safekeep", "scheduler"]
    commands = {
        c.name or (c.callback.__name__ if c.callback else "") for c in cli_app.registered_commands
    }
    assert {"worker", "scheduler", "migrate"} <= commands


def test_api_pods_bound_request_heads_like_safekeep_serve(
    render: Callable[..., list[dict[str, Any]]],
) -> None:
    from safekeep.api.serving import uvicorn_options

    api = pod_specs(render())[f"{RELEASE}-safekeep-api"]["containers"][0]
    args = api["args"]
    assert args[args.index("--http") + 1] == uvicorn_options()["http"]


def test_api_pods_keep_idle_connections_longer_than_the_proxies_in_front(
    render: Callable[..., list[dict[str, Any]]],
) -> None:
    """The api pods close idle connections after ``safekeep serve``'s keep-alive, longer
    than ingress-nginx's and AWS ALB's 60 s; a deployment behind a slower proxy raises it."""
    from safekeep.api.serving import uvicorn_options

    def keep_alive(*overrides: dict[str, Any]) -> int:
        args = pod_specs(render(*overrides))[f"{RELEASE}-safekeep-api"]["containers"][0]["args"]
        return int(args[args.index("--timeout-keep-alive") + 1])

    assert keep_alive() == uvicorn_options()["timeout_keep_alive"] > 60
    assert keep_alive({"api": {"keepAliveSeconds": 350}}) == 350


def test_worker_queue_choices_are_the_actors_queues() -> None:
    schema = json.loads((CHART / "values.schema.json").read_text())
    choices = schema["properties"]["worker"]["properties"]["queues"]["items"]["enum"]
    declared = {
        actor.queue_name
        for actor in vars(safekeep.workers.actors).values()
        if hasattr(actor, "queue_name") and hasattr(actor, "actor_name")
    }
    assert declared
    assert set(choices) == declared


def test_config_changes_roll_the_pods(render: Callable[..., list[dict[str, Any]]]) -> None:
    def checksums(*overrides: dict[str, Any]) -> dict[str, tuple[str, str]]:
        return {
            d["metadata"]["name"]: (
                d["spec"]["template"]["metadata"]["annotations"]["checksum/config"],
                d["spec"]["template"]["metadata"]["annotations"]["checksum/secret"],
            )
            for d in of_kind(render(*overrides), "Deployment")
        }

    first = checksums()
    assert checksums() == first
    config_changed = checksums({"config": {"logLevel": "WARNING"}})
    secret_changed = checksums({"secrets": {"appClientSecret": "rotated"}})
    for name, (config, secret) in first.items():
        assert config_changed[name][0] != config and config_changed[name][1] == secret
        assert secret_changed[name][0] == config and secret_changed[name][1] != secret


def test_optional_resources_render_when_enabled(
    render: Callable[..., list[dict[str, Any]]],
) -> None:
    docs = render(
        FULL_VALUES,
        {
            "api": {"autoscaling": {"enabled": True, "targetMemoryUtilizationPercentage": 80}},
            "worker": {"autoscaling": {"enabled": True, "maxReplicas": 30}},
        },
    )
    hpas = {
        d["spec"]["scaleTargetRef"]["name"]: d for d in of_kind(docs, "HorizontalPodAutoscaler")
    }
    assert set(hpas) == {f"{RELEASE}-safekeep-api", f"{RELEASE}-safekeep-worker"}
    assert hpas[f"{RELEASE}-safekeep-worker"]["spec"]["maxReplicas"] == 30
    assert len(hpas[f"{RELEASE}-safekeep-api"]["spec"]["metrics"]) == 2
    for name in hpas:  # the HPA owns the replica count
        assert "replicas" not in named(docs, "Deployment", name)["spec"]
    [ingress] = of_kind(docs, "Ingress")
    backend = ingress["spec"]["rules"][0]["http"]["paths"][0]["backend"]["service"]
    assert backend == {"name": f"{RELEASE}-safekeep-api", "port": {"name": "http"}}
    assert ingress["spec"]["tls"][0]["secretName"] == "tls"
    policies = {d["metadata"]["name"]: d["spec"] for d in of_kind(docs, "NetworkPolicy")}
    assert policies[f"{RELEASE}-safekeep-api"]["ingress"][0]["ports"] == [
        {"port": "http", "protocol": "TCP"}
    ]
    # Only Prometheus reaches a worker, on its metrics port (serviceMonitor is on here).
    assert policies[f"{RELEASE}-safekeep-worker"]["ingress"] == [
        {
            "ports": [{"port": "metrics", "protocol": "TCP"}],
            "from": FULL_VALUES["networkPolicy"]["metricsFrom"],
        }
    ]
    assert policies[f"{RELEASE}-safekeep-scheduler"]["ingress"] == []
    assert all("Egress" in spec["policyTypes"] for spec in policies.values())
    [monitor] = of_kind(docs, "ServiceMonitor")
    assert monitor["spec"]["endpoints"][0]["path"] == "/metrics"
    # It presents the token the API's /metrics asks for, from the release's Secret.
    assert monitor["spec"]["endpoints"][0]["authorization"] == {
        "type": "Bearer",
        "credentials": {"name": f"{RELEASE}-safekeep", "key": "SAFEKEEP_METRICS_TOKEN"},
    }
    secret = named(docs, "Secret", f"{RELEASE}-safekeep")
    token = FULL_VALUES["secrets"]["metricsToken"]
    assert base64.b64decode(secret["data"]["SAFEKEEP_METRICS_TOKEN"]).decode() == token
    [pod_monitor] = of_kind(docs, "PodMonitor")
    assert pod_monitor["spec"]["podMetricsEndpoints"][0]["port"] == "metrics"
    worker = pod_specs(docs)[f"{RELEASE}-safekeep-worker"]["containers"][0]
    assert worker["ports"] == [{"name": "metrics", "containerPort": 9102, "protocol": "TCP"}]
    assert worker["args"][-2:] == ["--metrics-port", "9102"]
    # The alert rules and the dashboard ship as the files tests/api/test_metrics.py checks.
    [rules] = of_kind(docs, "PrometheusRule")
    assert rules["metadata"]["labels"]["release"] == "kube-prometheus"
    assert rules["spec"] == yaml.safe_load((CHART / "files" / "alerts.yaml").read_text())
    [dashboard] = [
        d for d in of_kind(docs, "ConfigMap") if d["metadata"]["name"].endswith("-dashboard")
    ]
    assert dashboard["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert json.loads(dashboard["data"]["safekeep.json"]) == json.loads(
        (CHART / "files" / "dashboard.json").read_text()
    )
    # Every object the chart makes carries the release's labels and fits a DNS label.
    for doc in docs:
        assert doc["metadata"]["labels"]["app.kubernetes.io/instance"] == RELEASE
        assert len(doc["metadata"]["name"]) <= 63


def test_ingress_routes_graph_notifications_to_the_api(
    render: Callable[..., list[dict[str, Any]]],
) -> None:
    """Graph must reach the notification and lifecycle endpoints through the chart's Ingress,
    on the host the notification base URL names."""
    docs = render(
        FULL_VALUES,
        {
            "ingress": {
                "hosts": [
                    {"host": "backup.example.com", "paths": [{"path": "/"}]},
                    {"host": "graph-hooks.example.com", "paths": [{"path": "/v1/graph"}]},
                ]
            }
        },
    )
    [ingress] = of_kind(docs, "Ingress")
    base = urlsplit(FULL_VALUES["config"]["notificationBaseUrl"])
    [rule] = [r for r in ingress["spec"]["rules"] if r["host"] == base.hostname]
    for path in (base.path + NOTIFICATIONS_PATH, base.path + LIFECYCLE_PATH):
        routed = [
            p
            for p in rule["http"]["paths"]
            if p["pathType"] == "Prefix"
            and (path == p["path"] or path.startswith(p["path"].rstrip("/") + "/"))
        ]
        assert routed, path
        assert routed[0]["backend"]["service"]["name"] == f"{RELEASE}-safekeep-api"


def test_single_pods_get_no_disruption_budget(render: Callable[..., list[dict[str, Any]]]) -> None:
    """A budget of one available pod out of one would block every node drain."""
    docs = render({"api": {"replicas": 1}, "scheduler": {"replicas": 1}})
    budgets = {d["metadata"]["name"] for d in of_kind(docs, "PodDisruptionBudget")}
    assert budgets == {f"{RELEASE}-safekeep-worker"}
    docs = render({"api": {"replicas": 1, "autoscaling": {"enabled": True, "minReplicas": 3}}})
    assert f"{RELEASE}-safekeep-api" in {
        d["metadata"]["name"] for d in of_kind(docs, "PodDisruptionBudget")
    }


def test_oldest_supported_kubernetes(
    render: Callable[..., list[dict[str, Any]]],
    helm: Callable[..., subprocess.CompletedProcess[str]],
    tmp_path: Path,
) -> None:
    def api_container(docs: list[dict[str, Any]]) -> dict[str, Any]:
        container: dict[str, Any] = pod_specs(docs)[f"{RELEASE}-safekeep-api"]["containers"][0]
        return container

    # preStop's sleep action exists from Kubernetes 1.30 on; older clusters get none.
    assert "lifecycle" not in api_container(render(args=("--kube-version", "1.25.0")))
    assert api_container(render(args=("--kube-version", "1.30.0")))["lifecycle"] == {
        "preStop": {"sleep": {"seconds": 5}}
    }
    old = helm(*template_args(tmp_path, (), ("--kube-version", "1.24.0")))
    assert old.returncode != 0
    assert "kubeVersion" in old.stderr


def test_the_api_command_enqueues_jobs_on_the_broker(
    render: Callable[..., list[dict[str, Any]]],
    postgres_url: str,
    redis_url: str,
    tmp_path: Path,
) -> None:
    """Run the API exactly as the chart's Deployment does, on real PostgreSQL and Redis, and
    follow a tenant's consent (graphsim playing Entra ID and the client's admin) to the
    discovery job it must put on the queue."""
    docs = render()
    api = pod_specs(docs)[f"{RELEASE}-safekeep-api"]["containers"][0]
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith(PREFIX)},
        **pod_environment(docs, api),
        "SAFEKEEP_DATABASE_URL": postgres_url,
        "SAFEKEEP_BROKER_URL": redis_url,
        # The placeholders' S3 and OpenSearch hosts do not exist here; this is about the queue.
        "SAFEKEEP_BLOBSTORE_URL": (tmp_path / "blobs").as_uri(),
        "SAFEKEEP_SEARCH_URL": f"sqlite:///{tmp_path / 'search.db'}",
    }
    env.pop("SAFEKEEP_S3_ENDPOINT_URL")
    entra = Simulator(
        seed=3,
        users=1,
        messages=0,
        files=0,
        sites=0,
        app_id=env["SAFEKEEP_APP_CLIENT_ID"],
        app_secret=env["SAFEKEEP_APP_CLIENT_SECRET"],
    ).start()
    env["SAFEKEEP_LOGIN_URL"] = entra.base_url
    env["SAFEKEEP_CA_BUNDLE"] = str(entra.ca_path)
    created = subprocess.run(
        [str(VENV_BIN / "safekeep"), "msp", "create", "--name", "Helm MSP", "--json"],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
    )
    api_key = json.loads(created.stdout)["api_key"]
    port = free_port()
    args = list(api["args"])
    args[args.index("--host") + 1] = "127.0.0.1"
    args[args.index("--port") + 1] = str(port)
    command = [str(VENV_BIN / api["command"][0]), *args]
    log = tmp_path / "api.log"
    with (
        log.open("wb") as output,
        subprocess.Popen(command, env=env, cwd=tmp_path, stdout=output, stderr=output) as server,
    ):
        try:
            with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30) as client:
                deadline = time.monotonic() + 90
                while True:
                    assert server.poll() is None, log.read_text()
                    assert time.monotonic() < deadline, "the API did not come up"
                    try:
                        if client.get(api["livenessProbe"]["httpGet"]["path"]).is_success:
                            break
                    except httpx.TransportError:
                        time.sleep(0.1)
                tenant = client.post(
                    "/v1/tenants",
                    headers={"Authorization": f"Bearer {api_key}"},
                    json={"name": "Contoso", "domain": entra.tenant().domain},
                )
                assert tenant.status_code == 201, tenant.text + log.read_text()
                signed_in = httpx.get(
                    f"{tenant.json()['consent_url']}&login_hint={admin_upn(entra.tenant())}",
                    verify=entra.ssl_context(),
                    follow_redirects=False,
                )
                back = urlsplit(signed_in.headers["location"])
                consent = client.get(f"{back.path}?{back.query}")
                assert consent.status_code == 200, consent.text + log.read_text()[-2000:]
                assert consent.json()["entra_tenant_id"] == entra.tenant().id
        finally:
            server.terminate()
            server.wait(timeout=30)
            entra.stop()
    with redis.Redis.from_url(redis_url) as queue:
        messages = [
            json.loads(raw) for key in queue.scan_iter("*.msgs") for raw in queue.hvals(key)
        ]
    assert [m["actor_name"] for m in messages] == ["run_discover"]


# Kubernetes' own JSON schemas, as the PyPI package kubernetes-validate ships them (no schema
# registry is reachable here); kubeconform validates the rendered manifests against them.
OLDEST_KUBERNETES = "1.25.0"  # Chart.yaml's kubeVersion floor
NEWEST_KUBERNETES = "1.37.0"  # the newest the pinned schemas (and helm's client-go) know
# Custom resources of the Prometheus operator: no schema in Kubernetes' own set.
CUSTOM_KINDS = ("ServiceMonitor", "PodMonitor", "PrometheusRule")


@pytest.fixture(scope="module")
def kubeconform(
    tmp_path_factory: pytest.TempPathFactory,
) -> Callable[..., subprocess.CompletedProcess[str]]:
    """Run kubeconform in strict mode against the pinned Kubernetes schemas of a version.

    kubernetes-validate's schemas point at their shared definitions with an absolute
    `/api/_definitions.json`, which only its own resolver understands; the copies made here
    point at the file beside them by its file:// URL, which kubeconform's resolver follows (it
    compiles a local schema from a bare path, against which a relative reference resolves to
    nothing).
    """
    import kubernetes_validate

    source = Path(kubernetes_validate.__file__).parent / "kubernetes-json-schema"
    schemas = tmp_path_factory.mktemp("kubernetes-json-schema")
    for version in (OLDEST_KUBERNETES, NEWEST_KUBERNETES):
        for folder in (f"v{version}-local", f"v{version}-local-strict"):
            target = schemas / folder
            target.mkdir()
            for schema in (source / folder).iterdir():
                definitions = (target / "_definitions.json").as_uri()
                text = schema.read_text().replace('"/api/_definitions.json#', f'"{definitions}#')
                (target / schema.name).write_text(text)
    binary = installed("kubeconform")
    location = str(
        schemas
        / "{{ .NormalizedKubernetesVersion }}-local{{ .StrictSuffix }}"
        / "{{ .ResourceKind }}{{ .KindSuffix }}.json"
    )

    def run(manifests: str, kubernetes_version: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [
                binary,
                "-strict",
                "-summary",
                "-output",
                "json",
                "-kubernetes-version",
                kubernetes_version,
                "-schema-location",
                location,
                "-skip",
                ",".join(CUSTOM_KINDS),
            ],
            input=manifests,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )

    return run


def conform_report(result: subprocess.CompletedProcess[str]) -> dict[str, Any]:
    report: dict[str, Any] = json.loads(result.stdout)
    return report


@pytest.mark.parametrize("kube_version", [OLDEST_KUBERNETES, NEWEST_KUBERNETES])
@pytest.mark.parametrize("values", ["production", "every-option"])
def test_rendered_manifests_conform_to_kubernetes_schemas(
    helm: Callable[..., subprocess.CompletedProcess[str]],
    kubeconform: Callable[..., subprocess.CompletedProcess[str]],
    tmp_path: Path,
    kube_version: str,
    values: str,
) -> None:
    overrides: tuple[dict[str, Any], ...] = ()
    if values == "every-option":
        overrides = (
            FULL_VALUES,
            {
                "api": {"autoscaling": {"enabled": True}},
                "worker": {"autoscaling": {"enabled": True}},
            },
        )
    out = helm(*template_args(tmp_path, overrides, ("--kube-version", kube_version)))
    assert out.returncode == 0, out.stderr
    rendered = [doc for doc in yaml.safe_load_all(out.stdout) if doc]
    result = kubeconform(out.stdout, kube_version)
    report = conform_report(result)
    assert result.returncode == 0, report["resources"]
    summary = report["summary"]
    custom = sum(1 for doc in rendered if doc["kind"] in CUSTOM_KINDS)
    assert summary["invalid"] == summary["errors"] == 0
    # Every object was checked against a schema: none slipped through as "skipped" but ours.
    assert summary["valid"] == len(rendered) - custom
    assert summary["skipped"] == custom
    if values == "every-option":
        assert {"Ingress", "NetworkPolicy", "HorizontalPodAutoscaler"} <= {
            doc["kind"] for doc in rendered
        }


def test_kubeconform_rejects_what_an_older_cluster_would(
    helm: Callable[..., subprocess.CompletedProcess[str]],
    kubeconform: Callable[..., subprocess.CompletedProcess[str]],
    tmp_path: Path,
) -> None:
    """The validation can fail: manifests rendered for 1.30 (preStop's `sleep` action) do not
    fit 1.25's schemas, and a misspelt field fails strict mode on any version."""
    out = helm(*template_args(tmp_path, (), ("--kube-version", "1.30.0")))
    assert out.returncode == 0, out.stderr
    result = kubeconform(out.stdout, OLDEST_KUBERNETES)
    assert result.returncode != 0
    invalid = [r for r in conform_report(result)["resources"] if r["status"] == "statusInvalid"]
    assert invalid and all("sleep" in r["msg"] for r in invalid), invalid

    docs = [doc for doc in yaml.safe_load_all(out.stdout) if doc]
    deployment = next(doc for doc in docs if doc["kind"] == "Deployment")
    deployment["spec"]["template"]["spec"]["containers"][0]["imagePullPolcy"] = "Always"
    result = kubeconform(yaml.safe_dump(deployment), NEWEST_KUBERNETES)
    assert result.returncode != 0
    assert "imagePullPolcy" in result.stdout
