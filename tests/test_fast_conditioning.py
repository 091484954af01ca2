"""Palette-aware conditioning: the fast path computes gamma/beta once per task and only
runs the 1x1 MLP on pyramid cells that mix tasks, with the plain path's output."""

import copy

import pytest
import torch

from composite_tasking.model import (
    CompositeTaskingNet,
    ModelConfig,
    TaskCompositionBlock,
    build_model,
    embedding_pyramid,
    palette_embedding,
)
from composite_tasking.model.blocks import (
    PYRAMID_LEVELS,
    embedding_table,
    pure_index_pyramid,
    pure_maps,
)
from composite_tasking.model.base import pad_to_stride
from _palettes import KINDS
from _palettes import make_palette as _palette

TOL = 1e-4  # float32: fast vs plain, max abs difference of the raw outputs


pytestmark = pytest.mark.usefixtures("one_thread")


def _both(model, encoded, palette):
    """(plain, fast) decodes of the same encoding and palette."""
    try:
        model.fast_conditioning = False
        plain = model.decode(encoded, palette)
        model.fast_conditioning = True
        fast = model.decode(encoded, palette)
    finally:
        del model.fast_conditioning  # back to the class default
    return plain, fast




# --------------------------------------------------------------------------------------
# the CTN: fast == plain
# --------------------------------------------------------------------------------------


@torch.inference_mode()
@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("size", [(64, 96), (97, 130)])
def test_fast_path_equals_plain_forward(ctn18, kind, size):
    x = torch.rand(1, 3, *size)
    p = _palette(kind, *size)
    enc = ctn18.encode(x)
    plain, fast = _both(ctn18, enc, p)
    assert fast.shape == plain.shape == (1, 3, *size)
    assert (fast - plain).abs().max() < TOL
    assert plain.abs().max() > 0.05  # outputs that mean something


def test_fast_path_is_on_by_default_and_skips_the_embedding_pyramid(ctn18, monkeypatch):
    assert CompositeTaskingNet.fast_conditioning is True
    x, p = torch.rand(1, 3, 64, 64), _palette("mosaic", 64, 64)

    def no_pyramid(*a, **k):
        raise AssertionError("the fast path builds no embedding pyramid")

    with torch.inference_mode():
        enc = ctn18.encode(x)
        monkeypatch.setattr(ctn18, "embed_palette", no_pyramid)
        monkeypatch.setattr(TaskCompositionBlock, "modulation", no_pyramid)
        ctn18.decode(enc, p)  # would raise on the plain path
        ctn18.fast_conditioning = False
        try:
            with pytest.raises(AssertionError, match="no embedding pyramid"):
                ctn18.decode(enc, p)
        finally:
            del ctn18.fast_conditioning


@torch.inference_mode()
def test_batch_of_two_images_with_different_palettes(ctn18):
    h, w = 97, 130
    x = torch.rand(2, 3, h, w)
    p = torch.cat([_palette("R2", h, w), _palette("random", h, w, seed=3)])
    enc = ctn18.encode(x)
    plain, fast = _both(ctn18, enc, p)
    assert (fast - plain).abs().max() < TOL
    # each image of the batch as it decodes alone
    for i in range(2):
        alone = ctn18.decode(ctn18.encode(x[i : i + 1]), p[i : i + 1])
        assert (fast[i : i + 1] - alone).abs().max() < TOL


@torch.inference_mode()
def test_one_encoding_under_a_batch_of_palettes(ctn18):
    """One image, three palettes (S, R2, mosaic): per level the batch mixes const and
    gather images, and the features are broadcast, not copied."""
    h, w = 64, 96
    enc = ctn18.encode(torch.rand(1, 3, h, w))
    p = torch.cat([_palette("S", h, w), _palette("R2", h, w), _palette("no-task", h, w)])
    plain, fast = _both(ctn18, enc, p)
    assert (fast - plain).abs().max() < TOL
    two_s = torch.cat([_palette("S", h, w), torch.full((1, h, w), 5)])  # two S palettes
    plain, fast = _both(ctn18, enc, two_s)
    assert (fast - plain).abs().max() < TOL


@torch.inference_mode()
@pytest.mark.parametrize("kind", ["R2", "random"])
def test_channels_last(ctn18, kind):
    model = copy.deepcopy(ctn18).to(memory_format=torch.channels_last)
    x = torch.rand(2, 3, 97, 130).contiguous(memory_format=torch.channels_last)
    p = torch.cat([_palette(kind, 97, 130), _palette("mosaic", 97, 130)])
    enc = model.encode(x)
    plain, fast = _both(model, enc, p)
    assert (fast - plain).abs().max() < TOL
    ref = ctn18.decode(ctn18.encode(x.contiguous()), p)
    assert (fast - ref).abs().max() < TOL


