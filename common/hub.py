"""--checkpoint DIR | org/name[@revision] -> a local checkpoint dir, and the paper's SFT checkpoint per --env x --model.

A Hugging Face Hub id is resolved by huggingface_hub's own snapshot_download into its own cache, so the
variables users already set behave as with transformers / LeRobot / openpi:
    HF_HOME, HF_HUB_CACHE   where the cache is (default ~/.cache/huggingface/hub)
    HF_HUB_OFFLINE=1        no network: the cache only
    HF_TOKEN                private / gated repos (or `hf auth login`)
    HF_ENDPOINT             a mirror
A local dir that exists wins over a Hub id of the same spelling. Under torchrun only rank 0 downloads;
the others wait for it, then read the same files from the cache. Each failure is one UsageError line
saying which (no such repo, gated or private, no such revision, no network, offline and not cached)
and what to do.

Without --checkpoint the RL scripts start from the paper's own few-shot SFT checkpoint (section 5.1,
published by RLinf) where no scripted expert makes the embedded tiny default: PAPER_CHECKPOINTS.
"""
from __future__ import annotations

import re
from pathlib import Path

from common.errors import UsageError

# (our --env family, --model) -> (Hub id, the data config its owners trained it under, by its common/conventions.py
# name). Ids as RLinf publishes them today: its docs (docs/source-en/rst_source/examples/embodied/pi0.rst "Model
# List", .../resources/publications/pi_rl.rst) and the model_path comments of its configs
# (examples/embodiment/config/libero_{spatial,10}_ppo_openpi[_pi05].yaml, maniskill_ppo_openpi[_pi05].yaml,
# metaworld_50_ppo_openpi[_pi05].yaml). The paper (5.1, footnotes 4-6) names the LIBERO ones as they were before
# RLinf renamed them (RLinf PR #471): RLinf-Pi0-SFT-Spatial-Object-Goal, RLinf-Pi0-SFT-Long, RLinf-Pi05-SFT.
# Data configs: RLinf's model/pi0.yaml openpi config_name "pi0_libero", model/pi0_5.yaml "pi05_libero", run in RLinf's
# own LIBERO env (the paper's RL and evaluations): rlinf_pi0_libero / rlinf_pi05_libero; its
# ManiSkill / MetaWorld configs name "pi0_maniskill" / "pi05_maniskill" and "pi0_metaworld" / "pi05_metaworld",
# which common/conventions.py holds as rlinf_maniskill and rlinf_metaworld (the same transforms for π0 and π0.5).
PAPER_CHECKPOINTS: dict[tuple[str, str], tuple[str, str]] = {
    ("libero-spatial", "pi0"): ("RLinf/RLinf-Pi0-LIBERO-Spatial-Object-Goal-SFT", "rlinf_pi0_libero"),
    ("libero-object", "pi0"): ("RLinf/RLinf-Pi0-LIBERO-Spatial-Object-Goal-SFT", "rlinf_pi0_libero"),
    ("libero-goal", "pi0"): ("RLinf/RLinf-Pi0-LIBERO-Spatial-Object-Goal-SFT", "rlinf_pi0_libero"),
    ("libero-long", "pi0"): ("RLinf/RLinf-Pi0-LIBERO-Long-SFT", "rlinf_pi0_libero"),
    ("libero-spatial", "pi05"): ("RLinf/RLinf-Pi05-LIBERO-SFT", "rlinf_pi05_libero"),   # one π0.5 SFT for all four suites
    ("libero-object", "pi05"): ("RLinf/RLinf-Pi05-LIBERO-SFT", "rlinf_pi05_libero"),
    ("libero-goal", "pi05"): ("RLinf/RLinf-Pi05-LIBERO-SFT", "rlinf_pi05_libero"),
    ("libero-long", "pi05"): ("RLinf/RLinf-Pi05-LIBERO-SFT", "rlinf_pi05_libero"),
    # RLinf's env maniskill_put_on_plate_in_scene_25_main (PutOnPlateInScene25Main-v3): the paper's 4352-variation
    # pick-and-place generalisation set (5.2.2); no SFT checkpoint is published for the four SIMPLER tasks
    ("maniskill-put-on-plate", "pi0"): ("RLinf/RLinf-Pi0-ManiSkill-25Main-SFT", "rlinf_maniskill"),
    ("maniskill-put-on-plate", "pi05"): ("RLinf/RLinf-Pi05-ManiSkill-25Main-SFT", "rlinf_maniskill"),
    # trained on all 50 MetaWorld tasks (lerobot/metaworld_mt50, 5.2.3): every metaworld-* env maps here
    ("metaworld-mt50", "pi0"): ("RLinf/RLinf-Pi0-MetaWorld-SFT", "rlinf_metaworld"),
    ("metaworld-mt50", "pi05"): ("RLinf/RLinf-Pi05-MetaWorld-SFT", "rlinf_metaworld"),
    # GR00T N1.5, appendix C's few-shot LIBERO start (Table 10: 41.4 / 58.6 / 48.2 / 61.9), one per suite: RLinf's
    # docs (docs/source-en/rst_source/examples/embodied/gr00t.rst) and examples/embodiment/config/
    # libero_*_ppo_gr00t.yaml model_path comments; Eagle's processor files come from $PIRL_EAGLE_DIR (common/eagle.py)
    ("libero-spatial", "groot"): ("RLinf/RLinf-Gr00t-SFT-Spatial", "rlinf_gr00t_libero"),
    ("libero-object", "groot"): ("RLinf/RLinf-Gr00t-SFT-Object", "rlinf_gr00t_libero"),
    ("libero-goal", "groot"): ("RLinf/RLinf-Gr00t-SFT-Goal", "rlinf_gr00t_libero"),
    ("libero-long", "groot"): ("RLinf/RLinf-Gr00t-SFT-10", "rlinf_gr00t_libero"),
}
PAPER_DEFAULT_MODEL = "pi0"   # --model absent on an env without a scripted expert: the paper's first family
MODEL_NAMES = {"pi0": "π0", "pi05": "π0.5", "groot": "GR00T N1.5"}

