"""Tests of `curvprune.data` on tiny fixtures written in the real on-disk formats."""

from __future__ import annotations

import gzip
import os
import pickle
import struct
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from curvprune.data import DATASETS, BatchTransform, DatasetInfo, TensorLoader, load_data
from curvprune.data.formats import load_safe_pickle
from curvprune.data.loaders import random_crop
from curvprune.errors import DataError, InvalidArgument

FASHION_SYSTEM_DIR = Path("/usr/share/datasets/fashion-mnist")


@pytest.fixture(autouse=True)
def isolated_env(tmp_path, monkeypatch):
    """No test sees the user's $CURVPRUNE_DATA or ~/.cache."""
    monkeypatch.delenv("CURVPRUNE_DATA", raising=False)
    monkeypatch.delenv("XDG_CACHE_HOME", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))


# ---------------------------------------------------------------- fixture writers


def write_idx(path: Path, array: np.ndarray, *, magic: int | None = None) -> Path:
    """An unsigned-byte IDX file, gzipped if ``path`` ends in .gz."""
    magic = 0x0800 | array.ndim if magic is None else magic
    raw = struct.pack(">i", magic) + struct.pack(f">{array.ndim}i", *array.shape)
    raw += array.astype(np.uint8).tobytes()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(gzip.compress(raw) if path.suffix == ".gz" else raw)
    return path


def make_mnist(folder: Path, n_train: int = 20, n_test: int = 10, *, gz: bool = True, seed=0):
    """IDX files for an MNIST-like dataset; returns the raw arrays."""
    rng = np.random.default_rng(seed)
    ext = ".gz" if gz else ""
    arrays = {}
    for split, n in (("train", n_train), ("t10k", n_test)):
        x = rng.integers(0, 256, (n, 28, 28), dtype=np.uint8)
        y = (np.arange(n) % 10).astype(np.uint8)
        write_idx(folder / f"{split}-images-idx3-ubyte{ext}", x)
        write_idx(folder / f"{split}-labels-idx1-ubyte{ext}", y)
        arrays[split] = (x, y)
    return arrays


def write_pickle(path: Path, obj) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(pickle.dumps(obj, protocol=2))


def make_cifar(root: Path, *, hundred: bool = False, n: int = 4, seed: int = 0):
    """CIFAR batches as torchvision unpacks them (dicts with bytes keys)."""
    rng = np.random.default_rng(seed)
    classes = 100 if hundred else 10
    key = b"fine_labels" if hundred else b"labels"
    folder = root / ("cifar-100-python" if hundred else "cifar-10-batches-py")
    names = (
        ["train", "test"] if hundred else [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]
    )
    out = {}
    for i, name in enumerate(names):
        x = rng.integers(0, 256, (n + i, 3072), dtype=np.uint8)
        y = [(3 * j + i) % classes for j in range(n + i)]
        write_pickle(folder / name, {b"data": x, key: y, b"batch_label": b"fixture"})
        out[name] = (x, y)
    meta = folder / ("meta" if hundred else "batches.meta")
    write_pickle(meta, {b"label_names": [b"c%d" % i for i in range(classes)]})
    return out


