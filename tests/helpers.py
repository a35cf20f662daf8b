"""Helpers shared by the tests: import a top-level script as a module (importing must not start a run), build a
random model Observation, unpack the committed Eagle processor files, and ask whether LIBERO and its assets, or
ManiSkill's software Vulkan, are installed."""

import importlib.util
import os
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]


def load_script(name: str):
    spec = importlib.util.spec_from_file_location(name, ROOT / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)  # importing must not start a run
    return module


def random_observation(config, batch: int, seed: int = 0):
    from common.policy import Observation

    gen = torch.Generator().manual_seed(seed)
    L = config.max_token_len
    return Observation(
        images=torch.rand(batch, config.num_cameras, 3, config.image_size, config.image_size, generator=gen) * 2 - 1,
        image_masks=torch.ones(batch, config.num_cameras, dtype=torch.bool),
        tokens=torch.randint(4, config.vocab_size, (batch, L), generator=gen),
        token_masks=torch.arange(L)[None].expand(batch, L) < 10,
        state=torch.randn(batch, config.action_dim, generator=gen),
    )


def unpack_eagle_files(directory: Path) -> Path:
    """The committed Isaac-GR00T Eagle files (tests/fixtures/peers/groot_eagle/eagle), vocab.json / merges.txt
    decompressed, into `directory`."""
    import lzma
    import shutil

    for f in (ROOT / "tests" / "fixtures" / "peers" / "groot_eagle" / "eagle").iterdir():
        if f.suffix == ".xz":
            (directory / f.stem).write_bytes(lzma.decompress(f.read_bytes()))
        else:
            shutil.copy(f, directory / f.name)
    return directory


def libero_ready() -> bool:
    """LIBERO and its assets are installed here (tools/setup_sims.sh): LIBERO tests run, else they skip."""
    try:
        import common.envs as E
        E._libero_assets_dir()
        return True
    except Exception:
        return False


def vulkan_ready() -> bool:
    """A software Vulkan driver for ManiSkill is installed (tools/setup_sims.sh; common.envs, imported first, points
    VK_ICD_FILENAMES at it): ManiSkill tests run, else they skip."""
    return bool(os.environ.get("VK_ICD_FILENAMES")) and Path(os.environ["VK_ICD_FILENAMES"]).exists()
