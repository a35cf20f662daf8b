"""common/hub.py: --checkpoint org/name[@revision] through huggingface_hub's own code, with no network.

A small HTTP server on 127.0.0.1 (a thread, an ephemeral port) answers the Hub endpoints snapshot_download
uses (GET /api/models/{repo}/revision/{rev}, GET /api/models/{repo}/tree/{rev}, HEAD/GET
/{repo}/resolve/{rev}/{file} with X-Repo-Commit / ETag / Content-Length, and the Hub's X-Error-Code on
failures) for repos made here from the committed openpi fixture. HF_ENDPOINT points at it and HF_HOME at
tmp_path; huggingface_hub reads both at import, so every run is a subprocess with its own environment.
"""
import hashlib
import json
import os
import shutil
import socket
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import unquote, urlparse

import pytest

from common import hub
from common.errors import UsageError

ROOT = Path(__file__).resolve().parents[1]
FIXTURE = ROOT / "tests" / "fixtures" / "peers" / "openpi" / "pi0"   # a tiny openpi-layout π0 checkpoint
REPO, GATED = "pirl-test/tiny-pi0", "pirl-test/gated-pi0"
TIMEOUT = 120   # every subprocess stops by itself


# ---- a Hub on the loopback interface -------------------------------------------------------------
class FakeHub:
    """repos: {repo_id: {"commits": {sha: {path: bytes}}, "refs": {name: sha}, "gated": bool}}; requests: what was asked."""

    def __init__(self, repos: dict):
        self.repos, self.requests = repos, []
        hub_ = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):   # quiet
                pass

            def do_HEAD(self):
                hub_.answer(self, body=False)

            def do_GET(self):
                hub_.answer(self, body=True)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(timeout=10)

    @staticmethod
    def send(handler, status: int, payload: bytes = b"", headers: dict | None = None, body: bool = True):
        handler.send_response(status)
        for key, value in (headers or {}).items():
            handler.send_header(key, value)
        handler.send_header("Content-Length", str(len(payload)))
        handler.end_headers()
        if body:
            handler.wfile.write(payload)

    def error(self, handler, status: int, code: str, body: bool, commit: str | None = None):
        headers = {"X-Error-Code": code, "X-Error-Message": code, "Content-Type": "application/json"}
        if commit:
            headers["X-Repo-Commit"] = commit
        self.send(handler, status, json.dumps({"error": code}).encode(), headers, body)

    def lookup(self, repo_id: str, rev: str):
        repo = self.repos[repo_id]
        sha = repo["refs"].get(rev, rev if rev in repo["commits"] else None)
        return repo, sha

    def answer(self, handler, body: bool):
        url = urlparse(handler.path)
        parts = [unquote(p) for p in url.path.strip("/").split("/")]
        token = handler.headers.get("authorization")
        self.requests.append((handler.command, url.path, token is not None))
        if parts[:2] == ["api", "models"]:   # /api/models/{org}/{name}/(revision|tree)/{rev}
            repo_id, kind, rev = "/".join(parts[2:4]), parts[4], parts[5]
            if repo_id not in self.repos:   # the Hub: 401 without a token (private or missing), 404 with one
                return self.error(handler, 404 if token else 401, "RepoNotFound", body)
            repo, sha = self.lookup(repo_id, rev)
            if sha is None:
                return self.error(handler, 404, "RevisionNotFound", body)
            files = repo["commits"][sha]
            if kind == "revision":
                info = {"id": repo_id, "modelId": repo_id, "sha": sha, "private": False,
                        "gated": "manual" if repo.get("gated") else False,
                        "siblings": [{"rfilename": path} for path in sorted(files)]}
            else:
                info = [{"type": "file", "path": path, "size": len(data), "oid": hashlib.sha1(data).hexdigest()}
                        for path, data in sorted(files.items())]
            return self.send(handler, 200, json.dumps(info).encode(), {"Content-Type": "application/json"}, body)
        if len(parts) >= 5 and parts[2] == "resolve":   # /{org}/{name}/resolve/{rev}/{path}
            repo_id, rev, path = "/".join(parts[:2]), parts[3], "/".join(parts[4:])
            if repo_id not in self.repos:
                return self.error(handler, 404 if token else 401, "RepoNotFound", body)
            repo, sha = self.lookup(repo_id, rev)
            if sha is None:
                return self.error(handler, 404, "RevisionNotFound", body)
            if repo.get("gated"):   # the Hub: 401 without a token, 403 with one that was not granted access
                return self.error(handler, 403 if token else 401, "GatedRepo", body, commit=sha)
            data = repo["commits"][sha].get(path)
            if data is None:
                return self.error(handler, 404, "EntryNotFound", body, commit=sha)
            return self.send(handler, 200, data, {"X-Repo-Commit": sha, "ETag": f'"{hashlib.sha1(data).hexdigest()}"',
                                                  "Content-Type": "application/octet-stream"}, body)
        return self.error(handler, 404, "RepoNotFound", body)


