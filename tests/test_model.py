"""The CTN and its baselines: shapes, locality of the conditioning, composition, parts."""

import pytest
import torch
from torch import nn

from composite_tasking.model import (
    ENCODERS,
    CompositeTaskingNet,
    EncoderWeightsUnavailable,
    ModelConfig,
    MultiHeadNet,
    SingleTaskNets,
    TaskCompositionBlock,
    TaskRepresentationBlock,
    build_model,
    count_parameters,
    embedding_pyramid,
    imagenet_weights_path,
    palette_embedding,
)
from composite_tasking.model.encoder import ResNetEncoder
from composite_tasking.palette import MosaicRule

# Upper bound of how far (in pixels, Chebyshev) a palette change at one pixel can reach:
# the s32 embedding cell holding the pixel (< 32 px), then at each coarser-to-finer step
# a x2 bilinear upsampling (+-2 cells) and a 3x3 conv (+-1 cell):
# 31 + 2*16 + 16 + 2*8 + 8 + 2*4 + 4 + 2*2 + 2 + 2*1 + 1 = 124
# (composite_tasking.model.region.palette_reach derives it from the decoder)
PALETTE_HALO = 124


def test_the_derived_palette_reach_is_the_hand_count(ctn18):
    from composite_tasking.model.region import palette_reach

    assert palette_reach(ctn18.decoder) == PALETTE_HALO


@torch.inference_mode()
@pytest.mark.parametrize("size", [(250, 333), (17, 5), (64, 96)])
def test_any_size_gives_output_of_the_same_size(ctn18, size):
    x = torch.rand(2, 3, *size)
    p = torch.randint(0, 6, (2, *size))
    out = ctn18(x, p)
    assert out.shape == (2, 3, *size)
    assert torch.isfinite(out).all()


def test_forward_equals_encode_then_decode(ctn18):
    x = torch.rand(1, 3, 70, 90)
    p = torch.randint(1, 6, (1, 70, 90))
    with torch.inference_mode():
        enc = ctn18.encode(x)
        assert torch.equal(ctn18(x, p), ctn18.decode(enc, p))


def test_one_encoding_decodes_under_many_palettes(ctn18):
    """Five S passes sharing one encoding: features broadcast over a batch of palettes."""
    x = torch.rand(1, 3, 64, 64)
    palettes = torch.stack([torch.full((64, 64), v) for v in range(1, 6)])
    with torch.inference_mode():
        enc = ctn18.encode(x)
        batched = ctn18.decode(enc, palettes)
        for i in range(5):
            single = ctn18.decode(enc, palettes[i : i + 1])
            torch.testing.assert_close(batched[i : i + 1], single, atol=1e-5, rtol=1e-5)


@torch.inference_mode()
def test_palette_change_at_a_pixel_changes_output_only_near_it(ctn18):
    h = w = 384
    x = torch.rand(1, 3, h, w)
    p = torch.full((1, h, w), 3)
    enc = ctn18.encode(x)
    base = ctn18.decode(enc, p)
    for y0, x0 in [(192, 192), (200, 170)]:
        p2 = p.clone()
        p2[0, y0, x0] = 5
        diff = (ctn18.decode(enc, p2) - base).abs().amax(dim=1)[0]
        assert diff[y0, x0] > 0, "the requested task at the pixel must change its output"
        ys, xs = torch.nonzero(diff > 0, as_tuple=True)
        reach = max((ys - y0).abs().max().item(), (xs - x0).abs().max().item())
        assert reach <= PALETTE_HALO
        # far away (corners) the output is bit-identical
        assert diff[:40, :40].max() == 0 and diff[-40:, -40:].max() == 0