def test_blocks_keep_the_memory_layout_of_their_features():
    torch.manual_seed(0)
    blk = TaskCompositionBlock(8, 16, 3, emb_ch=32, hidden=16).eval()
    table = embedding_table(torch.randn(5, 32))
    for n in (1, 2):
        for pal in (torch.full((n, 32, 32), 2), torch.randint(0, 6, (n, 32, 32))):
            pure = pure_maps(pal, table)[1]
            e = embedding_pyramid(palette_embedding(pal, table[1:]))[1]
            for cl in (False, True):
                fmt = torch.channels_last if cl else torch.contiguous_format
                b = copy.deepcopy(blk).to(memory_format=fmt)
                h = torch.randn(n, 8, 16, 16).contiguous(memory_format=fmt)
                with torch.no_grad():
                    fast, plain = b(h, None, pure), b(h, e)
                assert fast.is_contiguous(memory_format=fmt), (n, pure.mode, cl)
                assert (fast - plain).abs().max() < 1e-5


@pytest.mark.parametrize("kind", ["random", "R2"])
def test_bf16_autocast(ctn18, kind):
    """Under autocast the fast path is as close to float32 as the plain path is."""
    h, w = 64, 96
    x, p = torch.rand(1, 3, h, w), _palette(kind, h, w)
    with torch.inference_mode():
        ref = ctn18.decode(ctn18.encode(x), p).float()
        with torch.autocast("cpu", dtype=torch.bfloat16):
            enc = ctn18.encode(x)
            plain, fast = _both(ctn18, enc, p)
    assert fast.dtype == plain.dtype == torch.bfloat16
    err_plain = (plain.float() - ref).abs().max().item()
    err_fast = (fast.float() - ref).abs().max().item()
    assert err_fast <= 2 * err_plain + 1e-3, (err_fast, err_plain)
    assert (fast.float() - plain.float()).abs().max() < 0.02 * ref.abs().max()


@torch.inference_mode()
@pytest.mark.parametrize("kind", ["random", "R2", "no-task"])
def test_nearest_pyramid_mode(kind):
    torch.manual_seed(1)
    model = build_model(ModelConfig(encoder="resnet18", pyramid_mode="nearest")).eval()
    with torch.no_grad():
        for blk in model.modules():
            if isinstance(blk, TaskCompositionBlock):
                blk.gamma.weight.normal_(0.0, 0.05)
                blk.beta.weight.normal_(0.0, 0.05)
    x, p = torch.rand(1, 3, 97, 130), _palette(kind, 97, 130)
    enc = model.encode(x)
    plain, fast = _both(model, enc, p)
    assert (fast - plain).abs().max() < TOL
    # nearest never mixes: no cell runs the MLP
    maps = model.pure_maps(pad_to_stride(p))
    assert all(m.num_mixed == 0 for m in maps)


def test_train_mode_outputs_and_gradients(ctn18):
    """BatchNorm in train mode uses batch statistics of the conv outputs, which the
    conditioning does not touch: outputs and every gradient agree."""
    model = copy.deepcopy(ctn18).train()
    h, w = 64, 96
    x = torch.rand(2, 3, h, w)
    p = torch.cat([_palette("R2", h, w), _palette("random", h, w)])
    outs, grads = [], []
    for fast in (False, True):
        model.fast_conditioning = fast
        model.zero_grad()
        out = model(x, p)
        (out.square().mean() + out[:, 0].mean()).backward()
        outs.append(out.detach())
        grads.append({n: q.grad.clone() for n, q in model.named_parameters() if q.grad is not None})
    assert (outs[0] - outs[1]).abs().max() < TOL
    assert grads[0].keys() == grads[1].keys()
    # the task MLP gets its gradient through the table instead of the pyramid
    assert any(n.startswith("task_representation") for n in grads[1])
    for n, g in grads[0].items():
        scale = g.abs().max().item()
        # conv biases before a BatchNorm have a zero gradient: only rounding is left
        assert (grads[1][n] - g).abs().max().item() <= 1e-3 * scale + 1e-7, n


