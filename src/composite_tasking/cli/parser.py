"""The ``ctn`` command line: :func:`build_parser`, one small function per command
adding its sub-parser (help texts and argument checks; the commands themselves are in
the modules beside this one, dispatched by the package's ``main``)."""

from __future__ import annotations

import argparse

from ..__about__ import __version__
from .checks import minutes, nonneg, scale, size, world


def _scale_arg(p: argparse.ArgumentParser, default: str) -> None:
    from composite_tasking.scale import SCALE_HELP

    p.add_argument("--scale", type=scale, default=default, help=f"{SCALE_HELP} (default {default})")


def _add_storage_option(p: argparse.ArgumentParser) -> None:
    p.add_argument("--storage-option", action="append", default=None, metavar="KEY=VALUE",
                   help="an option of the object store behind s3://... URLs (repeatable; fsspec's, e.g. "
                        "endpoint_url=http://127.0.0.1:9000, anon=true); credentials and the endpoint also "
                        "come from the AWS environment variables (docs/label-folder.md)")  # fmt: skip


def _add_info(sub) -> None:
    sub.add_parser("info", help="versions, devices, tasks, rules and model presets",
                   description="Print the versions of the package and of torch, the devices torch sees "
                   "(and whether bf16 pays on this CPU), the tasks, the built-in rules, the model "
                   "presets with their sizes, and whether the bundled models are installed.")  # fmt: skip


def _add_synth(sub) -> None:
    p = sub.add_parser(
        "synth",
        help="generate synthetic scenes: PNG images and their exact ground truth as a label store",
        description="Write N scenes of the synthetic world to OUT/images/*.png and their "
        "ground truth for all five tasks to OUT/ground-truth.zarr. Re-running continues an "
        "interrupted run.",
    )
    p.add_argument("out", help="output folder")
    p.add_argument("--n", type=nonneg, required=True, help="number of scenes")
    p.add_argument("--size", type=size, default=(256, 256), help="S or HxW (default 256)")
    p.add_argument("--seed", type=nonneg, default=0, help="world seed (default 0)")
    p.add_argument("--start", type=nonneg, default=0, help="index of the first scene (default 0)")
    p.add_argument("--world", type=world, default="default",
                   help="default (the training world) or shifted (a world the bundled models "
                        "never saw: other lighting, textures, camera and object mix); "
                        "see docs/synthetic.md")  # fmt: skip


