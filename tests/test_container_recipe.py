"""The container recipe, checked without a Docker engine (none runs here): the Dockerfile's CMD, run by sh with
the image's environment (its paths moved to this machine), starts a server that its HEALTHCHECK finds ready;
compose sets only variables the image reads; everything the image copies exists."""
from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from tests.conftest import REPO, RULES_DIR, free_port

pytestmark = pytest.mark.timeout(90)

DOCKERFILE = (REPO / "Dockerfile").read_text()
COMPOSE = yaml.safe_load((REPO / "compose.yaml").read_text())


def _instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) of the Dockerfile, continuation lines joined, comments dropped."""
    lines = [line for line in DOCKERFILE.splitlines() if not line.lstrip().startswith("#")]
    joined = re.sub(r"\\\n", " ", "\n".join(lines))
    return [(m[1].upper(), m[2].strip()) for m in re.finditer(r"^\s*([A-Za-z]+)\s+(.*)$", joined, re.MULTILINE)]


def image_environment() -> dict[str, str]:
    found: dict[str, str] = {}
    for instruction, arguments in _instructions():
        if instruction == "ENV":
            found.update(dict(item.split("=", 1) for item in shlex.split(arguments)))
    return found


def image_command() -> list[str]:
    (command,) = [json.loads(arguments) for instruction, arguments in _instructions() if instruction == "CMD"]
    return command


def healthcheck_script() -> str:
    (check,) = [arguments for instruction, arguments in _instructions() if instruction == "HEALTHCHECK"]
    return json.loads(check.split("CMD", 1)[1])[-1]


def test_the_images_command_starts_a_server_its_healthcheck_finds_ready(tmp_path):
    port = free_port()
    command = image_command()
    assert command[:2] == ["sh", "-c"] and "--host 0.0.0.0 --port 8080" in command[2]
    script = command[2].replace("--host 0.0.0.0 --port 8080", f"--host 127.0.0.1 --port {port}")
    environment = {**os.environ, **image_environment(),
                   # The image's paths, moved here; a trial without tokens (the image's default needs /config).
                   "CDSRULES_RULES": str(RULES_DIR), "CDSRULES_DB_URL": f"sqlite:///{tmp_path / 'cds.db'}",
                   "CDSRULES_AUTH": "--no-auth", "CDSRULES_WORKERS": "2",
                   "PROMETHEUS_MULTIPROC_DIR": str(tmp_path / "metrics"),
                   "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"}
    (tmp_path / "metrics").mkdir()
    check = healthcheck_script().replace("127.0.0.1:8080", f"127.0.0.1:{port}")
    with open(tmp_path / "server.log", "wb") as log:
        server = subprocess.Popen(command[:2] + [script], cwd=REPO, env=environment, stdout=log,
                                  stderr=subprocess.STDOUT)
    try:
        deadline, healthy = time.monotonic() + 45, False
        while time.monotonic() < deadline and not healthy and server.poll() is None:
            healthy = subprocess.run([sys.executable, "-c", check], capture_output=True).returncode == 0
            time.sleep(0.3)
        assert healthy, (tmp_path / "server.log").read_text()[-3000:]
    finally:
        server.terminate()
        server.wait(timeout=20)


def test_compose_sets_only_variables_the_image_reads():
    image = image_environment()
    shared = COMPOSE["x-cds"]
    assert set(shared["environment"]) <= set(image)
    assert shared["environment"]["CDSRULES_DB_URL"].startswith("postgresql+psycopg://")
    assert [t.split(":")[0] for t in shared["tmpfs"]] == [image["PROMETHEUS_MULTIPROC_DIR"]]
    assert any(v.endswith(":" + image["CDSRULES_RULES"]) for v in shared["volumes"])
    assert COMPOSE["services"]["cds-2"]["depends_on"]["cds-1"]["condition"] == "service_healthy"


def test_everything_the_image_copies_is_in_the_repository():
    copied = [arguments.split()[:-1] for instruction, arguments in _instructions()
              if instruction == "COPY" and not arguments.startswith("--from")]
    assert copied
    for sources in copied:
        for source in sources:
            assert (REPO / source).exists(), source
