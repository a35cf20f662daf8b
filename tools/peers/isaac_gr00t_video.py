"""Peer images for GR00T N1.5's video input, made by Isaac-GR00T's OWN eval video transforms
(gr00t/data/transform/video.py at NVIDIA/Isaac-GR00T 091e495, its schema / base classes beside it), so pirl's
crop + resize of camera frames can be compared with what an Isaac-GR00T N1.5 policy feeds its model.

    PYTHONPATH= /work/peers/isaac-venv/bin/python tools/peers/isaac_gr00t_video.py \\
        --src /work/peers/isaac-gr00t-src --inputs IN.npz --out OUT.npz [--per-sample] [--no-nocrop]

Runs only in /work/peers/isaac-venv, all from PyPI: torch 2.7.1 / torchvision 0.22.1 / albumentations 1.4.18 /
einops 0.8.1 / numpy 1.26.4 as pinned by Isaac-GR00T's pyproject.toml; pydantic 2.10.6 / numpydantic 1.6.7 /
opencv-python-headless 4.11.0.86, which it does not pin, as a published N1.5 dependency list pins them (README.txt
in --src says where each version came from). Nothing here imports pirl's code. --src is a directory holding the Isaac-GR00T
files read one by one from the public repository (the whole repository is too large to fetch here):
gr00t/data/transform/{video,base}.py, gr00t/data/{schema,embodiment_tags}.py, with empty package __init__.py
files standing in for Isaac's (which import the model, datasets, ...); its README.txt says which file came from
which commit. Those files stay outside this repository.

IN.npz: arrays images_<k>, uint8 (N, H, W, 3), one camera ("video key") per k; one resolution per k.
For each k the transforms are built as an Isaac-GR00T N1.5 data config composes them (e.g. So100DataConfig /
UnitreeG1DataConfig at 091e495), eval mode only:
    VideoToTensor -> VideoCrop(scale=0.95) -> VideoResize(224, 224, "linear") -> VideoToNumpy
(VideoColorJitter, which those configs put between resize and to-numpy, returns no eval transform: skipped in eval
by Isaac's own apply). Each gets set_metadata(DatasetMetadata) with modalities.video = {"cam": VideoMetadata(
resolution=(W, H), channels=3, fps=20)} (empty state / action / statistics, embodiment NEW_EMBODIMENT), then .eval()
(ModalityTransform.eval sets training=False, so VideoTransform.apply takes the eval transform: T.CenterCrop, not
T.RandomCrop), and they are applied in order to data = {"video.cam": images[:, None]} -- (B, T=1, H, W, C), the
batched 5-D layout Gr00tPolicy.get_action hands its transforms. --per-sample instead applies them per image on
(T=1, H, W, C) (unbatched 4-D), to check both paths agree.

OUT.npz:
  out_<k>     uint8 (N, 224, 224, 3)  the pipeline above
  nocrop_<k>  uint8 (N, 224, 224, 3)  the same without VideoCrop (FourierGr1ArmsOnlyDataConfig at 091e495 has the
              crop commented out; its VideoGaussianNoise returns no eval transform); left out with --no-nocrop
  versions    0-d str array: JSON of the package versions, the Isaac commit of each source file and its sha256
"""
import argparse
import hashlib
import importlib.metadata as md
import json
import os
import sys
from pathlib import Path

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")   # albumentations 1.4.18 asks PyPI for updates on import

import numpy as np

ISAAC_COMMIT = "091e495c2768f6b554308a135cc0c47746ceb6c4"
SOURCES = {   # file under --src -> where its text was read (see --src/README.txt)
    "gr00t/data/transform/video.py": "NVIDIA/Isaac-GR00T@091e495c2768f6b554308a135cc0c47746ceb6c4",
    "gr00t/data/transform/base.py": "NVIDIA/Isaac-GR00T@422ad8422ceb922dd9be6d8a862bb3e71d80ced7",
    "gr00t/data/embodiment_tags.py": "NVIDIA/Isaac-GR00T@16a6d6e17b91629cc82deae51f4ba81661b924e4",
    "gr00t/data/schema.py": "Tencent/VITA@e58bed32e691f74159e3a3d28df3915b61abf186 (vendored Isaac-GR00T copy)",
    "gr00t/__init__.py": "empty stand-in",
    "gr00t/data/__init__.py": "empty stand-in",
    "gr00t/data/transform/__init__.py": "empty stand-in",
}
KEY = "video.cam"
SIZE = 224


