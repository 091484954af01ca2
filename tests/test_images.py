"""Robust image reading (every supported format and mode) and folder scanning."""

import os
import struct
import warnings
from pathlib import Path
import zlib

import numpy as np
import pytest
from PIL import Image

from composite_tasking.images import ImageReadError, read_image, scan_inputs

RED, BLUE, WHITE = (255, 0, 0), (0, 0, 255), (255, 255, 255)


@pytest.fixture
def rgb():
    return np.random.default_rng(7).integers(0, 256, (30, 44, 3), dtype=np.uint8)


def check(a, shape):
    assert a.dtype == np.uint8 and a.shape == shape and a.flags.c_contiguous


# ------------------------------------------------------------------------ formats


@pytest.mark.parametrize("suffix, kw", [(".png", {}), (".bmp", {}), (".tif", {}),
                                        (".webp", {"lossless": True})])  # fmt: skip
def test_lossless_formats_read_exactly(tmp_path, rgb, suffix, kw):
    path = tmp_path / f"im{suffix}"
    Image.fromarray(rgb).save(path, **kw)
    a = read_image(path)
    check(a, rgb.shape)
    assert np.array_equal(a, rgb)


def test_jpeg_and_lossy_webp_read_close(tmp_path):
    img = np.zeros((32, 48, 3), np.uint8)
    img[:, :24] = RED
    img[:, 24:] = BLUE
    for name, kw in (("im.jpg", {"quality": 95}), ("im.jpeg", {"quality": 95}), ("im.webp", {"quality": 90})):
        Image.fromarray(img).save(tmp_path / name, **kw)
        a = read_image(tmp_path / name)
        check(a, img.shape)
        assert np.abs(a[4:-4, 4:20].astype(int) - RED).max() < 24, name
        assert np.abs(a[4:-4, 28:-4].astype(int) - BLUE).max() < 24, name


def test_16_bit_tiff_and_png_are_scaled_by_the_full_16_bit_range(tmp_path):
    import tifffile

    row = np.array([0, 257, 32768, 65535], np.uint16)  # -> 0, 1, 128, 255
    gray = np.tile(row, (3, 1))
    Image.fromarray(gray).save(tmp_path / "g16.tif")
    tifffile.imwrite(tmp_path / "g16-tifffile.tif", gray)
    Image.fromarray(gray).save(tmp_path / "g16.png")
    for name in ("g16.tif", "g16-tifffile.tif", "g16.png"):
        a = read_image(tmp_path / name)
        check(a, (3, 4, 3))
        assert a[0].tolist() == [[v] * 3 for v in (0, 1, 128, 255)], name
    # 16-bit RGB: each channel scaled, channel order kept
    rgb16 = np.zeros((2, 3, 3), np.uint16)
    rgb16[..., 0], rgb16[..., 1], rgb16[..., 2] = 65535, 32768, 0
    tifffile.imwrite(tmp_path / "rgb16.tif", rgb16, photometric="rgb")
    a = read_image(tmp_path / "rgb16.tif")
    check(a, (2, 3, 3))
    assert (a == [255, 128, 0]).all()


def test_8_bit_tiff_grayscale_and_rgb(tmp_path, rgb):
    import tifffile

    tifffile.imwrite(tmp_path / "rgb8.tif", rgb, photometric="rgb")
    assert np.array_equal(read_image(tmp_path / "rgb8.tif"), rgb)
    tifffile.imwrite(tmp_path / "g8.tif", rgb[..., 0])
    assert np.array_equal(read_image(tmp_path / "g8.tif"), np.repeat(rgb[..., :1], 3, axis=2))


def test_grayscale_becomes_three_equal_channels(tmp_path, rgb):
    g = rgb[..., 1]
    for name in ("g.png", "g.bmp", "g.webp"):
        Image.fromarray(g).save(tmp_path / name, **({"lossless": True} if name.endswith("webp") else {}))
        a = read_image(tmp_path / name)
        check(a, g.shape + (3,))
        assert np.array_equal(a, np.stack([g, g, g], axis=-1)), name
    Image.fromarray(g > 127).save(tmp_path / "bits.png")  # 1-bit
    assert set(np.unique(read_image(tmp_path / "bits.png"))) <= {0, 255}