def test_state_dict_is_unchanged(ctn18):
    keys = set(ctn18.state_dict())
    blk = [k for k in keys if k.startswith("decoder.image_a.")]
    assert sorted(blk) == sorted(
        f"decoder.image_a.{k}"
        for k in ("conv.weight", "conv.bias", "norm.running_mean", "norm.running_var",
                  "norm.num_batches_tracked", "shared.0.weight", "shared.0.bias",
                  "gamma.weight", "gamma.bias", "beta.weight", "beta.bias")
    )  # fmt: skip
    assert not any("pure" in k or "fast" in k for k in keys)


# --------------------------------------------------------------------------------------
# the pure maps: exactly the cells the pyramid does not mix
# --------------------------------------------------------------------------------------


def _rows_of_pyramid(palette, table, mode):
    """Per level, which table row each cell's pyramid embedding equals (-1: none)."""
    e = palette_embedding(palette, table[1:])
    assert torch.equal(e[0, :, 0, 0], table[palette[0, 0, 0]])
    out = []
    for level in embedding_pyramid(e, PYRAMID_LEVELS, mode):
        d = (level.permute(0, 2, 3, 1)[..., None, :] - table).abs().amax(-1)  # (N, h, w, K+1)
        best, row = d.min(-1)
        out.append(torch.where(best < 1e-5, row, torch.full_like(row, -1)))
    return out


@pytest.mark.parametrize("mode", ["bilinear", "nearest"])
@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("size", [(64, 96), (97, 130)])
def test_pure_index_marks_exactly_the_unmixed_cells(mode, kind, size):
    torch.manual_seed(2)
    table = embedding_table(torch.randn(5, 16))  # rows 1..5 random, row 0 zero
    pal = torch.cat([_palette(kind, *size), _palette("random", *size, seed=9)])
    for padded in (pal, pad_to_stride(pal)):  # odd sizes as well as the CTN's
        got = pure_index_pyramid(padded, 6, PYRAMID_LEVELS, mode)
        want = _rows_of_pyramid(padded, table, mode)
        for level, (g, w) in enumerate(zip(got, want)):
            assert torch.equal(g, w), (level, tuple(padded.shape))


@pytest.mark.parametrize("kind", KINDS)
def test_pure_cells_are_the_blocks_where_the_palette_agrees(kind):
    """At the CTN's sizes (multiples of 32), bilinear halving is the 2x2 mean: a cell at
    level l is pure iff its 2^l x 2^l palette pixels agree (integer min == max)."""
    pal = pad_to_stride(torch.cat([_palette(kind, 97, 130), _palette("R2", 97, 130)]))
    got = pure_index_pyramid(pal, 6)
    for level, g in enumerate(got):
        s = 2**level
        n, h, w = pal.shape
        blocks = pal.view(n, h // s, s, w // s, s)
        lo, hi = blocks.amin(dim=(2, 4)), blocks.amax(dim=(2, 4))
        assert torch.equal(g, torch.where(lo == hi, lo, torch.full_like(lo, -1))), level


@pytest.mark.parametrize("kind", ["random", "R2", "no-task"])
def test_mixed_cells_get_the_pyramid_embedding(kind):
    torch.manual_seed(3)
    table = embedding_table(torch.randn(5, 32))
    pal = pad_to_stride(_palette(kind, 97, 130))
    pyramid = embedding_pyramid(palette_embedding(pal, table[1:]))
    maps = pure_maps(pal, table)
    assert maps[0].num_mixed == 0  # the palette itself never mixes
    for m, e in zip(maps, pyramid):
        mixed = m.index < 0
        assert m.num_mixed == int(mixed.sum())
        if m.mode == "gather":
            torch.testing.assert_close(m.mixed, e.permute(0, 2, 3, 1)[mixed], atol=1e-6, rtol=1e-6)
            rows = torch.cat([m.table, m.mixed])
            torch.testing.assert_close(rows[m.lookup], e.permute(0, 2, 3, 1), atol=1e-6, rtol=1e-6)
        else:
            assert m.num_mixed == 0 and torch.equal(m.lookup, m.index[:, 0, 0])


def test_modes_follow_the_palette():
    table = embedding_table(torch.randn(5, 8))
    s = pure_maps(pad_to_stride(_palette("S", 97, 130)), table)
    assert [m.mode for m in s] == ["const"] * PYRAMID_LEVELS
    rnd = pure_maps(_palette("random", 96, 128), table)
    assert rnd[0].mode == "gather" and rnd[0].num_mixed == 0
    assert rnd[1].num_mixed > 0.9 * rnd[1].index.numel()
    two = torch.stack([torch.full((64, 64), 1), torch.full((64, 64), 4)])  # two S palettes
    m = pure_maps(two, table)
    assert all(x.mode == "const" for x in m) and m[3].lookup.tolist() == [1, 4]
