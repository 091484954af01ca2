"""``ctn label`` throughput and memory: the model alone, the whole labelling, 100 vs 1000 images.

    python benchmarks/run.py --only label [--device cuda] [--quick] [--threads N]

A random ResNet-34 CTN (``torch.manual_seed(0)``; time and memory do not depend on the
weights) is saved as a checkpoint in a temporary folder and loaded once into a
:class:`~composite_tasking.inference.Predictor` for the in-process cases (model loading
and imports are never timed). Images are synthetic scenes
(:func:`composite_tasking.synthetic.generate`) written as JPEGs.

1. **Model only**: images/s of the CTN forward ``predictor.model(images, palettes)``
   under ``torch.inference_mode`` and the Predictor's precision (fp32 by default on
   the CPU and on CUDA; bf16 autocast with ``precision="bf16"``), inputs already on the device, R1r mosaic palettes. The
   FLOPs of one forward are counted with ``torch.utils.flop_counter.FlopCounterMode``
   (convolutions and matrix products only; one multiply-add = 2 FLOPs, checked on a
   matmul in the same run); achieved GFLOP/s = FLOPs per image x images/s, and the
   ratio column gives the fraction of the device's **measured** peak in the precision
   the model runs in (fp32 by default; bf16 / fp16 when asked; on CUDA fp32 is measured
   too, TF32 as torch leaves it): the best of a large square matmul and a large 3x3
   convolution (channels last), each timed once per round. Both, because a matmul
   alone is not the peak everywhere: on an AMD EPYC (Zen 5) torch's MKL sgemm reached
   ~105 GFLOP/s per core while oneDNN's 3x3 convolution reached ~250.
2. **End to end**: images/s of :func:`composite_tasking.label.label_images` on a folder
   of JPEGs into a fresh store (read, palette, predict, decode, store writes; no
   preview), with rule ``mosaic`` (one forward per image, batched as ``ctn label``
   batches, 4) and rule ``R2`` (a semantics pass first: two decodes per image, one
   image at a time), over model-only images/s at the same size and batch: the issue's
   target is >= 0.7 on a GPU. On CUDA the folder holds 512 images, enough for
   ``label_images`` to use its writer processes (from 64 images) as ``ctn label`` does
   on a large folder; their start-up is in the time, and a *steady state* row gives the
   same run's rate over its second half of images. The same labelling as a ``ctn
   label`` subprocess gives the wall time a user sees (interpreter start, imports and
   model loading included). ``label_images`` overlaps reading and store writes with the
   model (pipelined: a reader thread, writer threads or processes); each labelling is
   also run with ``pipeline=False`` (one step after another, on the first 32 images on
   CUDA; its own rows), and that sequential run is the one whose phases are timed.
   Where the time goes: the sequential labelling is instrumented (wrappers around
   ``read_image``, the rule, the Predictor's calls and ``LabelStore.write_sample``,
   timing each phase exclusive of the phases it calls) and the per-image milliseconds
   of *read*, *palette* (the rule; R2's semantics forward counts as forward), *forward*
   (the Predictor's model calls with their tensor conversions and copies), *decode*
   (output -> per-task labels and confidences), *write* (the store) and *other* (the
   rest of the loop) are rows of their own. The pipelined runs report where the
   labelling thread's time went from ``label_images``'s own clock
   (``LabelSummary.timings``: waiting for the reader, palettes, starting batches on the
   device, waiting for their outputs, handing them to the writers, waiting for the
   writers at the end) and how busy the writers were: which side holds the other up.
3. **Store writes**: the same 256 x 256 prediction (the model's output under an R1r
   mosaic palette) written for 24 images (8 with ``--quick``) into a fresh store, as
   ``label_images`` writes when pipelining, independent of the model: (a) decoded and
   written in the labelling thread, (b) decoded there and written by
   ``default_writers()`` threads, (c) decoded and written by ``default_writer_processes()``
   spawned processes (the raw output handed over); images/s and the ratio to (a). The
   processes' start-up (spawn, imports, store open) is timed apart and not in (c)'s
   images/s: ``label_images`` starts them before the first batch and uses them from 64
   images on. (c) is run once more with each image's arrays pickled through the pool's
   pipe instead of shared memory (what the hand-over cost before), and once more with
   the store in ``/dev/shm`` (RAM) where there is one: the difference is the file
   system's cost of creating the files and folders.
4. **Memory**: ``ctn label --no-preview`` as a fresh subprocess on 100 and on 1000 small
   images (32 x 32 on the CPU, 64 x 64 on CUDA; 20 vs 100 with ``--quick``): the peak
   RSS of that child alone and its RSS when the labelling had returned, ratio
   1000 / 100 (target: flat). The peak is the child's own ``VmHWM`` (Linux), cross-
   checked by ``RUSAGE_CHILDREN`` in a small launcher process between this one and the
   child: on Linux an exec'd child's ``ru_maxrss`` starts from the memory of the
   process it was forked from, so asked from this (large) process it would report this
   process's peak. The stores of these runs go to ``/dev/shm`` when it has room
   (deleting ~80 files per image takes minutes on some disks; where they are written
   does not change the child's RSS).

The cases of 1 and 2 are interleaved: each round measures the peak matmul, every
model-only case and both labellings, so that other work on the machine, which comes and
goes, slows them alike; the 1-minute load average is sampled each round and shown in the
notes. Subprocesses get ``OMP_NUM_THREADS`` = the run's torch threads.
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

if __package__ in (None, ""):  # run as a script
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks._registry import Context, Row, benchmark  # noqa: E402

NAME = "label"
LABEL_BATCH = 4  # ctn label's default --batch-size: model-only cases at this batch are the reference
PHASES = ("read", "palette", "forward", "decode", "write", "other")


@dataclass(frozen=True)
class Plan:
    model_cases: tuple[tuple[int, int, int], ...]  # (size, batch, batches per round)
    e2e_size: int
    e2e_images: int  # per round and rule
    rounds: int
    mem_size: int
    mem_counts: tuple[int, int]
    matmul_n: int
    conv: tuple[int, int, int]  # peak conv 3x3: (batch, channels, size)
    matmul_reps: int  # matmuls / convs per timing (CUDA: amortise the launch)
    write_images: int = 24  # store-write scaling: images written per case (256 x 256)
    seq_images: int | None = None  # images of the sequential (instrumented) runs; None: e2e_images


def plan_for(ctx: Context) -> Plan:
    cuda = ctx.device.startswith("cuda")
    if ctx.quick:
        return Plan(model_cases=((64, LABEL_BATCH, 1), (128, 2, 1)), e2e_size=64, e2e_images=8,
                    rounds=1, mem_size=64 if cuda else 32, mem_counts=(20, 100),
                    matmul_n=4096 if cuda else 1024, conv=(8, 256, 32) if cuda else (2, 128, 32),
                    matmul_reps=10 if cuda else 1, write_images=8)  # fmt: skip
    if cuda:
        return Plan(model_cases=((256, LABEL_BATCH, 8), (256, 32, 2), (512, LABEL_BATCH, 4), (512, 16, 2)),
                    e2e_size=256, e2e_images=512, rounds=2, mem_size=64, mem_counts=(100, 1000),
                    matmul_n=8192, conv=(32, 512, 64), matmul_reps=10, seq_images=32,
                    write_images=96)  # fmt: skip
    return Plan(model_cases=((256, LABEL_BATCH, 2), (512, 2, 1)), e2e_size=256, e2e_images=16,
                rounds=2, mem_size=32, mem_counts=(100, 1000), matmul_n=2048, conv=(4, 256, 64),
                matmul_reps=1)  # fmt: skip


def _say(text: str, t0: float) -> None:
    """Progress on stderr (run.py keeps stdout for the table)."""
    print(f"[{NAME}] {text} ({time.perf_counter() - t0:.0f} s)", file=sys.stderr, flush=True)


def _load() -> float | None:
    try:
        return os.getloadavg()[0]
    except (AttributeError, OSError):
        return None


def _load_text(samples: list[float]) -> str:
    return f"load {statistics.mean(samples):.1f}" if samples else "load n/a"


# ----------------------------------------------------------------------------- inputs


def write_jpegs(folder: Path, n: int, size: int, seed: int) -> list[Path]:
    """``n`` synthetic scenes of ``size`` x ``size`` as JPEGs in ``folder``."""
    import imageio.v3 as iio

    from composite_tasking.synthetic import generate

    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(n):
        p = folder / f"scene-{i:05d}.jpg"
        iio.imwrite(p, generate(seed, i, size)["image"], quality=90)
        paths.append(p)
    return paths


def _subprocess_env(ctx: Context) -> dict[str, str]:
    env = dict(os.environ)
    env["OMP_NUM_THREADS"] = env["MKL_NUM_THREADS"] = str(ctx.threads)
    env.setdefault("TQDM_MININTERVAL", "1")  # fewer progress redraws into the log file
    return env


# ----------------------------------------------------------------------------- peak and FLOPs


def matmul_flops_per_s(dev, dtype, n: int, reps: int, sync) -> float:
    """FLOP/s of ``reps`` (n x n) @ (n x n) products in ``dtype`` (2 n^3 FLOPs each)."""
    import torch

    a = torch.rand(n, n, device=dev).to(dtype)
    b = torch.rand(n, n, device=dev).to(dtype)
    sync()
    t0 = time.perf_counter()
    for _ in range(reps):
        c = torch.mm(a, b)
    sync()
    dt = time.perf_counter() - t0
    del a, b, c
    return 2.0 * n**3 * reps / dt


def conv_flops_per_s(dev, dtype, shape: tuple[int, int, int], reps: int, sync) -> float:
    """FLOP/s of ``reps`` 3x3 convolutions C -> C on (N, C, S, S) channels-last in ``dtype``
    (2 N C^2 9 S^2 FLOPs each, as FlopCounterMode counts them)."""
    import torch

    n, c, s = shape
    conv = torch.nn.Conv2d(c, c, 3, padding=1, bias=False).to(dev, dtype).eval()
    conv = conv.to(memory_format=torch.channels_last)
    x = torch.rand(n, c, s, s, device=dev).to(dtype).contiguous(memory_format=torch.channels_last)
    with torch.inference_mode():
        sync()
        t0 = time.perf_counter()
        for _ in range(reps):
            y = conv(x)
        sync()
        dt = time.perf_counter() - t0
    del conv, x, y
    return 2.0 * n * c * c * 9 * s * s * reps / dt


def flops_per_multiply_add() -> float:
    """What FlopCounterMode counts for one multiply-add (2 in torch's counter)."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    a, b = torch.rand(8, 16), torch.rand(16, 4)
    with FlopCounterMode(display=False) as fc:
        torch.mm(a, b)
    return fc.get_total_flops() / (8 * 16 * 4)


# ----------------------------------------------------------------------------- phase timing


class Phases:
    """Exclusive wall time per phase: a wrapped call's time minus that of wrapped calls
    it makes (the semantics pass inside ``palette_for`` counts as forward, not palette)."""

    def __init__(self, sync):
        self.sync = sync
        self.totals: dict[str, float] = defaultdict(float)
        self._stack: list[float] = []

    def wrap(self, phase: str, fn):
        @functools.wraps(fn)
        def timed(*args, **kwargs):
            self._stack.append(0.0)
            t0 = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                self.sync()
                dt = time.perf_counter() - t0
                nested = self._stack.pop()
                self.totals[phase] += dt - nested
                if self._stack:
                    self._stack[-1] += dt

        return timed


@contextlib.contextmanager
def instrumented(phases: Phases):
    """Wrap the labelling's steps (module and class attributes) for the ``with`` block."""
    import composite_tasking.label.reading as label_mod
    from composite_tasking.inference import PendingBatch, Predictor
    from composite_tasking.palette import MosaicRule, RandomRule, SemanticRule, SingleTaskRule
    from composite_tasking.store import LabelStore

    targets = [(label_mod, "read_image", "read"), (LabelStore, "write_sample", "write"),
               (Predictor, "palette_for", "palette"), (Predictor, "semantics", "palette"),
               (Predictor, "encode", "forward"), (Predictor, "decode", "forward"),
               (Predictor, "predict", "forward"), (Predictor, "predict_batch", "forward"),
               (Predictor, "start_batch", "forward"), (PendingBatch, "result", "forward"),
               (Predictor, "decode_labels", "decode")]  # fmt: skip
    targets += [(cls, "palette", "palette") for cls in (MosaicRule, RandomRule, SemanticRule, SingleTaskRule)]
    saved = []
    try:
        for obj, attr, phase in targets:
            own = attr in vars(obj)
            orig = getattr(obj, attr)
            saved.append((obj, attr, own, orig))
            setattr(obj, attr, phases.wrap(phase, orig))
        yield phases
    finally:
        for obj, attr, own, orig in reversed(saved):
            if own:
                setattr(obj, attr, orig)
            else:
                delattr(obj, attr)


# ----------------------------------------------------------------------------- memory


_CHILD = r"""
import json, resource, sys
from pathlib import Path
from composite_tasking.cli import main
rc = main(sys.argv[2:])
info = {"rc": rc, "self_maxrss": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss}
try:  # Linux: this process's own peak (VmHWM) and current RSS
    status = dict(line.split(":", 1) for line in Path("/proc/self/status").read_text().splitlines())
    info["hwm_kb"] = int(status["VmHWM"].split()[0])
    info["rss_kb"] = int(status["VmRSS"].split()[0])
except (OSError, KeyError, ValueError):
    pass
if "cuda" in sys.argv:
    import torch
    if torch.cuda.is_available():
        info["cuda_max_allocated"] = torch.cuda.max_memory_allocated()
Path(sys.argv[1]).write_text(json.dumps(info))
sys.exit(rc)
"""

# A small process between this one and the child: on Linux an exec'd child's ru_maxrss
# starts from the memory of the process it was forked from (the kernel keeps the larger
# of the old and the new address space's peak), so a child of this big benchmark process
# would report this process's peak. The launcher is small, has this one child, and
# reports RUSAGE_CHILDREN after waiting for it.
_LAUNCHER = r"""
import json, resource, subprocess, sys
rc = subprocess.call(sys.argv[2:])
ru = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
open(sys.argv[1], "w").write(json.dumps({"rc": rc, "children_maxrss": ru}))
sys.exit(rc)
"""


def _maxrss_mb(value: int) -> float:
    """ru_maxrss in MB: kilobytes on Linux, bytes on macOS."""
    return value / 2**20 if sys.platform == "darwin" else value / 1024


def run_child(args: list[str], ctx: Context, logs: Path, tag: str) -> dict:
    """``ctn ARGS`` in a fresh child (through the launcher); wall time and memory.

    ``peak_rss_mb``: the child's VmHWM where /proc has it (Linux), else the launcher's
    RUSAGE_CHILDREN ru_maxrss; both are in the result when both exist.
    """
    report, launcher_report = logs / f"{tag}.json", logs / f"{tag}.launcher.json"
    child = [sys.executable, "-c", _CHILD, str(report), *args]
    cmd = [sys.executable, "-c", _LAUNCHER, str(launcher_report), *child]
    with open(logs / f"{tag}.out", "wb") as out, open(logs / f"{tag}.err", "wb") as err:
        t0 = time.perf_counter()
        rc = subprocess.call(cmd, stdout=out, stderr=err, env=_subprocess_env(ctx))
        wall = time.perf_counter() - t0
    if rc != 0:
        tail = (logs / f"{tag}.err").read_text(errors="replace")[-2000:]
        raise RuntimeError(f"ctn {' '.join(args)} exited {rc}:\n{tail}")
    info = json.loads(report.read_text())
    info["wall_s"] = wall
    info["launcher_maxrss_mb"] = _maxrss_mb(json.loads(launcher_report.read_text())["children_maxrss"])
    if "hwm_kb" in info:
        info["peak_rss_mb"], info["peak_from"] = info["hwm_kb"] / 1024, "VmHWM"
    else:
        info["peak_rss_mb"], info["peak_from"] = info["launcher_maxrss_mb"], "ru_maxrss"
    if "rss_kb" in info:
        info["end_rss_mb"] = info["rss_kb"] / 1024
    return info


def scratch_dir(tmp: Path, need_bytes: int) -> Path:
    """A RAM-backed folder (/dev/shm) for the memory runs' stores when it has room, else
    ``tmp``: the stores of 1000 images are ~80 files each, which some disks take minutes
    to delete; where they are written does not change the process's RSS."""
    shm = Path("/dev/shm")
    try:
        st = os.statvfs(shm)
        if shm.is_dir() and os.access(shm, os.W_OK) and st.f_bavail * st.f_frsize > need_bytes:
            return Path(tempfile.mkdtemp(prefix="ctn-bench-label-", dir=shm))
    except OSError:
        pass
    return tmp


def ctn_label_args(inputs: list[str], store: Path, ckpt: Path, rule: str, ctx: Context) -> list[str]:
    return ["label", *inputs, "--out", str(store), "--model", str(ckpt), "--rule", rule,
            "--device", ctx.device, "--batch-size", str(LABEL_BATCH), "--no-preview"]  # fmt: skip


# ----------------------------------------------------------------------------- store writes


def store_write_scaling(predictor, tmp: Path, n_images: int, seed: int, size: int = 256) -> dict:
    """Seconds to decode and write ``n_images`` copies of one prediction into a fresh store:
    {"thread": ..., "threads": ..., "processes": ..., "startup": ..., counts}. The writer
    classes and the limits on images in flight are label_images's (batch 4)."""
    from composite_tasking.inference import Prediction, decode_labels
    from composite_tasking._writer_process import write_prediction
    from composite_tasking.label import default_writer_processes, default_writers
    from composite_tasking.label.writers import ProcessWriter, ThreadWriter
    from composite_tasking.palette import MosaicRule
    from composite_tasking.store import LabelStore
    from composite_tasking.synthetic import generate

    image = generate(seed, 0, size)["image"]
    (pal, out), = predictor.predict_batch([image], [MosaicRule().palette((size, size), rng=seed)], decode=False)
    attrs = {"rule": "mosaic", "palette_origin": "semantics", "model": predictor.model_id,
             "model_sha256": predictor.model_sha256, "precision": predictor.precision}  # fmt: skip
    source = str(tmp / "image.png")
    depth = 2 * LABEL_BATCH  # label_images: images read ahead / waiting to be written
    result = {"images": n_images, "threads_n": default_writers(), "processes_n": default_writer_processes()}

    def fresh(name: str) -> tuple[Path, LabelStore]:
        path = tmp / f"writes-{name}.zarr"
        return path, LabelStore(path, mode="w")

    def check(path: Path) -> None:
        done = LabelStore(path, mode="r").ids()
        if len(done) != n_images:
            raise RuntimeError(f"store writes {path.name}: {len(done)} of {n_images} images written")
        shutil.rmtree(path)

    for name, threads in (("thread", 0), ("threads", result["threads_n"])):
        path, store = fresh(name)

        def write(path_, image_id, image_, pred, store=store):
            write_prediction(store, image_id, image_, pred, attrs, True, source)

        writer = ThreadWriter(write, depth=max(LABEL_BATCH, depth - threads), threads=threads)
        t0 = time.perf_counter()
        try:
            for k in range(n_images):  # label_images decodes in the labelling thread (predict_batch)
                pred = Prediction(pal, out, decode_labels(out, pal, predictor.tasks))
                writer.submit((source, f"img-{k:04d}", image, pred))
        finally:
            writer.close()
        result[name] = time.perf_counter() - t0
        writer.check()
        check(path)

    def processes(path: Path, shared: bool = True) -> tuple[float, float]:
        """(start-up, writing) seconds of the writer processes into a fresh store at ``path``
        (``shared``: the arrays through shared memory, as label_images hands them over)."""
        n = result["processes_n"]
        LabelStore(path, mode="w")
        t0 = time.perf_counter()
        writer = ProcessWriter(path, attrs, True, predictor.tasks, limit=max(LABEL_BATCH, depth - n) + n,
                                processes=n, shared=shared)  # fmt: skip
        try:
            if not writer.ready(timeout=600):
                raise RuntimeError("store writes: the writer processes did not start")
            startup = time.perf_counter() - t0
            t0 = time.perf_counter()
            for k in range(n_images):
                writer.submit((source, f"img-{k:04d}", image, pal, out, 0.0))
            writer.close()
            seconds = time.perf_counter() - t0
        finally:
            writer.close(abort=True)
        writer.check()
        check(path)
        return startup, seconds

    result["startup"], result["processes"] = processes(tmp / "writes-processes.zarr")
    result["pipe_startup"], result["processes_pipe"] = processes(tmp / "writes-pipe.zarr", shared=False)
    # the same into RAM (tmpfs): how much of it is the file system's creating files and folders
    shm = scratch_dir(tmp, need_bytes=n_images * 2**20 + 2**28)
    if shm != tmp:
        try:
            result["shm_startup"], result["processes_shm"] = processes(shm / "writes-processes.zarr")
        finally:
            shutil.rmtree(shm, ignore_errors=True)
    return result


# ----------------------------------------------------------------------------- the benchmark


@benchmark(NAME, order=30,
           ratio_to="per row: images/s -> model-only images/s at the same size with ctn label's "
                    "batch (4); GFLOP/s -> the best measured matmul or conv in the model's precision; "
                    "ms/image -> the whole labelling's ms/image; store writes -> the labelling "
                    "thread's; MB -> the smaller run")  # fmt: skip
def run(ctx: Context):
    """ctn label: model-only images/s + roofline, end-to-end / model-only, RSS 100 vs 1000 images."""
    with tempfile.TemporaryDirectory(prefix="ctn-bench-label-") as tmp:
        yield from _run(ctx, Path(tmp))


def _run(ctx: Context, tmp: Path):
    import numpy as np
    import torch

    from composite_tasking.inference import Predictor
    from composite_tasking.label import PROCESS_MIN_IMAGES, default_writer_processes, default_writers, label_images
    from composite_tasking.model import build_model, save_checkpoint
    from composite_tasking.palette import MosaicRule

    plan = plan_for(ctx)
    t_start = time.perf_counter()
    dev = torch.device(ctx.device)
    cuda = dev.type == "cuda"

    torch.manual_seed(0)
    ckpt = save_checkpoint(build_model("ctn-resnet34").eval(), tmp / "ctn")
    predictor = Predictor(ckpt, device=ctx.device)
    model = predictor.model
    precision = {None: "fp32", torch.bfloat16: "bf16", torch.float16: "fp16"}[predictor.autocast]

    def amp():
        if predictor.autocast is None:
            return contextlib.nullcontext()
        return torch.autocast(dev.type, dtype=predictor.autocast)

    # ---- inputs
    folder = tmp / f"jpeg-{plan.e2e_size}"
    write_jpegs(folder, plan.e2e_images, plan.e2e_size, ctx.seed)
    seq_n = plan.seq_images or plan.e2e_images
    seq_folder = folder
    if seq_n < plan.e2e_images:  # the first images of the same files
        seq_folder = tmp / f"jpeg-{plan.e2e_size}-first-{seq_n}"
        seq_folder.mkdir()
        for p in sorted(folder.glob("*.jpg"))[:seq_n]:
            os.link(p, seq_folder / p.name)
    model_inputs = {}
    for size, batch, _ in plan.model_cases:
        gen = torch.Generator().manual_seed(ctx.seed)
        x = torch.rand((batch, 3, size, size), generator=gen).to(dev)
        x = x.contiguous(memory_format=torch.channels_last)
        pals = np.stack([MosaicRule().palette((size, size), rng=i) for i in range(batch)])
        model_inputs[(size, batch)] = (x, torch.from_numpy(pals).long().to(dev))

    def forward(size: int, batch: int) -> None:
        x, p = model_inputs[(size, batch)]
        with torch.inference_mode(), amp():
            model(x, p)

    # ---- warm-up; the FLOPs of one forward per case (counted on the warm-up pass)
    from torch.utils.flop_counter import FlopCounterMode

    mac = flops_per_multiply_add()
    flops_per_image: dict[int, float] = {}
    for size, batch, _ in plan.model_cases:
        with FlopCounterMode(display=False) as fc:
            forward(size, batch)
        ctx.sync()
        flops_per_image.setdefault(size, fc.get_total_flops() / batch)
    peak_dtypes = [torch.float32] + ([predictor.autocast] if predictor.autocast is not None else [])
    kernels = ("matmul", "conv")
    peaks: dict[tuple[torch.dtype, str], list[float]] = {(d, k): [] for d in peak_dtypes for k in kernels}

    def measure_peaks(reps: int) -> None:
        for d in peak_dtypes:
            peaks[(d, "matmul")].append(matmul_flops_per_s(dev, d, plan.matmul_n, reps, ctx.sync))
            peaks[(d, "conv")].append(conv_flops_per_s(dev, d, plan.conv, reps, ctx.sync))

    measure_peaks(1)  # warm-up
    for v in peaks.values():
        v.clear()
    warm = tmp / "warm"
    first = sorted(folder.glob("*.jpg"))[:1]
    for rule in ("mosaic", "R2"):  # imports, zarr, the batch-1 shapes of R2's passes
        label_images(first, warm / f"{rule}.zarr", rule=rule, model=predictor,
                     batch_size=LABEL_BATCH, preview=None)  # fmt: skip

    _say("set up and warmed up", t_start)

    # ---- interleaved rounds
    model_times: dict[tuple[int, int], list[float]] = defaultdict(list)
    e2e_times: dict[str, list[float]] = defaultdict(list)  # pipelined (the default on a GPU)
    e2e_seq_times: dict[str, list[float]] = defaultdict(list)  # pipeline=False
    e2e_steady: dict[str, list[float]] = defaultdict(list)  # pipelined, images/s over the second half
    e2e_phases: dict[str, dict[str, float]] = {r: defaultdict(float) for r in ("mosaic", "R2")}
    e2e_timings: dict[str, dict[str, float]] = {r: defaultdict(float) for r in ("mosaic", "R2")}  # pipelined
    loads: list[float] = []
    files_per_image: dict[str, float] = {}
    for r in range(plan.rounds):
        measure_peaks(plan.matmul_reps)
        for size, batch, n_batches in plan.model_cases:
            ctx.sync()
            t0 = time.perf_counter()
            for _ in range(n_batches):
                forward(size, batch)
            ctx.sync()
            model_times[(size, batch)].append((time.perf_counter() - t0) / (n_batches * batch))
        for rule in ("mosaic", "R2"):
            # the pipelined labelling (as ctn label runs it on a GPU) (not instrumented: the wrappers'
            # exclusive times assume one thread), then the same one step after another
            # (pipeline=False), instrumented: where the time of an image goes
            for pipelined in (True, False):
                phases = Phases(ctx.sync)
                store = tmp / f"e2e-{rule}-{r}-{'pipe' if pipelined else 'seq'}.zarr"
                n_images = plan.e2e_images if pipelined else seq_n
                stamps: list[float] = []
                with instrumented(phases) if not pipelined else contextlib.nullcontext():
                    ctx.sync()
                    t0 = time.perf_counter()
                    summary = label_images([folder if pipelined else seq_folder], store, rule=rule,
                                           model=predictor, batch_size=LABEL_BATCH, preview=None,
                                           pipeline=pipelined,
                                           progress=lambda done, total: stamps.append(time.perf_counter()))  # fmt: skip
                    ctx.sync()
                    dt = time.perf_counter() - t0
                if len(summary.done) != n_images or summary.failed:
                    raise RuntimeError(f"label_images {rule}: {len(summary.done)} done, failed {summary.failed}")
                (e2e_times if pipelined else e2e_seq_times)[rule].append(dt / n_images)
                if pipelined:
                    for k, v in summary.timings.items():
                        e2e_timings[rule][k] += v
                    e2e_timings[rule]["images"] += n_images
                if pipelined and n_images >= PROCESS_MIN_IMAGES:  # from the first image written to the last
                    e2e_steady[rule].append((len(stamps) - 1) / (stamps[-1] - stamps[0]))
                if rule not in files_per_image:
                    files_per_image[rule] = sum(len(f) for _, _, f in os.walk(store)) / n_images
                shutil.rmtree(store)  # outside the timing; keeps the temporary folder small
                if not pipelined:
                    for k, v in phases.totals.items():
                        e2e_phases[rule][k] += v
                    e2e_phases[rule]["total"] += dt
        load = _load()
        if load is not None:
            loads.append(load)
        _say(f"round {r + 1}/{plan.rounds} done", t_start)

    # ---- ctn label as a user runs it (wall time, subprocess)
    logs = tmp / "logs"
    logs.mkdir()
    cli = run_child(ctn_label_args([str(folder)], tmp / "cli.zarr", ckpt, "mosaic", ctx), ctx, logs, "cli")
    cli_load = _load()
    shutil.rmtree(tmp / "cli.zarr")
    shutil.rmtree(warm)
    _say("ctn label subprocess done", t_start)

    # ---- store writes: labelling thread, writer threads, writer processes
    writes = store_write_scaling(predictor, tmp, plan.write_images, ctx.seed)
    writes_load = _load()
    _say("store writes done", t_start)

    # ---- rows: peak, model only
    ref_dtype = peak_dtypes[-1]  # what the model runs in
    best = {key: max(v) for key, v in peaks.items()}
    peak = {d: max(best[(d, k)] for k in kernels) for d in peak_dtypes}  # the device's best
    load_note = _load_text(loads)
    dname = {torch.float32: "fp32", torch.bfloat16: "bf16", torch.float16: "fp16"}
    n_, c_, s_ = plan.conv
    for d in peak_dtypes:
        for k in kernels:
            shape = (f"{plan.matmul_n}x{plan.matmul_n}" if k == "matmul"
                     else f"3x3, {c_}->{c_} ch, {n_}x{s_}x{s_}")  # fmt: skip
            note = f"best of {len(peaks[(d, k)])} (1 per round)"
            if cuda and d == torch.float32:
                flag = torch.backends.cuda.matmul.allow_tf32 if k == "matmul" else torch.backends.cudnn.allow_tf32
                note += f", TF32 {'on' if flag else 'off'}"
            yield Row(NAME, f"peak {dname[d]} {k}, {shape}", best[(d, k)] / 1e9, "GFLOP/s",
                      ratio=best[(d, k)] / peak[ref_dtype], notes=f"{note}; {load_note}", digits=1,
                      extra={"key": f"peak_{dname[d]}_{k}", "flops_per_s": best[(d, k)],
                             "all": peaks[(d, k)]})  # fmt: skip
    precision_peak = (f"the best {dname[ref_dtype]} kernel above "
                      f"({max(kernels, key=lambda k: best[(ref_dtype, k)])}, "
                      f"{peak[ref_dtype] / 1e9:.0f} GFLOP/s)")  # fmt: skip

    model_ips = {k: len(v) / sum(v) for k, v in model_times.items()}  # images/s over all rounds
    for size, batch, n_batches in plan.model_cases:
        ips = model_ips[(size, batch)]
        ref = model_ips.get((size, LABEL_BATCH))
        images = n_batches * batch * plan.rounds
        yield Row(NAME, f"model only, {size}x{size}, batch {batch}", ips, "images/s",
                  ratio=ips / ref if ref else None,
                  notes=f"CTN forward, {precision}, inputs on {dev.type}; {images} images in "
                        f"{plan.rounds} round(s); {load_note}",
                  extra={"key": f"model_ips_{size}_b{batch}", "size": size, "batch": batch,
                         "s_per_image_per_round": model_times[(size, batch)]})  # fmt: skip
        gflops = flops_per_image[size] * ips / 1e9
        yield Row(NAME, f"model only, {size}x{size}, batch {batch}: achieved", gflops, "GFLOP/s",
                  ratio=gflops * 1e9 / peak[ref_dtype],
                  notes=f"{flops_per_image[size] / 1e9:.1f} GFLOP/image (FlopCounterMode: conv + "
                        f"matmul only, multiply-add = {mac:g} FLOPs) x images/s; ratio = fraction of "
                        f"{precision_peak}",
                  digits=1, extra={"key": f"model_gflops_{size}_b{batch}", "flops_per_image": flops_per_image[size],
                                   "flops_per_multiply_add": mac, "peak_flops_per_s": peak[ref_dtype]})  # fmt: skip

    # ---- rows: end to end
    ref_ips = model_ips[(plan.e2e_size, LABEL_BATCH)]
    size_text = f"{plan.e2e_size}x{plan.e2e_size}"
    what = {"mosaic": "rule mosaic, 1 forward/image, batch 4",
            "R2": "rule R2, semantics pass: 2 decodes/image, 1 image at a time"}

    writing = (f"{default_writer_processes()} writer processes: decode + write"
               if plan.e2e_images >= PROCESS_MIN_IMAGES else f"{default_writers()} writer threads")  # fmt: skip
    for rule in ("mosaic", "R2"):
        ips = 1.0 / statistics.mean(e2e_times[rule])
        seq_ips = 1.0 / statistics.mean(e2e_seq_times[rule])
        steady = statistics.mean(e2e_steady[rule]) if e2e_steady[rule] else None
        yield Row(NAME, f"label_images, {rule}, {size_text}", ips, "images/s", ratio=ips / ref_ips,
                  notes=f"{what[rule]}; in-process, read..store writes, as ctn label runs it ({writing}; "
                        f"their start-up included); {plan.e2e_images} JPEGs x {plan.rounds} round(s); "
                        f"{load_note}",
                  extra={"key": f"e2e_{rule}", "s_per_image_per_round": e2e_times[rule],
                         "target_ratio_gpu": 0.7, "over_sequential": ips / seq_ips})  # fmt: skip
        if steady is not None:  # measured from PROCESS_MIN_IMAGES images on (the CUDA plan)
            yield Row(NAME, f"label_images, {rule}, {size_text}, steady state", steady, "images/s",
                      ratio=steady / ref_ips,
                      notes=f"the same runs' rate from the first image written to the last (start-up and "
                            f"the first batch left out: what a large folder sees); {load_note}",
                      extra={"key": f"e2e_steady_{rule}", "images_per_s_per_round": e2e_steady[rule],
                             "target_ratio_gpu": 0.7})  # fmt: skip
        yield Row(NAME, f"label_images, {rule}, {size_text}, sequential", seq_ips, "images/s",
                  ratio=seq_ips / ref_ips,
                  notes=f"pipeline=False (read, predict, write one after the other) on the first "
                        f"{seq_n} of the images, instrumented: the phases below; {load_note}",
                  extra={"key": f"e2e_seq_{rule}", "s_per_image_per_round": e2e_seq_times[rule]})  # fmt: skip
    cli_ips = plan.e2e_images / cli["wall_s"]
    startup = cli["wall_s"] - plan.e2e_images / (1.0 / statistics.mean(e2e_times["mosaic"]))
    yield Row(NAME, f"ctn label subprocess, mosaic, {size_text}", cli_ips, "images/s", ratio=cli_ips / ref_ips,
              notes=f"wall {cli['wall_s']:.1f} s for {plan.e2e_images} images, ~{max(startup, 0):.1f} s of it "
                    f"start-up (imports, model load); load {cli_load or 0:.1f}",
              extra={"key": "cli_mosaic", "wall_s": cli["wall_s"], "peak_rss_mb": cli["peak_rss_mb"]})  # fmt: skip

    # ---- rows: where the time of one labelled image goes (in the sequential run: the
    # pipelined one overlaps read and write with the model)
    for rule in ("mosaic", "R2"):
        acc = e2e_phases[rule]
        n = seq_n * plan.rounds
        total = acc["total"]
        acc["other"] = total - sum(acc[p] for p in PHASES if p != "other")
        for p in PHASES:
            notes = _PHASE_NOTES[p]
            if p == "write":
                notes += f"; {files_per_image[rule]:.0f} files per image"
            yield Row(NAME, f"  {rule}: {p}", acc[p] / n * 1e3, "ms/image", ratio=acc[p] / total,
                      notes=notes, digits=1,
                      extra={"key": f"phase_{rule}_{p}", "seconds_total": acc[p], "images": n})  # fmt: skip

    # ---- rows: the pipelined runs, from label_images's own clock (summary.timings): where
    # the labelling thread's time went, and how busy the writers were
    from composite_tasking.label import TIMINGS

    for rule in ("mosaic", "R2"):
        acc = e2e_timings[rule]
        n, total = acc["images"], acc["total"]
        for key in TIMINGS:
            yield Row(NAME, f"  {rule} pipelined, labelling thread: {key}", acc[key] / n * 1e3, "ms/image",
                      ratio=acc[key] / total, notes=_TIMING_NOTES[key], digits=2,
                      extra={"key": f"timing_{rule}_{key}", "seconds_total": acc[key], "images": n})  # fmt: skip
        workers = acc["writers"] / plan.rounds
        busy = acc["writers_busy"] / (total * workers) if workers else None
        yield Row(NAME, f"  {rule} pipelined, writers busy", acc["writers_busy"] / n * 1e3, "ms/image",
                  ratio=busy,
                  notes=f"decoding + writing, summed over the {workers:g} writer(s); ratio = share of their "
                        f"time (wall of the labelling x writers) spent on it",
                  digits=2, extra={"key": f"timing_{rule}_writers_busy", "seconds_total": acc["writers_busy"],
                                   "writers": workers, "images": n})  # fmt: skip

    # ---- rows: store writes (decode + write) by the labelling thread, threads, processes
    k = writes["images"]
    ref_w = k / writes["thread"]
    cases = [("thread", "the labelling thread", "decoded and written one after the other, as pipeline=False or "
                                                "writers=0"),
             ("threads", f"{writes['threads_n']} writer thread(s) (default_writers())",
              "decoded in the labelling thread, written by the threads, as label_images below 64 images"),
             ("processes", f"{writes['processes_n']} writer process(es) (default_writer_processes())",
              f"the raw output handed over, decoded and written by the processes, as label_images from 64 "
              f"images on; their start-up ({writes['startup']:.1f} s: spawn, imports, store open) is not in it")]
    cases.append(("processes_pipe", f"{writes['processes_n']} writer process(es), arrays through the pipe",
                  f"as the row above, each image's arrays (~1 MB) pickled through the pool's pipe instead of "
                  f"shared memory (start-up {writes['pipe_startup']:.1f} s, not in it)"))
    if "processes_shm" in writes:
        cases.append(("processes_shm", f"{writes['processes_n']} writer process(es), store on tmpfs",
                      f"as the row above, the store in /dev/shm (RAM): what the file system's creating files "
                      f"and folders costs (start-up {writes['shm_startup']:.1f} s, not in it)"))
    for key, who, how in cases:
        ips = k / writes[key]
        where = "/dev/shm" if key == "processes_shm" else "the temporary folder"
        yield Row(NAME, f"store writes, 256x256, {who}", ips, "images/s", ratio=ips / ref_w,
                  notes=f"{how}; {k} images (one mosaic prediction, R1r), fresh store in {where}; ratio "
                        f"to the labelling thread; load {writes_load or 0:.1f}",
                  extra={"key": f"store_writes_{key}", "seconds": writes[key], "images": k,
                         "workers": {"thread": 0, "threads": writes["threads_n"]}.get(key, writes["processes_n"]),
                         **({"startup_s": writes["startup"]} if key == "processes" else {}),
                         **({"startup_s": writes["shm_startup"]} if key == "processes_shm" else {}),
                         **({"startup_s": writes["pipe_startup"]} if key == "processes_pipe" else {})})  # fmt: skip

    # ---- memory: fresh ctn label children on few and many small images
    if os.environ.get("CTN_BENCH_LABEL_MEMORY", "1") == "0":  # a short GPU lease
        yield Row(NAME, "peak RSS, ctn label", None, "MB", notes="left out (CTN_BENCH_LABEL_MEMORY=0)")
        return
    small, many = plan.mem_counts
    scratch = scratch_dir(tmp, need_bytes=many * 2**20 + 2**30)
    try:
        mem_dir = scratch / f"mem-{many}"
        paths = write_jpegs(mem_dir, many, plan.mem_size, ctx.seed + 1)
        few_dir = scratch / f"mem-{small}"
        few_dir.mkdir()
        for p in paths[:small]:  # the first images of the same files
            try:
                os.link(p, few_dir / p.name)
            except OSError:
                shutil.copy2(p, few_dir / p.name)
        mem = {}
        for count, src in ((small, few_dir), (many, mem_dir)):
            store = scratch / f"mem-{count}.zarr"
            mem[count] = run_child(ctn_label_args([str(src)], store, ckpt, "mosaic", ctx), ctx, logs,
                                   f"mem-{count}")  # fmt: skip
            mem[count]["load"] = _load()
            mem[count]["store_on"] = "tmpfs (/dev/shm)" if scratch != tmp else "disk (temporary folder)"
            shutil.rmtree(store)
            _say(f"memory, {count} images done", t_start)
    finally:
        if scratch != tmp:
            shutil.rmtree(scratch, ignore_errors=True)
    px = f"{plan.mem_size}x{plan.mem_size}"
    for count in (small, many):
        m = mem[count]
        notes = (f"ctn label --rule mosaic --no-preview, {count} JPEGs {px}, fresh child, store on "
                 f"{m['store_on']}; {m['peak_from']}; {count / m['wall_s']:.1f} images/s wall; "
                 f"load {m['load'] or 0:.1f}")
        if "cuda_max_allocated" in m:
            notes += f"; CUDA max allocated {m['cuda_max_allocated'] / 2**20:.0f} MB"
        yield Row(NAME, f"peak RSS, ctn label, {count} images", m["peak_rss_mb"], "MB",
                  ratio=m["peak_rss_mb"] / mem[small]["peak_rss_mb"], notes=notes, digits=0,
                  extra={"key": f"mem_peak_{count}", **m})  # fmt: skip
    if all("end_rss_mb" in mem[c] for c in (small, many)):
        for count in (small, many):
            m = mem[count]
            yield Row(NAME, f"RSS after labelling, {count} images", m["end_rss_mb"], "MB",
                      ratio=m["end_rss_mb"] / mem[small]["end_rss_mb"],
                      notes="the child's RSS when label_images had returned (steady state, "
                            "not the model-loading peak)", digits=0,
                      extra={"key": f"mem_end_{count}"})  # fmt: skip


_TIMING_NOTES = {
    "read": "waiting for the reader thread (JPEG decoding)",
    "palette": "making palettes (the rule; R2's are made in the batch's forward)",
    "predict": "starting batches on the device (Predictor.start_batch; on a CPU the whole forward; "
               "R2: its semantics pass and rule too)",
    "wait": "waiting for a started batch's outputs (and, with writer threads, decoding its labels)",
    "hand": "handing images to the writers, waiting while they hold as many as they may",
    "finish": "after the last batch: waiting for the writers to finish",
    "other": "the rest: scan, store open, starting the writers, the loop",
}

_PHASE_NOTES = {
    "read": "read_image: JPEG decode to RGB",
    "palette": "the rule (R2: on the predicted semantics; its forward counts below)",
    "forward": "Predictor model calls + tensor conversion and copies (R2: both passes)",
    "decode": "Predictor.decode_labels: output -> labels, probabilities, confidences",
    "write": "LabelStore.write_sample: validate, zarr arrays + metadata",
    "other": "the rest: scan, store open, to_sample, loop",
}


if __name__ == "__main__":
    from benchmarks._registry import format_table

    import torch

    quick = "--quick" in sys.argv
    print(format_table(list(run(Context(device="cpu", quick=quick, threads=torch.get_num_threads())))))