def test_alpha_is_composited_over_white(tmp_path):
    rgba = np.zeros((2, 3, 4), np.uint8)
    rgba[0, 0] = (255, 0, 0, 255)  # opaque red
    rgba[0, 1] = (0, 0, 255, 0)  # transparent: white
    rgba[0, 2] = (0, 0, 0, 128)  # half-transparent black: mid grey
    rgba[1] = (0, 255, 0, 255)
    Image.fromarray(rgba, "RGBA").save(tmp_path / "a.png")
    Image.fromarray(rgba, "RGBA").save(tmp_path / "a.webp", lossless=True)
    for name in ("a.png", "a.webp"):
        a = read_image(tmp_path / name)
        check(a, (2, 3, 3))
        assert a[0, 0].tolist() == list(RED) and a[0, 1].tolist() == list(WHITE), name
        assert np.abs(a[0, 2].astype(int) - 127).max() <= 1 and (a[1] == (0, 255, 0)).all(), name
    # grayscale + alpha, and a palette image with a transparent index
    la = np.array([[[0, 255], [0, 0]]], np.uint8)
    Image.fromarray(la, "LA").save(tmp_path / "la.png")
    assert read_image(tmp_path / "la.png").tolist() == [[[0, 0, 0], [255, 255, 255]]]
    p = Image.new("P", (2, 1))
    p.putpalette([255, 0, 0, 0, 0, 255] + [0] * 762)
    p.putpixel((0, 0), 0)
    p.putpixel((1, 0), 1)
    p.info["transparency"] = 1
    p.save(tmp_path / "p.png", transparency=1)
    assert read_image(tmp_path / "p.png").tolist() == [[list(RED), list(WHITE)]]


def test_exif_orientation_6_is_applied(tmp_path):
    # stored 20 x 40: left half red, right half blue; orientation 6 = rotate 90 deg clockwise
    img = np.zeros((20, 40, 3), np.uint8)
    img[:, :20] = RED
    img[:, 20:] = BLUE
    exif = Image.Exif()
    exif[0x0112] = 6
    Image.fromarray(img).save(tmp_path / "o6.jpg", exif=exif, quality=95)
    with Image.open(tmp_path / "o6.jpg") as im:
        assert im.getexif()[0x0112] == 6 and im.size == (40, 20)
    a = read_image(tmp_path / "o6.jpg")
    check(a, (40, 20, 3))  # displayed upright: taller than wide
    assert np.abs(a[3:17, 3:-3].astype(int) - RED).max() < 24  # the left side is now on top
    assert np.abs(a[23:-3, 3:-3].astype(int) - BLUE).max() < 24
    expected = np.rot90(img, k=-1)
    assert np.abs(a.astype(int) - expected).mean() < 4
    # the same pixels without the tag are read as stored
    Image.fromarray(img).save(tmp_path / "o1.jpg", quality=95)
    check(read_image(tmp_path / "o1.jpg"), (20, 40, 3))


def test_gif_first_frame_with_transparency_over_white(tmp_path):
    p = Image.new("P", (3, 1))
    p.putpalette([255, 0, 0, 0, 0, 255, 0, 255, 0] + [0] * 759)
    for x in range(3):
        p.putpixel((x, 0), x)
    second = p.copy()
    second.putpixel((0, 0), 1)
    p.save(tmp_path / "anim.gif", save_all=True, append_images=[second], transparency=2)
    assert read_image(tmp_path / "anim.gif").tolist() == [[list(RED), list(BLUE), list(WHITE)]]


def test_float_tiff_with_nan_is_scaled_by_its_finite_values(tmp_path):
    import tifffile

    a = np.array([[np.nan, 1.0, 2.0], [3.0, 5.0, np.inf]], np.float32)
    tifffile.imwrite(tmp_path / "f.tif", a)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no RuntimeWarning leaks into a progress bar
        g = read_image(tmp_path / "f.tif")
    check(g, (2, 3, 3))
    # range 1..5 from the finite values: NaN -> 0, 1 -> 0, 5 -> 255, +inf -> 255
    assert g[..., 0].tolist() == [[0, 0, 64], [128, 255, 255]]
    assert (g[..., 0] == g[..., 2]).all()
    tifffile.imwrite(tmp_path / "flat.tif", np.array([[np.nan, 7.0]], np.float32))
    assert read_image(tmp_path / "flat.tif")[..., 0].tolist() == [[0, 0]]
    tifffile.imwrite(tmp_path / "nan.tif", np.full((2, 2), np.nan, np.float32))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert "no pixel has a finite value" in reason_of(tmp_path / "nan.tif")


# ------------------------------------------------------------------------- failures


def reason_of(path, **kw):
    with pytest.raises(ImageReadError) as e:
        read_image(path, **kw)
    assert e.value.path == str(path) and str(path) in str(e.value)
    return e.value.reason


