"""deploy/k8s: the kustomize base and overlays render, validate offline, and say what we mean.

Rendering uses ``kubectl kustomize`` or ``kustomize build`` when one is on PATH, else a
small renderer here that covers what these kustomizations use (resources, namespace,
images, strategic-merge and JSON 6902 patches); where a binary exists, both must agree.
Built-in kinds are validated against the Kubernetes schemas of ``kubernetes-validate``
(strict: unknown fields fail). KEDA's ScaledObject and TriggerAuthentication are CRDs
with no schema there; they are checked field by field against Riverbed's key layout.
"""

from __future__ import annotations

import copy
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from riverbed import keys
from riverbed.service import Service
from riverbed.settings import ConsumerSettings
from riverbed_contracts.registry import STREAMS

ROOT = Path(__file__).resolve().parents[1]
K8S = ROOT / "deploy" / "k8s"
BASE = K8S / "base"
OVERLAYS = sorted(p for p in (K8S / "overlays").iterdir() if p.is_dir())
SERVICES = {"gateway": 8000, "email": 8001, "webhooks": 8002, "payments": 8003}
CONSUMERS = {"email", "webhooks", "payments"}
KUBERNETES_VERSION = "1.30"
EXPORTER = BASE / "redis-exporter"  # the Redis exporter, beside the services
EXPORTER_PORT = 9121
#: every directory with a kustomization: the base, each service alone, the exporter alone,
#: each overlay
KUSTOMIZATIONS = [BASE, *(BASE / name for name in SERVICES), EXPORTER, *OVERLAYS]

Resource = dict[str, Any]


def _rel(path: Path) -> str:
    return str(path.relative_to(ROOT))


# -- rendering -----------------------------------------------------------------------------


def _binary() -> list[str] | None:
    if shutil.which("kubectl"):
        return ["kubectl", "kustomize"]
    if shutil.which("kustomize"):
        return ["kustomize", "build"]
    return None


def render_with_binary(directory: Path, command: list[str]) -> list[Resource]:
    result = subprocess.run(
        [*command, str(directory)], capture_output=True, text=True, check=False, timeout=60
    )
    assert result.returncode == 0, f"{' '.join(command)} {_rel(directory)}:\n{result.stderr}"
    return [doc for doc in yaml.safe_load_all(result.stdout) if doc]


def _merge(target: Any, patch: Any) -> Any:
    """Strategic merge as these patches need it: maps deeply, lists of named maps by name."""
    if isinstance(target, dict) and isinstance(patch, dict):
        merged = dict(target)
        for key, value in patch.items():
            merged[key] = _merge(target[key], value) if key in target else value
        return merged
    if (
        isinstance(target, list)
        and isinstance(patch, list)
        and all(isinstance(i, dict) and "name" in i for i in [*target, *patch])
    ):
        by_name = {item["name"]: item for item in target}
        merged_list = [
            _merge(by_name[item["name"]], item) if item["name"] in by_name else item
            for item in patch
        ]
        patched = {item["name"] for item in patch}
        return [i for i in target if i["name"] not in patched] + merged_list
    return patch


def _json6902(resource: Resource, operations: list[dict[str, Any]]) -> Resource:
    patched = copy.deepcopy(resource)
    for operation in operations:
        assert operation["op"] in {"replace", "add"}, f"unsupported op {operation}"
        *parents, last = operation["path"].strip("/").split("/")
        node = patched
        for part in parents:
            node = node[int(part)] if isinstance(node, list) else node[part]
        if operation["op"] == "replace":
            assert last in node, f"replace of a missing path {operation['path']}"
        node[last] = operation["value"]
    return patched


def _targets(resource: Resource, target: dict[str, str]) -> bool:
    group = resource["apiVersion"].rpartition("/")[0]
    return (
        target.get("kind", resource["kind"]) == resource["kind"]
        and target.get("group", group) == group
        and target.get("name", resource["metadata"]["name"]) == resource["metadata"]["name"]
    )