# org/name (Hub's repo id rules: letters, digits, - _ . ; no leading/trailing - or .) and an optional @revision
_HUB_ID = re.compile(r"^(?P<repo>[A-Za-z0-9][\w.-]{0,95}/[A-Za-z0-9][\w.-]{0,95})(?:@(?P<rev>[^\s@]+))?$")


def paper_checkpoint(env: str, model: str) -> tuple[str, str] | None:
    """(Hub id, data config) of the paper's SFT checkpoint for env x model ("pi0" / "pi05"), or None."""
    key = "metaworld-mt50" if env.startswith("metaworld-") else env
    return PAPER_CHECKPOINTS.get((key, model))


def paper_envs(model: str | None = None) -> list[str]:
    """The --env names that have a paper SFT checkpoint (of `model`, else of any family; metaworld-* standing for
    every MetaWorld env)."""
    envs = dict.fromkeys(env for env, family in PAPER_CHECKPOINTS if model in (None, family))
    return ["metaworld-*" if env == "metaworld-mt50" else env for env in envs]


def default_checkpoint(env: str, model: str | None) -> str | None:
    """The checkpoint an RL script starts from without --checkpoint: None for the embedded tiny default
    (--model tiny / tiny-groot, or no --model on an env with a scripted expert), else the paper's SFT
    checkpoint's Hub id for env x model (no --model: π0); a UsageError when the paper published none."""
    from common.experts import has_expert

    if model in ("tiny", "tiny-groot") or (model is None and has_expert(env)):
        return None
    family = model or PAPER_DEFAULT_MODEL
    found = paper_checkpoint(env, family)
    if found is None:
        have = "; ".join(f"{MODEL_NAMES[m]}: {', '.join(paper_envs(m))}" for m in MODEL_NAMES)
        raise UsageError(f"--env {env}" + (f" --model {model}" if model else "") + ": the paper published no SFT "
                         f"checkpoint for it (it has {have}); pass --checkpoint DIR or "
                         "org/name (a Hugging Face Hub id) with an SFT checkpoint of that env")
    return found[0]


def paper_context(env: str, model: str | None) -> str:
    """Head of an error line for the paper checkpoint the run needs without --checkpoint (which one, and why)."""
    family = model or PAPER_DEFAULT_MODEL
    repo, config = paper_checkpoint(env, family)
    return (f"--env {env} without --checkpoint starts from the paper's {MODEL_NAMES[family]} SFT checkpoint {repo} "
            f"(Hugging Face Hub, data config {config})")


def known_data_config(spec: str | None) -> str | None:
    """The data config of a paper checkpoint named by its Hub id (any revision), else None."""
    hub_id = parse_hub_id(spec) if spec is not None and not Path(spec).expanduser().is_dir() else None
    configs = {repo: config for repo, config in PAPER_CHECKPOINTS.values()}
    return configs.get(hub_id[0]) if hub_id else None


def parse_hub_id(spec: str) -> tuple[str, str | None] | None:
    """'org/name' or 'org/name@revision' -> (repo id, revision or None); None when spec is not spelled like one."""
    match = _HUB_ID.match(spec)
    if match is None or ".." in spec or spec.startswith((".", "~")):
        return None
    return match.group("repo"), match.group("rev")


