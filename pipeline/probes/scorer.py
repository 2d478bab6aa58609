"""CLIP scoring on the device tensor (open_clip): one image forward per batch serves the CLIP score,
and the attribute probes and safety concepts, through the normalised image embedding.

`clip_model` is `tiny` (small random config, fixed seed), `toy` (the shipped toy-world CLIP), an
open_clip model name with a local weights file, `local-dir:/path` (an open_clip directory), or
`random:<open_clip name>` (that architecture with random weights: benchmarks only).
Images never go through PNG or PIL here: uint8 (N, 3, H, W) tensors are resized and normalised
on their device (open_clip's own preprocessing: bicubic resize of the short side, centre crop).
"""

from __future__ import annotations

from collections import OrderedDict

TINY_CLIP_SEED = 20260102
TINY_CLIP_CFG = {  # ViT-shaped, small: builds in well under a second
    "embed_dim": 32,
    "vision_cfg": {"image_size": 64, "layers": 2, "width": 32, "patch_size": 16, "head_width": 16},
    "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 32, "heads": 4, "layers": 2},
}
OPENAI_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_STD = (0.26862954, 0.26130258, 0.27577711)
TEXT_CACHE_SIZE = 4096  # prompt embeddings kept per actor (a shard repeats each prompt per sample)


class ScorerError(ValueError):
    pass


def clip_score(cos):
    """Hessel et al. CLIPScore: 2.5 * max(cos, 0), per image (not torchmetrics' 100·cos)."""
    return 2.5 * cos.clamp(min=0)


def check_scorer_spec(spec: str, weights: str | None) -> None:
    """Cheap up-front check of scoring.clip_model / clip_weights (no weights read)."""
    import os

    if spec in ("tiny", "toy"):
        if spec == "toy":
            from pipeline.toyworld import CLIP_DIR

            if not os.path.isdir(CLIP_DIR):
                raise ScorerError(f"scoring.clip_model 'toy': shipped weights missing at {CLIP_DIR}")
        return
    if spec.startswith("random:"):  # an open_clip architecture with random weights (benchmarks)
        import open_clip

        if spec.removeprefix("random:") not in open_clip.list_models():
            raise ScorerError(f"scoring.clip_model {spec!r}: unknown open_clip architecture")
        return
    if spec.startswith("local-dir:"):
        d = spec.removeprefix("local-dir:")
        if not os.path.isdir(d):
            raise ScorerError(f"scoring.clip_model {spec!r}: no such directory")
        pickles = [f for f in os.listdir(d) if f.endswith((".bin", ".pt", ".pth", ".ckpt", ".pkl"))]
        if pickles and not any(f.endswith(".safetensors") for f in os.listdir(d)):
            raise ScorerError(
                f"scoring.clip_model {spec!r} holds only pickle weights ({', '.join(sorted(pickles))}); "
                "sdgen loads safetensors only: convert them (safetensors.torch.save_file)"
            )
        return
    import open_clip

    if spec not in open_clip.list_models():
        raise ScorerError(
            f"scoring.clip_model {spec!r} is not tiny, toy, local-dir:/path or an open_clip model name"
        )
    if not weights or not os.path.isfile(weights):
        raise ScorerError(
            f"scoring.clip_model {spec!r} needs scoring.clip_weights, a local weights file "
            f"(weights are never downloaded); got {weights!r}"
        )
    if not is_safetensors(weights):
        raise ScorerError(
            f"scoring.clip_weights {weights!r} is not a safetensors file (pickle weights are "
            "never loaded); convert it with safetensors.torch.save_file"
        )


def is_safetensors(path: str) -> bool:
    """A safetensors file starts with an 8-byte little-endian header length, then its JSON header."""
    with open(path, "rb") as f:
        head = f.read(9)
    return len(head) == 9 and head[8:9] == b"{" and 0 < int.from_bytes(head[:8], "little") < 100_000_000


def load_open_clip(spec: str, weights: str | None = None):
    """(model, tokenizer) for a clip_model spec, on the CPU in float32; no downloads."""
    import open_clip
    import torch

    if spec == "tiny":
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(TINY_CLIP_SEED)
            model = open_clip.CLIP(**TINY_CLIP_CFG)
        return model, open_clip.get_tokenizer("ViT-B-32")  # CLIP BPE, context 77
    if spec == "toy":
        from pipeline.toyworld import load_toy_clip

        return load_toy_clip()
    if spec.startswith("local-dir:"):
        return open_clip.create_model(spec), open_clip.get_tokenizer(spec)
    if spec.startswith("random:"):
        name = spec.removeprefix("random:")
        return open_clip.create_model(name, pretrained=None), open_clip.get_tokenizer(name)
    check_scorer_spec(spec, weights)
    return open_clip.create_model(spec, pretrained=weights), open_clip.get_tokenizer(spec)


