"""What a dataset is prepared from: its splits, how to read them, its source files and
their description (`find`). The named datasets' readers (`r2u.data.isic`,
`r2u.data.retina`, `r2u.data.synthetic`) and a user's folder (`r2u.data.folder`) all
answer here; `r2u.data.prepare` writes what `find` lists.
"""

import os

from r2u import config
from r2u import errors
from r2u import files
from r2u.data import folder
from r2u.data import isic
from r2u.data import labels as labels_lib
from r2u.data import nnunet
from r2u.data import retina

# Every dataset with a training preset, and a user's folder (`r2u.data.folder`).
DATASETS = tuple(config.PRESETS)  # the named datasets and "folder"
FOLDERS = {"isic": "ISIC2017", "drive": "DRIVE", "stare": "STARE",
           "chase": "CHASE_DB1", "retina": ""}
# kind, default size, examples per split.
SYNTHETIC = {
    "synthetic": ("lesion", 64, {"train": 400, "validation": 50, "test": 50}),
    "synthetic_vessels": ("vessels", 96,
                          {"train": 60, "validation": 10, "test": 10}),
}
# The classes of the named datasets (binary masks, values after binarisation).
FOREGROUND = {"isic": "lesion", "synthetic": "lesion"}  # the others: "vessel"
def data_root() -> str:
    """`$R2U_DATA_DIR`, else `<repo>/../shared/data`."""
    repo = os.path.dirname(os.path.dirname(os.path.dirname(
        os.path.abspath(__file__))))
    return os.environ.get("R2U_DATA_DIR") or os.path.join(
        os.path.dirname(repo), "shared", "data")


def default_data_dir(dataset: str) -> str | None:
    """Raw data folder of `dataset` under `data_root()` (None if synthetic or
    "folder", whose folder the user names)."""
    if dataset not in FOLDERS:
        return None
    return os.path.join(data_root(), FOLDERS[dataset]) if FOLDERS[dataset] \
        else data_root()


def _size(image_size) -> tuple[int, int] | None:
    if image_size is None:
        return None
    size = (image_size, image_size) if isinstance(image_size, int) else tuple(
        image_size)
    if len(size) != 2 or min(size) < 1:
        raise ValueError(f"image_size must be a positive int or (height, "
                         f"width), got {image_size!r}")
    return size


def _preset_labels(dataset: str) -> labels_lib.Labels:
    return labels_lib.Labels(("background", FOREGROUND.get(dataset, "vessel")), (0, 1),
                             source=dataset)


def _sizes(size) -> str:
    return (f"Resized to {size[0]}x{size[1]} (image bilinear, masks nearest)." if size
            else "Native image sizes.")


def _listing(dataset, data_dir, size, validation_count, seed) -> dict:
    """The splits of `dataset` in `data_dir`, how to read them, and what they are."""
    if dataset == "folder":
        found = folder.listing(data_dir, validation_count, seed)
        folds = os.path.join(data_dir, folder.SPLITS_FILE)  # it moves cases to validation
        read = lambda e, size, split: folder.read_example(  # noqa: E731
            e, found.labels, size)
        return {"listing": found.splits, "read": read, "labels": lambda: found.labels,
                "code": [folder.__file__, nnunet.__file__, labels_lib.__file__],
                "extra_sources": found.label_files + (
                    (folds,) if os.path.isfile(folds) else ()),
                "preprocessing": f"{found.description} {_sizes(size)}"}
    labels = lambda: _preset_labels(dataset)  # noqa: E731
    if dataset == "isic":
        size = size or isic.DEFAULT_SIZE
        listing = isic.protocol_splits(data_dir, validation_count)
        read = lambda e, size, split: isic.read_example(  # noqa: E731
            e, None if split == "test" else size)
        text = (f"ISIC 2017 Part 1. Validation = {len(listing['validation'])} "
                "official training pairs held out (evenly spaced by id); test = "
                "official Test_v2 if present, else official Validation, at its "
                f"original resolution. Train and validation resized to {size[0]}x"
                f"{size[1]} (bilinear, antialiased), masks nearest; masks thresholded at "
                "128 (values within 32 of 0 or 255, e.g. JPEG-compressed; under "
                "1% anti-aliased values tolerated); fov all ones.")
        return {"listing": listing, "read": read, "labels": labels, "size": size,
                "code": [isic.__file__], "preprocessing": text}
    listing = retina.SPLITS[dataset](data_dir, validation_count)
    read = lambda e, size, split: retina.read_example(e, size)  # noqa: E731
    text = (f"{retina.DESCRIPTIONS[dataset]} Validation = the last "
            f"{len(listing['validation'])} training images, held out of train. "
            + ("" if dataset == "drive" else "STARE/CHASE_DB1 FOV derived: "
               f"red > {retina.FOV_THRESHOLD}, largest 8-connected "
               "component, holes filled. ") + _sizes(size))
    return {"listing": listing, "read": read, "labels": labels,
            "code": [retina.__file__], "preprocessing": text}


