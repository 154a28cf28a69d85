"""Asset commands (issue 15, Mail.Ru): references to the one stored copy, deletion, quality recompute.

    assets.commands (key asset_id: one asset's commands are applied in order, by one agent at a time)
      -> asset-commands: processors.asset_references decides from the views (asset view, access entries,
         collection references, the upload's status view, tombstone); sinks.asset_references applies:
           ADD_TO_COLLECTION       ref user -> added_at, the asset in the user's collection zset
           REMOVE_FROM_COLLECTION  both removed
           DELETE_UPLOAD           the upload's access entry removed, its status view DELETED
           RECOMPUTE_QUALITY       streams.capabilities.uploads.quality.recompute_quality in a thread
         and when the last reference went (one Lua script decides it with the removal): REAP, the asset's
         S3 objects, the deleted uploads' originals, its views; a tombstone stays.
A refused command is logged with its reason and counted (vitrina_asset_commands_total{outcome="REFUSE"});
a malformed record goes to dlq.assets.commands, and so does one whose processing raised.
Low volume: the commands are applied one at a time (a recompute holds the agent for its VMAF runs).
"""
from __future__ import annotations

import asyncio
import functools
from datetime import datetime, timezone
from typing import Any

from prometheus_client import Counter

from infra.logs import get_logger
from processors.asset_references import DELETE_UPLOAD, Outcome, decide, deleted_status
from sinks import asset_references as refs_sink
from sinks.media_store import MediaStore
from sinks.redis_views import async_client, sync_client
from streams.kafka.topics import spec
from streams.runtime.app import app, app_settings
from streams.runtime.inbound import dead_letter_failed, decoded_batches, raw_topic

settings = app_settings()
log = get_logger("vitrina.agent.assets")

COMMANDS = spec("assets.commands")
AGENT = "asset-commands"
commands_topic = raw_topic(app, COMMANDS)

APPLIED = Counter("vitrina_asset_commands_total", "Asset commands by action and outcome (REFUSE with its reason)",
                  ["action", "outcome", "reason"])
REAPS = Counter("vitrina_asset_reaps_total", "Assets deleted because their last reference went")



@functools.cache
def redis() -> Any:
    return async_client(settings)


@functools.cache
def store() -> MediaStore:
    return MediaStore(settings)


async def reap(asset_id: str, context: dict[str, Any]) -> None:
    gone = await refs_sink.gone_uploads(redis(), asset_id)
    deleted = await asyncio.to_thread(refs_sink.delete_objects, store(), asset_id, gone)
    await refs_sink.finish_reap(redis(), asset_id)
    REAPS.inc()
    log.info("asset_reaped", asset_id=asset_id, objects_deleted=deleted, originals_of=gone, **context)


def _recompute(asset_id: str) -> dict[str, Any]:
    from streams.capabilities.uploads.quality import recompute_quality
    client = sync_client(settings)
    try:
        return recompute_quality(settings, asset_id, store=store(), redis_client=client)
    finally:
        client.close()


async def apply(cmd: dict[str, Any]) -> str:
    """Decide and apply one command; returns the outcome name (REFUSE:<reason> when refused)."""
    asset_id, user, upload = cmd["asset_id"], cmd.get("user_id"), cmd.get("upload_id")
    state = await refs_sink.read_state(redis(), asset_id, upload if cmd["action"] == DELETE_UPLOAD else None)
    decision = decide(cmd, state["asset"], state["entries"], state["refs"], upload_status=state["upload_status"],
                      tombstoned=state["tombstoned"])
    context = {"action": cmd["action"], "asset_id": asset_id, "user_id": user, "upload_id": upload,
               "reason": cmd.get("reason")}
    reap_now = False
    outcome = decision.outcome
    refusal = decision.reason
    if outcome is Outcome.ADD:
        if not await refs_sink.add_reference(redis(), asset_id, user):
            outcome, refusal = Outcome.REFUSE, "ASSET_NOT_FOUND"     # tombstoned between read and write
            log.warning("asset_command_refused", refusal=refusal, message="the asset is being deleted", **context)
    elif outcome is Outcome.REMOVE_REF:
        reap_now = await refs_sink.remove_reference(redis(), asset_id, user)
    elif outcome is Outcome.DELETE_UPLOAD_REF:
        status = deleted_status(state["upload_status"], upload, user, asset_id, datetime.now(timezone.utc))
        reap_now = await refs_sink.delete_upload(redis(), asset_id, upload, status)
    elif outcome is Outcome.RECOMPUTE:
        from streams.capabilities.uploads.quality import RecomputeError
        try:
            result = await asyncio.to_thread(_recompute, asset_id)
        except RecomputeError as exc:
            outcome, refusal = Outcome.REFUSE, exc.code
            log.warning("asset_command_refused", refusal=exc.code, message=str(exc), **context)
        else:
            log.info("quality_recomputed", scope=result["scope"], elapsed_s=result["elapsed_s"],
                     renditions={n: s["after"] for n, s in result["renditions"].items()}, **context)
    else:  # REFUSE
        log.warning("asset_command_refused", refusal=decision.reason, message=decision.message, **context)
        # a redelivered removal after a crash mid-reap: the tombstone is set, the reap goes on
        reap_now = decision.reap and state["tombstoned"]
    if outcome is not Outcome.REFUSE:
        log.info("asset_command_applied", outcome=outcome.value, **context)
    if reap_now:
        await reap(asset_id, context)
    APPLIED.labels(action=cmd["action"], outcome=outcome.value, reason=refusal or "").inc()
    return outcome.value if refusal is None else f"REFUSE:{refusal}"


@app.agent(commands_topic, name=AGENT)
async def asset_commands(stream):
    async for batch in decoded_batches(app, stream, COMMANDS, AGENT, max_batch=100, within_s=0.05):
        for event in batch:
            try:
                await apply(event.value)
            except Exception as exc:  # noqa: BLE001 - keep it with the error, go on with the next
                await dead_letter_failed(app, event, AGENT, exc)
