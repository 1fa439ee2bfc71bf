"""The HDF5 volume store: round trip, patch reads that touch only overlapping chunks, body-mask sampling."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from harmkit.errors import HarmkitError
from harmkit.volumestore import VolumeStore


def _volume(shape=(40, 36, 44), seed=0):
    rng = np.random.default_rng(seed)
    return rng.normal(size=shape).astype(np.float32)


def _ball_mask(shape, centre, radius):
    z, y, x = np.ogrid[: shape[0], : shape[1], : shape[2]]
    return ((z - centre[0]) ** 2 + (y - centre[1]) ** 2 + (x - centre[2]) ** 2) <= radius**2


def test_volumes_and_metadata_round_trip(tmp_path):
    image = _volume()
    mask = _ball_mask(image.shape, (20, 18, 22), 8)
    with VolumeStore.create(tmp_path / "v.h5") as store:
        store.add(
            "s1",
            image,
            spacing=(2.0, 2.0, 3.0),
            mask=mask,
            origin=(1, 2, 3),
            group="A",
            subject="s1",
        )
        store.add("s2", image * 2, spacing=(4.0, 4.0, 4.0), group="B")
    store = VolumeStore(tmp_path / "v.h5")
    assert store.keys() == ["s1", "s2"]
    assert store.keys(group="B") == ["s2"]
    np.testing.assert_array_equal(store.read("s1"), image)
    np.testing.assert_array_equal(store.read("s1", "mask"), mask.astype(np.uint8))
    meta = store.metadata("s1")
    assert meta["spacing"] == [2.0, 2.0, 3.0] and meta["origin"] == [1, 2, 3] and meta["group"] == "A"


def test_read_patch_matches_slicing_and_fills_outside(tmp_path):
    image = _volume()
    with VolumeStore.create(tmp_path / "v.h5") as store:
        store.add("s", image, spacing=(1, 1, 1))
    store = VolumeStore(tmp_path / "v.h5")
    np.testing.assert_array_equal(store.read_patch("s", (3, 5, 7), (16, 8, 12)), image[3:19, 5:13, 7:19])
    edge = store.read_patch("s", (-4, 30, 40), (8, 8, 8), fill=-1.0)
    assert edge.shape == (8, 8, 8)
    np.testing.assert_array_equal(edge[4:, :6, :4], image[0:4, 30:36, 40:44])
    assert (edge[:4] == -1).all() and (edge[:, 6:] == -1).all() and (edge[:, :, 4:] == -1).all()


class _RecordingFile:
    """A binary file object that records every byte range h5py reads through it."""

    def __init__(self, path):
        self.handle = open(path, "rb")
        self.reads: list[tuple[int, int]] = []

    def seek(self, offset, whence=0):
        return self.handle.seek(offset, whence)

    def tell(self):
        return self.handle.tell()

    def read(self, size=-1):
        start = self.handle.tell()
        data = self.handle.read(size)
        self.reads.append((start, start + len(data)))
        return data

    def readinto(self, buffer):
        start = self.handle.tell()
        count = self.handle.readinto(buffer)
        self.reads.append((start, start + count))
        return count

    def close(self):
        self.handle.close()


def test_reading_a_patch_touches_only_the_chunks_it_overlaps(tmp_path):
    chunk = 8
    image = _volume((32, 32, 32))
    with VolumeStore.create(tmp_path / "v.h5") as store:
        store.add("s", image, spacing=(1, 1, 1), chunks=(chunk,) * 3, compression="gzip")
    recorder = _RecordingFile(tmp_path / "v.h5")
    store = VolumeStore(recorder, cache_bytes=0)
    dataset = store.dataset("s")
    # Byte range of every chunk in the file, by chunk origin.
    chunk_ranges = {}
    for i in range(dataset.id.get_num_chunks()):
        info = dataset.id.get_chunk_info(i)
        chunk_ranges[tuple(info.chunk_offset)] = (
            info.byte_offset,
            info.byte_offset + info.size,
        )
    assert len(chunk_ranges) == 4**3
    start, size = (5, 9, 17), (6, 10, 4)  # spans z-chunks 0-1, y-chunks 1-2, x-chunk 2
    recorder.reads.clear()
    patch = store.read_patch("s", start, size)
    np.testing.assert_array_equal(patch, image[5:11, 9:19, 17:21])

    touched = {
        origin
        for origin, (lo, hi) in chunk_ranges.items()
        if any(r_lo < hi and lo < r_hi for r_lo, r_hi in recorder.reads)
    }
    expected = {
        (z, y, x)
        for z, y, x in itertools.product(range(0, 32, chunk), repeat=3)
        if z < start[0] + size[0]
        and start[0] < z + chunk
        and y < start[1] + size[1]
        and start[1] < y + chunk
        and x < start[2] + size[2]
        and start[2] < x + chunk
    }
    assert expected == {(0, 8, 16), (0, 16, 16), (8, 8, 16), (8, 16, 16)}
    assert touched == expected
    # Nothing else of substance was read: the bytes read are about those four chunks, not the volume.
    read_bytes = sum(hi - lo for lo, hi in recorder.reads)
    chunk_bytes = sum(chunk_ranges[c][1] - chunk_ranges[c][0] for c in expected)
    total_bytes = sum(hi - lo for lo, hi in chunk_ranges.values())
    assert read_bytes < chunk_bytes + 0.05 * total_bytes
    store.file.close()
    recorder.close()


def test_patches_are_sampled_mostly_inside_the_body_mask(tmp_path):
    shape = (48, 48, 48)
    image = np.zeros(shape, np.float32)
    mask = _ball_mask(shape, (30, 30, 30), 5)  # ~1 % of the volume
    with VolumeStore.create(tmp_path / "v.h5") as store:
        store.add("s", image, spacing=(1, 1, 1), mask=mask)
    store = VolumeStore(tmp_path / "v.h5")
    size = (8, 8, 8)
    rng = np.random.default_rng(1)

    def centre_inside(body_fraction):
        starts = [store.sample_start("s", size, rng, body_fraction) for _ in range(400)]
        return np.mean([mask[s[0] + 4, s[1] + 4, s[2] + 4] for s in starts])

    assert centre_inside(1.0) == 1.0
    assert 0.8 < centre_inside(0.9) < 0.97
    assert centre_inside(0.0) < 0.1


def test_focus_points_are_centres_as_often_as_asked_and_volumes_without_them_fall_back_on_the_body(tmp_path):
    shape = (48, 48, 48)
    image = np.zeros(shape, np.float32)
    body = _ball_mask(shape, (24, 24, 24), 16)
    hot = _ball_mask(shape, (24, 24, 30), 2)  # a "lesion": about 0.2 % of the body
    with VolumeStore.create(tmp_path / "v.h5") as store:
        store.add("with", image, spacing=(1, 1, 1), mask=body, focus=hot)
        store.add("without", image, spacing=(1, 1, 1), mask=body)
    store = VolumeStore(tmp_path / "v.h5")
    size = (8, 8, 8)
    rng = np.random.default_rng(2)

    def share(key, mask, focus_fraction):
        starts = [store.sample_start(key, size, rng, 1.0, focus_fraction) for _ in range(400)]
        return np.mean([mask[s[0] + 4, s[1] + 4, s[2] + 4] for s in starts])

    assert share("with", hot, 1.0) == 1.0
    assert 0.2 < share("with", hot, 0.3) < 0.4
    assert share("with", hot, 0.0) < 0.05
    assert share("without", body, 1.0) == 1.0


def test_sampler_is_deterministic_given_the_generator_and_applies_the_transform(
    tmp_path,
):
    image = _volume((20, 20, 20))
    with VolumeStore.create(tmp_path / "v.h5") as store:
        store.add("a", image, spacing=(1, 1, 1), group="A")
        store.add("b", image + 100, spacing=(1, 1, 1), group="A")
    store = VolumeStore(tmp_path / "v.h5")
    sample = store.sampler(store.keys(group="A"), (8, 8, 8), transform=lambda p: p * 2)
    first = sample(np.random.default_rng(5), 6)
    second = sample(np.random.default_rng(5), 6)
    assert first.shape == (6, 1, 8, 8, 8) and first.dtype == np.float32
    np.testing.assert_array_equal(first, second)
    assert (first.reshape(6, -1).mean(1) > 100).any() and (first.reshape(6, -1).mean(1) < 100).any()


def test_an_interrupted_write_leaves_no_store(tmp_path):
    with pytest.raises(RuntimeError):
        with VolumeStore.create(tmp_path / "v.h5") as store:
            store.add("s", _volume((8, 8, 8)), spacing=(1, 1, 1))
            assert not (tmp_path / "v.h5").exists()
            raise RuntimeError("killed")
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(HarmkitError, match="cannot open"):
        VolumeStore(tmp_path / "v.h5")


def test_a_write_that_fills_the_disk_leaves_no_temporary_store_and_reports_the_disk(tmp_path, monkeypatch):
    import errno

    import h5py

    full = OSError(errno.ENOSPC, "No space left on device")

    def close_on_a_full_disk(self):
        raise RuntimeError("can't flush: no space left on device")  # what h5py raises after a failed write

    with pytest.raises(OSError) as raised:
        with VolumeStore.create(tmp_path / "v.h5") as store:
            store.add("s", _volume((8, 8, 8)), spacing=(1, 1, 1))
            monkeypatch.setattr(h5py.File, "close", close_on_a_full_disk)
            raise full
    monkeypatch.undo()
    assert raised.value is full  # the disk's error reaches the user, not the failed close
    assert list(tmp_path.iterdir()) == []  # the half-written temporary file is gone