def render_in_python(directory: Path) -> list[Resource]:
    """kustomize's behaviour for the fields deploy/k8s uses, and nothing more."""
    kustomization = yaml.safe_load((directory / "kustomization.yaml").read_text())
    unknown = set(kustomization) - {
        "apiVersion",
        "kind",
        "resources",
        "namespace",
        "images",
        "patches",
    }
    assert not unknown, f"{_rel(directory)} uses {unknown}: teach render_in_python"
    resources: list[Resource] = []
    for entry in kustomization.get("resources", []):
        path = directory / entry
        if path.is_dir():
            resources += render_in_python(path)
        else:
            resources += [doc for doc in yaml.safe_load_all(path.read_text()) if doc]
    for patch in kustomization.get("patches", []):
        body = yaml.safe_load(
            (directory / patch["path"]).read_text() if "path" in patch else patch["patch"]
        )
        for i, resource in enumerate(resources):
            if isinstance(body, list):  # JSON 6902 operations, for every target
                if _targets(resource, patch["target"]):
                    resources[i] = _json6902(resource, body)
            elif _targets(
                resource,
                {"kind": body["kind"], "name": body["metadata"]["name"], **patch.get("target", {})},
            ):
                resources[i] = _merge(resource, body)
    images = {image["name"]: image for image in kustomization.get("images", [])}
    for resource in resources:
        for container in _containers(resource):
            name = container["image"].rsplit(":", 1)[0]
            if name in images:
                image = images[name]
                container["image"] = f"{image.get('newName', name)}:{image['newTag']}"
        if "namespace" in kustomization and resource["kind"] != "Namespace":
            resource["metadata"]["namespace"] = kustomization["namespace"]
    return resources


def _containers(resource: Resource) -> Iterator[dict[str, Any]]:
    pod = resource.get("spec", {}).get("template", {}).get("spec", {})
    yield from pod.get("initContainers", [])
    yield from pod.get("containers", [])


def render(directory: Path) -> list[Resource]:
    binary = _binary()
    return render_with_binary(directory, binary) if binary else render_in_python(directory)


def _by_kind_and_name(resources: list[Resource]) -> dict[tuple[str, str], Resource]:
    indexed = {(r["kind"], r["metadata"]["name"]): r for r in resources}
    assert len(indexed) == len(resources), "two resources share a kind and name"
    return indexed


@pytest.fixture(scope="module")
def rendered() -> dict[Path, list[Resource]]:
    return {directory: render(directory) for directory in KUSTOMIZATIONS}


# -- the checks ------------------------------------------------------------------------------


@pytest.mark.parametrize("directory", OVERLAYS, ids=lambda p: p.name)
def test_python_renderer_agrees_with_kustomize(directory: Path) -> None:
    binary = _binary()
    if binary is None:
        pytest.skip("no kubectl or kustomize on PATH: only the Python renderer is used")
    expected = _by_kind_and_name(render_with_binary(directory, binary))
    assert _by_kind_and_name(render_in_python(directory)) == expected