def _sha256(data_dir: str, path: str) -> str:
    try:
        return files.sha256(os.path.join(data_dir, path))
    except OSError as e:  # e.g. no permission: name the file, in one line
        raise errors.DataError(f"{os.path.join(data_dir, path)}: cannot read "
                               f"({e.strerror or e})") from e


def _reader_plan(dataset, data_dir, size, limit, validation_count, seed) -> dict:
    found = _listing(dataset, data_dir, size, validation_count, seed)
    size = found.get("size", size)
    read, listing = found["read"], found["listing"]
    check_disjoint(listing, data_dir)
    entries = {split: items[:limit] for split, items in listing.items()}
    paths = {e[k] for items in entries.values() for e in items
             for k in ("image", "mask", "fov", "mask2") if e.get(k)}
    paths.update(p for items in entries.values() for e in items
                 for p in e.get("images", ()))
    paths = sorted({os.path.relpath(p, data_dir)
                    for p in paths | set(found.get("extra_sources", ()))})
    sources = [(p, _sha256(data_dir, p)) for p in paths]
    return {
        "size": size, "preprocessing": found["preprocessing"], "sources": sources,
        "splits": {s: (len(items), lambda items=items, s=s: (
            read(e, size, s) for e in items)) for s, items in entries.items()},
        "code": found["code"], "labels": found["labels"], "where": data_dir}


def check_disjoint(listing: dict[str, list[dict]], where: str) -> None:
    """Refuses an id listed in two splits: validation or test would leak into train."""
    seen = {}
    for split, entries in listing.items():
        for entry in entries:
            if entry["id"] in seen and seen[entry["id"]] != split:
                raise errors.DataError(
                    f"{where}: id {entry['id']!r} is in both the {seen[entry['id']]} "
                    f"and the {split} split")
            seen[entry["id"]] = split


def _synthetic_plan(dataset, size, limit, seed) -> dict:
    from r2u.data import synthetic  # Lazy: owned by the pipeline module.
    kind, default, counts = SYNTHETIC[dataset]
    size = size or (default, default)
    if size[0] != size[1]:
        raise ValueError(f"synthetic images are square, got image_size {size}")
    splits = {}
    for split, count in counts.items():
        count = count if limit is None else min(count, limit)
        splits[split] = (count, lambda s=split, n=count: synthetic.examples(
            kind, s, n, size[0], seed))
    counts = {split: count for split, (count, _) in splits.items()}
    return {"size": size, "sources": [], "splits": splits,
            "code": [synthetic.__file__],
            "labels": lambda: _preset_labels(dataset), "where": dataset,
            "preprocessing": f"synthetic.examples(kind={kind!r}, size={size[0]},"
                             f" seed={seed}); examples per split {counts}."}


def find(dataset, data_dir, image_size, num_shards, limit, seed,
         validation_count) -> dict:
    """Checks the options and lists what `dataset` will be prepared from: its splits
    (counts and example streams), size, labels, source files with their sha256, reader
    code and description."""
    if dataset not in DATASETS:
        raise ValueError(f"unknown dataset {dataset!r}; expected one of "
                         f"{', '.join(DATASETS)}")
    if limit is not None and limit < 1:
        raise ValueError(f"limit must be >= 1, got {limit}")
    if num_shards is not None and num_shards < 1:
        raise ValueError(f"num_shards must be >= 1, got {num_shards}")
    size = _size(image_size)
    if dataset in SYNTHETIC:
        return _synthetic_plan(dataset, size, limit, seed)
    if dataset == "folder" and not data_dir:
        raise ValueError(
            "dataset 'folder' needs data_dir (--data_dir=DIR): a folder with "
            "dataset.json, imagesTr/, labelsTr/ (nnU-Net v2) or train/images/, "
            "train/masks/")
    data_dir = data_dir or default_data_dir(dataset)
    if not os.path.isdir(data_dir):
        raise errors.DataError(f"{data_dir}: {dataset} data folder not found")
    return _reader_plan(dataset, data_dir, size, limit, validation_count, seed)