def _add_label(sub) -> None:
    p = sub.add_parser(
        "label",
        help="auto-label images or folders into a label store (OME-Zarr)",
        description="Predict pseudo-labels for every image under a Task Palette made by a rule, "
        "and write them into a zarr label store. Re-running continues an interrupted run.",
    )
    p.add_argument(
        "inputs", nargs="+", help="image files or folders (searched recursively), or s3:// URLs of images or prefixes"
    )
    p.add_argument("--out", required=True, help="the label store (e.g. labels.zarr, or s3://bucket/labels.zarr)")
    p.add_argument("--rule", default=None,
                   help="R2 (default), R3, S:<task>, mosaic, random or a YAML rule file; with "
                        "--palette-from net the rule the network was trained for")  # fmt: skip
    p.add_argument("--palette-from", default="semantics",
                   help="semantics (the rule on the predicted classes, default), net, or a folder "
                        "of palette PNGs named like the images (values = task id + 1)")  # fmt: skip
    p.add_argument("--model", default="default", help="'default' (bundled), a checkpoint folder or a run folder")
    p.add_argument("--palette-model", default=None,
                   help="only with --palette-from net: the palette network ('default' = bundled, "
                        "the default; or a folder)")  # fmt: skip
    p.add_argument("--device", default="auto", help="auto (CUDA, else MPS, else cpu), cpu, cuda, cuda:I, mps")
    p.add_argument(
        "--batch-size",
        type=nonneg,
        default=4,
        help="images of one size predicted together (default 4; a GPU gains from more)",
    )
    p.add_argument("--writers", type=nonneg, default=None, metavar="N",
                   help="writers of the store when the model runs on a GPU: processes that also "
                        "decode the labels from 64 images on (default min(12, cores - 2)), "
                        "threads below (default min(4, cores - 1)); 0: write in the "
                        "labelling thread")  # fmt: skip
    _scale_arg(p, default="auto")
    p.add_argument(
        "--tile",
        type=nonneg,
        default=1024,
        help="tile images larger than this many pixels per side at the working resolution (64 or more; default 1024)",
    )
    p.add_argument("--overlap", type=nonneg, default=None,
                   help="pixels neighbouring tiles share, blended across (0 to TILE/2 - 1; default "
                        "min(128, TILE/4))")  # fmt: skip
    p.add_argument("--precision", default="auto", choices=("auto", "fp32", "bf16", "fp16"),
                   help="auto: float32 (on GPUs too: bf16 did not pay on an H200); bf16 on a CPU "
                        "with native bf16 is ~1.7x faster with labels that differ slightly "
                        "(docs/benchmarks.md)")  # fmt: skip
    g = p.add_mutually_exclusive_group()
    g.add_argument("--resume", action="store_true", help="skip images already complete (the default)")
    g.add_argument("--overwrite", action="store_true", help="relabel everything, also with another model or rule")
    p.add_argument("--shard", default=None,
                   help="I/N: label every N-th image starting at image I, counting from 0 (0/2 and 1/2 "
                        "share a folder between two processes); torchrun's RANK/WORLD_SIZE set it")  # fmt: skip
    p.add_argument("--reference", action="store_true", help="store a path and sha256 instead of the pixels")
    p.add_argument("--preview", default=None,
                   help="the contact sheet, a .png file (default: next to a local store, "
                        "STORE-preview.png; none for a store in a bucket)")  # fmt: skip
    p.add_argument("--no-preview", action="store_true", help="write no contact sheet")
    p.add_argument("--timings", action="store_true",
                   help="print where the time went: the labelling thread's shares (model, "
                        "reading, handing to the writers, ...) and how busy the writers were")  # fmt: skip
    _add_storage_option(p)


def _add_demo(sub) -> None:
    p = sub.add_parser("demo", help="label the bundled sample images with the bundled model (store + preview)",
                       description="The main job on the six bundled sample scenes: ctn label with the "
                       "bundled model into OUT/labels.zarr and a contact sheet OUT/preview.png. "
                       "Re-running continues; --overwrite relabels.")  # fmt: skip
    p.add_argument("--out", default="demo-out", help="output folder (default demo-out)")
    p.add_argument("--rule", default="mosaic",
                   help="default mosaic: four rectangles around a random point, each a different "
                        "task (four of the five tasks per image); R2 needs semantics the bundled "
                        "model predicts only in part")  # fmt: skip
    p.add_argument("--model", default="default", help="'default' (bundled), a checkpoint folder or a run folder")
    p.add_argument("--device", default="auto", help="auto (CUDA, else MPS, else cpu), cpu, cuda, cuda:I, mps")
    p.add_argument("--precision", default="auto", choices=("auto", "fp32", "bf16", "fp16"), help="as for ctn label")
    _scale_arg(p, default="auto")
    p.add_argument("--overwrite", action="store_true", help="relabel an existing demo store")


