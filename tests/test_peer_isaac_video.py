"""An Isaac-GR00T N1.5 checkpoint's camera input, against Isaac-GR00T's own evaluation video transforms
(gr00t/data/transform/video.py at 091e495, run by tools/peers/isaac_gr00t_video.sh on pirl's LIBERO renders of
libero-spatial task 0's first 10 init states, both cameras at 256 px).

pirl's model input under the data configs `isaac_gr00t` (VideoCrop 0.95, then VideoResize) and `isaac_gr00t_no_crop`
is Eagle's processor applied to exactly the peer's images; under `pirl` (no Isaac transforms) it is not.
"""
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from common import eagle
from common.conventions import DATA_CONFIGS, resolve_data_config
from helpers import unpack_eagle_files

FIX = Path(__file__).parent / "fixtures" / "peers" / "isaac_video"


@pytest.fixture(scope="module")
def ref():
    return dict(np.load(FIX / "reference.npz")), json.loads((FIX / "reference.json").read_text())


@pytest.fixture(scope="module")
def processor(tmp_path_factory):
    """An EagleProcessor with the real Eagle files, LIBERO's two cameras at N1.5's 224 px tile."""
    from common.groot import make_config
    d = unpack_eagle_files(tmp_path_factory.mktemp("eagle"))
    config = make_config("tiny-groot", state_dim=8, action_dim=7, num_cameras=2, max_token_len=600, image_size=224)
    entry = {"statistics": {"state": {"s": {"min": [-1.0] * 8, "max": [1.0] * 8}},
                            "action": {"a": {"min": [-1.0] * 7, "max": [1.0] * 7}}},
             "modalities": {"video": {"image": {"resolution": [256, 256]}, "wrist_image": {"resolution": [256, 256]}},
                            "state": {"s": {"shape": [8]}}, "action": {"a": {"shape": [7]}}}}
    return eagle.EagleProcessor(d, entry, "new_embodiment", config)


def model_images(processor, images: np.ndarray, data_config: str) -> torch.Tensor:
    processor.data_config = DATA_CONFIGS[data_config]
    raw = {"images": images, "state": np.zeros((len(images), 8), np.float32), "instruction": ["pick"] * len(images)}
    return processor.observation(raw, "cpu").images                                  # (N, 2, 3, 224, 224)


@pytest.mark.parametrize("data_config, peer", [("isaac_gr00t", "crop"), ("isaac_gr00t_no_crop", "nocrop")])
def test_the_model_sees_what_isaac_gr00ts_video_transforms_make(ref, processor, data_config, peer):
    r, meta = ref
    assert r["images"].shape == (10, 2, 256, 256, 3) and meta["render_size"] == 256
    ours = model_images(processor, r["images"], data_config)
    theirs = processor.images(r[peer].reshape(-1, 224, 224, 3)).reshape(ours.shape)
    # in uint8 levels: equal but for the last float digit of one resize on another torch (0 or 1 pixel at 1 level)
    levels = (ours - theirs).abs() * processor.images.std.view(1, 1, 3, 1, 1)
    assert levels.max() <= 1.0 + 1e-4 and (levels > 0.5).float().mean() < 1e-5, (levels.max(), (levels > 0.5).sum())
    direct = eagle.isaac_eval_video(r["images"].reshape(-1, 256, 256, 3), DATA_CONFIGS[data_config].isaac_video_crop, 224)
    assert np.abs(direct.astype(int) - r[peer].reshape(direct.shape)).max() <= 1


def test_without_them_the_model_sees_another_image(ref, processor):
    r, _ = ref
    plain = model_images(processor, r["images"], "pirl")
    crop = processor.images(r["crop"].reshape(-1, 224, 224, 3)).reshape(plain.shape)
    assert (plain - crop).abs().mean() * 127.5 > 5   # the 95% crop shifts every pixel by up to 6 px


def test_an_isaac_checkpoint_of_this_resolution_renders_at_it(ref, processor):
    """The render size the peer took (its metadata.json resolution) is what the envs are asked for."""
    _, meta = ref
    assert processor.provenance.source_format == "isaac-gr00t"   # an EagleProcessor's default: an Isaac-GR00T dir
    row = resolve_data_config(None, processor, meta["env"])
    assert row.name == "isaac_gr00t" and row.env_options(meta["env"], 224)["image_size"] == meta["render_size"]
