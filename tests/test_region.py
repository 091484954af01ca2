"""Region-limited decoding: the decoder computes only the windows a region touches (plus
the halo each level needs) and gives the full decode's values there."""

import pytest
import torch
import torch.nn.functional as F

from _palettes import KINDS, make_palette
from composite_tasking.model.base import pad_to_stride
from composite_tasking.model.region import (
    Window,
    change_box,
    palette_reach,
    reach_box,
    decode_windows,
    plan_window,
    upsample_window,
    windows_for_region,
)

TOL = 1e-4  # float32, max abs difference inside the requested region


pytestmark = pytest.mark.usefixtures("one_thread")


def _blob(h: int, w: int, seed: int) -> torch.Tensor:
    """A region of a few random rectangles, off the tile grid."""
    g = torch.Generator().manual_seed(seed)
    region = torch.zeros(h, w, dtype=torch.bool)
    for _ in range(3):
        y0, x0 = (int(torch.randint(0, h - 4, (1,), generator=g)), int(torch.randint(0, w - 4, (1,), generator=g)))
        region[y0 : y0 + int(torch.randint(3, h // 3, (1,), generator=g)),
               x0 : x0 + int(torch.randint(3, w // 3, (1,), generator=g))] = True  # fmt: skip
    return region


# --------------------------------------------------------------------------------------
# exact inside the region
# --------------------------------------------------------------------------------------


@torch.inference_mode()
@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("size", [(97, 130), (161, 67), (200, 256)])
def test_region_decode_equals_full_decode_inside_the_region(ctn18, kind, size):
    h, w = size
    x = torch.rand(1, 3, h, w)
    p = make_palette(kind, h, w)
    enc = ctn18.encode(x)
    full = ctn18.decode(enc, p)
    region = _blob(h, w, seed=h + w)
    for tile in (32, 64):
        part = ctn18.decode(enc, p, region=region, tile=tile)
        assert part.shape == full.shape
        assert (part - full).abs().amax(dim=1)[0][region].max() < TOL
    assert full.abs().max() > 0.05


@torch.inference_mode()
@pytest.mark.parametrize("global_level", [1, 2, 3, 4, 5])
@pytest.mark.parametrize("fast", [True, False])
def test_every_global_level_and_both_conditioning_paths(ctn18, global_level, fast):
    h, w = 150, 99
    x, p = torch.rand(1, 3, h, w), make_palette("R2", h, w)
    enc = ctn18.encode(x)
    full = ctn18.decode(enc, p)
    region = _blob(h, w, seed=7)
    ctn18.fast_conditioning = fast
    try:
        part = ctn18.decode(enc, p, region=region, tile=32, global_level=global_level)
    finally:
        del ctn18.fast_conditioning
    assert (part - full).abs().amax(dim=1)[0][region].max() < TOL


@torch.inference_mode()
def test_region_from_the_palette_covers_every_requested_pixel(ctn18):
    h, w = 128, 192
    x = torch.rand(2, 3, h, w)
    p = torch.cat([make_palette("no-task", h, w), make_palette("R2", h, w)])
    p[:, :, : w // 2] = 0  # half of both images asks for nothing
    enc = ctn18.encode(x)
    full = ctn18.decode(enc, p)
    part = ctn18.decode(enc, p, region="palette")
    asked = p > 0
    assert ((part - full).abs().amax(dim=1)[asked]).max() < TOL
    # the left half is never touched: not computed, zero
    assert part[..., : w // 2 - 64].abs().max() == 0


@torch.inference_mode()
def test_each_window_is_exact_up_to_its_edge(ctn18):
    """Not just the region: every pixel of every window equals the full decode."""
    h, w = 130, 97
    x, p = torch.rand(1, 3, h, w), make_palette("mosaic", h, w)
    enc = ctn18.encode(x)
    padded = pad_to_stride(p)
    feats = enc.features
    full = ctn18.decoder(feats, pure=ctn18.pure_maps(padded))
    wins = [Window(0, 9, 0, 128), Window(31, 33, 40, 41), Window(151, 160, 90, 128), Window(70, 130, 3, 96)]
    out = decode_windows(ctn18.decoder, feats, wins, pure=ctn18.pure_maps(padded), global_level=2)
    covered = torch.zeros(padded.shape[-2:], dtype=torch.bool)
    for win in wins:
        covered[win.y0 : win.y1, win.x0 : win.x1] = True
    diff = (out - full).abs().amax(dim=1)[0]
    assert diff[covered].max() < TOL
    assert out.abs().amax(dim=1)[0][~covered].max() == 0


# --------------------------------------------------------------------------------------
# the halo is derived, and it is enough
# --------------------------------------------------------------------------------------


@torch.inference_mode()
def test_a_window_reads_no_feature_outside_its_planned_crops(ctn18):
    """Scramble every encoder feature outside the crops the plan says a window reads: the
    window's output must not change (so the derived halo is enough)."""
    h, w = 192, 224
    x, p = torch.rand(1, 3, h, w), make_palette("R2", h, w)
    enc = ctn18.encode(x)
    pure = ctn18.pure_maps(p)
    win = Window(70, 101, 97, 150)
    g = 3
    plan = plan_window(win, (h, w), ctn18.decoder, global_level=g)
    ref = decode_windows(ctn18.decoder, enc.features, [win], pure=pure, global_level=g)
    scrambled = []
    for level, f in enumerate(enc.features):
        f = f.clone()
        keep = torch.zeros(f.shape[-2:], dtype=torch.bool)
        if level == 0:
            (y0, y1), (x0, x1) = plan.feat0
        elif level < g:
            (y0, y1), (x0, x1) = plan.skip_in[level]
        else:  # levels the global part reads: all of it
            y0, y1, x0, x1 = 0, f.shape[-2], 0, f.shape[-1]
        keep[y0:y1, x0:x1] = True
        f[..., ~keep] = torch.randn_like(f[..., ~keep]) * 10
        scrambled.append(f)
    out = decode_windows(ctn18.decoder, scrambled, [win], pure=pure, global_level=g)
    sl = (..., slice(win.y0, win.y1), slice(win.x0, win.x1))
    assert torch.equal(out[sl], ref[sl])
    # and the crops are tight enough to matter: the halo at stride 1 is a few pixels
    (fy0, fy1), (fx0, fx1) = plan.feat0
    assert win.y0 - fy0 <= 4 and fy1 - win.y1 <= 4 and win.x0 - fx0 <= 4 and fx1 - win.x1 <= 4


def test_plan_grows_by_the_kernels_and_follows_the_upsampling(ctn18):
    dec = ctn18.decoder
    plan = plan_window(Window(64, 128, 0, 32), (256, 256), dec, global_level=4)
    (y_dec0, x_dec0) = plan.dec_in[0]
    assert y_dec0 == (63, 129)  # dec0 is 3x3: one pixel each side
    assert x_dec0 == (0, 33)  # clamped at the image border (the conv's zero padding)
    assert plan.image_a[0] == (62, 130) and plan.feat0[0] == (61, 131)
    # the level-1 cells the x2 align_corners upsampling reads for rows 63..128
    n1 = 128
    s = (n1 - 1) / (2 * n1 - 1)
    assert plan.x[1][0] == (int(63 * s), int(128 * s) + 2)
    for level in range(1, 4):  # every level needs a non-empty range inside its map
        for (lo, hi), n in zip(plan.x[level], (256 >> level, 256 >> level)):
            assert 0 <= lo < hi <= n


@pytest.mark.parametrize("n_in", [1, 2, 5, 16, 33])
def test_upsample_window_equals_interpolate_cropped(n_in):
    x = torch.randn(2, 3, n_in, n_in + 3)
    ref = F.interpolate(x, scale_factor=2.0, mode="bilinear", align_corners=True)
    n_out = (2 * n_in, 2 * (n_in + 3))
    for want in [((0, n_out[0]), (0, n_out[1])), ((n_out[0] // 3, n_out[0]), (1, max(2, n_out[1] // 2)))]:
        have = ((0, n_in), (0, n_in + 3))
        out = upsample_window(x, have, (n_in, n_in + 3), want)
        (y0, y1), (x0, x1) = want
        torch.testing.assert_close(out, ref[..., y0:y1, x0:x1], atol=1e-6, rtol=1e-6)


def test_upsample_window_refuses_a_crop_missing_source_cells():
    x = torch.randn(1, 2, 8, 8)
    with pytest.raises(ValueError, match="do not hold"):
        upsample_window(x[..., 1:, :], ((1, 8), (0, 8)), (8, 8), ((0, 4), (0, 4)))


@torch.inference_mode()
def test_a_window_outside_the_map_is_refused(ctn18):
    enc = ctn18.encode(torch.rand(1, 3, 64, 64))
    pure = ctn18.pure_maps(make_palette("mosaic", 64, 64))
    with pytest.raises(ValueError, match="outside the padded output"):
        decode_windows(ctn18.decoder, enc.features, [Window(0, 65, 0, 10)], pure=pure)


# --------------------------------------------------------------------------------------
# covering a region with windows
# --------------------------------------------------------------------------------------


def test_windows_cover_the_region_and_skip_untouched_cells():
    region = torch.zeros(256, 320, dtype=torch.bool)
    region[10:20, 10:20] = True  # one cell
    region[130:250, 70:200] = True  # a block of cells
    wins = windows_for_region(region, tile=64)
    covered = torch.zeros_like(region)
    for win in wins:
        covered[win.y0 : win.y1, win.x0 : win.x1] = True
    assert covered[region].all()
    # runs merged along rows and then down, each shrunk to the region inside it
    assert sorted((w.y0, w.y1, w.x0, w.x1) for w in wins) == [(10, 20, 10, 20), (130, 250, 70, 200)]
    spread = torch.zeros_like(region)
    spread[5, 5] = spread[100, 300] = True  # two cells apart: two windows of one pixel
    assert sum(w.area for w in windows_for_region(spread, tile=64)) == 2
    assert windows_for_region(torch.zeros(64, 64, dtype=torch.bool)) == []
    # a batch: the union of its regions
    batch = torch.stack([region, torch.flip(region, dims=(0, 1))])
    union = windows_for_region(batch, tile=64)
    assert sum(w.area for w in union) > sum(w.area for w in wins)


@torch.inference_mode()
def test_bad_regions_are_refused_with_a_clear_error(ctn18):
    x, p = torch.rand(1, 3, 64, 64), make_palette("mosaic", 64, 64)
    enc = ctn18.encode(x)
    with pytest.raises(ValueError, match="boolean mask"):
        ctn18.decode(enc, p, region=torch.ones(32, 32, dtype=torch.bool))
    with pytest.raises(ValueError, match="boolean mask"):
        ctn18.decode(enc, p, region=torch.ones(64, 64))
    with pytest.raises(ValueError, match="'palette'"):
        ctn18.decode(enc, p, region="everything")
    with pytest.raises(ValueError, match="multiple of 32"):
        ctn18.decode(enc, p, region="palette", tile=50)
    ctn18.train()
    try:
        with pytest.raises(RuntimeError, match="eval mode"):
            ctn18.decode(enc, p, region="palette")
    finally:
        ctn18.eval()


@torch.inference_mode()
def test_an_empty_region_computes_nothing(ctn18, monkeypatch):
    x, p = torch.rand(1, 3, 64, 96), torch.zeros(1, 64, 96, dtype=torch.long)
    enc = ctn18.encode(x)

    def boom(*a, **k):
        raise AssertionError("nothing to decode")

    monkeypatch.setattr(ctn18.decoder, "forward", boom)
    monkeypatch.setattr(ctn18.decoder.last, "forward", boom)
    out = ctn18.decode(enc, p, region="palette")
    assert out.shape == (1, 3, 64, 96) and out.abs().max() == 0


@torch.inference_mode()
@pytest.mark.parametrize("stroke", [(192, 193, 192, 193), (200, 201, 170, 171), (224, 288, 224, 288),
                                    (100, 140, 37, 60), (0, 5, 0, 5), (379, 384, 300, 384)])  # fmt: skip
def test_change_box_holds_every_change_of_a_palette_edit_and_no_more(ctn18, stroke):
    h = w = 384
    enc = ctn18.encode(torch.rand(1, 3, h, w))
    p = torch.full((1, h, w), 3)
    base = ctn18.decode(enc, p)
    y0, y1, x0, x1 = stroke
    p2 = p.clone()
    p2[0, y0:y1, x0:x1] = 5
    diff = (ctn18.decode(enc, p2) - base).abs().amax(dim=1)[0]
    ys, xs = torch.nonzero(diff > 0, as_tuple=True)
    changed = (p2 != p)[0]
    box = change_box(changed, ctn18.decoder)
    bound = reach_box(changed, palette_reach(ctn18.decoder))
    assert box.y0 <= ys.min() and ys.max() < box.y1 and box.x0 <= xs.min() and xs.max() < box.x1
    assert bound.y0 <= box.y0 and box.y1 <= bound.y1 and bound.x0 <= box.x0 and box.x1 <= bound.x1
    actual = (int(ys.max()) + 1 - int(ys.min())) * (int(xs.max()) + 1 - int(xs.min()))
    assert actual >= 0.9 * box.area  # tight: the change does reach (nearly) all of it
    assert change_box(torch.zeros(h, w, dtype=torch.bool), ctn18.decoder) is None