def write_image(path: Path, size: tuple[int, int], colour: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, (colour, 255 - colour, colour // 2)).save(path)


def make_tinyimagenet(root: Path, wnids=("n02", "n01"), per_class: int = 3) -> Path:
    folder = root / "tiny-imagenet-200"
    folder.mkdir(parents=True)
    (folder / "wnids.txt").write_text("\n".join(wnids) + "\n")
    for c, wnid in enumerate(wnids):
        for i in range(per_class):
            write_image(
                folder / "train" / wnid / "images" / f"{wnid}_{i}.JPEG", (64, 64), 40 * c + i
            )
    lines = []
    for i, wnid in enumerate([wnids[0], wnids[1], wnids[0]]):
        write_image(folder / "val" / "images" / f"val_{i}.JPEG", (64, 64), 10 * i)
        lines.append(f"val_{i}.JPEG\t{wnid}\t0\t0\t63\t63")
    (folder / "val" / "val_annotations.txt").write_text("\n".join(lines) + "\n")
    return folder


def make_imagefolder(root: Path, classes=("cat", "ant", "dog"), per_class: int = 2) -> Path:
    for split in ("train", "val"):
        for c, name in enumerate(classes):
            for i in range(per_class):
                write_image(root / split / name / f"{i}.png", (40, 30), 60 * c + i)
    return root


# ---------------------------------------------------------------- registry and arguments


def test_registry_entries_are_complete():
    assert set(DATASETS) == {
        "digits",
        "mnist",
        "fashion-mnist",
        "cifar10",
        "cifar100",
        "tinyimagenet",
        "imagenet",
    }
    for name, info in DATASETS.items():
        assert isinstance(info, DatasetInfo) and info.name == name
        assert info.description and "\n" not in info.description
        assert len(info.mean) == len(info.std) == info.in_channels
        assert all(s > 0 for s in info.std)
    assert [n for n, i in DATASETS.items() if i.in_memory] == [
        "digits",
        "mnist",
        "fashion-mnist",
        "cifar10",
        "cifar100",
    ]


def test_unknown_dataset_lists_valid_names():
    with pytest.raises(InvalidArgument, match="unknown dataset 'svhn'") as err:
        load_data("svhn")
    assert all(name in str(err.value) for name in DATASETS)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"batch_size": 0}, "batch_size"),
        ({"batch_size": 2.5}, "batch_size"),
        ({"eval_batch_size": -1}, "eval_batch_size"),
        ({"seed": -3}, "seed"),
        ({"train_limit": 0}, "train_limit"),
        ({"rank": 2, "world_size": 2}, "rank"),
    ],
)
def test_bad_numbers_are_rejected(kwargs, match):
    with pytest.raises(InvalidArgument, match=match):
        load_data("digits", **kwargs)


def test_name_is_case_and_separator_insensitive(tmp_path):
    make_mnist(tmp_path / "fashion-mnist", n_train=4, n_test=2)
    assert load_data("Fashion_MNIST", tmp_path).info.name == "fashion-mnist"


# ---------------------------------------------------------------- digits


def test_digits_split_shapes_and_normalization():
    data = load_data("digits", batch_size=100, eval_batch_size=500)
    assert (data.num_train, data.num_test) == (1437, 360)
    assert len(data.train) == 15 and len(data.test) == 1
    x, y = next(iter(data.test))
    assert x.shape == (360, 1, 8, 8) and x.dtype == torch.float32 and y.dtype == torch.int64
    # Stratified: every class has 35 to 37 test samples.
    assert set(torch.bincount(y, minlength=10).tolist()) <= {35, 36, 37}
    train_x = torch.cat([xb for xb, _ in data.train])
    assert train_x.shape == (1437, 1, 8, 8)
    assert abs(train_x.mean().item()) < 0.02 and abs(train_x.std().item() - 1) < 0.02


def test_digits_split_does_not_depend_on_seed():
    a, b = load_data("digits", seed=0), load_data("digits", seed=5)
    assert torch.equal(next(iter(a.test))[0], next(iter(b.test))[0])


def test_shipped_digits_equal_scikit_learns_split():
    """digits.npz is bit-identical to the split curvprune drew from scikit-learn before."""
    sklearn_datasets = pytest.importorskip("sklearn.datasets")
    from sklearn.model_selection import train_test_split

    from curvprune.data.loading import DIGITS_SPLIT_SEED, DIGITS_TEST_SIZE, _digits

    bunch = sklearn_datasets.load_digits()
    x = bunch.data.astype(np.uint8).reshape(-1, 1, 8, 8)
    y = bunch.target.astype(np.int64)
    expected = train_test_split(
        x, y, test_size=DIGITS_TEST_SIZE, stratify=y, random_state=DIGITS_SPLIT_SEED
    )
    x_tr, x_te, y_tr, y_te = (torch.from_numpy(np.ascontiguousarray(a)) for a in expected)
    got = _digits()
    for mine, theirs in zip(got, (x_tr, y_tr, x_te, y_te), strict=True):
        assert mine.dtype == theirs.dtype and torch.equal(mine, theirs)