def build(metadata, crop: bool):
    from gr00t.data.transform.video import VideoCrop, VideoResize, VideoToNumpy, VideoToTensor
    transforms = [VideoToTensor(apply_to=[KEY])]
    if crop:
        transforms.append(VideoCrop(apply_to=[KEY], scale=0.95))
    transforms += [VideoResize(apply_to=[KEY], height=SIZE, width=SIZE, interpolation="linear"),
                   VideoToNumpy(apply_to=[KEY])]
    for t in transforms:
        t.set_metadata(metadata)
        t.eval()
        assert t.training is False
    if crop:   # the eval transform really is the centre crop
        import torchvision.transforms.v2 as T
        assert isinstance(transforms[1].eval_transform, T.CenterCrop), transforms[1].eval_transform
    return transforms


def metadata_for(height: int, width: int):
    from gr00t.data.embodiment_tags import EmbodimentTag
    from gr00t.data.schema import DatasetMetadata, DatasetModalities, DatasetStatistics, VideoMetadata
    return DatasetMetadata(
        statistics=DatasetStatistics(state={}, action={}),
        modalities=DatasetModalities(video={"cam": VideoMetadata(resolution=(width, height), channels=3, fps=20.0)},
                                     state={}, action={}),
        embodiment_tag=EmbodimentTag.NEW_EMBODIMENT)


def run(transforms, images: np.ndarray, per_sample: bool, chunk: int) -> np.ndarray:
    def apply(x):
        data = {KEY: x}
        for t in transforms:
            data = t(data)
        return data[KEY]

    outs = []
    if per_sample:
        for img in images:
            y = apply(np.ascontiguousarray(img[None]))            # (T=1, H, W, C) -> views (V=1, T=1, 224, 224, C)
            outs.append(y.reshape(SIZE, SIZE, 3))
        return np.stack(outs)
    for s in range(0, len(images), chunk):
        x = np.ascontiguousarray(images[s:s + chunk][:, None])   # (B, T=1, H, W, C)
        y = apply(x)                                              # (V=1, B, T=1, 224, 224, C)
        outs.append(y.reshape(-1, SIZE, SIZE, 3))
    return np.concatenate(outs)


def versions(src: Path) -> dict:
    v = {p: md.version(p) for p in ("torch", "torchvision", "albumentations", "pydantic", "numpydantic", "einops",
                                    "numpy", "opencv-python-headless")}
    files = {}
    for rel, origin in SOURCES.items():
        data = (src / rel).read_bytes()
        files[rel] = {"from": origin, "sha256": hashlib.sha256(data).hexdigest()}
    return {**v, "python": sys.version.split()[0], "isaac_commit": ISAAC_COMMIT, "isaac_files": files}


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--src", type=Path, required=True, help="directory holding the Isaac-GR00T gr00t/ files")
    ap.add_argument("--inputs", type=Path, required=True)
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--per-sample", action="store_true", help="(T, H, W, C) per image instead of (B, T, H, W, C)")
    ap.add_argument("--no-nocrop", action="store_true", help="skip the pipeline without VideoCrop")
    ap.add_argument("--chunk", type=int, default=64, help="images per batched call")
    args = ap.parse_args()

    sys.path.insert(0, str(args.src.resolve()))
    import gr00t.data.transform.video as isaac_video
    assert Path(isaac_video.__file__).resolve().is_relative_to(args.src.resolve()), isaac_video.__file__
    import torch
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))

    inputs = np.load(args.inputs)
    out = {}
    for name in sorted(inputs.files):
        if not name.startswith("images_"):
            continue
        k = name[len("images_"):]
        images = inputs[name]
        assert images.dtype == np.uint8 and images.ndim == 4 and images.shape[-1] == 3, (name, images.dtype,
                                                                                          images.shape)
        metadata = metadata_for(*images.shape[1:3])
        out[f"out_{k}"] = run(build(metadata, crop=True), images, args.per_sample, args.chunk)
        if not args.no_nocrop:
            out[f"nocrop_{k}"] = run(build(metadata, crop=False), images, args.per_sample, args.chunk)
    out["versions"] = np.array(json.dumps(versions(args.src.resolve()), sort_keys=True))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    np.savez(args.out, **out)
    print(f"wrote {args.out}: " + ", ".join(f"{n} {a.shape}" for n, a in out.items() if n != "versions"))


if __name__ == "__main__":
    main()
