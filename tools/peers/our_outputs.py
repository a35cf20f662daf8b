"""Our outputs on a peer fixture's inputs, for a peer's own loader to compare with (project venv).

    .venv/bin/python tools/peers/our_outputs.py DIR --reference tests/fixtures/peers/openpi/pi0/reference.safetensors \
        --out /tmp/ours.safetensors [--asset-id metaworld]
    /work/peers/openpi-venv/bin/python tools/peers/openpi_fixtures.py --openpi-src ... --check-dir DIR \
        --variant pi0 --ours /tmp/ours.safetensors --asset-id metaworld

Writes the fixture's inputs (images, masks, tokens, state, noise, x_t, t), our velocity at (x_t, t) and our
10-step ODE actions from DIR as loaded by common.checkpoint.load_policy, and the norm stats our Processor uses
(`stats.<state|actions>.<mean|std|q01|q99>`).
"""
import argparse
import sys
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from common.checkpoint import load_policy  # noqa: E402
from common.policy import Observation  # noqa: E402


@torch.no_grad()
def our_outputs(directory, reference, asset_id=None, num_steps=10) -> dict:
    policy, proc = load_policy(directory, asset_id=asset_id)
    policy.eval()
    r = load_file(str(reference))
    obs = Observation(images=r["images"], image_masks=r["image_masks"], tokens=r["tokens"],
                      token_masks=r["token_masks"], state=r["state"])
    out = {k: r[k] for k in ("images", "image_masks", "tokens", "token_masks", "state", "noise", "x_t", "t")}
    out["velocity"] = policy.velocity(policy.encode(obs), r["x_t"], r["t"])[0]
    out["actions"] = policy.sample_actions(obs, r["noise"].clone(), num_steps=num_steps)
    for key, stats in proc.norm_stats["norm_stats"].items():
        for s, v in stats.items():
            if v is not None:
                out[f"stats.{key}.{s}"] = torch.tensor(v, dtype=torch.float64)
    return out


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("directory")
    p.add_argument("--reference", required=True, help="a peer fixture's reference.safetensors (its inputs)")
    p.add_argument("--out", required=True)
    p.add_argument("--asset-id", default=None)
    p.add_argument("--num-steps", type=int, default=10)
    a = p.parse_args()
    torch.set_num_threads(1)
    out = our_outputs(a.directory, a.reference, a.asset_id, a.num_steps)
    save_file({k: v.contiguous() for k, v in out.items()}, a.out)
    print(f"wrote {a.out}")