def test_digits_need_neither_scikit_learn_nor_scipy(monkeypatch):
    for name in ("sklearn", "sklearn.datasets", "sklearn.model_selection", "scipy"):
        monkeypatch.setitem(sys.modules, name, None)  # any import of them fails
    data = load_data("digits")
    assert (data.num_train, data.num_test) == (1437, 360)


# ---------------------------------------------------------------- MNIST family and lookup


def test_mnist_values_and_labels(tmp_path):
    arrays = make_mnist(tmp_path / "mnist", n_train=20, n_test=10)
    data = load_data("mnist", tmp_path / "mnist", batch_size=8, eval_batch_size=10)
    assert (data.num_train, data.num_test, len(data.train)) == (20, 10, 3)
    x, y = next(iter(data.test))
    raw_x, raw_y = arrays["t10k"]
    expected = (torch.from_numpy(raw_x).float().unsqueeze(1) / 255 - 0.1307) / 0.3081
    assert x.shape == (10, 1, 28, 28) and x.dtype == torch.float32
    torch.testing.assert_close(x, expected)
    assert y.tolist() == raw_y.tolist()
    # Training batches hold every training sample once, without augmentation.
    xs, ys = zip(*data.train, strict=True)
    assert sorted(torch.cat(ys).tolist()) == sorted(arrays["train"][1].tolist())
    assert torch.cat(xs).shape == (20, 1, 28, 28)


def test_torchvision_layout_with_plain_idx_files(tmp_path):
    make_mnist(tmp_path / "FashionMNIST" / "raw", n_train=6, n_test=4, gz=False)
    data = load_data("fashion-mnist", tmp_path)
    assert (data.num_train, data.num_test) == (6, 4)


def test_lookup_order(tmp_path, monkeypatch):
    given, env, cache = tmp_path / "given", tmp_path / "env", tmp_path / "home"
    make_mnist(given / "mnist", n_train=10)
    make_mnist(env / "mnist", n_train=12)
    make_mnist(cache / ".cache" / "curvprune" / "mnist", n_train=14)
    monkeypatch.setenv("CURVPRUNE_DATA", str(env))
    assert load_data("mnist", given).num_train == 10  # parent of mnist/
    assert load_data("mnist", given / "mnist").num_train == 10  # the dataset folder itself
    assert load_data("mnist").num_train == 12
    (tmp_path / "empty").mkdir()  # an existing folder without the files: lookup goes on
    assert load_data("mnist", tmp_path / "empty").num_train == 12
    monkeypatch.delenv("CURVPRUNE_DATA")
    assert load_data("mnist").num_train == 14


def test_missing_files_name_every_place_looked(tmp_path, monkeypatch):
    monkeypatch.setenv("CURVPRUNE_DATA", str(tmp_path / "env"))
    (tmp_path / "mine").mkdir()
    with pytest.raises(DataError) as err:
        load_data("mnist", tmp_path / "mine")
    message = str(err.value)
    for place in (
        tmp_path / "mine",
        tmp_path / "mine" / "mnist",
        tmp_path / "env" / "mnist",
        tmp_path / "home" / ".cache" / "curvprune" / "mnist",
    ):
        assert str(place) in message
    assert "train-images-idx3-ubyte" in message


def test_cache_follows_xdg_cache_home(tmp_path, monkeypatch):
    make_mnist(tmp_path / "xdg" / "curvprune" / "mnist", n_train=9)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert load_data("mnist").num_train == 9
    monkeypatch.setenv("XDG_CACHE_HOME", "")  # empty: as if unset
    with pytest.raises(DataError, match=str(tmp_path / "home" / ".cache" / "curvprune")):
        load_data("mnist")