@torch.inference_mode()
def test_single_task_palette_equals_composite_away_from_boundaries(ctn18):
    h, w = 320, 640
    x = torch.rand(1, 3, h, w)
    enc = ctn18.encode(x)
    mixed = torch.full((1, h, w), 4)  # saliency on the right half
    mixed[:, :, : w // 2] = 5  # normals on the left half
    out_mixed = ctn18.decode(enc, mixed)
    out_normals = ctn18.decode(enc, torch.full((1, h, w), 5))
    out_saliency = ctn18.decode(enc, torch.full((1, h, w), 4))
    left = slice(0, w // 2 - PALETTE_HALO)
    right = slice(w // 2 + PALETTE_HALO, w)
    torch.testing.assert_close(out_mixed[..., left], out_normals[..., left], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(out_mixed[..., right], out_saliency[..., right], atol=1e-5, rtol=1e-5)
    # and the two tasks really differ, so the comparison above means something
    assert (out_normals - out_saliency).abs().mean() > 1e-3


def test_no_task_pixels_get_a_zero_embedding():
    w = torch.randn(5, 8)
    pal = torch.tensor([[[0, 1, 5]]])
    e = palette_embedding(pal, w)
    assert e.shape == (1, 8, 1, 3)
    assert torch.equal(e[0, :, 0, 0], torch.zeros(8))
    assert torch.equal(e[0, :, 0, 1], w[0]) and torch.equal(e[0, :, 0, 2], w[4])


def test_embedding_pyramid_is_bilinear_halving():
    e = torch.rand(1, 4, 64, 32)
    pyr = embedding_pyramid(e)
    assert [tuple(p.shape[-2:]) for p in pyr] == [(64, 32), (32, 16), (16, 8), (8, 4), (4, 2), (2, 1)]
    # exact 2x2 means: a task boundary cell mixes both embeddings
    torch.testing.assert_close(pyr[1], nn.functional.avg_pool2d(e, 2))


def test_task_codes_are_orthonormal_frozen_blocks_of_20():
    block = TaskRepresentationBlock(num_tasks=5)
    z = block.codes
    assert z.shape == (5, 100)
    torch.testing.assert_close(z @ z.T, torch.eye(5))
    assert torch.count_nonzero(z[2]) == 20 and z[2, 40:60].min() > 0
    assert "codes" not in dict(block.named_parameters())
    linears = [m for m in block.mlp if isinstance(m, nn.Linear)]
    acts = [m for m in block.mlp if isinstance(m, nn.LeakyReLU)]
    assert len(linears) == 6 and [l.in_features for l in linears] == [100] + [128] * 5
    assert all(a.negative_slope == 0.2 for a in acts) and len(acts) == 6
    assert block().shape == (5, 128)


def test_composition_block_conditions_per_pixel_with_unit_gamma_at_start():
    blk = TaskCompositionBlock(8, 16, 3, emb_ch=128, hidden=32)
    assert blk.norm.affine is False
    assert torch.equal(blk.gamma.bias, torch.ones(16)) and torch.equal(blk.beta.bias, torch.zeros(16))
    assert blk.gamma.kernel_size == (1, 1) and blk.beta.kernel_size == (1, 1)
    assert blk.shared[0].kernel_size == (1, 1)


def test_decoder_has_the_paper_widths():
    m = build_model(ModelConfig(encoder="resnet34"))
    d = m.decoder
    got = [(b.conv.in_channels, b.conv.out_channels, b.conv.kernel_size[0], b.shared[0].out_channels)
           for b in [d.image_a, d.image_b, *d.skips, *d.decs]]  # fmt: skip
    assert got == [
        (3, 64, 3, 128), (64, 64, 3, 128),
        (64, 64, 1, 128), (64, 64, 1, 128), (128, 128, 1, 256), (256, 256, 1, 256),
        (512, 512, 1, 256),
        (768, 512, 3, 256), (640, 256, 3, 256), (320, 256, 3, 128), (320, 128, 3, 128),
        (192, 64, 3, 128),
    ]  # fmt: skip
    assert (d.last.in_channels, d.last.out_channels, d.last.kernel_size) == (64, 3, (1, 1))


@pytest.mark.parametrize("name", list(ENCODERS))
def test_encoders_have_the_documented_strides_and_channels(name):
    enc = ResNetEncoder(name).eval()
    with torch.inference_mode():
        feats = enc(torch.rand(1, 3, 64, 96))
    assert [f.shape[1] for f in feats] == list(ENCODERS[name].channels)
    assert [f.shape[-1] for f in feats] == [96, 48, 24, 12, 6, 3]


def test_resnet50_ctn_runs_with_r34_decoder_widths():
    m = build_model("ctn-resnet50").eval()
    assert m.decoder.skips[4].conv.in_channels == 2048 and m.decoder.skips[4].conv.out_channels == 512
    with torch.inference_mode():
        assert m(torch.rand(1, 3, 40, 40), torch.ones(1, 40, 40, dtype=torch.long)).shape == (1, 3, 40, 40)


def test_bad_inputs_get_clear_errors(ctn18):
    x = torch.rand(1, 3, 32, 32)
    with pytest.raises(ValueError, match="palette values must be 0"):
        ctn18(x, torch.full((1, 32, 32), 6))
    with pytest.raises(ValueError, match="does not match the image size"):
        ctn18(x, torch.ones(1, 32, 31, dtype=torch.long))
    with pytest.raises(ValueError, match=r"\(N, 3, H, W\)"):
        ctn18(torch.rand(1, 1, 32, 32), torch.ones(1, 32, 32, dtype=torch.long))
    with pytest.raises(ValueError, match="holds integers"):
        ctn18(x, torch.ones(1, 32, 32))
    with pytest.raises(ValueError, match="unknown encoder"):
        ModelConfig(encoder="vgg16")


def test_parameter_counts_ctn_smaller_than_mhn_smaller_than_stn():
    with torch.device("meta"):
        ctn, mhn, stn = (build_model(f"{k}-resnet34") for k in ("ctn", "mhn", "stn"))
    n_ctn, n_mhn, n_stn = (count_parameters(m) for m in (ctn, mhn, stn))
    assert n_ctn < n_mhn < n_stn
    # the MHN shares the CTN's encoder; the STN repeats it five times
    enc = count_parameters(ctn.encoder)
    assert n_stn > 5 * enc
    assert isinstance(ctn, CompositeTaskingNet) and isinstance(mhn, MultiHeadNet)
    assert isinstance(stn, SingleTaskNets)


@torch.inference_mode()
@pytest.mark.parametrize("kind", ["mhn", "stn"])
def test_baselines_compose_their_heads_by_the_palette(kind):
    torch.manual_seed(0)
    m = build_model(f"{kind}-resnet18").eval()
    x = torch.rand(1, 3, 48, 64)
    pal = torch.from_numpy(MosaicRule().palette((48, 64), rng=3)).long()[None]
    pal[0, :4, :4] = 0
    out = m(x, pal)
    enc = m.encode(x)
    for v in pal.unique().tolist():
        mask = (pal == v).unsqueeze(1).expand_as(out)
        if v == 0:
            assert out[mask].abs().max() == 0
            continue
        head = m.decode(enc, torch.full_like(pal, v))  # that task everywhere
        # plain decoders have no palette input: a head's output does not depend on it
        torch.testing.assert_close(out[mask], head[mask])


@torch.inference_mode()
@pytest.mark.parametrize("kind", ["ctn", "mhn", "stn"])
def test_palette_none_gives_every_task_everywhere(kind):
    """forward(image, None) (rule S, complete labels) = each single-task palette's output,
    stacked in task order, from one encoding."""
    torch.manual_seed(0)
    m = build_model(f"{kind}-resnet18").eval()
    x = torch.rand(2, 3, 40, 56)
    every = m(x, None)
    assert every.shape == (2, m.num_tasks, 3, 40, 56)
    enc = m.encode(x)
    for k in range(m.num_tasks):
        one = m.decode(enc, torch.full((2, 40, 56), k + 1, dtype=torch.long))
        torch.testing.assert_close(every[:, k], one)


def test_imagenet_weights_load_from_torch_cache_and_missing_ones_say_where(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    path = imagenet_weights_path("resnet18")
    assert str(path).startswith(str(tmp_path))
    with pytest.raises(EncoderWeightsUnavailable) as err:
        ResNetEncoder("resnet18", pretrained=True, allow_download=False)
    assert str(path) in str(err.value) and "https://" in str(err.value)

    # a file in torchvision's layout (as a user would copy it there) is loaded
    import torchvision

    ref = torchvision.models.resnet18(weights=None)
    path.parent.mkdir(parents=True)
    torch.save(ref.state_dict(), path)
    enc = ResNetEncoder("resnet18", pretrained=True, allow_download=False)
    assert torch.equal(enc.layer4[1].conv2.weight, ref.layer4[1].conv2.weight)
    assert torch.equal(enc.stem[0].weight, ref.conv1.weight)