def read_dir(folder: Path) -> dict:
    """{relative path: bytes} of every file under folder."""
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def dirs(tmp_path_factory):
    """Two revisions of one tiny checkpoint as local dirs: main (the fixture) and v1 (one tensor changed)."""
    import torch
    from safetensors.torch import load_file, save_file

    base = tmp_path_factory.mktemp("hub_dirs")
    main, v1 = base / "main", base / "v1"
    shutil.copytree(FIXTURE, main)
    shutil.copytree(FIXTURE, v1)
    weights = load_file(str(v1 / "model.safetensors"))
    name = sorted(weights)[0]
    weights[name] = weights[name] + torch.ones_like(weights[name])
    save_file(weights, str(v1 / "model.safetensors"))
    return {"main": main, "v1": v1}


@pytest.fixture(scope="module")
def fake_hub(dirs):
    main, v1 = read_dir(dirs["main"]), read_dir(dirs["v1"])
    sha_main, sha_v1 = hashlib.sha1(b"main").hexdigest(), hashlib.sha1(b"v1").hexdigest()
    server = FakeHub({
        REPO: {"commits": {sha_main: main, sha_v1: v1}, "refs": {"main": sha_main, "v1": sha_v1}},
        GATED: {"commits": {sha_main: main}, "refs": {"main": sha_main}, "gated": True},
    })
    server.sha = {"main": sha_main, "v1": sha_v1}
    yield server
    server.close()


def hf_env(home: Path, endpoint: str, **extra) -> dict:
    """This process's environment without any HF_* / token of the user's, with the cache in `home`."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "HUGGING_FACE", "HUGGINGFACE"))}
    env.update(HF_HOME=str(home), HF_ENDPOINT=endpoint, HF_HUB_DISABLE_TELEMETRY="1", HF_HUB_ETAG_TIMEOUT="10",
               HF_HUB_DOWNLOAD_TIMEOUT="10", OMP_NUM_THREADS="1", OPENPI_DATA_HOME=str(home / "openpi"),
               PYTHONPATH=str(ROOT), **extra)
    return env


LOAD = """
import json, sys, torch
from common.errors import main_errors
from common.run import load_checkpoint
from common.checkpoint import load_policy
with main_errors():
    out = {}
    for spec, local in zip(sys.argv[1::2], sys.argv[2::2]):
        got = load_checkpoint(spec, asset_id="metaworld")[0].state_dict()
        want = load_policy(local, asset_id="metaworld")[0].state_dict()
        out[spec] = got.keys() == want.keys() and all(torch.equal(got[k], want[k]) for k in want)
    print("RESULT " + json.dumps(out))
"""

RESOLVE = """
import sys
from common.errors import main_errors
from common.hub import resolve_checkpoint
with main_errors():
    print("RESULT", resolve_checkpoint(sys.argv[1]))