def _add_train(sub, recipes: str) -> None:
    p = sub.add_parser("train", help="train a model from a recipe (YAML)",
                       description="Train a CTN, an MHN, STNs or a palette network as a recipe says "
                       "(model, data, rule, losses, optimiser, schedule; docs/finetune.md), writing a "
                       f"checkpoint per epoch into OUT. Built-in recipes: {recipes}.")  # fmt: skip
    p.add_argument("--config", required=True, help=f"a recipe file, or a built-in recipe by name: {recipes}")
    p.add_argument("--out", required=True,
                   help="run folder (newest checkpoint, history, curves): a new or empty folder, "
                        "or the run to continue with --resume")  # fmt: skip
    p.add_argument("--resume", action="store_true", help="continue the run in --out")
    p.add_argument("--data", default=None,
                   help="train on this instead of the recipe's data: pascal-mt:ROOT[,split=S] (validated "
                        "on its val split; ctn-pascal-mt needs it) | synthetic:seed=K,n=N[,size=S] | "
                        "STORE.zarr")  # fmt: skip
    p.add_argument("--epochs", type=nonneg, default=None, help="override the recipe's epochs")
    p.add_argument("--device", default="auto", help="auto (CUDA, else MPS, else cpu), cpu, cuda, cuda:I, mps")
    p.add_argument(
        "--max-minutes",
        type=minutes,
        default=None,
        metavar="M",
        help="stop after M minutes of wall time, keeping the last finished epoch (continue with --resume)",
    )


def _add_finetune(sub, recipes: str) -> None:
    p = sub.add_parser("finetune", help="fine-tune a model on a store, a data set or a new rule",
                       description="Fine-tune a CTN (and the palette network) on what a person checked "
                       "in a label store (the corrected pixels, and every pixel of reviewed tasks; "
                       "--all-images: every pseudo-label), or on a data set under a rule. On a store, "
                       "some checked images are held out and decide whether the new model replaces "
                       "the old one (docs/finetune.md).")  # fmt: skip
    p.add_argument("--model", required=True, help="'default', a checkpoint folder or a run folder")
    p.add_argument("--data", required=True,
                   help="pascal-mt:ROOT[,split=train|val] (default split train) | "
                        "synthetic:seed=K,n=N[,size=S][,world=W] | STORE.zarr: a store trains on "
                        "the pixels a person checked (corrected, reviewed or ground truth; see "
                        "--all-images), its images padded to the largest, at most 256 px (a "
                        "recipe's augment: {crop: S} changes it)")  # fmt: skip
    p.add_argument("--rule", default=None,
                   help="R2, R3, S:<task>, mosaic, random or a YAML rule file: the rule to train "
                        "under; needed for a data set, optional for a store, whose images train "
                        "under their stored palettes (the rule makes the palettes of images stored "
                        "without one, and a palette a rule made that contradicts it is refused)")  # fmt: skip
    p.add_argument("--palette-model", default=None, metavar="CKPT",
                   help="with a store: also fine-tune this palette network ('palette' = the "
                        "bundled one) on the palettes a person chose, into OUT/palette (a store "
                        "with edited palettes only fine-tunes it alone, into OUT)")  # fmt: skip
    p.add_argument("--holdout", type=float, default=0.2, metavar="F",
                   help="with a store of 5 or more checked images: hold out this share of them "
                        "and keep the new model only if its effort on them did not rise "
                        "(exit 1 and the previous model otherwise); 0 = no check (default 0.2)")  # fmt: skip
    p.add_argument("--all-images", action="store_true",
                   help="with a store: also train on the images holding only pseudo-labels "
                        "(a model's output nobody checked): self-training")  # fmt: skip
    p.add_argument(
        "--out", required=True, help="run folder: a new or empty folder, or the run to continue with --resume"
    )
    p.add_argument(
        "--config",
        default=None,
        help=f"a recipe file or built-in recipe to start from (default: finetune; built-in: {recipes})",
    )
    p.add_argument("--epochs", type=nonneg, default=None, help="override the recipe's epochs")
    p.add_argument("--resume", action="store_true", help="continue the run in --out")
    p.add_argument("--device", default="auto", help="auto (CUDA, else MPS, else cpu), cpu, cuda, cuda:I, mps")
    p.add_argument(
        "--max-minutes",
        type=minutes,
        default=None,
        metavar="M",
        help="stop after M minutes of wall time, keeping the last finished epoch",
    )
    _add_storage_option(p)


