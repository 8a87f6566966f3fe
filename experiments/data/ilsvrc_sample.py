"""Builds a small ILSVRC-2012 sample in the layouts a real user has.

From the Imagenette JPEGs in the offline data root (real ILSVRC-2012 images
of 10 real wnids; val files keep their `ILSVRC2012_val_XXXXXXXX.JPEG`
names) it writes:

* `folder/{train,val}/<wnid>/*.JPEG`: the image-folder layout, read by
  `make_datasets("imagenet2012", source="local", local_dir=...)`, whose
  labels are the wnids' positions in tfds' canonical 1,000-wnid list.
* `manual_dir/ILSVRC2012_img_train.tar` (one `<wnid>.tar` per wnid) and
  `manual_dir/ILSVRC2012_img_val.tar`: the tfds `manual_dir` layout, read
  by `tfds.builder("imagenet2012").download_and_prepare(...)`.

tfds labels val images by zipping the *sorted names in the val tar* with
its 50,000-line `validation_labels.txt` (`imagenet_common.
get_validation_labels`), so a tar holding only some val images gets wrong
labels. The sample's val tar therefore holds all 50,000 names: the real
images plus, for every other name, an empty *directory* entry. tfds counts
those names when it zips the labels but yields only regular files as
examples (`extractor.iter_tar` skips entries without data), so the
prepared val split holds exactly the real images, each with its true
label (`placeholder="jpeg"` writes 8x8 JPEG placeholders instead, which
tfds then also turns into val examples).

Example:
    python -m convnet_repro.experiments.data.ilsvrc_sample /tmp/ilsvrc \
        --per-class 20
"""

import argparse
import io
import json
import os
import pathlib
import shutil
import tarfile

from convnet_repro.experiments.data import data_root
from convnet_repro.experiments.engine.exit_codes import MissingDataError

LAYOUTS = ("folder", "tfds")
PLACEHOLDERS = ("directory", "jpeg")
NUM_VAL_IMAGES = 50_000
TRAIN_TAR = "ILSVRC2012_img_train.tar"
VAL_TAR = "ILSVRC2012_img_val.tar"


def tfds_label_file(name):
    """Path of a label file tfds ships for imagenet2012 (no download).

    Args:
        name: `"labels.txt"` (the 1,000 wnids in class-index order) or
            `"validation_labels.txt"` (the wnid of val image 1..50,000).
    """
    import tensorflow_datasets as tfds

    return tfds.core.tfds_path(f"datasets/imagenet2012/{name}")


def imagenet_wnids():
    """The 1,000 ILSVRC-2012 wnids in class-index order (tench = 0)."""
    return tfds_label_file("labels.txt").read_text().split()


def validation_wnids():
    """The true wnid of each val image, `ILSVRC2012_val_00000001` first."""
    return tfds_label_file("validation_labels.txt").read_text().split()


def val_file_name(index):
    """Name of val image `index` (0-based): `ILSVRC2012_val_%08d.JPEG`."""
    return f"ILSVRC2012_val_{index + 1:08d}.JPEG"