"""


def run_py(code: str, args: list, env: dict) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code, *map(str, args)], env=env, cwd=ROOT, capture_output=True,
                          text=True, timeout=TIMEOUT)


def result(proc) -> str:
    assert proc.returncode == 0, proc.stderr[-3000:]
    return next(line for line in proc.stdout.splitlines() if line.startswith("RESULT"))[len("RESULT "):]


def one_error_line(proc, *fragments):
    """Exit 2, and stderr is one `error:` line holding every fragment (after huggingface_hub's progress bars, if
    it got as far as the downloads: a gated repo lists its files, then refuses them)."""
    lines = [line for line in proc.stderr.replace("\r", "\n").splitlines() if line.strip() and "%|" not in line]
    assert proc.returncode == 2, proc.stderr[-3000:]
    assert len(lines) == 1 and lines[0].startswith("error: "), proc.stderr[-3000:]
    for fragment in fragments:
        assert fragment in lines[0], (fragment, lines[0])
    return lines[0]


@pytest.fixture(scope="module")
def downloaded(fake_hub, dirs, tmp_path_factory):
    """One download run: org/name, org/name@v1 (a tag) and org/name@<commit> through load_checkpoint."""
    home = tmp_path_factory.mktemp("hf_home")
    before = len(fake_hub.requests)
    proc = run_py(LOAD, [REPO, dirs["main"], f"{REPO}@v1", dirs["v1"], f"{REPO}@{fake_hub.sha['main']}", dirs["main"]],
                  hf_env(home, fake_hub.url))
    return home, json.loads(result(proc)), proc, fake_hub.requests[before:]


def test_hub_id_and_revisions_load_the_same_weights_as_the_local_dirs(downloaded, fake_hub):
    home, same, proc, requests = downloaded
    assert same == {REPO: True, f"{REPO}@v1": True, f"{REPO}@{fake_hub.sha['main']}": True}
    assert any(method == "GET" and "/resolve/" in path for method, path, _ in requests)   # really downloaded
    # huggingface_hub's own cache layout under HF_HOME: refs/<rev> -> commit, snapshots/<commit>/<files>
    storage = home / "hub" / "models--pirl-test--tiny-pi0"
    assert (storage / "refs" / "main").read_text() == fake_hub.sha["main"]
    assert (storage / "refs" / "v1").read_text() == fake_hub.sha["v1"]
    for rev in ("main", "v1"):
        assert (storage / "snapshots" / fake_hub.sha[rev] / "model.safetensors").is_file()
    assert f"checkpoint: {REPO}@v1 -> {storage / 'snapshots' / fake_hub.sha['v1']}" in proc.stdout
    assert "Fetching" in proc.stderr or "Download" in proc.stderr   # huggingface_hub's progress bars


def test_offline_after_a_download_loads_from_the_cache(downloaded, fake_hub, dirs):
    home = downloaded[0]
    before = len(fake_hub.requests)
    proc = run_py(LOAD, [REPO, dirs["main"], f"{REPO}@v1", dirs["v1"]], hf_env(home, fake_hub.url, HF_HUB_OFFLINE="1"))
    assert json.loads(result(proc)) == {REPO: True, f"{REPO}@v1": True}
    assert len(fake_hub.requests) == before   # not one request


def test_local_dir_wins_over_a_hub_id_of_the_same_spelling(tmp_path, fake_hub):
    (tmp_path / REPO).mkdir(parents=True)
    before = len(fake_hub.requests)
    proc = subprocess.run([sys.executable, "-c", RESOLVE, REPO], env=hf_env(tmp_path / "hf", fake_hub.url),
                          cwd=tmp_path, capture_output=True, text=True, timeout=TIMEOUT)
    assert result(proc) == REPO and len(fake_hub.requests) == before


@pytest.mark.parametrize("case", ["missing-no-token", "missing-token", "gated-no-token", "gated-token", "revision",
                                  "offline"])
def test_each_hub_failure_is_one_error_line_saying_which(case, tmp_path, fake_hub):
    spec, extra, fragments = {
        "missing-no-token": ("pirl-test/no-such-repo", {}, ["no repo pirl-test/no-such-repo", "no HF_TOKEN"]),   # 401
        "missing-token": ("pirl-test/no-such-repo", {"HF_TOKEN": "hf_fake"}, ["no repo pirl-test/no-such-repo",
                                                                               "may not read it"]),              # 404
        "gated-no-token": (GATED, {}, ["gated repo", f"{fake_hub.url}/{GATED}", "HF_TOKEN"]),                   # 401
        "gated-token": (GATED, {"HF_TOKEN": "hf_fake"}, ["gated repo", "HF_TOKEN"]),                             # 403
        "revision": (f"{REPO}@no-such-branch", {}, ["has no revision 'no-such-branch'"]),
        "offline": (REPO, {"HF_HUB_OFFLINE": "1"}, ["HF_HUB_OFFLINE=1", "not in the Hugging Face cache",
                                                    "--checkpoint DIR"]),
    }[case]
    proc = run_py(RESOLVE, [spec], hf_env(tmp_path / "hf", fake_hub.url, **extra))
    one_error_line(proc, f"--checkpoint {spec}:", *fragments)


TORCHRUN = """
import sys
from common.distributed import cleanup, setup_distributed
from common.errors import main_errors
from common.hub import resolve_checkpoint
with main_errors():
    d = setup_distributed("cpu")
    print("RESULT", d.rank, resolve_checkpoint(sys.argv[1]), flush=True)
    cleanup()   # as the scripts end: a gloo group left to the interpreter's exit can abort it