def test_missing_data_suggests_download_where_torchvision_can(tmp_path):
    with pytest.raises(DataError, match="add --download") as err:
        load_data("cifar10")
    assert str(tmp_path / "home" / ".cache" / "curvprune" / "cifar10") in str(err.value)
    with pytest.raises(DataError) as err:  # not downloadable
        load_data("tinyimagenet")
    assert "--download" not in str(err.value)


def test_partial_folder_says_what_is_missing(tmp_path):
    make_mnist(tmp_path, n_train=4, n_test=2)
    (tmp_path / "t10k-labels-idx1-ubyte.gz").unlink()
    with pytest.raises(DataError, match=r"missing t10k-labels-idx1-ubyte"):
        load_data("mnist", tmp_path)


def test_truncated_gzip_names_the_file(tmp_path):
    make_mnist(tmp_path, n_train=30, n_test=4)
    path = tmp_path / "train-images-idx3-ubyte.gz"
    path.write_bytes(path.read_bytes()[:-200])
    with pytest.raises(DataError, match="train-images-idx3-ubyte.gz"):
        load_data("mnist", tmp_path)


@pytest.mark.parametrize(
    ("corrupt", "match"),
    [
        (
            lambda d: write_idx(
                d / "t10k-images-idx3-ubyte.gz", np.zeros((4, 28, 28)), magic=0x0801
            ),
            "magic",
        ),
        (lambda d: write_idx(d / "t10k-labels-idx1-ubyte.gz", np.zeros(3)), "4 images but"),
        (lambda d: write_idx(d / "t10k-labels-idx1-ubyte.gz", np.full(4, 10)), "out of range"),
    ],
)
def test_corrupt_idx_is_refused(tmp_path, corrupt, match):
    make_mnist(tmp_path, n_train=4, n_test=4)
    corrupt(tmp_path)
    with pytest.raises(DataError, match=match) as err:
        load_data("mnist", tmp_path)
    assert "t10k" in str(err.value)


def test_idx_size_must_match_header(tmp_path):
    make_mnist(tmp_path, n_train=4, n_test=4)
    path = tmp_path / "train-labels-idx1-ubyte.gz"
    path.write_bytes(gzip.compress(gzip.decompress(path.read_bytes()) + b"\x00"))
    with pytest.raises(DataError, match="header says shape"):
        load_data("mnist", tmp_path)


def test_failed_download_says_where_it_looked(tmp_path, monkeypatch):
    import torchvision.datasets

    def offline(*args, **kwargs):
        raise OSError("network unreachable")

    monkeypatch.setattr(torchvision.datasets, "MNIST", offline)
    with pytest.raises(DataError, match="network unreachable") as err:
        load_data("mnist", tmp_path, download=True)
    assert str(tmp_path) in str(err.value)


# ---------------------------------------------------------------- CIFAR


def test_cifar10_pixels_labels_and_order(tmp_path):
    batches = make_cifar(tmp_path)
    data = load_data("cifar10", tmp_path, batch_size=5, eval_batch_size=100)
    assert (data.num_train, data.num_test) == (4 + 5 + 6 + 7 + 8, 9)
    assert (data.info.in_channels, data.info.num_classes) == (3, 10)
    x, y = next(iter(data.test))
    raw, labels = batches["test_batch"]
    mean = torch.tensor(DATASETS["cifar10"].mean).view(1, 3, 1, 1)
    std = torch.tensor(DATASETS["cifar10"].std).view(1, 3, 1, 1)
    expected = (torch.from_numpy(raw).view(-1, 3, 32, 32).float() / 255 - mean) / std
    torch.testing.assert_close(x, expected)
    assert y.tolist() == labels
    xb, yb = next(iter(data.train))
    assert xb.shape == (5, 3, 32, 32) and yb.dtype == torch.int64