def _add_annotate(sub) -> None:
    p = sub.add_parser(
        "annotate",
        help="label a folder (or a label store) in napari, one image at a time",
        description="Open napari with the Label images dock (images one at a time: Previous, Next, "
        "Save and next; the task legend; Predict; the class list) and the Fine-tune dock, on the "
        "series of the given folders of images, image files and label store (.zarr), at its first "
        "image not yet reviewed. Everything is saved to the label store: the one given, or "
        "<folder>-labels.zarr beside the first folder.",
    )
    p.add_argument("images", nargs="*", help="folders of images, image files, and at most one label store")
    p.add_argument("--store", default=None, help="the label store to save to (default: the store given "
                   "as an input, else <folder>-labels.zarr beside the first folder)")  # fmt: skip
    p.add_argument("--order", default="file", choices=["file", "correct-next"],
                   help="file order, or correct-next: the images whose pseudo-labels are expected "
                   "to need most corrections first (needs a store written by ctn label)")  # fmt: skip
    p.add_argument("--model", default=None, help="'default' (bundled), a checkpoint folder or a "
                   "run folder (default: the plugin's setting)")  # fmt: skip
    p.add_argument("--device", default=None, help="auto, cpu, cuda, cuda:I, mps (default: the plugin's setting)")


def _add_evaluate(sub) -> None:
    p = sub.add_parser("evaluate", help="metrics of a model on a data set under a rule",
                       description="The paper's metric per task (semseg and parts mIoU, edges odsF, "
                       "saliency max mIoU, normals mean angle), the loss, the correction effort and "
                       "how well the confidence predicts errors (AUROC), on a data set or the checked "
                       "images of a label store, under rule S (every task everywhere, the paper's "
                       "Table 1) or a palette rule.")  # fmt: skip
    p.add_argument("--model", required=True, help="'default', a checkpoint folder or a run folder")
    p.add_argument("--data", required=True,
                   help="pascal-mt:ROOT[,split=train|val] (default split val) | "
                        "synthetic:seed=K,n=N[,size=S] | STORE.zarr (its images with corrected or "
                        "ground-truth labels)")  # fmt: skip
    p.add_argument("--rule", default="S",
                   help="S (every task everywhere, default) or a palette rule (a store's stored "
                        "palettes made under another rule are refused)")  # fmt: skip
    p.add_argument("--all-images", action="store_true",
                   help="with a store: also score against the images holding only pseudo-labels "
                        "(a model's output nobody checked)")  # fmt: skip
    p.add_argument("--batch-size", type=nonneg, default=8, help="images per batch (default 8)")
    p.add_argument("--device", default="auto", help="auto (CUDA, else MPS, else cpu), cpu, cuda, cuda:I, mps")
    _scale_arg(p, default="none")
    p.add_argument("--json", action="store_true", help="print JSON for scripts")
    _add_storage_option(p)


def _add_review(sub) -> None:
    p = sub.add_parser(
        "review",
        help="rank a label store's images by the correction effort their confidence maps predict",
        description="Correct next: rank the images of a label store by the share of their "
        "pseudo-labelled palette pixels expected to be wrong (from the stored confidence maps), "
        "with each image's low-confidence regions. Images a person checked are listed last.",
    )
    p.add_argument("store", help="the label store (e.g. labels.zarr)")
    p.add_argument("--top", type=nonneg, default=None, metavar="K", help="show only the first K images")
    p.add_argument("--tasks", default=None, help="comma-separated tasks to weigh (default: all)")
    p.add_argument(
        "--regions",
        type=nonneg,
        default=5,
        metavar="R",
        help="low-confidence regions listed per image in --json (default 5)",
    )
    p.add_argument("--json", action="store_true", help="print JSON for scripts")