"""


def test_under_torchrun_only_rank_0_downloads(tmp_path, fake_hub):
    script = tmp_path / "resolve.py"
    script.write_text(TORCHRUN)
    env = hf_env(tmp_path / "hf", fake_hub.url, PYTHONUNBUFFERED="1")
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", str(script)]
    before = len(fake_hub.requests)
    proc = subprocess.run([*torchrun, f"{REPO}@v1"], env=env, cwd=ROOT, capture_output=True, text=True, timeout=TIMEOUT)
    assert proc.returncode == 0, proc.stderr[-3000:]
    paths = {line.split()[1]: line.split()[2] for line in proc.stdout.splitlines() if line.startswith("RESULT")}
    assert set(paths) == {"0", "1"} and paths["0"] == paths["1"]
    assert paths["0"].endswith(f"snapshots/{fake_hub.sha['v1']}")
    gets = [path for method, path, _ in fake_hub.requests[before:] if method == "GET" and "/resolve/" in path]
    assert len(gets) == len(read_dir(FIXTURE))   # each file fetched once: by rank 0 alone
    proc = subprocess.run([*torchrun, "pirl-test/no-such-repo"], env=env, cwd=ROOT, capture_output=True, text=True,
                          timeout=TIMEOUT)
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error: ")]
    assert proc.returncode != 0 and len(errors) == 1 and "no repo pirl-test/no-such-repo" in errors[0], proc.stderr[-3000:]


@pytest.mark.slow
def test_scripts_and_evaluate_run_from_a_hub_id(tmp_path, fake_hub):
    """The entry points end to end: flow_sde_ppo.py --checkpoint org/name (1 tiny iteration) and tools/evaluate.py
    --checkpoint org/name@rev load the snapshot that rank 0 downloaded into HF_HOME."""
    from test_scripts_e2e import TINY_FLAGS, make_tiny_checkpoint

    env_name = "metaworld-button-press-topdown-v3"
    files = read_dir(make_tiny_checkpoint(env_name, tmp_path / "tiny"))
    sha = hashlib.sha1(b"tiny-metaworld").hexdigest()
    fake_hub.repos["pirl-test/tiny-metaworld"] = {"commits": {sha: files}, "refs": {"main": sha}}
    env = hf_env(tmp_path / "hf", fake_hub.url, PYTHONUNBUFFERED="1")
    snapshot = tmp_path / "hf" / "hub" / "models--pirl-test--tiny-metaworld" / "snapshots" / sha
    proc = subprocess.run([sys.executable, "flow_sde_ppo.py", "--env", env_name, "--checkpoint", "pirl-test/tiny-metaworld",
                           "--total-iterations", "1", "--run-root", str(tmp_path / "runs"), *TINY_FLAGS],
                          env=env, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert f"checkpoint: pirl-test/tiny-metaworld -> {snapshot}" in proc.stdout
    proc = subprocess.run([sys.executable, "tools/evaluate.py", "--env", env_name, "--checkpoint",
                           f"pirl-test/tiny-metaworld@{sha}", "--episodes-per-task", "1", "--num-envs", "1"],
                          env={**env, "HF_HUB_OFFLINE": "1"}, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert '"success_rate"' in proc.stdout and not list(snapshot.glob("eval_*.json"))   # nothing written into the cache


def closed_port() -> int:
    """A loopback port nothing listens on (bound, then released): connections to it are refused at once."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_design_card_command_without_network_is_one_line_naming_the_checkpoint(tmp_path):
    env = hf_env(tmp_path / "hf", f"http://127.0.0.1:{closed_port()}")
    proc = subprocess.run([sys.executable, "flow_sde_ppo.py", "--env", "libero-long", "--run-root", str(tmp_path / "runs")],
                          env=env, cwd=ROOT, capture_output=True, text=True, timeout=TIMEOUT)
    one_error_line(proc, "--env libero-long without --checkpoint", "RLinf/RLinf-Pi0-LIBERO-Long-SFT",   # which
                   "cannot reach the Hugging Face Hub", "hf download RLinf/RLinf-Pi0-LIBERO-Long-SFT",      # how to get it
                   "--checkpoint DIR --data-config rlinf_pi0_libero")                                      # a local copy
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").iterdir())