def test_cifar100_uses_fine_labels(tmp_path):
    batches = make_cifar(tmp_path / "cifar100", hundred=True)
    data = load_data("cifar100", tmp_path, eval_batch_size=64)
    assert data.info.num_classes == 100 and data.num_train == 4
    assert next(iter(data.test))[1].tolist() == batches["test"][1]


def test_malicious_pickle_is_refused(tmp_path):
    marker = tmp_path / "pwned"

    class Exploit:
        def __reduce__(self):
            return os.system, (f"touch {marker}",)

    make_cifar(tmp_path)
    write_pickle(tmp_path / "cifar-10-batches-py" / "data_batch_3", {b"data": Exploit()})
    with pytest.raises(DataError, match=r"data_batch_3.*refused .*system"):
        load_data("cifar10", tmp_path)
    assert not marker.exists()


@pytest.mark.parametrize("protocol", [2, 4, 5])
def test_safe_pickle_reads_numpy_arrays(tmp_path, protocol):
    path = tmp_path / "batch"
    array = np.arange(12, dtype=np.uint8).reshape(3, 4)
    path.write_bytes(pickle.dumps({b"data": array, "labels": [1, 2]}, protocol=protocol))
    loaded = load_safe_pickle(path)
    assert np.array_equal(loaded["data"], array) and loaded["labels"] == [1, 2]


def test_cifar_with_wrong_shape_is_refused(tmp_path):
    make_cifar(tmp_path)
    bad = {b"data": np.zeros((2, 100), np.uint8), b"labels": [0, 1]}
    write_pickle(tmp_path / "cifar-10-batches-py" / "test_batch", bad)
    with pytest.raises(DataError, match=r"test_batch.*\(N, 3072\)"):
        load_data("cifar10", tmp_path)


def test_random_crop_cuts_windows_of_the_padded_image():
    x = torch.arange(2 * 3 * 5 * 5, dtype=torch.uint8).view(2, 3, 5, 5)
    gen = torch.Generator().manual_seed(0)
    out = random_crop(x, 2, gen)
    padded = torch.nn.functional.pad(x, (2, 2, 2, 2))
    for i in range(2):
        windows = [padded[i, :, r : r + 5, c : c + 5] for r in range(5) for c in range(5)]
        assert any(torch.equal(out[i], w) for w in windows)


def test_cifar_augmentation_is_seeded_and_absent_when_off(tmp_path):
    make_cifar(tmp_path, n=30)
    plain = load_data("cifar10", tmp_path, augment=False, batch_size=64)
    a = load_data("cifar10", tmp_path, batch_size=64, seed=1)
    b = load_data("cifar10", tmp_path, batch_size=64, seed=1)
    xa, ya = next(iter(a.train))
    xb, yb = next(iter(b.train))
    xp, yp = next(iter(plain.train))
    assert torch.equal(xa, xb) and torch.equal(ya, yb)
    # Same order from the same seed, but augmented pixels differ from the plain ones.
    plain_seed1 = load_data("cifar10", tmp_path, augment=False, batch_size=64, seed=1)
    xq, yq = next(iter(plain_seed1.train))
    assert torch.equal(yq, ya) and not torch.equal(xq, xa)
    # Padding is black before normalization: its normalized value is -mean/std.
    black = BatchTransform(DATASETS["cifar10"].mean, DATASETS["cifar10"].std)(
        torch.zeros(1, 3, 1, 1, dtype=torch.uint8)
    )
    assert any((xa[:, c] == black[0, c]).any() for c in range(3))


# ---------------------------------------------------------------- order, scoring, sharding