def check_checkpoint_spec(spec: str, flag: str = "--checkpoint") -> None:
    """Before anything is built, without network: spec is an existing dir or spelled like a Hub id."""
    if Path(spec).expanduser().is_dir() or parse_hub_id(spec) is not None:
        return
    raise UsageError(f"{flag} {spec}: no such directory, nor a Hugging Face Hub id (org/name or org/name@revision); "
                     "pass a local SFT checkpoint dir (openpi, LeRobot or RLinf) or a Hub repo id")


def hub_cache_dir() -> str:
    """The cache huggingface_hub downloads into (HF_HUB_CACHE, else HF_HOME/hub, else ~/.cache/huggingface/hub)."""
    from huggingface_hub import constants

    return constants.HF_HUB_CACHE


def resolve_checkpoint(spec: str, flag: str = "--checkpoint", context: str | None = None) -> Path:
    """--checkpoint value -> local dir: an existing dir as it is, a Hub id through huggingface_hub's cache
    (downloaded with its progress bars when missing or stale). Under torchrun rank 0 downloads while the
    others wait, then they read rank 0's cache (each node's own when the cache is not shared). `context`
    replaces "{flag} {spec}" at the head of the error line (the paper default names why it is needed)."""
    local = Path(spec).expanduser()
    if local.is_dir():
        return local
    check_checkpoint_spec(spec, flag)
    repo_id, revision = parse_hub_id(spec)
    head = context or f"{flag} {spec}"
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return _announce(repo_id, revision, _download(repo_id, revision, head, flag=flag))
    box = [None]
    if dist.get_rank() == 0:
        try:
            box = [("ok", str(_announce(repo_id, revision, _download(repo_id, revision, head, flag=flag))))]
        except UsageError as err:
            box = [("error", str(err))]
    dist.broadcast_object_list(box, src=0)   # the other ranks wait here for rank 0's download
    status, value = box[0]
    if status == "error":   # rank 0 says it, once; the others stop with the same exit code
        if dist.get_rank() == 0:
            raise UsageError(value)
        raise SystemExit(2)
    if dist.get_rank() == 0:
        return Path(value)
    try:
        return _download(repo_id, revision, head, local_files_only=True, flag=flag)
    except UsageError:   # another node, another cache: its own copy
        return _download(repo_id, revision, head, flag=flag)


def _announce(repo_id: str, revision: str | None, path: Path) -> Path:
    """Say which snapshot a Hub id resolved to (the commit is the folder's name), once."""
    print(f"checkpoint: {repo_id}{'@' + revision if revision else ''} -> {path}", flush=True)
    return path


def _download(repo_id: str, revision: str | None, head: str, local_files_only: bool = False,
              flag: str = "--checkpoint") -> Path:
    """snapshot_download (progress bars and all) with each expected failure turned into one UsageError line."""
    from huggingface_hub import snapshot_download

    try:
        return Path(snapshot_download(repo_id, revision=revision, local_files_only=local_files_only))
    except Exception as err:
        usage = _explain(err, repo_id, revision, head, local_files_only, flag)
        if usage is None:
            raise
        raise usage from None