def _check_keda(resource: Resource, resources: dict[tuple[str, str], Resource]) -> None:
    """KEDA's CRDs, by the fields we use (the kind has no schema in kubernetes-validate)."""
    name, spec = resource["metadata"]["name"], resource["spec"]
    assert resource["apiVersion"] == "keda.sh/v1alpha1", name
    if resource["kind"] == "TriggerAuthentication":
        for ref in spec["secretTargetRef"]:
            assert set(ref) == {"parameter", "name", "key"}, ref
            assert ref["parameter"] in {"address", "host", "port", "username", "password"}, ref
        return
    assert resource["kind"] == "ScaledObject", name
    assert set(spec) <= {
        "scaleTargetRef",
        "minReplicaCount",
        "maxReplicaCount",
        "pollingInterval",
        "cooldownPeriod",
        "advanced",
        "triggers",
    }, f"{name}: unknown ScaledObject fields {set(spec)}"
    assert ("Deployment", spec["scaleTargetRef"]["name"]) in resources, name
    assert 1 <= spec["minReplicaCount"] <= spec["maxReplicaCount"], name
    service = resource["metadata"]["labels"]["app.kubernetes.io/name"]
    assert spec["triggers"], name
    for trigger in spec["triggers"]:
        assert trigger["type"] == "redis-streams", name
        metadata = trigger["metadata"]
        assert set(metadata) <= {
            "stream",
            "consumerGroup",
            "lagCount",
            "activationLagCount",
            "pendingEntriesCount",
            "streamLength",
            "databaseIndex",
            "enableTLS",
        }, f"{name}: unknown trigger metadata {set(metadata)}"
        # the stream key is exactly what the runtime builds, for a stream the contracts know
        logical = keys.logical_stream_of(metadata["stream"])
        assert metadata["stream"] == keys.stream_key(logical), metadata
        assert logical in STREAMS, f"{name}: {logical} is not a stream of the contracts"
        assert metadata["consumerGroup"] == service, "a service's group is its name"
        assert int(metadata["lagCount"]) > 0, name
        auth = trigger["authenticationRef"]["name"]
        assert ("TriggerAuthentication", auth) in resources, f"{name}: no {auth}"


@pytest.mark.parametrize("directory", KUSTOMIZATIONS, ids=_rel)
def test_every_rendering_is_valid_for_kubernetes(
    directory: Path, rendered: dict[Path, list[Resource]]
) -> None:
    resources = _by_kind_and_name(rendered[directory])
    assert resources
    for resource in resources.values():
        if resource["apiVersion"].startswith("keda.sh/"):
            _check_keda(resource, resources)
            continue
        try:
            kubernetes_validate.validate(resource, KUBERNETES_VERSION, strict=True)
        except kubernetes_validate.ValidationError as error:
            pytest.fail(f"{resource['kind']} {resource['metadata']['name']}: {error.message}")


def test_strict_validation_catches_a_misspelled_field(
    rendered: dict[Path, list[Resource]],
) -> None:
    deployment = _by_kind_and_name(rendered[BASE])[("Deployment", "riverbed-email")]
    broken = copy.deepcopy(deployment)
    container = broken["spec"]["template"]["spec"]["containers"][0]
    container["securityContext"]["readOnlyRootFileSystem"] = True  # capital S: not a field
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, KUBERNETES_VERSION, strict=True)


@pytest.mark.parametrize("service", sorted(SERVICES))
def test_each_service_deploys_alone_with_what_it_needs(
    service: str, rendered: dict[Path, list[Resource]]
) -> None:
    resources = _by_kind_and_name(rendered[BASE / service])
    name = f"riverbed-{service}"
    kinds = {kind for kind, _ in resources}
    assert {"Deployment", "Service", "PodDisruptionBudget"} <= kinds
    if service in CONSUMERS:
        assert ("ScaledObject", name) in resources, "consumers autoscale with KEDA"
    else:
        assert ("HorizontalPodAutoscaler", name) in resources
    # every resource of the service carries its labels, so one selector finds them all
    for resource in resources.values():
        labels = resource["metadata"]["labels"]
        assert labels["app.kubernetes.io/name"] == service
        assert labels["app.kubernetes.io/part-of"] == "riverbed"


