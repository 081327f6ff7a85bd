"""The committed ``retrain.yaml`` runs in an environment built the way the runtime image is.

No Docker here, so the image is reproduced as a fresh venv: the build context is what
``images/runtime/Dockerfile.dockerignore`` admits, copied to a temporary directory, and
``images/runtime/install.sh`` (the script the Dockerfile's build stage runs) installs torch and
pairflow from it into a new venv. Executors then start as the KFP launcher starts them in the
image: their ``command`` + ``args`` from the YAML, with the venv's ``bin`` first on ``PATH``
(the image's ``ENV PATH``), so ``python3`` is the venv's and nothing from the dev venv leaks in.

* The whole committed package runs through ``kfp.local`` driven by the venv's Python
  (``tests/e2e/package_runner.py``), against a real ``mlflow server --app-name basic-auth``
  (also from the venv, as the manifests run it): the steps log in with the env the compiled
  platform spec would inject (ConfigMap ``MLFLOW_TRACKING_URI``, Secret
  ``MLFLOW_TRACKING_USERNAME``/``PASSWORD``) as a non-admin user, register and promote the
  champion; an unauthenticated client is refused.
* The resolve-config executor started with a KFP pod environment and no tracking URI exits
  non-zero with one line naming the setting.

Building the venv downloads torch and every dependency (425-701 s here on 2 shared cores at
load average 13-19, with PyPI's CUDA torch because the PyTorch CPU index is unreachable here;
CI uses the CPU index, far smaller); the package run took 318-479 s at that load. The module is
``slow``; the venv is built once for the module and removed after it.
"""

from __future__ import annotations

import fnmatch
import json
import os
import shutil
import socket
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from pairflow.demo.synthetic import GenerateSummary

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[2]
COMMITTED = REPO / "pipelines" / "compiled" / "retrain.yaml"
IMAGE = REPO / "images" / "runtime"
RUNNER = Path(__file__).with_name("package_runner.py")
CPU_INDEX = "https://download.pytorch.org/whl/cpu"
PIPELINE_USER = "pairflow-pipeline"


# ---------------------------------------------------------------------------------------------
# the image, as a venv


def _ignore_rules(path: Path) -> list[tuple[bool, str]]:
    rules = []
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if line and not line.startswith("#"):
            rules.append((line.startswith("!"), line.lstrip("!").rstrip("/")))
    return rules


def _matches(rel: str, pattern: str) -> bool:
    parts = rel.split("/")
    prefixes = ["/".join(parts[: i + 1]) for i in range(len(parts))]
    if pattern.startswith("**/"):
        return any(fnmatch.fnmatch(p, pattern[3:]) for p in parts)
    return any(fnmatch.fnmatch(p, pattern) for p in prefixes)


def docker_context(dockerignore: Path, root: Path, dest: Path) -> list[str]:
    """Copy what Docker would send as build context (``.dockerignore`` rules, last match
    wins; a symlink is copied as a link, as Docker does). Returns the copied paths."""
    rules = _ignore_rules(dockerignore)

    def included(rel: str) -> bool:
        keep = True
        for negate, pattern in rules:
            if _matches(rel, pattern):
                keep = negate
        return keep

    wanted_roots = {p.split("/")[0] for neg, p in rules if neg}
    copied = []
    for top in sorted(wanted_roots):
        base = root / top
        paths = [base] if base.is_file() else sorted(base.rglob("*"))
        for path in paths:
            rel = path.relative_to(root).as_posix()
            if (path.is_dir() and not path.is_symlink()) or not included(rel):
                continue
            target = dest / rel
            target.parent.mkdir(parents=True, exist_ok=True)
            if path.is_symlink():
                target.symlink_to(os.readlink(path))
            else:
                shutil.copy2(path, target)
            copied.append(rel)
    return copied


def _reachable(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=5):
            return True
    except (urllib.error.URLError, OSError):
        return False


# The venv holds PyPI's CUDA torch where the CPU index is unreachable: 7.1 GiB measured here.
VENV_DISK_NEED = 9 * 2**30