def test_bad_files_raise_with_a_reason(tmp_path, rgb):
    assert "no such file" in reason_of(tmp_path / "missing.png")
    (tmp_path / "zero.jpg").write_bytes(b"")
    assert "0 bytes" in reason_of(tmp_path / "zero.jpg")
    (tmp_path / "text.jpg").write_text("not an image at all\n")
    assert "not an image" in reason_of(tmp_path / "text.jpg")
    for name in ("t.png", "t.jpg"):
        Image.fromarray(rgb).save(tmp_path / f"full-{name}")
        data = (tmp_path / f"full-{name}").read_bytes()
        (tmp_path / name).write_bytes(data[: len(data) // 2])
        assert "truncated" in reason_of(tmp_path / name), name
    Image.fromarray(rgb).save(tmp_path / "ppm-in-disguise.png", format="PPM")
    assert "unsupported image format PPM" in reason_of(tmp_path / "ppm-in-disguise.png")
    # more pixels than allowed: refused before decoding, with the limit given
    Image.fromarray(rgb).save(tmp_path / "ok.png")
    r = reason_of(tmp_path / "ok.png", max_pixels=1000)
    assert "decompression bomb" in r and "1000" in r
    assert read_image(tmp_path / "ok.png").shape == rgb.shape  # the default limit allows it


def bomb_png(path, w=20000, h=20000):
    """A valid 1-bit black PNG of w x h pixels (400 Mpx in ~50 kB), written without PIL."""
    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    z = zlib.compressobj(9)
    rows = bytes(1 + (w + 7) // 8) * 1000  # filter byte 0 + a row of zero bits, 1000 rows
    idat = b"".join(z.compress(rows) for _ in range(h // 1000)) + z.flush()
    ihdr = struct.pack(">IIBBBBB", w, h, 1, 0, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b""))
    return path


def test_a_real_decompression_bomb_is_refused_and_the_limit_restored(tmp_path):
    bomb_png(tmp_path / "bomb.png")
    assert (tmp_path / "bomb.png").stat().st_size < 100_000
    with pytest.raises(Image.DecompressionBombError):  # a real PNG that PIL's own guard flags
        Image.open(tmp_path / "bomb.png")
    old = Image.MAX_IMAGE_PIXELS
    assert "decompression bomb" in reason_of(tmp_path / "bomb.png")
    assert Image.MAX_IMAGE_PIXELS == old


# --------------------------------------------------------------------------- scanning


def touch_png(path):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (4, 4)).save(path, format="PNG")
    return path


def test_scan_inputs_recurses_ignores_hidden_and_non_images_and_removes_repeats(tmp_path):
    d = tmp_path / "data"
    b, a = touch_png(d / "b.png"), touch_png(d / "a.PNG")
    c = touch_png(d / "sub" / "deeper" / "c.jpg")
    touch_png(d / ".hidden.png")
    touch_png(d / ".cache" / "x.png")
    (d / "notes.txt").write_text("x")
    (d / "sub" / "README").write_text("x")
    (d / "sub" / "c.json").write_text("{}")
    single = touch_png(tmp_path / "single.webp")

    res = scan_inputs([d, single, d / "b.png", str(single), d / "sub" / ".." / "a.PNG",
                       tmp_path / "missing.png"])  # fmt: skip
    assert res.files == [a, b, c, single]  # folders sorted, then the named file; once each
    assert [f.name for f in res.files] == ["a.PNG", "b.png", "c.jpg", "single.webp"]
    assert len({f.resolve() for f in res.files}) == len(res.files)
    # files of other types inside a folder are counted, not reported: a folder with a
    # README can be labelled completely (exit 0)
    assert res.skipped == [(str(tmp_path / "missing.png"), "no such file or folder")]
    assert res.ignored == 3 and res.ignored_suffixes == ("(no suffix)", ".json", ".txt")
    # a file named explicitly is always tried (reading it says whether it is an image)
    named = scan_inputs([d / "notes.txt"])
    assert named.files == [d / "notes.txt"] and named.skipped == [] and named.ignored == 0
    assert [f.name for f in scan_inputs([d], recursive=False).files] == ["a.PNG", "b.png"]
    assert scan_inputs([]).files == [] and scan_inputs([tmp_path / "empty-dir"]).files == []


def test_the_order_is_that_of_the_sorted_paths(tmp_path):
    """Depth first over sorted names: the order sorted(folder.rglob("*")) gave (shards and
    resumed runs of older versions split the files the same way)."""
    names = ["a-b.png", "a/x.png", "a/b/y.png", "B.png", "b.png", "z/zz/z.png", "m.png", "a0.png"]
    for n in names:
        touch_png(tmp_path / n)
    expected = sorted(p for p in tmp_path.rglob("*") if p.is_file())
    assert scan_inputs([tmp_path]).files == expected


def test_every_image_suffix_of_the_table_is_scanned_and_read(tmp_path, rgb):
    from composite_tasking.images import IMAGE_FORMATS, SUPPORTED_SUFFIXES

    assert set(SUPPORTED_SUFFIXES) == {s for v in IMAGE_FORMATS.values() for s in v}
    for fmt, suffixes in IMAGE_FORMATS.items():
        for suffix in suffixes:
            save_as = {"MPO": "JPEG"}.get(fmt, fmt)
            Image.fromarray(rgb).save(tmp_path / f"im{suffix}", format=save_as)
    res = scan_inputs([tmp_path])
    assert sorted(f.suffix for f in res.files) == sorted(SUPPORTED_SUFFIXES) and res.ignored == 0
    for f in res.files:
        check(read_image(f), rgb.shape)


def test_a_label_store_inside_the_folder_is_never_searched(tmp_path):
    d = tmp_path / "photos"
    img = touch_png(d / "img.png")
    touch_png(d / "labels.zarr" / "img.png" / "image" / "thumb.png")  # whatever a store holds
    (d / "labels.zarr" / "zarr.json").write_text("{}")
    touch_png(d / "OTHER.ZARR" / "x.png")
    res = scan_inputs([d])
    assert res.files == [img] and res.skipped == [] and res.ignored == 0
    # named explicitly: reported
    assert scan_inputs([d / "labels.zarr"]).skipped == [(str(d / "labels.zarr"),
                                                         "a zarr store, not a folder of images")]  # fmt: skip


def test_excluded_paths_are_neither_listed_nor_searched(tmp_path, monkeypatch):
    d = tmp_path / "photos"
    img = touch_png(d / "img.png")
    preview = touch_png(d / "labels-preview.png")
    store = d / "labels"  # a store without the .zarr suffix
    touch_png(store / "x.png")
    res = scan_inputs([d], exclude=[store, preview])
    assert res.files == [img] and res.skipped == [] and res.ignored == 0
    # relative, absolute, through a symbolic link: the same path
    monkeypatch.chdir(tmp_path)
    (tmp_path / "link").symlink_to(d)
    assert scan_inputs(["photos"], exclude=["link/labels-preview.png", store]).files == [Path("photos/img.png")]
    reason = "an output of this run (its label store or preview)"
    assert scan_inputs([preview], exclude=[preview]).skipped == [(str(preview), reason)]
    assert scan_inputs([store], exclude=(p for p in [store])).skipped == [(str(store), reason)]
    assert scan_inputs([d]).files == [img, store / "x.png", preview]  # nothing excluded: all


def test_symbolic_links_are_followed_and_broken_ones_reported(tmp_path):
    d = tmp_path / "photos"
    own = touch_png(d / "own.png")
    elsewhere = tmp_path / "elsewhere"
    far = touch_png(elsewhere / "far.png")
    touch_png(elsewhere / "deeper" / "deep.png")
    (d / "linked").symlink_to(elsewhere, target_is_directory=True)  # a symlinked subfolder
    (d / "loop").symlink_to(d, target_is_directory=True)  # a cycle
    (d / "linked" / "deeper" / "up").symlink_to(elsewhere, target_is_directory=True)  # another
    (d / "same.png").symlink_to(own)  # a link to an image already listed
    (d / "file-link.png").symlink_to(far)  # a link to an image outside
    (d / "gone.png").symlink_to(tmp_path / "deleted.png")
    (d / "gone-folder").symlink_to(tmp_path / "deleted-folder", target_is_directory=True)

    res = scan_inputs([d])
    assert res.files == [d / "file-link.png", d / "linked" / "deeper" / "deep.png", d / "own.png"]
    assert {f.resolve() for f in res.files} == {far, elsewhere / "deeper" / "deep.png", own}
    assert res.skipped == [(str(d / "gone-folder"), "broken symbolic link"),
                           (str(d / "gone.png"), "broken symbolic link")]  # fmt: skip
    # named explicitly: the same reason; reading one says so too
    assert scan_inputs([d / "gone.png"]).skipped == [(str(d / "gone.png"), "broken symbolic link")]
    assert "broken symbolic link" in reason_of(d / "gone.png")


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads any folder")
def test_an_unreadable_folder_is_reported(tmp_path):
    d = tmp_path / "photos"
    img = touch_png(d / "img.png")
    locked = d / "locked"
    touch_png(locked / "x.png")
    locked.chmod(0)
    try:
        res = scan_inputs([d])
    finally:
        locked.chmod(0o755)
    assert res.files == [img]
    assert res.skipped == [(str(locked), "cannot read the folder: Permission denied")]
