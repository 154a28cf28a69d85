"""Pure parts of the uploads wiring: the dedupe state machine, object names, playback URL signing."""
from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest

from infra.settings import Settings
from processors.media.signing import VerifyResult
from processors.upload_dedupe import (DONE, IN_PROGRESS, MAX_ATTEMPTS, REJECTED, Decision, Uploader, finished,
                                      on_request, processed_event, recipients, refused, retry)
from sinks.media_store import PlaybackSigner, original_key, safe_file_name

A, B, C = Uploader("up-a", "alice"), Uploader("up-b", "bob"), Uploader("up-c", "carol")
FIELDS = {"asset_id": "0" * 32 + "-10", "duration_s": 2.0, "source_width": 640, "source_height": 360,
          "renditions": [{"name": "240p"}], "thumbnails": [], "hls_master_key": None, "processing_s": 3.5}
NOW = datetime(2026, 1, 1, tzinfo=timezone.utc)


def test_first_upload_starts_a_job_and_others_wait():
    state, decision = on_request(None, A, job_running=False, now_ms=1)
    assert decision is Decision.START and state["status"] == IN_PROGRESS and state["attempts"] == 1
    state, decision = on_request(state, B, job_running=True, now_ms=2)
    assert decision is Decision.JOIN and [w["upload_id"] for w in state["waiters"]] == ["up-b"]
    again, decision = on_request(state, B, job_running=True, now_ms=3)   # redelivered: not added twice
    assert decision is Decision.JOIN and again == state
    owner_again, decision = on_request(state, A, job_running=True, now_ms=3)
    assert decision is Decision.JOIN and owner_again == state
    assert recipients(state, also=C) == [A, B, C]


def test_in_progress_without_a_job_restarts_until_attempts_run_out():
    state, _ = on_request(None, A, job_running=False, now_ms=1)
    for attempt in range(2, MAX_ATTEMPTS + 1):   # crash, redelivery: restart
        state, decision = on_request(state, A, job_running=False, now_ms=attempt)
        assert decision is Decision.START and state["attempts"] == attempt
    gone, decision = on_request(state, A, job_running=False, now_ms=99)
    assert decision is Decision.GIVE_UP and gone is None
    assert retry({**state, "attempts": 1}, 5)["attempts"] == 2
    assert retry(state, 5) is None


def test_done_answers_duplicates_with_a_link_and_the_owner_without():
    done = finished(A, FIELDS)
    assert on_request(done, B, job_running=False, now_ms=1) == (done, Decision.ANSWER_DONE)
    duplicate = processed_event(done, B, NOW)
    assert duplicate["deduplicated"] is True and duplicate["original_upload_id"] == "up-a"
    assert duplicate["processing_s"] == 0.0 and duplicate["renditions"] == FIELDS["renditions"]
    own = processed_event(done, A, NOW)
    assert own["deduplicated"] is False and own["original_upload_id"] is None and own["processing_s"] == 3.5
    assert done["status"] == DONE


def test_rejected_bytes_are_refused_again_without_work():
    state = refused(A, "NO_VIDEO_STREAM", "audio only")
    assert state["status"] == REJECTED
    assert on_request(state, B, job_running=False, now_ms=1) == (state, Decision.ANSWER_REJECTED)


def test_object_names_are_safe():
    assert safe_file_name("../../etc/passwd") == "passwd"
    assert safe_file_name("My Holiday (1).MOV") == "My_Holiday_1_.MOV"
    assert safe_file_name("...") == "upload"
    assert original_key("up-1", "C:\\Users\\x\\clip.mp4") == "originals/up-1/clip.mp4"
    assert len(safe_file_name("a" * 500 + ".mp4")) <= 120 and safe_file_name("a" * 500 + ".mp4").endswith(".mp4")


@pytest.fixture
def signer() -> PlaybackSigner:
    return PlaybackSigner.from_settings(Settings(url_signing_key="s3cret", api_host="127.0.0.1", api_port=8080),
                                        environ={"VITRINA_URL_SIGNING_KEY_ID": "k2"})


KEY = "assets/" + "a" * 32 + "-100/720p.mp4"


def test_signed_url_plays_and_a_bare_key_does_not(signer: PlaybackSigner):
    url = signer.url(KEY, ttl_s=600)
    assert url.startswith("http://127.0.0.1:8080/media/" + KEY + "?")
    assert signer.verify(url) is VerifyResult.OK
    assert signer.object_key(url) == KEY
    assert signer.verify(url.split("?")[0]) is VerifyResult.MISSING_SIGNATURE
    assert signer.verify("/media/" + KEY) is VerifyResult.MISSING_SIGNATURE


def test_tampered_moved_or_expired_urls_are_refused(signer: PlaybackSigner):
    url = signer.url(KEY, ttl_s=600)
    assert signer.verify(url.replace("720p.mp4", "240p.mp4")) is VerifyResult.BAD_SIGNATURE
    exp = url.split("exp=")[1].split("&")[0]
    assert signer.verify(url.replace(f"exp={exp}", f"exp={int(exp) + 3600}")) is VerifyResult.BAD_SIGNATURE
    assert signer.verify(url.replace("/media/", "/other/")) is VerifyResult.BAD_SIGNATURE
    other = PlaybackSigner("another-secret", "k2", signer.base_url)
    assert other.verify(url) is VerifyResult.BAD_SIGNATURE
    old = signer.url(KEY, ttl_s=60, now=datetime.now(timezone.utc) - timedelta(minutes=5))
    assert signer.verify(old) is VerifyResult.EXPIRED
    with pytest.raises(ValueError):
        signer.url(KEY, ttl_s=0)


def test_rotated_secret_still_verifies_during_the_overlap(signer: PlaybackSigner):
    url = signer.url(KEY)
    rotated = PlaybackSigner("new-secret", "k3", signer.base_url, previous=(("k2", "s3cret"),))
    assert rotated.verify(url) is VerifyResult.OK
    assert PlaybackSigner("new-secret", "k3", signer.base_url).verify(url) is VerifyResult.BAD_SIGNATURE