def make_ilsvrc_sample(
    out_dir,
    source_dir=None,
    images_per_class=20,
    layouts=LAYOUTS,
    placeholder="directory",
):
    """Writes an ILSVRC-2012 sample from Imagenette under `out_dir`.

    Train images are the source's `train/<wnid>/<wnid>_*.JPEG` files, val
    images its `{val,train}/<wnid>/ILSVRC2012_val_*.JPEG` files (Imagenette
    holds 41-54 real ILSVRC-2012 val images per wnid, spread over both of
    its folders): the first `images_per_class` of each in sorted order, so
    the sample is the same on every call.

    Args:
        out_dir: output folder (created). Files of an earlier call with the
            same arguments are reused; other arguments raise ValueError.
        source_dir: the Imagenette folder holding `train/` and `val/`
            (default `$CONVNET_REPRO_DATA_DIR/imagenette2-224`).
        images_per_class: train and val images per wnid.
        layouts: any of `("folder", "tfds")`.
        placeholder: how the val tar holds the other val names:
            `"directory"` (empty entries, not examples) or `"jpeg"` (8x8
            images that tfds turns into extra val examples).

    Returns:
        A dict: `"folder"` (root holding `train/`, `val/`) and/or
        `"manual_dir"` (folder holding the two tars), plus `"wnids"` (the
        sample's sorted wnids), `"train"` and `"val"` (`{file name: wnid}`
        of the real images).

    Raises:
        ValueError: bad arguments, or a source file whose wnid or val label
            contradicts tfds' label files.
        MissingDataError: no Imagenette folder found.
    """
    unknown = set(layouts) - set(LAYOUTS)
    if unknown or not layouts:
        raise ValueError(
            f"layouts must be a non-empty subset of {LAYOUTS}. Received: "
            f"layouts={tuple(layouts)!r}"
        )
    if placeholder not in PLACEHOLDERS:
        raise ValueError(
            f"placeholder must be one of {PLACEHOLDERS}. Received: "
            f"placeholder={placeholder!r}"
        )
    if not isinstance(images_per_class, int) or images_per_class <= 0:
        raise ValueError(
            "images_per_class must be a positive int. Received: "
            f"images_per_class={images_per_class!r}"
        )
    source = _source_dir(source_dir)
    train, val = _pick_files(source, images_per_class)
    out = pathlib.Path(out_dir)
    _check_reuse(out, [str(source), images_per_class, placeholder])
    result = {
        "wnids": sorted({wnid for wnid, _ in train.values()}),
        "train": {name: wnid for name, (wnid, _) in train.items()},
        "val": {name: wnid for name, (wnid, _) in val.items()},
    }
    if "folder" in layouts:
        result["folder"] = str(_write_folder(out / "folder", train, val))
    if "tfds" in layouts:
        result["manual_dir"] = str(
            _write_manual_dir(out / "manual_dir", train, val, placeholder)
        )
    return result


def _source_dir(source_dir):
    if source_dir is None:
        source_dir = data_root.resolve_local_dir("imagenette")
    if source_dir is None or not (
        (pathlib.Path(source_dir) / "train").is_dir()
        and (pathlib.Path(source_dir) / "val").is_dir()
    ):
        raise MissingDataError(
            "No Imagenette folder with train/ and val/ found; set "
            f"{data_root.ENV_VAR} to a folder holding imagenette2-224/ or "
            f"pass source_dir. Received: source_dir={source_dir!r}"
        )
    return pathlib.Path(source_dir)


def _check_reuse(out, key):
    """Files already in `out` are reused only if made with the same key."""
    stamp = out / "sample.json"
    if stamp.is_file() and json.loads(stamp.read_text()) != key:
        raise ValueError(
            f"{str(out)!r} holds a sample made with other arguments "
            f"({stamp.read_text()}); use an empty out_dir. Received: {key}"
        )
    out.mkdir(parents=True, exist_ok=True)
    stamp.write_text(json.dumps(key))


def _pick_files(source, per_class):
    """`({name: (wnid, path)}, {name: (wnid, path)})` for train and val."""
    index = set(imagenet_wnids())
    true_val = validation_wnids()
    train, val = {}, {}
    for wnid_dir in sorted((source / "train").iterdir()):
        wnid = wnid_dir.name
        if wnid not in index:
            raise ValueError(
                f"Folder {wnid!r} is not an ILSVRC-2012 wnid; the source "
                f"must be Imagenette. Received: source_dir={str(source)!r}"
            )
        names = sorted(p.name for p in wnid_dir.glob(f"{wnid}_*.JPEG"))
        for name in names[:per_class]:
            train[name] = (wnid, wnid_dir / name)
        val_paths = sorted(
            (
                p
                for split in ("val", "train")
                for p in (source / split / wnid).glob("ILSVRC2012_val_*.JPEG")
            ),
            key=lambda p: p.name,
        )
        for path in val_paths[:per_class]:
            number = int(path.name[len("ILSVRC2012_val_") : -len(".JPEG")])
            if true_val[number - 1] != wnid:
                raise ValueError(
                    f"{path.name} is in folder {wnid} but tfds' "
                    f"validation_labels.txt says {true_val[number - 1]}; "
                    f"fix the source folder. Received: {str(source)!r}"
                )
            val[path.name] = (wnid, path)
    return train, val