def test_shuffling_is_deterministic_per_seed_and_epoch(tmp_path):
    make_mnist(tmp_path, n_train=40, n_test=4)

    def labels_of(loader):
        return torch.cat([y for _, y in loader]).tolist()

    def order(data):
        return torch.cat([x[:, 0, 0, :4] for x, _ in data.train])

    a, b = load_data("mnist", tmp_path, batch_size=7), load_data("mnist", tmp_path, batch_size=7)
    epoch0 = order(a)
    assert torch.equal(epoch0, order(b))
    epoch1 = order(a)  # iterating again advances the epoch
    assert not torch.equal(epoch0, epoch1)
    a.train.set_epoch(0)
    assert torch.equal(order(a), epoch0)
    assert torch.equal(order(a), epoch1)
    other_seed = load_data("mnist", tmp_path, batch_size=7, seed=3)
    assert not torch.equal(order(other_seed), epoch0)
    assert labels_of(a.test) == labels_of(a.test) == [i % 10 for i in range(4)]


def test_scoring_batches_are_fixed_and_unaugmented(tmp_path):
    make_cifar(tmp_path, n=10)
    a = load_data("cifar10", tmp_path, seed=2)
    b = load_data("cifar10", tmp_path, seed=2, augment=False)
    batches = a.scoring_batches(27, 8)
    assert [len(y) for _, y in batches] == [8, 8, 8, 3]
    for (xa, ya), (xb, yb) in zip(batches, b.scoring_batches(27, 8), strict=True):
        assert torch.equal(xa, xb) and torch.equal(ya, yb)
    next(iter(a.train))  # training epochs do not move the scoring sample
    assert torch.equal(a.scoring_batches(27, 8)[0][0], batches[0][0])
    assert not torch.equal(
        load_data("cifar10", tmp_path, seed=3).scoring_batches(27, 8)[0][1], batches[0][1]
    )
    with pytest.raises(InvalidArgument, match="exceeds"):
        a.scoring_batches(a.num_train + 1, 8)


def test_train_limit_keeps_a_seeded_subset(tmp_path):
    make_mnist(tmp_path, n_train=50, n_test=4)
    a = load_data("mnist", tmp_path, train_limit=17, batch_size=5)
    b = load_data("mnist", tmp_path, train_limit=17, batch_size=5)
    assert a.num_train == 17 and len(a.train) == 4
    assert torch.equal(a.scoring_batches(17, 17)[0][0], b.scoring_batches(17, 17)[0][0])