def _add_export(sub) -> None:
    p = sub.add_parser(
        "export",
        help="export a label store's labels as PASCAL-MT, PNG or TIFF files",
        description="Write the labels of the complete images of a label store, one file per image "
        "and task, with the images, to a new folder OUT: in the PASCAL-MT layout (pascal-mt:OUT "
        "loads it back), or a folder per task of PNG or TIFF files; 255 = ignore. By default only "
        "the pixels a person checked (docs/export.md).",
    )
    p.add_argument("store", help="the label store (e.g. labels.zarr)")
    p.add_argument("out", help="a new or empty folder (or an earlier export, with --overwrite)")
    p.add_argument("--format", required=True, choices=("pascal-mt", "png", "tiff"),
                   help="pascal-mt: JPEGImages, semseg/VOC12, human_parts, ... and an ImageSets "
                        "list; png / tiff: images/ and a folder per task")  # fmt: skip
    p.add_argument("--select", default="checked", choices=("checked", "corrected", "reviewed", "all"),
                   help="checked (default): the pixels a person checked (a corrected task's other "
                        "pixels are 255); corrected: every pixel of corrected, reviewed and "
                        "ground-truth tasks; reviewed: reviewed and ground-truth tasks only; all: "
                        "pseudo-labels too")  # fmt: skip
    p.add_argument("--color", action="store_true",
                   help="class maps as palette PNGs (VOC colour map; edges and saliency black / "
                        "white) holding the same values")  # fmt: skip
    p.add_argument("--tasks", default=None, help="comma-separated tasks to export (default: all)")
    p.add_argument(
        "--split",
        default="train",
        help="pascal-mt: the name of the list file ImageSets/Context/SPLIT.txt (default train)",
    )
    p.add_argument("--overwrite", action="store_true", help="replace OUT when it holds an earlier export")
    _add_storage_option(p)


def _add_import(sub) -> None:
    p = sub.add_parser(
        "import",
        help="import existing labels (PASCAL-MT, per-task PNG or TIFF folders) into a label store",
        description="Import the labels of a folder in the layouts ctn export writes (PASCAL-MT: JPEGImages, "
        "semseg/VOC12, human_parts, edges, sal_distill, normals_distill; png / tiff: images/ and a folder "
        "per task) into a label store, as ground truth or as pseudo-labels to correct in napari (ctn "
        "annotate STORE). Files that cannot be imported (unreadable, another size than their image, "
        "values their task does not have, a label with no image) are named and their image skipped; "
        "exit 1 then. Images the store holds with other labels are skipped unless --overwrite "
        "(docs/export.md).",
    )
    p.add_argument("root", help="the folder of images and labels (e.g. a ctn export)")
    p.add_argument("store", help="the label store to import into (e.g. labels.zarr); made when absent")
    p.add_argument("--layout", default="auto", choices=("auto", "pascal-mt", "png", "tiff"),
                   help="auto (default): an export's own, pascal-mt when ROOT has JPEGImages/, else png or "
                        "tiff by the label files beside images/")  # fmt: skip
    p.add_argument("--as", dest="as_", default="ground-truth", choices=("ground-truth", "pseudo"),
                   help="ground-truth (default): a person's labels, never relabelled; pseudo: labels to "
                        "correct, with a palette asking each pixel for the first task (in --tasks order) "
                        "labelled there")  # fmt: skip
    p.add_argument("--tasks", default=None,
                   help="comma-separated tasks to import, in the order that decides a pseudo palette "
                        "(default: semseg,parts,edges,saliency,normals)")  # fmt: skip
    p.add_argument("--overwrite", action="store_true",
                   help="replace the images the store holds with other labels (whole images; pseudo-labels "
                        "never replace a person's work)")  # fmt: skip


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="ctn",
        description="CompositeTasking: one network, many tasks, a Task Palette says which task where.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    _add_info(sub)
    _add_synth(sub)
    _add_label(sub)
    _add_demo(sub)
    from composite_tasking.training.recipe import builtin_recipe_names  # yaml, no torch

    recipes = ", ".join(builtin_recipe_names())
    _add_train(sub, recipes)
    _add_finetune(sub, recipes)
    _add_annotate(sub)
    _add_evaluate(sub)
    _add_review(sub)
    _add_export(sub)
    _add_import(sub)
    return parser
