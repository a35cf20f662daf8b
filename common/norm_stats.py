"""Reading a checkpoint's normalisation stats (shared by checkpoint.py's π0 / π0.5 loader and groot_checkpoint.py's
GR00T one): openpi's norm_stats.json per asset id, or a LeRobot normalizer state file, as openpi's layout
{"norm_stats": {"state": {"mean", "std", "q01", "q99", ...}, "actions": {...}}}."""
import json
from pathlib import Path

from safetensors import safe_open


def find_norm_stats(path: Path, asset_id: str | None = None) -> tuple[Path | None, str | None]:
    """openpi keeps norm stats per asset id: DIR/assets/<asset_id>/norm_stats.json (openpi), DIR/<asset_id>/
    norm_stats.json (RLinf); ids may be nested ("physical-intelligence/libero"). asset_id picks one, as openpi's
    data config does; without it the only one, or a ValueError listing the ids. (None, None) if there is none."""
    found = {}
    for f in sorted(path.rglob("norm_stats.json")):
        rel = f.parent.relative_to(path).as_posix()
        aid = rel[len("assets/"):] if rel.startswith("assets/") else rel
        if aid not in found or rel.startswith("assets/"):   # openpi's assets/ first
            found[aid] = f
    if asset_id is not None:
        if asset_id not in found:
            raise FileNotFoundError(f"{path}: no norm stats for asset id {asset_id!r} (expected "
                                    f"assets/{asset_id}/norm_stats.json); asset ids there: {sorted(found) or 'none'}")
        return found[asset_id], asset_id
    if len(found) > 1:
        raise ValueError(f"{path} holds norm stats for {len(found)} asset ids {sorted(found)}: choose one with "
                         "asset_id=... (the scripts' --asset-id)")
    return next(((f, a) for a, f in found.items()), (None, None))


def read_norm_stats(path: Path, asset_id: str | None = None) -> dict:
    """The stats of find_norm_stats, else those of a LeRobot *normalizer*.safetensors; FileNotFoundError if neither."""
    f, _ = find_norm_stats(path, asset_id)
    if f is not None:
        return json.loads(f.read_text())
    for f in sorted(path.glob("*normalizer*.safetensors")):   # LeRobot processor state
        stats = {"state": {}, "actions": {}}
        with safe_open(str(f), "pt") as fh:
            for k in fh.keys():
                feat, _, stat = k.rpartition(".")
                name = {"observation.state": "state", "action": "actions"}.get(feat)
                if name:
                    stats[name][stat] = fh.get_tensor(k).float().tolist()
        if stats["state"] and stats["actions"]:
            return {"norm_stats": stats}
    raise FileNotFoundError(f"no normalisation stats in {path}: expected assets/<asset_id>/norm_stats.json, "
                            "<asset_id>/norm_stats.json or a LeRobot *normalizer*.safetensors")