def _explain(err: Exception, repo_id: str, revision: str | None, head: str, local_files_only: bool = False,
             flag: str = "--checkpoint"):
    """The UsageError for one of huggingface_hub's expected failures (None for anything else): which one, what to do."""
    try:
        import httpx2   # huggingface_hub 2.x's HTTP client
    except ImportError:   # pragma: no cover - older releases use httpx
        import httpx as httpx2
    from huggingface_hub import constants
    from huggingface_hub.errors import (DisabledRepoError, DryRunError, GatedRepoError, HfHubHTTPError,
                                        LocalEntryNotFoundError, OfflineModeIsEnabled, RepositoryNotFoundError,
                                        RevisionNotFoundError)

    at = f"@{revision}" if revision else ""
    page = f"{constants.ENDPOINT}/{repo_id}"
    cache = hub_cache_dir()
    config = known_data_config(repo_id)
    local_copy = (f"or download it where there is network (`hf download {repo_id}"
                  + (f" --revision {revision}" if revision else "") + f" --local-dir DIR`) and pass {flag} DIR"
                  + (f" --data-config {config}" if config else ""))
    if isinstance(err, (LocalEntryNotFoundError, DryRunError)) and not local_files_only and err.__cause__ is not None:
        err = err.__cause__   # offline or unreachable: why huggingface_hub fell back to the (empty) cache
    if isinstance(err, GatedRepoError):
        return UsageError(f"{head}: {repo_id} is a gated repo on the Hugging Face Hub and this token has no access: "
                          f"accept its terms on {page}, then `hf auth login` or set HF_TOKEN; {local_copy}")
    if isinstance(err, RevisionNotFoundError):
        return UsageError(f"{head}: {repo_id} has no revision {revision!r} (a branch, tag or commit of {page}); "
                          "drop @revision for its main branch")
    if isinstance(err, DisabledRepoError):
        return UsageError(f"{head}: {repo_id} is disabled on the Hugging Face Hub ({page}); pick another checkpoint")
    if isinstance(err, RepositoryNotFoundError):
        token = "the token set (HF_TOKEN / `hf auth login`) may not read it" if _has_token() else "no HF_TOKEN is set"
        return UsageError(f"{head}: no repo {repo_id} on the Hugging Face Hub ({constants.ENDPOINT}), and no local dir "
                          f"of that name: check the id; if it is private or gated, {token} (set HF_TOKEN or run "
                          "`hf auth login` with a token that may read it)")
    if isinstance(err, LocalEntryNotFoundError) and local_files_only:
        return UsageError(f"{head}: {repo_id}{at} is not in the Hugging Face cache {cache}")
    if isinstance(err, OfflineModeIsEnabled) or (isinstance(err, LocalEntryNotFoundError) and constants.is_offline_mode()):
        return UsageError(f"{head}: HF_HUB_OFFLINE=1 and {repo_id}{at} is not in the Hugging Face cache {cache}: "
                          f"unset HF_HUB_OFFLINE to download it, point HF_HOME at a cache that holds it, {local_copy}")
    if isinstance(err, (httpx2.TransportError, LocalEntryNotFoundError, OSError)) and not isinstance(err, HfHubHTTPError):
        text = str(err).splitlines()[0][:160] if str(err) else ""
        return UsageError(f"{head}: cannot reach the Hugging Face Hub at {constants.ENDPOINT} ({type(err).__name__}"
                          + (f": {text}" if text else "") + f") and {repo_id}{at} is not in its cache {cache}: run once "
                          f"with network access (rank 0 downloads it), point HF_HOME at a cache that holds it, {local_copy}")
    if isinstance(err, HfHubHTTPError):   # 401 with bad credentials, 403, 5xx: the server said why
        status = err.response.status_code if err.response is not None else "?"
        return UsageError(f"{head}: the Hugging Face Hub ({constants.ENDPOINT}) answered {status} for {repo_id}{at}"
                          + (" (private or gated: set HF_TOKEN or run `hf auth login` with a token that may read it)"
                             if status in (401, 403) else " (try again later)") + f"; {local_copy}")
    return None


def _has_token() -> bool:
    """Whether huggingface_hub would send a token (HF_TOKEN or a saved login)."""
    from huggingface_hub import get_token

    return get_token() is not None


def describe(spec: str | None, env: str | None = None, model: str | None = None) -> list[str]:
    """What --checkpoint (or its absence, for env x model) would load, as printable lines; touches no weights
    and downloads nothing (at most asks the Hub for the file list)."""
    lines, head = [], f"--checkpoint {spec}"
    if spec is None:
        spec = default_checkpoint(env, model)
        if spec is None:
            return [f"--env {env}: the embedded tiny default (scripted-expert demos -> few-shot SFT, cached under "
                    "runs/cache/sft); no download"]
        family = model or PAPER_DEFAULT_MODEL
        repo, config = paper_checkpoint(env, family)
        lines += [f"paper SFT checkpoint for --env {env} --model {family} ({MODEL_NAMES[family]})"
                  + ("" if model else ": the paper's default family when --model is not given"),
                  f"data config: {config}"]
        head = paper_context(env, model)
    elif known_data_config(spec):
        lines.append(f"data config: {known_data_config(spec)} (a paper checkpoint)")
    local = Path(spec).expanduser()
    if local.is_dir():
        return lines + [f"local dir: {local.resolve()}"]
    check_checkpoint_spec(spec)
    repo_id, revision = parse_hub_id(spec)
    from huggingface_hub import constants, snapshot_download
    from huggingface_hub.errors import LocalEntryNotFoundError

    lines += [f"hub id: {repo_id}", f"revision: {revision or 'main'}", f"cache: {hub_cache_dir()}"]
    try:
        path = snapshot_download(repo_id, revision=revision, local_files_only=True)
        return lines + [f"in the cache: {path}"]
    except LocalEntryNotFoundError:
        pass
    source = f"{constants.ENDPOINT}/{repo_id}"
    if constants.is_offline_mode():
        return lines + [f"not in the cache, and HF_HUB_OFFLINE=1: would need a download from {source}"]
    try:
        files = snapshot_download(repo_id, revision=revision, dry_run=True)
    except Exception as err:   # the same failures as a real run: say which, in one line
        usage = _explain(err, repo_id, revision, head)
        if usage is None:
            raise
        return lines + [f"not in the cache: {usage}"]
    todo = [f for f in files if f.will_download]
    size = sum(f.file_size or 0 for f in todo)
    return lines + [f"not in the cache: would download {len(todo)} files ({size / 1e9:.2f} GB) from {source} "
                    f"at commit {files[0].commit_hash if files else '?'}"]