@pytest.fixture(scope="module")
def runtime_venv(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A fresh venv built by images/runtime/install.sh from the Docker build context.

    Removed when the module ends: it is the largest thing the suite writes, and the tests after
    this module share the disk with it."""
    root = tmp_path_factory.mktemp("runtime-image")
    free = shutil.disk_usage(root).free
    if free < VENV_DISK_NEED:
        pytest.fail(
            f"runtime image venv: needs {VENV_DISK_NEED / 2**30:.0f} GiB free under {root}, "
            f"{free / 2**30:.1f} GiB free; free disk space or point --basetemp elsewhere"
        )
    context = root / "context"
    copied = docker_context(IMAGE / "Dockerfile.dockerignore", REPO, context)
    assert "pyproject.toml" in copied and "images/runtime/install.sh" in copied
    # Dockerfile: TORCH_INDEX defaults to the CPU index; where it is unreachable, PyPI's wheel.
    torch_index = CPU_INDEX if _reachable(f"{CPU_INDEX}/torch/") else ""
    venv = root / "venv"
    start = time.monotonic()
    proc = subprocess.run(
        ["sh", str(context / "images/runtime/install.sh"), str(venv), str(context)],
        capture_output=True,
        text=True,
        # the Dockerfile's build stage sets PIP_NO_CACHE_DIR too
        env={**os.environ, "TORCH_INDEX": torch_index, "PIP_NO_CACHE_DIR": "1"},
        timeout=1800,
        check=False,
    )
    try:
        assert proc.returncode == 0, proc.stderr[-3000:]
        took = time.monotonic() - start
        print(f"runtime venv built in {took:.0f} s (torch index {torch_index!r})")
        yield venv
    finally:
        shutil.rmtree(root)


def image_env(venv: Path, home: Path, **extra: str) -> dict[str, str]:
    """The container's env: the image's PATH (venv first) and HOME, plus ``extra``; nothing
    from this test process (no dev venv, no MLflow or AWS settings)."""
    home.mkdir(parents=True, exist_ok=True)
    return {
        "PATH": f"{venv / 'bin'}:/usr/local/bin:/usr/bin:/bin",
        "HOME": str(home),
        "PYTHONUNBUFFERED": "1",
        **extra,
    }


def test_docker_context_copy_follows_the_ignore_file(tmp_path: Path) -> None:
    ignore = tmp_path / "ignore"
    ignore.write_text("*\n!pyproject.toml\n!src/\n**/__pycache__\nsrc/pairflow/components\n")
    copied = docker_context(ignore, REPO, tmp_path / "ctx")
    assert "pyproject.toml" in copied and "src/pairflow/cli.py" in copied
    assert not any(c.startswith(("components/", "tests/", ".venv/")) for c in copied)
    assert "src/pairflow/components" not in copied
    assert not any("__pycache__" in c for c in copied)


# ---------------------------------------------------------------------------------------------
# one executor, started as the launcher starts it


def _executor(package: dict[str, Any], name: str) -> dict[str, Any]:
    container: dict[str, Any] = package["deploymentSpec"]["executors"][f"exec-{name}"]["container"]
    return container


def _resolve_config_inputs(package: dict[str, Any]) -> dict[str, Any]:
    body = package["components"]["comp-exit-handler-1"]["dag"]["tasks"]["resolve-config"]
    return {
        "defaults_json": body["inputs"]["parameters"]["defaults_json"]["runtimeValue"]["constant"],
        "params": {},
        "kfp_run_id": "run-1",
        "kfp_run_name": "run one",
    }


def launch(
    package: dict[str, Any], name: str, params: dict[str, Any], out: Path, env: dict[str, str]
) -> subprocess.CompletedProcess[str]:
    """Start executor ``name`` as the KFP launcher does: its command + args with ``{{$}}``
    replaced by the executor input (parameters, output artifact URIs, an output file per output
    parameter, the output metadata file), as the driver's ``provisionOutputs`` builds it
    (kubeflow/pipelines backend/src/v2/driver/driver.go: every output parameter gets
    ``OutputFile: /tmp/kfp/outputs/<name>``; here under ``out/parameters``)."""
    comp = package["components"][f"comp-{name}"]
    artifacts = {
        key: {
            "artifacts": [
                {"name": key, "type": spec["artifactType"], "uri": str(out / key), "metadata": {}}
            ]
        }
        for key, spec in comp.get("outputDefinitions", {}).get("artifacts", {}).items()
    }
    parameters = {
        key: {"outputFile": str(out / "parameters" / key)}
        for key in comp.get("outputDefinitions", {}).get("parameters", {})
    }
    executor_input = {
        "inputs": {"parameterValues": params},
        "outputs": {
            "artifacts": artifacts,
            "parameters": parameters,
            "outputFile": str(out / "executor_output.json"),
        },
    }
    container = _executor(package, name)
    args = [json.dumps(executor_input) if a == "{{$}}" else a for a in container["args"]]
    out.mkdir(parents=True, exist_ok=True)
    return subprocess.run(
        [*container["command"], *args], capture_output=True, text=True, env=env, timeout=600,
        cwd=out, check=False,
    )  # fmt: skip


def test_executor_in_a_kfp_pod_without_tracking_uri_exits_with_one_line(
    runtime_venv: Path, tmp_path: Path
) -> None:
    package = next(yaml.safe_load_all(COMMITTED.read_text()))
    params = _resolve_config_inputs(package)
    pod = image_env(runtime_venv, tmp_path / "home", KFP_POD_NAME="retrain-abc-123",
                    KFP_POD_UID="8c1d")  # fmt: skip
    proc = launch(package, "resolve-config", params, tmp_path / "pod", pod)
    assert proc.returncode != 0
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert "Traceback" not in proc.stderr, proc.stderr[-2000:]
    (message,) = [line for line in lines if "mlflow.tracking_uri" in line]
    assert message.startswith("pairflow: mlflow.tracking_uri: not set in a Kubeflow pipeline pod")
    assert "MLFLOW_TRACKING_URI" in message and "sqlite" in message
    assert not (tmp_path / "pod" / "executor_output.json").exists()

    # The same executor with the URI the ConfigMap gives succeeds: the image holds kfp and
    # pairflow, and the step wrote its config artifact.
    db = tmp_path / "mlflow.db"
    pod["MLFLOW_TRACKING_URI"] = f"sqlite:///{db}"
    proc = launch(package, "resolve-config", params, tmp_path / "ok", pod)
    assert proc.returncode == 0, proc.stderr[-3000:]
    resolved = json.loads((tmp_path / "ok" / "config").read_text())
    assert resolved["mlflow"]["tracking_uri"] == f"sqlite:///{db}"
    # the MLflow run later steps log to, handed on as an output parameter
    run_id = (tmp_path / "ok" / "parameters" / "mlflow_run_id").read_text()
    assert len(run_id) == 32 and all(c in "0123456789abcdef" for c in run_id), run_id
    # Outside a pod the sqlite default stays.
    local = image_env(runtime_venv, tmp_path / "home")
    proc = launch(package, "resolve-config", params, tmp_path / "local", local)
    assert proc.returncode == 0, proc.stderr[-3000:]
    resolved = json.loads((tmp_path / "local" / "config").read_text())
    assert resolved["mlflow"]["tracking_uri"].startswith("sqlite:///")


# ---------------------------------------------------------------------------------------------
# the whole package against MLflow with basic auth


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
def auth_mlflow(runtime_venv: Path, tmp_path: Path) -> Iterator[dict[str, str]]:
    """``mlflow server --app-name basic-auth`` from the runtime venv (as manifests/base/
    mlflow.yaml runs it): admin from env (the mlflow-admin Secret), auth DB from an ini file
    (the mlflow-auth-config Secret). Yields url, admin and pipeline-user credentials."""
    root = tmp_path / "mlflow"
    root.mkdir()
    ini = root / "basic_auth.ini"
    ini.write_text(
        "[mlflow]\ndefault_permission = READ\n"
        f"database_uri = sqlite:///{root}/auth.db\n"
        "authorization_function = mlflow.server.auth:authenticate_request_basic_auth\n"
    )
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    admin_pw = os.urandom(12).hex()
    env = image_env(runtime_venv, root / "home", MLFLOW_AUTH_CONFIG_PATH=str(ini),
                    MLFLOW_AUTH_ADMIN_USERNAME="admin", MLFLOW_AUTH_ADMIN_PASSWORD=admin_pw,
                    MLFLOW_FLASK_SERVER_SECRET_KEY=os.urandom(16).hex())  # fmt: skip
    cmd = [str(runtime_venv / "bin" / "mlflow"), "server", "--app-name", "basic-auth",
           "--host", "127.0.0.1", "--port", str(port), "--workers", "1",
           "--backend-store-uri", f"sqlite:///{root}/mlflow.db",
           "--artifacts-destination", str(root / "artifacts"), "--serve-artifacts"]  # fmt: skip
    log = root / "server.log"
    with log.open("wb") as fh:
        proc = subprocess.Popen(cmd, stdout=fh, stderr=subprocess.STDOUT, env=env, cwd=root)
    try:
        deadline = time.monotonic() + 120
        while True:
            assert proc.poll() is None, log.read_text()[-3000:]
            try:
                with urllib.request.urlopen(f"{url}/health", timeout=2):
                    break
            except (urllib.error.URLError, OSError):
                assert time.monotonic() < deadline, log.read_text()[-3000:]
                time.sleep(0.5)
        pipeline_pw = os.urandom(12).hex()
        _as_admin(url, admin_pw, lambda c: c.create_user(PIPELINE_USER, pipeline_pw))
        yield {"url": url, "admin_password": admin_pw, "pipeline_password": pipeline_pw}
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _as_admin(url: str, password: str, call: Any) -> Any:
    """Run ``call(auth_client)`` with the admin's basic-auth credentials from env."""
    from mlflow.server import get_app_client

    saved = {k: os.environ.get(k) for k in ("MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD")}
    os.environ.update(MLFLOW_TRACKING_USERNAME="admin", MLFLOW_TRACKING_PASSWORD=password)
    try:
        return call(get_app_client("basic-auth", tracking_uri=url))
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


@pytest.fixture(scope="module")
def pipeline_inputs(tmp_path_factory: pytest.TempPathFactory) -> tuple[GenerateSummary, Path]:
    """160 synthetic rows with defects, and a reference CLIP pretrained on a separate clean
    split (as ``pairflow demo`` does, smaller): training starts from it, so the first-run gate
    (floors above chance) can pass and register/deploy run."""
    from pairflow.demo.reference_clip import pretrain_reference_clip
    from pairflow.demo.synthetic import generate_dataset

    root = tmp_path_factory.mktemp("runtime-inputs")
    data = generate_dataset(root / "data", 160, seed=11)
    clip = pretrain_reference_clip(root / "clip", n=1500, epochs=8, batch_size=64)
    return data, clip


def test_committed_package_runs_in_the_runtime_env_against_authenticated_mlflow(
    runtime_venv: Path,
    auth_mlflow: dict[str, str],
    tmp_path: Path,
    pipeline_inputs: tuple[GenerateSummary, Path],
) -> None:
    dataset, clip = pipeline_inputs
    url = auth_mlflow["url"]
    work = tmp_path / "work"
    args = {
        "run_workdir": str(work), "data_source": str(dataset.manifest), "data_shards": 2,
        "clip_filter_model": str(clip), "clip_filter_top_fraction": 0.9,
        "train_batch_size": 8, "train_epochs": 1, "train_launcher": "local",
        "deploy_backend": "local", "register_model_name": "rt-clip",
        "mlflow_experiment": "runtime-image",
    }  # fmt: skip
    # What the compiled platform spec injects: ConfigMap + Secrets as env, in a KFP pod.
    pod = image_env(runtime_venv, tmp_path / "home", KFP_POD_NAME="retrain-xyz",
                    KFP_POD_UID="1f2e", MLFLOW_TRACKING_URI=url,
                    MLFLOW_TRACKING_USERNAME=PIPELINE_USER,
                    MLFLOW_TRACKING_PASSWORD=auth_mlflow["pipeline_password"])  # fmt: skip
    start = time.monotonic()
    proc = subprocess.run(
        [str(runtime_venv / "bin" / "python3"), str(RUNNER), str(COMMITTED), str(work),
         json.dumps(args)],
        capture_output=True, text=True, env=pod, timeout=1500, check=False, cwd=work.parent,
    )  # fmt: skip
    result = json.loads(proc.stdout.strip().splitlines()[-1]) if proc.stdout.strip() else {}
    assert proc.returncode == 0 and result.get("succeeded"), (result, proc.stderr[-4000:])
    print(f"committed package ran in the runtime venv in {time.monotonic() - start:.0f} s")

    from mlflow.exceptions import MlflowException
    from mlflow.tracking import MlflowClient

    from pairflow.summary import find_reports

    (run_dir,) = [d for d in (work / "runs").iterdir() if d.is_dir()]
    reports = find_reports(run_dir)
    gate = reports["evaluate"].metrics["gate"]
    assert gate["passed"], gate  # the gate's numbers and reasons, if the model fell short
    deployed = reports["deploy"].metrics
    assert deployed["decision"].startswith("promoted"), deployed
    assert deployed["aliases"]["champion_to"] == "1", deployed

    # The pipeline user registered the model and deploy made it champion, through auth.
    os.environ.update(MLFLOW_TRACKING_USERNAME="admin",
                      MLFLOW_TRACKING_PASSWORD=auth_mlflow["admin_password"])  # fmt: skip
    try:
        admin = MlflowClient(tracking_uri=url, registry_uri=url)
        champion = admin.get_model_version_by_alias("rt-clip", "champion")
        assert champion.version == "1"
        perm = _as_admin(
            url,
            auth_mlflow["admin_password"],
            # the auth client of MLflow 3.17: one permission lookup for every resource type
            lambda c: c.get_user_permission(PIPELINE_USER, "registered_model", "rt-clip"),
        )
        assert perm.permission == "MANAGE"  # it created the model: the pipeline user did it
        exp = admin.get_experiment_by_name("runtime-image")
        assert exp is not None
        (run,) = admin.search_runs([exp.experiment_id])
        assert run.data.tags["pairflow.final_state"] == "SUCCEEDED"
    finally:
        os.environ.pop("MLFLOW_TRACKING_USERNAME", None)
        os.environ.pop("MLFLOW_TRACKING_PASSWORD", None)
    # Nothing local stood in for the server: no sqlite store in the work dir.
    assert not list(work.rglob("mlflow.db"))

    # Unauthenticated and wrongly authenticated clients are refused.
    with pytest.raises(MlflowException, match=r"401|Unauthorized|credentials"):
        MlflowClient(tracking_uri=url).search_registered_models()
    req = urllib.request.Request(f"{url}/api/2.0/mlflow/registered-models/get?name=rt-clip")
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(req, timeout=10)
    assert refused.value.code == 401