@pytest.mark.parametrize("service", sorted(SERVICES))
def test_deployment_probes_resources_security_and_termination(
    service: str, rendered: dict[Path, list[Resource]]
) -> None:
    resources = _by_kind_and_name(rendered[BASE / service])
    name = f"riverbed-{service}"
    deployment = resources[("Deployment", name)]
    template = deployment["spec"]["template"]
    pod = template["spec"]
    selector = deployment["spec"]["selector"]["matchLabels"]
    assert selector.items() <= template["metadata"]["labels"].items()

    # the Service and the disruption budget select exactly these pods
    assert resources[("Service", name)]["spec"]["selector"] == selector
    assert resources[("PodDisruptionBudget", name)]["spec"]["selector"]["matchLabels"] == selector
    port = SERVICES[service]
    assert resources[("Service", name)]["spec"]["ports"][0]["port"] == port
    assert template["metadata"]["annotations"]["prometheus.io/port"] == str(port)

    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] == 10001  # the images' user
    assert pod["securityContext"]["seccompProfile"]["type"] == "RuntimeDefault"
    assert pod["automountServiceAccountToken"] is False
    mounts = {v["name"] for v in pod["volumes"] if "emptyDir" in v}

    for container in _containers(deployment):
        assert container["image"].startswith(f"riverbed-{service}:")
        security = container["securityContext"]
        assert security["readOnlyRootFilesystem"] is True
        assert security["allowPrivilegeEscalation"] is False
        assert security["capabilities"]["drop"] == ["ALL"]
        # the only writable place is /tmp, an emptyDir
        assert [m["mountPath"] for m in container["volumeMounts"]] == ["/tmp"]
        assert {m["name"] for m in container["volumeMounts"]} <= mounts
        for kind in ("requests", "limits"):
            assert {"cpu", "memory"} <= set(container["resources"][kind]), container["name"]

    [main] = pod["containers"]
    assert main["ports"] == [{"name": "http", "containerPort": port, "protocol": "TCP"}]
    assert main["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "http"}
    assert main["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "http"}
    assert main["startupProbe"]["httpGet"]["path"] == "/healthz"

    env = {e["name"]: e for e in main["env"]}
    assert env["REDIS_URL"]["valueFrom"]["secretKeyRef"] == {"name": "riverbed-redis", "key": "url"}
    # SIGTERM, then the drain, must fit in the grace period, with a margin
    drain_s = float(env["RIVERBED_CONSUMER_SHUTDOWN_TIMEOUT_S"]["value"])
    assert drain_s == ConsumerSettings().shutdown_timeout_s  # the documented default
    pre_stop = main.get("lifecycle", {}).get("preStop", {}).get("exec", {}).get("command", [])
    pause_s = float(pre_stop[1]) if pre_stop[:1] == ["sleep"] else 0.0
    assert pod["terminationGracePeriodSeconds"] >= pause_s + drain_s + 10

    prefix = service.upper() + "_"
    assert env[f"{prefix}HOST"]["value"] == "0.0.0.0"
    assert env[f"{prefix}PORT"]["value"] == str(port)
    if service in CONSUMERS:
        # a stable consumer name: the pod's own, through the downward API
        assert env[f"{prefix}CONSUMER_NAME"]["valueFrom"] == {
            "fieldRef": {"fieldPath": "metadata.name"}
        }


@pytest.mark.parametrize("overlay", OVERLAYS, ids=lambda p: p.name)
def test_overlays_set_namespace_and_release_images(
    overlay: Path, rendered: dict[Path, list[Resource]]
) -> None:
    resources = rendered[overlay]
    [namespace] = [r for r in resources if r["kind"] == "Namespace"]
    labels = namespace["metadata"]["labels"]
    assert labels["pod-security.kubernetes.io/enforce"] == "restricted"
    for resource in resources:
        if resource["kind"] != "Namespace":
            assert resource["metadata"]["namespace"] == namespace["metadata"]["name"]
        for container in _containers(resource):
            assert not container["image"].startswith("riverbed-"), "an overlay names a registry"
            assert not container["image"].endswith(":latest")
    base_names = {(r["kind"], r["metadata"]["name"]) for r in rendered[BASE]}
    assert base_names <= {(r["kind"], r["metadata"]["name"]) for r in resources}


def _service(name: str) -> Service:
    """The service as its entry point builds it (no I/O until it starts)."""
    if name == "email":
        from riverbed_email.bootstrap import create_service as email
        from riverbed_email.settings import EmailSettings

        return email(EmailSettings())
    if name == "webhooks":
        from riverbed_webhooks.bootstrap import create_service as webhooks
        from riverbed_webhooks.settings import WebhooksSettings

        return webhooks(WebhooksSettings())
    from riverbed_payments.bootstrap import create_service as payments
    from riverbed_payments.settings import PaymentsSettings

    return payments(PaymentsSettings())


@pytest.mark.parametrize("service", sorted(CONSUMERS))
def test_keda_watches_exactly_the_streams_and_group_the_service_consumes(
    service: str, rendered: dict[Path, list[Resource]]
) -> None:
    resources = _by_kind_and_name(rendered[BASE / service])
    scaled = resources[("ScaledObject", f"riverbed-{service}")]
    watched = {
        (t["metadata"]["stream"], t["metadata"]["consumerGroup"])
        for t in scaled["spec"]["triggers"]
    }
    consumed = {(keys.stream_key(s.stream), s.group) for s in _service(service).subscriptions}
    assert watched == consumed


def test_every_container_is_pinned_limited_and_meets_the_restricted_standard(
    rendered: dict[Path, list[Resource]],
) -> None:
    """What the production namespace enforces ("restricted"), and a bounded footprint, for
    every workload of the base: the services and the Redis exporter alike."""
    workloads = [r for r in rendered[BASE] if r["kind"] == "Deployment"]
    assert ("Deployment", "riverbed-redis-exporter") in _by_kind_and_name(workloads)
    for workload in workloads:
        pod = workload["spec"]["template"]["spec"]
        assert pod["securityContext"]["runAsNonRoot"] is True, workload["metadata"]["name"]
        assert pod["securityContext"]["seccompProfile"]["type"] == "RuntimeDefault"
        assert pod["automountServiceAccountToken"] is False
        for container in _containers(workload):
            name = container["name"]
            _, colon, tag = container["image"].rpartition(":")
            assert colon, f"{name}: pin an image tag"
            assert "/" not in tag, f"{name}: pin an image tag, not only a registry port"
            assert tag != "latest", f"{name}: pin an image tag"
            security = container["securityContext"]
            assert security["allowPrivilegeEscalation"] is False, name
            assert security["readOnlyRootFilesystem"] is True, name
            assert security["capabilities"]["drop"] == ["ALL"], name
            for kind in ("requests", "limits"):
                assert {"cpu", "memory"} <= set(container["resources"][kind]), name


def test_redis_exporter_watches_the_services_redis_and_is_scraped(
    rendered: dict[Path, list[Resource]],
) -> None:
    resources = _by_kind_and_name(rendered[EXPORTER])
    name = "riverbed-redis-exporter"
    deployment = resources[("Deployment", name)]
    template = deployment["spec"]["template"]
    selector = deployment["spec"]["selector"]["matchLabels"]
    assert selector.items() <= template["metadata"]["labels"].items()
    assert resources[("Service", name)]["spec"]["selector"] == selector
    for resource in resources.values():
        labels = resource["metadata"]["labels"]
        assert labels["app.kubernetes.io/part-of"] == "riverbed"  # prometheus keeps it
        assert labels["app.kubernetes.io/name"] == "redis-exporter"  # job riverbed-redis-exporter

    [exporter] = template["spec"]["containers"]
    image, _, tag = exporter["image"].rpartition(":")
    assert image == "oliver006/redis_exporter"
    assert tag.startswith("v"), "a release tag"
    assert exporter["ports"] == [
        {"name": "metrics", "containerPort": EXPORTER_PORT, "protocol": "TCP"}
    ]
    annotations = template["metadata"]["annotations"]
    assert annotations["prometheus.io/scrape"] == "true"
    assert annotations["prometheus.io/port"] == str(EXPORTER_PORT)
    assert annotations["prometheus.io/path"] == "/metrics"
    assert resources[("Service", name)]["spec"]["ports"][0]["port"] == EXPORTER_PORT
    # the same Redis as the services: the URL of their Secret
    env = {e["name"]: e for e in exporter["env"]}
    assert env["REDIS_ADDR"]["valueFrom"]["secretKeyRef"] == {
        "name": "riverbed-redis",
        "key": "url",
    }
    for probe in ("livenessProbe", "readinessProbe"):
        assert exporter[probe]["httpGet"] == {"path": "/health", "port": "metrics"}
