"""LeRobot's own image normalisation, run in LeRobot's venv, for tests/test_peer_lerobot.py (issue 25): a π0
config whose normalization_mapping VISUAL is not IDENTITY feeds its model normalised images. What LeRobot 0.6.1
does, from its code: NormalizerProcessorStep (processor/normalize_processor.py) on each camera's x / 255 (C, H, W)
at the render size with that camera's (C, 1, 1) stats, then PI0Policy._preprocess_images (policies/pi0/
modeling_pi0.py): resize_with_pad_torch to the model's resolution when the sizes differ (it clamps to [0, 1]),
then 2x - 1.

    /work/peers/lerobot061-venv/bin/python tools/peers/lerobot_image_norm.py tests/fixtures/peers/lerobot/image_norm.safetensors

The fixture holds, per case (mode x render size), the raw uint8 images (N, 2, H, W, 3), both cameras' stats and
LeRobot's model images (N, 2, 3, 32, 32)."""
import sys
from types import SimpleNamespace

import torch
from safetensors.torch import save_file

from lerobot.configs.types import FeatureType, NormalizationMode, PolicyFeature
from lerobot.policies.pi0.modeling_pi0 import PI0Policy
from lerobot.processor.normalize_processor import NormalizerProcessorStep

CAMERAS = ("observation.images.base", "observation.images.wrist")   # the pi0 fixture's, in its config's order
RES = (32, 32)


def lerobot_images(raw: torch.Tensor, mode: str, stats: dict) -> torch.Tensor:
    features = {k: PolicyFeature(type=FeatureType.VISUAL, shape=(3, *raw.shape[2:4])) for k in CAMERAS}
    step = NormalizerProcessorStep(features=features, norm_map={FeatureType.VISUAL: NormalizationMode(mode)},
                                   stats=stats, eps=1e-8)
    obs = {k: raw[:, i].permute(0, 3, 1, 2).float() / 255.0 for i, k in enumerate(CAMERAS)}   # envs/utils.py preprocess
    obs = step._normalize_observation(obs, inverse=False)
    fake = SimpleNamespace(config=SimpleNamespace(image_features=list(CAMERAS), image_resolution=RES),
                           parameters=lambda: iter([torch.zeros(1)]))
    images, _ = PI0Policy._preprocess_images(fake, obs)
    return torch.stack(images, 1)                                   # (N, 2, 3, 32, 32)


def main(out: str):
    g = torch.Generator().manual_seed(0)
    tensors = {}
    for size in ((48, 40), (32, 32)):   # resized (with LeRobot's clamp) and as rendered
        raw = torch.randint(0, 256, (2, 2, *size, 3), generator=g, dtype=torch.uint8)
        stats = {k: {"mean": torch.rand(3, generator=g) * 0.5 + 0.25, "std": torch.rand(3, generator=g) * 0.2 + 0.1,
                     "min": torch.rand(3, generator=g) * 0.2, "max": torch.rand(3, generator=g) * 0.2 + 0.8,
                     "q01": torch.rand(3, generator=g) * 0.2, "q99": torch.rand(3, generator=g) * 0.2 + 0.8}
                 for k in CAMERAS}
        tag = f"{size[0]}x{size[1]}"
        tensors[f"{tag}.raw"] = raw
        for k in CAMERAS:
            for s, v in stats[k].items():
                tensors[f"{tag}.{k}.{s}"] = v.reshape(3, 1, 1)   # as LeRobot's compute_stats writes them
        for mode in ("MEAN_STD", "QUANTILES"):
            tensors[f"{tag}.{mode}"] = lerobot_images(raw, mode, stats).contiguous()
    save_file(tensors, out)
    print("wrote", out, sorted({k.split(".")[0] for k in tensors}))


if __name__ == "__main__":
    main(sys.argv[1])
