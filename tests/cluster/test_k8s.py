"""jobs/k8s/: every ray.io manifest validates strictly against the KubeRay CRD schemas (a misspelt
field fails), the plain CronJob has the structure an operator relies on, each entrypoint parses as
an sdgen command and each embedded config validates."""

from __future__ import annotations

import copy
import shlex
from pathlib import Path

import pytest
import yaml

from pipeline.cli import build_parser
from pipeline.core.config import from_dict

ROOT = Path(__file__).resolve().parents[2]
K8S = ROOT / "jobs" / "k8s"
MANIFESTS = ["rayjob.yaml", "raycronjob.yaml", "cronjob.yaml"]


def _crd_dir() -> Path | None:
    """../shared/k8s/crds beside the repository (or beside the folder of worktrees it sits in)."""
    for base in (ROOT, ROOT.parent, ROOT.parent.parent):
        d = base / "shared" / "k8s" / "crds"
        if d.is_dir():
            return d
    return None


def _docs(name: str) -> list[dict]:
    return [d for d in yaml.safe_load_all((K8S / name).read_text()) if d]


def _strict(schema):
    """additionalProperties: false on every object schema that lists properties and does not
    preserve unknown fields (kubeconform -strict)."""
    if isinstance(schema, dict):
        out = {k: _strict(v) for k, v in schema.items()}
        if (
            "properties" in out
            and not out.get("x-kubernetes-preserve-unknown-fields")
            and "additionalProperties" not in out
        ):
            out["additionalProperties"] = False
        return out
    if isinstance(schema, list):
        return [_strict(v) for v in schema]
    return schema


@pytest.fixture(scope="module")
def validators():
    d = _crd_dir()
    if d is None:
        pytest.skip(
            f"KubeRay CRDs not found (looked for shared/k8s/crds beside {ROOT}); "
            "they are reference data outside the repository"
        )
    import jsonschema

    out = {}
    for f in d.glob("ray.io_*.yaml"):
        crd = yaml.safe_load(f.read_text())
        (version,) = [v for v in crd["spec"]["versions"] if v["name"] == "v1"]
        schema = version["schema"]["openAPIV3Schema"]
        kind = crd["spec"]["names"]["kind"]
        out[kind] = jsonschema.Draft7Validator(_strict(schema))
        out[kind + ":loose"] = jsonschema.Draft7Validator(schema)
    return out


def _ray_docs():
    return [(name, d) for name in MANIFESTS for d in _docs(name) if d["apiVersion"].startswith("ray.io/")]


def _errors(validator, doc) -> list[str]:
    return [f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in validator.iter_errors(doc)]


@pytest.mark.parametrize("name,doc", _ray_docs(), ids=lambda x: x if isinstance(x, str) else x["kind"])
def test_ray_manifests_validate_strictly_against_the_kuberay_crds(validators, name, doc):
    assert doc["apiVersion"] == "ray.io/v1"
    errors = _errors(validators[doc["kind"]], doc)
    assert not errors, f"{name}: {errors[:5]}"


def _job_spec(doc: dict) -> dict:
    return doc["spec"]["jobTemplate"] if doc["kind"] == "RayCronJob" else doc["spec"]


TYPOS = [
    ((), "shutdownAfterJobFinishes", "shutdownAfterJobFinish"),
    (("rayClusterSpec", "headGroupSpec"), "rayStartParams", "rayStartParam"),
    (
        ("rayClusterSpec", "workerGroupSpecs", 0, "template", "spec", "containers", 0),
        "volumeMounts",
        "volumeMount",
    ),
]


@pytest.mark.parametrize("path,right,wrong", TYPOS, ids=[t[2] for t in TYPOS])
def test_a_misspelt_field_fails(validators, path, right, wrong):
    (doc,) = [d for _, d in _ray_docs() if d["kind"] == "RayJob"]
    bad = copy.deepcopy(doc)
    node = _job_spec(bad)
    for key in path:
        node = node[key]
    node[wrong] = node.pop(right)
    errors = _errors(validators["RayJob"], bad)
    assert any(repr(wrong) in e for e in errors), f"misspelt {wrong!r} passed the strict schema: {errors}"
    assert not _errors(validators["RayJob:loose"], bad)  # the CRD alone lets it through: strictness matters


def _configmaps(name: str) -> dict[str, dict]:
    return {d["metadata"]["name"]: d for d in _docs(name) if d["kind"] == "ConfigMap"}


