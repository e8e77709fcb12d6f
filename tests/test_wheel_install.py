"""An installed wheel, not the checkout, validates, tests and serves the shipped rules.

The wheel is built from a copy of the project's files and installed (without its dependencies, which come from the
running environment's site-packages) into a fresh virtual environment; every command then runs outside the
checkout, so a schema, migration or template read from beside the source would be missing and fail here."""
from __future__ import annotations

import shutil
import site
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests

from tests.conftest import REPO, RULES_DIR, free_port

pytestmark = pytest.mark.timeout(240)

SHIPPED = ["pyproject.toml", "README.md", "cdsrules", "engine", "schemas", "store", "webhook"]


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> Path:
    """The bin/ folder of a virtual environment holding only the cdsrules wheel."""
    root = tmp_path_factory.mktemp("wheel")
    source = root / "source"
    source.mkdir()
    for name in SHIPPED:
        if (REPO / name).is_dir():
            shutil.copytree(REPO / name, source / name, ignore=shutil.ignore_patterns("__pycache__", "node_modules"))
        else:
            shutil.copy2(REPO / name, source / name)
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--no-build-isolation",
                    "--wheel-dir", str(root / "dist"), str(source)], check=True, capture_output=True)
    (wheel,) = (root / "dist").glob("cdsrules-*.whl")
    venv = root / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    (purelib,) = venv.glob("lib/python*/site-packages")
    # The dependencies, as a plain path: its .pth files (the checkout's editable install among them) are not run.
    (purelib / "dependencies.pth").write_text("\n".join(site.getsitepackages()) + "\n")
    subprocess.run([sys.executable, "-m", "pip", "--python", str(venv / "bin" / "python"), "install", "--quiet",
                    "--no-deps", "--no-index", str(wheel)], check=True, capture_output=True)
    return venv / "bin"


def run(bin_dir: Path, *arguments: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([str(bin_dir / "cdsrules"), *arguments], cwd=cwd, capture_output=True, text=True,
                          timeout=120)


def test_the_code_comes_from_the_wheel_not_the_checkout(installed, tmp_path):
    script = "import cdsrules, engine, schemas, store, webhook; print(*(m.__file__ for m in " \
             "(cdsrules, engine, schemas, store, webhook)))"
    where = subprocess.run([str(installed / "python"), "-c", script], cwd=tmp_path, capture_output=True, text=True,
                           check=True).stdout.split()
    assert len(where) == 5 and all(str(installed.parent) in path for path in where), where


def test_the_installed_command_validates_and_tests_the_shipped_rules(installed, tmp_path):
    rules = shutil.copytree(RULES_DIR, tmp_path / "rules")
    validated = run(installed, "validate", str(rules), cwd=tmp_path)
    assert validated.returncode == 0, validated.stderr
    tested = run(installed, "test", str(rules), cwd=tmp_path)
    assert tested.returncode == 0, tested.stdout + tested.stderr
    assert " passed, 0 failed" in tested.stdout
    drawn = run(installed, "cohort", "generate", "--n", "2", "--seed", "1", "--out", "cohort", cwd=tmp_path)
    assert drawn.returncode == 0, drawn.stderr  # the ruleset and scenario file of ./rules, not of the checkout
    assert (tmp_path / "cohort" / "cohort.json").is_file()


def test_the_installed_command_serves_the_shipped_rules(installed, tmp_path):
    rules = shutil.copytree(RULES_DIR, tmp_path / "rules")
    port = free_port()
    with open(tmp_path / "server.log", "wb") as log:
        server = subprocess.Popen([str(installed / "cdsrules"), "serve", "--no-auth", "--workers", "1",
                                   "--rules", str(rules), "--port", str(port),
                                   "--db", f"sqlite:///{tmp_path / 'cds.db'}"],
                                  cwd=tmp_path, stdout=log, stderr=subprocess.STDOUT)
    try:
        base, ready, deadline = f"http://127.0.0.1:{port}", False, time.monotonic() + 60
        while not ready and time.monotonic() < deadline and server.poll() is None:
            try:
                ready = requests.get(f"{base}/readyz", timeout=1).status_code == 200
            except requests.RequestException:
                time.sleep(0.3)
        assert ready, (tmp_path / "server.log").read_text(errors="replace")[-3000:]
        services = requests.get(f"{base}/cds-services", timeout=5).json()["services"]
        assert services and all(s["hook"] and s["id"] for s in services)
        assert (tmp_path / "cds.db").is_file()  # the migrations, read from inside the package, made the store
    finally:
        server.terminate()
        server.wait(timeout=20)


def test_the_wheel_carries_the_workbench_editor_bundle_not_its_sources(installed, tmp_path):
    script = "import pathlib, webhook.workbench as w; print(pathlib.Path(w.__file__).parent)"
    package = Path(subprocess.run([str(installed / "python"), "-c", script], cwd=tmp_path, capture_output=True,
                                  text=True, check=True).stdout.strip())
    assert (package / "static" / "vendor" / "editor.js").stat().st_size > 100_000
    assert (package / "static" / "vendor" / "editor.LICENSES.txt").is_file()
    assert (package / "static" / "workbench.js").is_file() and (package / "templates" / "check.html").is_file()
    assert not (package / "editor").exists()  # the bundle's npm sources stay in the checkout
