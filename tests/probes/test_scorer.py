import torch

from pipeline.probes.scorer import ClipScorer, clip_score


def test_clip_score_formula():
    cos = torch.tensor([-0.3, 0.0, 0.2, 0.31])
    assert torch.allclose(clip_score(cos), torch.tensor([0.0, 0.0, 0.5, 0.775]))


def test_scores_are_cosines_of_normalised_embeddings():
    s = ClipScorer("tiny", None, "cpu", torch.float32)
    imgs = torch.randint(0, 255, (3, 3, 64, 64), dtype=torch.uint8)
    out = s.score(imgs, ["a", "b", "a"])
    img, txt = s.encode_images(imgs), s.encode_texts(["a", "b", "a"])
    assert torch.allclose(img.norm(dim=-1), torch.ones(3), atol=1e-5)
    assert torch.allclose(out["clip_cos"], (img * txt).sum(-1), atol=1e-6)
    assert len(s._text_cache) == 2  # each distinct prompt encoded once


def test_device_preprocessing_resizes_and_centre_crops():
    s = ClipScorer("tiny", None, "cpu", torch.float32)
    x = torch.zeros((1, 3, 128, 64), dtype=torch.uint8)
    x[:, :, 32:96] = 255  # white band in the middle half
    y = s.preprocess(x)
    assert y.shape == (1, 3, 64, 64)
    white = (1 - s.mean.flatten()) / s.std.flatten()
    assert torch.allclose(y[0, :, 32, 32], white, atol=1e-3)  # the crop kept the centre