def _write_folder(root, train, val):
    for split, files in (("train", train), ("val", val)):
        for name, (wnid, path) in files.items():
            target = root / split / wnid / name
            if not target.is_file():
                target.parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(path, target)
    return root


def _write_manual_dir(root, train, val, placeholder):
    root.mkdir(parents=True, exist_ok=True)
    train_tar = root / TRAIN_TAR
    if not train_tar.is_file():
        tmp = train_tar.with_suffix(f".{os.getpid()}.tmp")
        with tarfile.open(tmp, "w") as outer:
            for wnid in sorted({wnid for wnid, _ in train.values()}):
                inner = io.BytesIO()
                with tarfile.open(fileobj=inner, mode="w") as tar:
                    for name, (w, path) in sorted(train.items()):
                        if w == wnid:
                            tar.add(path, arcname=name)
                _add_bytes(outer, f"{wnid}.tar", inner.getvalue())
        os.replace(tmp, train_tar)
    val_tar = root / VAL_TAR
    if not val_tar.is_file():
        tmp = val_tar.with_suffix(f".{os.getpid()}.tmp")
        tiny = _tiny_jpeg() if placeholder == "jpeg" else None
        with tarfile.open(tmp, "w") as tar:
            for i in range(NUM_VAL_IMAGES):
                name = val_file_name(i)
                if name in val:
                    tar.add(val[name][1], arcname=name)
                elif tiny is not None:
                    _add_bytes(tar, name, tiny)
                else:
                    info = tarfile.TarInfo(name)
                    info.type = tarfile.DIRTYPE
                    tar.addfile(info)
        os.replace(tmp, val_tar)
    return root


def _add_bytes(tar, name, data):
    info = tarfile.TarInfo(name)
    info.size = len(data)
    tar.addfile(info, io.BytesIO(data))


def _tiny_jpeg():
    from PIL import Image

    buffer = io.BytesIO()
    Image.new("RGB", (8, 8), (128, 128, 128)).save(buffer, "JPEG")
    return buffer.getvalue()


def prepare_tfds(manual_dir, data_dir, num_shards=None):
    """Runs tfds' real `imagenet2012` preparation on a sample's tars.

    Args:
        manual_dir: the `"manual_dir"` of `make_ilsvrc_sample`.
        data_dir: tfds `data_dir` to write the prepared dataset to (pass
            the same folder to `make_datasets(tfds_data_dir=...)`).
        num_shards: files per split (tfds' default writes one for a sample
            this small; the real train split has 1,024).

    Returns:
        The prepared `tfds` builder.
    """
    import tensorflow_datasets as tfds

    builder = tfds.builder("imagenet2012", data_dir=str(data_dir))
    if not builder.is_prepared():
        builder.download_and_prepare(
            download_config=tfds.download.DownloadConfig(
                manual_dir=str(manual_dir), num_shards=num_shards
            )
        )
    return builder


def main(argv=None):
    parser = argparse.ArgumentParser(
        prog="python -m convnet_repro.experiments.data.ilsvrc_sample",
        description=__doc__.splitlines()[0],
    )
    parser.add_argument("out_dir")
    parser.add_argument("--per-class", type=int, default=20)
    parser.add_argument("--source-dir", default=None)
    parser.add_argument(
        "--layouts", nargs="+", default=list(LAYOUTS), choices=LAYOUTS
    )
    parser.add_argument(
        "--placeholder", default="directory", choices=PLACEHOLDERS
    )
    parser.add_argument(
        "--prepare-tfds",
        metavar="DATA_DIR",
        help="also run tfds' imagenet2012 preparation into DATA_DIR",
    )
    args = parser.parse_args(argv)
    result = make_ilsvrc_sample(
        args.out_dir,
        args.source_dir,
        args.per_class,
        tuple(args.layouts),
        args.placeholder,
    )
    if args.prepare_tfds and "manual_dir" in result:
        prepare_tfds(result["manual_dir"], args.prepare_tfds)
        result["tfds_data_dir"] = args.prepare_tfds
    summary = {k: v for k, v in result.items() if k not in ("train", "val")}
    summary.update(num_train=len(result["train"]), num_val=len(result["val"]))
    print(json.dumps(summary, indent=1))


if __name__ == "__main__":
    main()