@pytest.mark.parametrize(("n", "world_size"), [(12, 3), (13, 3), (10, 1), (9, 4)])
def test_rank_shards_are_disjoint_equal_and_cover(n, world_size):
    inputs, targets = torch.arange(n).view(n, 1, 1, 1), torch.arange(n)
    for epoch in (0, 1):
        shards = []
        for rank in range(world_size):
            loader = TensorLoader(
                inputs,
                targets,
                batch_size=2,
                shuffle=True,
                seed=7,
                rank=rank,
                world_size=world_size,
            )
            loader.set_epoch(epoch)
            shards.append(torch.cat([y for _, y in loader]).tolist())
            assert len(loader) == -(-(n // world_size) // 2)
        seen = [i for shard in shards for i in shard]
        assert {len(s) for s in shards} == {n // world_size}
        assert len(seen) == len(set(seen)) == n - n % world_size


def test_drop_last_and_len_agree():
    loader = TensorLoader(torch.zeros(10, 1), torch.zeros(10), batch_size=4, drop_last=True)
    assert len(loader) == 2 == len(list(loader))
    loader = TensorLoader(torch.zeros(10, 1), torch.zeros(10), batch_size=4)
    assert len(loader) == 3 == len(list(loader))


# ---------------------------------------------------------------- streamed image folders


def test_tinyimagenet_layout(tmp_path):
    make_tinyimagenet(tmp_path)
    data = load_data("tinyimagenet", tmp_path, batch_size=4)
    assert data.info.num_classes == 2 and (data.num_train, data.num_test) == (6, 3)
    x, y = next(iter(data.test))
    assert x.shape == (3, 3, 64, 64) and x.dtype == torch.float32
    assert y.tolist() == [1, 0, 1]  # classes sorted: n01 -> 0, n02 -> 1
    assert sorted(torch.cat([y for _, y in data.train]).tolist()) == [0, 0, 0, 1, 1, 1]
    data.train.set_epoch(0)
    first = next(iter(data.train))[0]
    data.train.set_epoch(0)
    assert torch.equal(first, next(iter(data.train))[0])
    scoring = data.scoring_batches(4, 3)
    assert [len(y) for _, y in scoring] == [3, 1]
    assert torch.equal(scoring[0][0], data.scoring_batches(4, 3)[0][0])


def test_stream_batches_do_not_depend_on_num_workers(tmp_path):
    make_tinyimagenet(tmp_path)
    batches = []
    for workers in (0, 2):
        data = load_data("tinyimagenet", tmp_path, batch_size=4, seed=3, num_workers=workers)
        batches.append([x for x, _ in data.train])
    for a, b in zip(*batches, strict=True):
        assert torch.equal(a, b)


def test_tinyimagenet_bad_annotation(tmp_path):
    folder = make_tinyimagenet(tmp_path)
    (folder / "val" / "val_annotations.txt").write_text("val_0.JPEG\tn99\t0\t0\t1\t1\n")
    with pytest.raises(DataError, match=r"val_annotations.txt:1"):
        load_data("tinyimagenet", tmp_path)


def test_imagenet_folder_layout(tmp_path):
    make_imagefolder(tmp_path / "imagenet")
    data = load_data("imagenet", tmp_path, batch_size=6, eval_batch_size=6, augment=False)
    assert data.info.num_classes == 3 and (data.num_train, data.num_test) == (6, 6)
    x, y = next(iter(data.test))
    assert x.shape == (6, 3, 224, 224)
    assert y.tolist() == [0, 0, 1, 1, 2, 2]  # ant, cat, dog


def test_imagenet_val_must_match_train_classes(tmp_path):
    make_imagefolder(tmp_path)
    write_image(tmp_path / "val" / "zebra" / "0.png", (8, 8), 0)
    with pytest.raises(DataError, match="unknown: zebra"):
        load_data("imagenet", tmp_path)


def test_corrupt_image_names_the_file(tmp_path):
    make_imagefolder(tmp_path, per_class=1)
    (tmp_path / "val" / "ant" / "0.png").write_bytes(b"not a png")
    data = load_data("imagenet", tmp_path, eval_batch_size=3)
    with pytest.raises(DataError, match=r"ant/0\.png"):
        list(data.test)


# ---------------------------------------------------------------- the real Fashion-MNIST


@pytest.mark.skipif(not FASHION_SYSTEM_DIR.is_dir(), reason="dataset-fashion-mnist not installed")
def test_real_fashion_mnist_from_debian_package():
    data = load_data("fashion-mnist", batch_size=1000, eval_batch_size=10000)
    assert (data.num_train, data.num_test) == (60000, 10000)
    x, y = next(iter(data.test))
    assert x.shape == (10000, 1, 28, 28)
    assert torch.bincount(y).tolist() == [1000] * 10
    assert abs(x.mean().item()) < 0.05 and abs(x.std().item() - 1) < 0.05


def test_a_data_dir_that_does_not_exist_is_an_error_not_a_fallback(tmp_path):
    from curvprune.data import files

    with pytest.raises(DataError, match="does not exist"):
        files.find_files("fashion-mnist", tmp_path / "typo")


def test_stream_workers_persist_across_epochs_and_leave_the_global_rng_alone(tmp_path):
    make_tinyimagenet(tmp_path)
    data = load_data("tinyimagenet", tmp_path, batch_size=4, seed=3, num_workers=2)
    reference = load_data("tinyimagenet", tmp_path, batch_size=4, seed=3, num_workers=0)
    state = torch.get_rng_state()
    for _ in range(2):  # two epochs, one DataLoader and one set of worker processes
        batches = [x for x, _ in data.train]
        expected = [x for x, _ in reference.train]
        assert all(torch.equal(a, b) for a, b in zip(batches, expected, strict=True))
    assert data.train._loader is not None and data.train._loader.persistent_workers
    assert torch.equal(state, torch.get_rng_state())