def _config_mount(pod_spec: dict, container: dict, path: str, configmaps: dict) -> dict:
    """The ConfigMap key mounted at `path` in `container`, parsed as an sdgen config."""
    directory, key = path.rsplit("/", 1)
    (mount,) = [m for m in container["volumeMounts"] if m["mountPath"] == directory]
    (vol,) = [v for v in pod_spec["volumes"] if v["name"] == mount["name"]]
    data = configmaps[vol["configMap"]["name"]]["data"]
    assert key in data, f"{key} not in ConfigMap {vol['configMap']['name']}"
    return yaml.safe_load(data[key])


def _sdgen_args(argv: list[str]):
    assert argv[:3] == ["python", "-m", "pipeline.cli"], argv
    args = build_parser().parse_args(argv[3:])
    assert args.command == "run" and args.no_progress
    return args


@pytest.mark.parametrize("name", ["rayjob.yaml", "raycronjob.yaml"])
def test_rayjob_entrypoint_parses_and_its_config_validates(name):
    (doc,) = [d for d in _docs(name) if d["kind"] in ("RayJob", "RayCronJob")]
    spec = _job_spec(doc)
    assert spec["shutdownAfterJobFinishes"] is True and spec["ttlSecondsAfterFinished"] > 0
    assert spec["backoffLimit"] >= 0
    args = _sdgen_args(shlex.split(spec["entrypoint"]))
    cluster = spec["rayClusterSpec"]
    head_pod = cluster["headGroupSpec"]["template"]["spec"]
    raw = _config_mount(head_pod, head_pod["containers"][0], args.config, _configmaps(name))
    cfg = from_dict(raw, args.set, source=f"{name}:{args.config}")  # validates only: s3:// is not listed
    assert cfg.ray.executor == "ray" and cfg.ray.address == "auto"
    (gpu,) = cluster["workerGroupSpecs"]
    c = gpu["template"]["spec"]["containers"][0]
    assert c["resources"]["limits"]["nvidia.com/gpu"] == 1
    assert (
        gpu["maxReplicas"] * c["resources"]["limits"]["nvidia.com/gpu"]
        >= cfg.ray.num_workers * cfg.ray.num_gpus_per_worker
    )
    for container in (head_pod["containers"][0], c):
        _assert_s3_from_secret(container)
    if cfg.model.startswith("/"):  # a local model path is a volume on the GPU workers
        assert any(cfg.model.startswith(m["mountPath"] + "/") for m in c["volumeMounts"])
    else:
        assert cfg.model.startswith("s3://")


def _assert_s3_from_secret(container: dict) -> None:
    env = {e["name"]: e for e in container["env"]}
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        assert "value" not in env[name] and env[name]["valueFrom"]["secretKeyRef"]["name"], name


def test_plain_cronjob_structure_and_its_submit_command():
    import importlib.util

    (cron,) = [d for d in _docs("cronjob.yaml") if d["kind"] == "CronJob"]
    assert cron["apiVersion"] == "batch/v1"
    spec = cron["spec"]
    assert spec["concurrencyPolicy"] == "Forbid" and len(spec["schedule"].split()) == 5
    pod = spec["jobTemplate"]["spec"]["template"]["spec"]
    assert pod["restartPolicy"] in ("Never", "OnFailure")
    (c,) = pod["containers"]
    env = {e["name"]: e for e in c["env"]}
    assert env["RAY_AUTH_MODE"]["value"] == "token" and "secretKeyRef" in env["RAY_AUTH_TOKEN"]["valueFrom"]
    argv = c["command"]
    assert argv[:2] == ["python", "/opt/sdgen/jobs/submit.py"]
    spec_ = importlib.util.spec_from_file_location("submit", ROOT / "jobs" / "submit.py")
    submit = importlib.util.module_from_spec(spec_)
    spec_.loader.exec_module(submit)
    args = submit.build_parser().parse_args(argv[2:])
    assert args.wait and submit.parse_env(args.env) == {"HF_HUB_OFFLINE": "1"}
    sd = _sdgen_args(shlex.split(submit.entrypoint(args)))  # what the job will run
    raw = _config_mount(pod, c, args.config, _configmaps("cronjob.yaml"))
    from_dict(raw, sd.set, source=f"cronjob.yaml:{args.config}")


def test_dockerfile_installs_the_wheel_on_a_gpu_base():
    text = (K8S / "Dockerfile").read_text()
    froms = [line.split()[1] for line in text.splitlines() if line.startswith("FROM ")]
    assert froms and all(f.startswith("rayproject/ray:") and f.split(" ")[0].endswith("-gpu") for f in froms)
    assert "pip wheel" in text and "sdgen-*.whl" in text and "/opt/sdgen/jobs" in text
    assert "python -m pipeline.cli --version" in text
