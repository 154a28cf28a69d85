"""The ops status page in a real headless Chromium (selenium + Debian chromium-driver) against the real
read API, broker, Redis and S3 of the session stack, with the session's worker consuming.

The test dead-letters a record of its own (garbage bytes on the playback topic, dead-lettered by the
worker), stores a showcase view for a user of its own, then checks the page's health rows, the lag
table of the app's group, that dead letter, and the showcase preview after typing the user id.
"""
from __future__ import annotations

import asyncio
import json
import shutil
import time
import urllib.error
import urllib.request
import uuid
from dataclasses import replace

import pytest
from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import Select, WebDriverWait

from infra.ports import pick_free_ports
from sinks.redis_views import async_client, user_view_key
from sinks.showcase_views import ShowcaseStore, ViewWrite
from streams.kafka.codec import DecodeError, default_codec
from streams.kafka.tail import tail
from streams.kafka.producer import EventProducer
from streams.ops.supervisor import start_api

DECODE_CODES = {value for name, value in vars(DecodeError).items() if name.isupper() and isinstance(value, str)}
CHROMIUM_FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync",
                  "--disable-dev-shm-usage")


from support.waiting import wait_for  # noqa: E402


@pytest.fixture(scope="module")
def api(topics, worker):
    # the page shows this worker's metrics (VITRINA_STATUS_WORKERS, passed to the API through to_env)
    settings = replace(topics, status_workers=f"127.0.0.1:{worker.web_port}")
    process = start_api(settings, port=pick_free_ports(1)[0], name="api-status-page")
    try:
        yield process
    finally:
        process.stop()


@pytest.fixture
def browser(tmp_path):
    chromium = shutil.which("chromium") or "/usr/bin/chromium"
    driver_path = shutil.which("chromedriver") or "/usr/bin/chromedriver"
    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for flag in CHROMIUM_FLAGS:
        options.add_argument(flag)
    options.add_argument(f"--user-data-dir={tmp_path / 'chromium-profile'}")
    driver = webdriver.Chrome(service=Service(driver_path), options=options)
    try:
        yield driver
    finally:
        driver.quit()


def stored_showcase(settings, user: str) -> dict:
    """A personal showcase view stored the way the builder stores it (versioned script write)."""
    view_key = user_view_key(user, "TV")
    shelves = [{"shelf_id": f"ops-shelf-{n}", "kind": "VOD", "title": f"Ops shelf {n}",
                "items": [f"ops-item-{n}-{i}" for i in range(6)], "links": []} for n in range(3)]
    body = {"view_key": view_key, "app_version": None, "shelves": shelves,
            "meta": {"schema": 1, "content_hash": uuid.uuid4().hex, "is_fallback": False}}

    async def write() -> None:
        redis = async_client(settings)
        try:
            applied = await ShowcaseStore(redis).write([ViewWrite(
                view_key, json.dumps(body), 1, body["meta"]["content_hash"], "2024-01-01T00:00:00+00:00", False,
                "first_build", int(time.time() * 1000), None, len(shelves), 18, user, "TV")])
            assert applied == [True]
        finally:
            await redis.aclose()

    asyncio.run(write())
    return body


def test_status_page_shows_health_lag_dead_letters_and_a_showcase_preview(worker, topics, api, browser):
    settings = topics
    key = f"status-page-{uuid.uuid4().hex[:8]}"
    producer = EventProducer(settings)
    producer.publish_raw("playback", b"\x00definitely not avro", key.encode())
    producer.flush()
    wait_for(lambda: any(r.value and r.value["key"] == key.encode()
                         for r in tail(settings, default_codec(), "dlq.playback", idle_timeout_s=1.0)),
             "the worker to dead-letter the garbage record")
    user = f"ops-user-{uuid.uuid4().hex[:6]}"
    showcase = stored_showcase(settings, user)

    from api.auth import TokenConfig

    anonymous = urllib.request.Request(f"{api.base_url}/ops/status.json")
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(anonymous, timeout=10)
    assert refused.value.code == 401 and "Basic" in refused.value.headers["WWW-Authenticate"]
    # the ops key on every request of the page, as a browser sends Basic credentials once asked for them
    ops_key = TokenConfig.from_settings(settings).ops_key
    browser.execute_cdp_cmd("Network.enable", {})
    browser.execute_cdp_cmd("Network.setExtraHTTPHeaders", {"headers": {"X-Ops-Key": ops_key}})
    browser.get(f"{api.base_url}/ops/status?dead_letters=100")
    wait = WebDriverWait(browser, 120, poll_frequency=0.5)

    def health_rows(driver):
        rows = driver.find_elements(By.CSS_SELECTOR, "#health tbody tr[data-component]")
        return {r.get_attribute("data-component"): r.find_elements(By.TAG_NAME, "td")[1].text for r in rows} or False

    assert wait.until(health_rows) == {"broker": "up", "redis": "up", "s3": "up"}
    assert browser.find_element(By.ID, "group").text == settings.app_id

    def lag_rows(driver):
        rows = driver.find_elements(By.CSS_SELECTOR, "#lag tbody tr[data-topic='playback']")
        return rows if len(rows) == 6 else False

    for row in wait.until(lag_rows):
        committed, end, lag = (td.text for td in row.find_elements(By.CSS_SELECTOR, "td.num")[1:])
        committed_at = 0 if committed == "–" else int(committed)  # "–": the group has not committed there yet
        assert int(end) >= committed_at >= 0 and int(lag) == int(end) - committed_at
    assert any(r.find_elements(By.CSS_SELECTOR, "td.num")[1].text != "–" for r in lag_rows(browser))

    def letter_row(driver):
        for row in driver.find_elements(By.CSS_SELECTOR, "#dead-letters tbody tr[data-topic='dlq.playback']"):
            if key in row.text:
                return row
        driver.find_element(By.ID, "refresh").click()  # the worker may have written it after the first load
        return False

    letter = wait.until(letter_row)
    cells = [td.text for td in letter.find_elements(By.TAG_NAME, "td")]
    assert cells[2].startswith("playback p") and cells[4] in DECODE_CODES, cells
    assert browser.find_elements(By.CSS_SELECTOR, "#models tbody tr[data-model='ranking']")
    consumed = browser.find_element(By.CSS_SELECTOR, "#workers tbody tr[data-metric='vitrina_events_in']")
    assert "up" in consumed.text and float(consumed.find_elements(By.TAG_NAME, "td")[3].text) >= 1
    assert browser.find_elements(By.CSS_SELECTOR, "#workers tbody tr[data-metric='vitrina_batch_seconds']")

    user_box = browser.find_element(By.ID, "user-id")
    user_box.clear()
    user_box.send_keys(user)
    Select(browser.find_element(By.ID, "device-type")).select_by_visible_text("TV")
    browser.find_element(By.ID, "preview").click()
    shelves = wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, "#showcase-preview .shelf") or False)
    assert [s.get_attribute("data-shelf-id") for s in shelves] == [s["shelf_id"] for s in showcase["shelves"]]
    assert "ops-item-0-0" in shelves[0].text
    assert browser.find_element(By.ID, "showcase-status").get_attribute("data-view-key") == user_view_key(user, "TV")