def test_dry_run_prints_what_would_be_loaded_without_loading_it(tmp_path, fake_hub):
    tool = [sys.executable, "tools/which_checkpoint.py"]
    env = hf_env(tmp_path / "hf", fake_hub.url)
    run = lambda *flags, **kw: subprocess.run([*tool, *flags], env={**env, **kw}, cwd=ROOT, capture_output=True,
                                              text=True, timeout=TIMEOUT)
    before = run("--env", "libero-long", "--checkpoint", f"{REPO}@v1")
    assert before.returncode == 0, before.stderr
    n = len(read_dir(FIXTURE))
    assert f"hub id: {REPO}" in before.stdout and "revision: v1" in before.stdout
    assert f"would download {n} files" in before.stdout and f"{fake_hub.url}/{REPO}" in before.stdout
    assert not (tmp_path / "hf" / "hub" / "models--pirl-test--tiny-pi0" / "snapshots").exists()   # nothing fetched
    result(run_py(RESOLVE, [f"{REPO}@v1"], env))   # now download it
    after = run("--env", "libero-long", "--checkpoint", f"{REPO}@v1", HF_HUB_OFFLINE="1")
    assert f"in the cache: {tmp_path / 'hf' / 'hub' / 'models--pirl-test--tiny-pi0' / 'snapshots' / fake_hub.sha['v1']}" \
        in after.stdout
    paper = run("--env", "libero-long", HF_HUB_OFFLINE="1")   # the design card's env, no --checkpoint
    assert paper.returncode == 0, paper.stderr
    for line in ("hub id: RLinf/RLinf-Pi0-LIBERO-Long-SFT", "revision: main", "data config: rlinf_pi0_libero",
                 "--model pi0", "not in the cache, and HF_HUB_OFFLINE=1"):
        assert line in paper.stdout, paper.stdout
    groot = run("--env", "libero-goal", "--model", "groot", HF_HUB_OFFLINE="1")   # appendix C's GR00T N1.5 start
    assert groot.returncode == 0, groot.stderr
    for line in ("hub id: RLinf/RLinf-Gr00t-SFT-Goal", "data config: rlinf_gr00t_libero", "--model groot"):
        assert line in groot.stdout, groot.stdout
    one_error_line(run("--env", "libero-90"), "--env libero-90", "pass --checkpoint")