class ClipScorer:
    """Holds one open_clip model on a device; encodes uint8 image tensors and cached prompts."""

    def __init__(self, spec: str, weights: str | None, device, dtype):
        import torch

        model, self.tokenizer = load_open_clip(spec, weights)
        self.model = model.to(device=device, dtype=dtype).eval()
        self.device, self.dtype, self.spec = torch.device(device), dtype, spec
        self.weights = weights
        size = getattr(model.visual, "image_size", 224)
        self.size = size[0] if isinstance(size, (tuple, list)) else int(size)
        pcfg = getattr(model.visual, "preprocess_cfg", {}) or {}
        mean, std = pcfg.get("mean", OPENAI_MEAN), pcfg.get("std", OPENAI_STD)
        self.mean = torch.tensor(mean, device=device, dtype=torch.float32).view(1, 3, 1, 1)
        self.std = torch.tensor(std, device=device, dtype=torch.float32).view(1, 3, 1, 1)
        self._text_cache: OrderedDict = OrderedDict()

    def embed_dim(self) -> int:
        """Width of the image embedding (from the model, or one forward of a blank image)."""
        import torch

        dim = getattr(self.model.visual, "output_dim", None)
        if dim is None:
            dim = self.encode_images(torch.zeros(1, 3, self.size, self.size, dtype=torch.uint8)).shape[-1]
        return int(dim)

    def preprocess(self, images_u8):
        """uint8 (N,3,H,W) on any device -> normalised float (N,3,S,S) on the scorer's device."""
        import torch.nn.functional as F

        x = images_u8.to(self.device, non_blocking=True).float() / 255.0
        h, w = x.shape[-2:]
        scale = self.size / min(h, w)
        nh, nw = max(self.size, round(h * scale)), max(self.size, round(w * scale))
        if (nh, nw) != (h, w):
            x = F.interpolate(x, size=(nh, nw), mode="bicubic", antialias=True, align_corners=False)
        top, left = (nh - self.size) // 2, (nw - self.size) // 2
        x = x[..., top : top + self.size, left : left + self.size].clamp(0, 1)
        return ((x - self.mean) / self.std).to(self.dtype)

    def encode_images(self, images_u8):
        import torch

        with torch.inference_mode():
            emb = self.model.encode_image(self.preprocess(images_u8)).float()
        return emb / emb.norm(dim=-1, keepdim=True).clamp(min=1e-12)

    def encode_texts(self, texts: list[str]):
        """Normalised text embeddings (float32), cached per distinct string."""
        import torch

        missing = list(dict.fromkeys(t for t in texts if t not in self._text_cache))
        if missing:
            with torch.inference_mode():
                emb = self.model.encode_text(self.tokenizer(missing).to(self.device)).float()
            emb = emb / emb.norm(dim=-1, keepdim=True).clamp(min=1e-12)
            for t, e in zip(missing, emb):
                self._text_cache[t] = e
        for t in texts:
            self._text_cache.move_to_end(t)
        while len(self._text_cache) > TEXT_CACHE_SIZE:
            self._text_cache.popitem(last=False)
        return torch.stack([self._text_cache[t] for t in texts])

    def score(self, images_u8, prompts: list[str]) -> dict:
        """cos(image, its prompt), CLIPScore, and the image embeddings for probes/safety."""
        img = self.encode_images(images_u8)
        txt = self.encode_texts(prompts)
        cos = (img * txt).sum(-1)
        return {"clip_cos": cos, "clip_score": clip_score(cos), "image_emb": img}


def resolve_device_dtype(device: str, dtype: str, cuda_auto: str | None = None):
    """`auto` device = cuda when present; `auto` dtype = `cuda_auto` (the model family's: bfloat16 for
    FLUX, SD3 and Sana) or float16 on CUDA, float32 on CPU."""
    import torch

    dev = torch.device(
        "cuda" if device == "auto" and torch.cuda.is_available() else ("cpu" if device == "auto" else device)
    )
    if dtype == "auto":
        dt = getattr(torch, cuda_auto or "float16") if dev.type == "cuda" else torch.float32
    else:
        dt = getattr(torch, dtype)
    return dev, dt
