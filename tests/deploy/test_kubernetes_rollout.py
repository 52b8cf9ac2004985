"""The Deployment of deploy/kubernetes/mlfactory.yaml and of docs/deployment.md: memory limits
that fit, a rollout that refuses no connection and ends before the kill, Pod Security
"restricted"; and the docs' training Job restricted too."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from mlfactory.serving.run import WORKER_BASE_BYTES, memory_limit_warning
from mlfactory.serving.settings import DECODE_WORST_BYTES, ServingSettings

from .tools import KUBERNETES, ROOT

MANIFEST = KUBERNETES / "mlfactory.yaml"
DOCS = ROOT / "docs" / "deployment.md"
UNITS = {"Mi": 1024**2, "Gi": 1024**3}


def docs_documents() -> list[dict[str, Any]]:
    blocks = re.findall(r"```yaml\n(.*?)```", DOCS.read_text(), re.S)
    return [doc for block in blocks for doc in yaml.safe_load_all(block) if doc]


def pod_spec(documents: list[dict[str, Any]], kind: str) -> dict[str, Any]:
    [found] = [doc for doc in documents if doc["kind"] == kind]
    spec: dict[str, Any] = found["spec"]["template"]["spec"]
    return spec


DEPLOYMENTS = {
    "manifest": lambda: pod_spec(list(yaml.safe_load_all(MANIFEST.read_text())), "Deployment"),
    "docs": lambda: pod_spec(docs_documents(), "Deployment"),
}


@pytest.mark.parametrize("where", list(DEPLOYMENTS))
def test_full_request_bodies_fit_the_memory_limit(where: str, tmp_path: Path) -> None:
    [container] = DEPLOYMENTS[where]()["containers"]
    values = {env["name"]: env["value"] for env in container["env"] if "value" in env}
    settings = ServingSettings.from_env(values)
    assert settings.max_request_bytes == 32 * UNITS["Mi"] and settings.max_connections == 32
    limit = container["resources"]["limits"]["memory"]
    (tmp_path / "memory.max").write_text(str(int(limit[:-2]) * UNITS[limit[-2:]]))
    # the server's own start-up check, against a cgroup file holding the pod's limit
    assert memory_limit_warning(settings, settings.workers, tmp_path) is None


@pytest.mark.parametrize("where", list(DEPLOYMENTS))
def test_bodies_and_decoded_images_fit_the_memory_limit(where: str) -> None:
    """docs/deployment.md's rule: connections x request bytes + decodes x the worst decode
    + the worker, per worker, within the limit."""
    [container] = DEPLOYMENTS[where]()["containers"]
    values = {env["name"]: env["value"] for env in container["env"] if "value" in env}
    settings = ServingSettings.from_env(values)
    limit = container["resources"]["limits"]["memory"]
    bodies = settings.max_connections * settings.max_request_bytes
    decodes = settings.max_concurrent_decodes * DECODE_WORST_BYTES
    needed = settings.workers * (bodies + decodes + WORKER_BASE_BYTES)
    assert needed <= int(limit[:-2]) * UNITS[limit[-2:]]


@pytest.mark.parametrize("where", list(DEPLOYMENTS))
def test_a_rollout_drains_then_ends_before_the_kill(where: str) -> None:
    spec = DEPLOYMENTS[where]()
    [container] = spec["containers"]
    command = container["lifecycle"]["preStop"]["exec"]["command"]
    assert command[0] == "sleep" and 5 <= int(command[1]) <= 10
    values = {env["name"]: env["value"] for env in container["env"] if "value" in env}
    shutdown = ServingSettings.from_env(values).shutdown_timeout_s
    assert values["MLFACTORY_SHUTDOWN_TIMEOUT_S"] == str(shutdown)
    # the sleep, then the server's bounded shutdown, then time to exit: all before SIGKILL
    assert int(command[1]) + shutdown + 5 <= spec["terminationGracePeriodSeconds"]


@pytest.mark.parametrize("where", list(DEPLOYMENTS))
def test_pod_security_restricted(where: str) -> None:
    spec = DEPLOYMENTS[where]()
    assert spec["securityContext"]["runAsNonRoot"] is True
    assert spec["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    [container] = spec["containers"]
    assert container["securityContext"]["allowPrivilegeEscalation"] is False
    assert container["securityContext"]["capabilities"] == {"drop": ["ALL"]}


def test_the_docs_training_job_is_restricted_too() -> None:
    spec = pod_spec(docs_documents(), "Job")
    assert spec["securityContext"]["runAsNonRoot"] is True
    assert spec["securityContext"]["runAsUser"] != 0
    assert spec["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    [container] = spec["containers"]
    assert container["securityContext"]["allowPrivilegeEscalation"] is False
    assert container["securityContext"]["capabilities"] == {"drop": ["ALL"]}


def test_the_docs_deployment_is_the_manifests_in_what_keeps_it_up() -> None:
    manifest, docs = DEPLOYMENTS["manifest"](), DEPLOYMENTS["docs"]()
    assert manifest["terminationGracePeriodSeconds"] == docs["terminationGracePeriodSeconds"]
    assert manifest["securityContext"] == docs["securityContext"]
    [ours], [theirs] = manifest["containers"], docs["containers"]
    for key in ("lifecycle", "resources", "securityContext"):
        assert ours[key] == theirs[key], key
    limits = (
        "MLFACTORY_MAX_REQUEST_BYTES",
        "MLFACTORY_MAX_CONNECTIONS",
        "MLFACTORY_MAX_CONCURRENT_DECODES",
    )
    for name in (*limits, "MLFACTORY_SHUTDOWN_TIMEOUT_S", "MLFACTORY_ORT_INTRA_OP_THREADS"):
        [mine] = [env for env in ours["env"] if env["name"] == name]
        assert mine in theirs["env"], name