# ---- the default table, no network --------------------------------------------------------------
def test_default_checkpoint_per_env_and_model():
    from common.envs import ENV_NAMES

    expect = {
        ("libero-spatial", None): "RLinf/RLinf-Pi0-LIBERO-Spatial-Object-Goal-SFT",   # no --model: π0 (the paper's default)
        ("libero-object", "pi0"): "RLinf/RLinf-Pi0-LIBERO-Spatial-Object-Goal-SFT",
        ("libero-goal", "pi0"): "RLinf/RLinf-Pi0-LIBERO-Spatial-Object-Goal-SFT",
        ("libero-long", None): "RLinf/RLinf-Pi0-LIBERO-Long-SFT",
        ("libero-long", "pi05"): "RLinf/RLinf-Pi05-LIBERO-SFT",
        ("libero-spatial", "pi05"): "RLinf/RLinf-Pi05-LIBERO-SFT",
        ("maniskill-put-on-plate", None): "RLinf/RLinf-Pi0-ManiSkill-25Main-SFT",
        ("maniskill-put-on-plate", "pi05"): "RLinf/RLinf-Pi05-ManiSkill-25Main-SFT",
        ("metaworld-mt50", "pi0"): "RLinf/RLinf-Pi0-MetaWorld-SFT",
        ("metaworld-reach-v3", "pi05"): "RLinf/RLinf-Pi05-MetaWorld-SFT",
        ("metaworld-mt50", None): None,            # a scripted expert: the embedded tiny default, as before
        ("maniskill-PickCube-v1", None): None,
        ("libero-long", "tiny"): None,             # the embedded default (its own error: no scripted expert)
    }
    for (env, model), want in expect.items():
        assert hub.default_checkpoint(env, model) == want, (env, model)
    assert hub.known_data_config("RLinf/RLinf-Pi0-LIBERO-Long-SFT@main") == "rlinf_pi0_libero"   # RLinf's LIBERO env
    assert hub.known_data_config("RLinf/RLinf-Pi05-LIBERO-SFT") == "rlinf_pi05_libero"
    for (env, model), (repo, config) in hub.PAPER_CHECKPOINTS.items():
        assert env in ENV_NAMES and repo.startswith(("RLinf/RLinf-Pi0", "RLinf/RLinf-Gr00t-SFT-")) and config
        assert ("Pi05" in repo) == (model == "pi05") and ("Gr00t" in repo) == (model == "groot")
        assert config in ("rlinf_pi0_libero", "rlinf_pi05_libero", "rlinf_maniskill", "rlinf_metaworld",
                          "rlinf_gr00t_libero")
        assert (config == "rlinf_gr00t_libero") == (model == "groot")
    for env, model in (("metaworld-reach-v3", "groot"), ("maniskill-put-on-plate", "groot")):   # GR00T: LIBERO only
        with pytest.raises(UsageError, match=r"no SFT checkpoint.*GR00T N1.5: libero-spatial"):
            hub.default_checkpoint(env, model)
    for env in ("libero-90", "maniskill-carrot"):   # no paper checkpoint: one line listing those that have one
        for model in (None, "pi0", "groot"):
            with pytest.raises(UsageError, match=r"no SFT checkpoint.*libero-long.*metaworld-\*.*pass --checkpoint"):
                hub.default_checkpoint(env, model)


def test_every_script_documents_the_table_and_the_design_card_command():
    for script in ("flow_sde_ppo", "flow_noise_ppo", "flow_sde_grpo"):
        text = (ROOT / f"{script}.py").read_text()
        assert f"torchrun --nproc_per_node 8 {script}.py --env libero-long " in text   # its docstring's Launch:
        for repo, _ in hub.PAPER_CHECKPOINTS.values():   # --checkpoint's --help
            assert repo in text, (script, repo)


def test_data_configs_of_the_table_exist_in_conventions():
    from common.conventions import DATA_CONFIGS

    assert {config for _, config in hub.PAPER_CHECKPOINTS.values()} <= set(DATA_CONFIGS)


def test_checkpoint_spec_is_a_dir_or_a_hub_id(tmp_path):
    assert hub.parse_hub_id("RLinf/RLinf-Pi0-LIBERO-Long-SFT") == ("RLinf/RLinf-Pi0-LIBERO-Long-SFT", None)
    assert hub.parse_hub_id("org/name@v1.0") == ("org/name", "v1.0")
    for local in ("/abs/path", "./rel/x", "../x/y", "runs/cache/sft", "~/ckpt/x", "name"):
        assert hub.parse_hub_id(local) is None
    hub.check_checkpoint_spec(str(tmp_path))
    hub.check_checkpoint_spec("org/name@main")
    with pytest.raises(UsageError, match="no such directory, nor a Hugging Face Hub id"):
        hub.check_checkpoint_spec(str(tmp_path / "nope"))


# ---- the tokenizer: the checkpoint dir, then openpi's cache, then the HF cache (LeRobot's) ---------
def test_tokenizer_lookup_order_and_error(tmp_path, monkeypatch):
    from huggingface_hub import constants as hf_constants

    from common.tokenizer import load_tokenizer, train_tiny_tokenizer

    protos = {name: train_tiny_tokenizer([f"{name} words here"], tmp_path / "made" / name).model_proto
              for name in ("dir", "openpi", "hf")}
    assert len(set(protos.values())) == 3
    ckpt, openpi, cache = tmp_path / "ckpt", tmp_path / "openpi", tmp_path / "hf_hub"
    ckpt.mkdir()
    monkeypatch.setenv("OPENPI_DATA_HOME", str(openpi))
    monkeypatch.setattr(hf_constants, "HF_HUB_CACHE", str(cache))
    with pytest.raises(FileNotFoundError) as err:
        load_tokenizer(ckpt)
    line = str(err.value)
    assert "\n" not in line
    for fragment in ("paligemma_tokenizer.model", "gs://big_vision/paligemma_tokenizer.model", str(ckpt / "tokenizer.model"),
                     str(openpi / "big_vision" / "paligemma_tokenizer.model"), "google/paligemma-3b-pt-224"):
        assert fragment in line
    snapshot = cache / "models--google--paligemma-3b-pt-224" / "snapshots" / ("a" * 40)   # where LeRobot's download lands
    snapshot.mkdir(parents=True)
    (snapshot / "tokenizer.model").write_bytes(protos["hf"])
    (cache / "models--google--paligemma-3b-pt-224" / "refs").mkdir()
    (cache / "models--google--paligemma-3b-pt-224" / "refs" / "main").write_text("a" * 40)
    assert load_tokenizer(ckpt).model_proto == protos["hf"]
    with pytest.raises(FileNotFoundError):   # a shared tokenizer larger than the model's vocabulary is not its own
        load_tokenizer(ckpt, vocab_size=100)
    (openpi / "big_vision").mkdir(parents=True)
    (openpi / "big_vision" / "paligemma_tokenizer.model").write_bytes(protos["openpi"])
    assert load_tokenizer(ckpt).model_proto == protos["openpi"]
    (ckpt / "paligemma_tokenizer.model").write_bytes(protos["dir"])
    assert load_tokenizer(ckpt).model_proto == protos["dir"]
