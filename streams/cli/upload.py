"""``vitrina upload FILE``: put the original into S3, publish UploadRequested, optionally wait.
``vitrina upload delete UPLOAD_ID --user U``: publish DELETE_UPLOAD for the upload's asset (looked up in the
upload's status view); the asset-commands agent checks U is the uploader, and the asset's files go with its
last reference.

Exit status: 0 published (or processed with --wait), 2 rejected, 3 no answer within --timeout,
1 a local problem (file missing, stack unreachable). With --json the answer is one JSON line.
"""
from __future__ import annotations

import argparse
import getpass
import json
import sys
from pathlib import Path
from typing import Any

from streams.cli import command

EXIT_REJECTED, EXIT_TIMEOUT = 2, 3


def _args(p: argparse.ArgumentParser) -> None:
    p.add_argument("file", help="video file to upload, or `delete` followed by an UPLOAD_ID")
    p.add_argument("upload", nargs="?", metavar="UPLOAD_ID", help="with `delete`: the upload to delete")
    p.add_argument("--user", default=None, help="with `delete`: who asks (must be the uploader)")
    p.add_argument("--reason", default=None, help="with `delete`: free text kept with the command")
    p.add_argument("--title", help="title (default: the file name without extension)")
    p.add_argument("--description", default="")
    p.add_argument("--uploader", default=None, help="uploader id (default: the current user name)")
    p.add_argument("--tags", default="", help="comma-separated tags")
    p.add_argument("--age-rating", type=int, default=0, choices=[0, 6, 12, 16, 18])
    p.add_argument("--private", action="store_true", help="private video (playable only with a signed URL)")
    p.add_argument("--upload-id", help="use this upload id instead of a new one (re-publishing is idempotent)")
    p.add_argument("--wait", action="store_true", help="wait for the processed/rejected answer and print it")
    p.add_argument("--timeout", type=float, default=900.0, help="seconds to wait with --wait (default 900)")
    p.add_argument("--json", action="store_true", help="print the request / answer as JSON lines")
    p.add_argument("--urls", action="store_true", help="with --wait: print a signed playback URL per rendition")


class _Progress:
    def __init__(self, name: str, total: int, enabled: bool) -> None:
        self.name, self.total, self.enabled = name, max(total, 1), enabled
        self.shown = -1

    def __call__(self, done: int) -> None:
        percent = int(100 * done / self.total)
        if self.enabled and percent // 5 != self.shown // 5:
            self.shown = percent
            print(f"\ruploading {self.name}: {percent:3d}% ({done / 1e6:.1f}/{self.total / 1e6:.1f} MB)",
                  end="" if percent < 100 else "\n", file=sys.stderr, flush=True)


def _json(value: Any) -> str:
    from streams.kafka.tail import json_default
    return json.dumps(value, default=json_default, ensure_ascii=False, sort_keys=True)


def describe_processed(event: dict, signer: Any = None) -> list[str]:
    """Human-readable lines for an UploadProcessed event."""
    head = f"processed {event['upload_id']}: asset {event['asset_id']}"
    if event["deduplicated"]:
        head += f" (duplicate: linked to upload {event['original_upload_id']}, not transcoded)"
    lines = [head, f"  source {event['source_width']}x{event['source_height']}, {event['duration_s']:.2f} s, "
                   f"processing {event['processing_s']:.1f} s"]
    lines.append(f"  {'rung':<6} {'size':>9} {'MB':>7} {'kbps':>6} {'cap':>6}  quality")
    for r in event["renditions"]:
        kbps = r["bytes"] * 8 / max(r["duration_s"], 1e-3) / 1000
        quality = ", ".join(f"{k}={v:.3f}" if k == "ssim" else f"{k}={v:.1f}" for k, v in sorted(r["quality"].items()))
        lines.append(f"  {r['name']:<6} {r['width']:>4}x{r['height']:<4} {r['bytes'] / 1e6:>7.2f} {kbps:>6.0f} "
                     f"{r['video_kbps']:>6}  {quality or '-'}")
        if signer is not None:
            lines.append(f"         {signer.url(r['object_key'])}")
    for t in event["thumbnails"]:
        lines.append(f"  thumbnail {t['kind'].lower():<7} {t['width']}x{t['height']}  {t['object_key']}")
    if event.get("hls_master_key"):
        lines.append(f"  hls master {event['hls_master_key']}")
    return lines


@command("upload", "upload a video: original to S3, UploadRequested published; --wait prints the result")(_args)
def run_upload(args: argparse.Namespace) -> int:
    from infra.settings import load
    from sinks.media_store import PlaybackSigner
    from streams.kafka.producer import EventProducer
    from streams.capabilities.uploads.client import ResultFollower, new_upload_id, upload_file

    if args.file == "delete" and (args.upload is not None or not Path("delete").is_file()):
        return run_delete(args)
    path = Path(args.file)
    if not path.is_file():
        message = f"no such file: {path}"
        print(_json({"error": "FILE_NOT_FOUND", "message": message}) if args.json else f"vitrina upload: {message}",
              file=sys.stderr)
        return 1
    settings = load()
    upload_id = args.upload_id or new_upload_id()
    follower = ResultFollower(settings) if args.wait else None   # positioned before publishing
    try:
        request = upload_file(
            settings, EventProducer(settings), path, upload_id=upload_id,
            on_bytes=_Progress(path.name, path.stat().st_size, not args.json),
            uploader_id=args.uploader or getpass.getuser(), title=args.title or path.stem,
            description=args.description, tags=[t.strip() for t in args.tags.split(",") if t.strip()],
            age_rating=args.age_rating, private=args.private)
        if args.json:
            print(_json({"request": request}), flush=True)
        else:
            print(f"published upload {upload_id} (s3://{settings.media_bucket}/{request['object_key']}, "
                  f"{request['size_bytes']} bytes)", flush=True)
        if follower is None:
            return 0
        if not args.json:
            print("waiting for the result ...", file=sys.stderr, flush=True)
        found = follower.wait([upload_id], args.timeout).get(upload_id)
    finally:
        if follower is not None:
            follower.close()
    if found is None:
        print(_json({"error": "TIMEOUT", "upload_id": upload_id, "timeout_s": args.timeout}) if args.json
              else f"no answer for {upload_id} within {args.timeout:.0f} s (still processing?)", flush=True)
        return EXIT_TIMEOUT
    if args.json:
        print(_json({"status": found.status, "event": found.event}), flush=True)
    elif found.processed:
        print("\n".join(describe_processed(found.event, PlaybackSigner.from_settings(settings) if args.urls else None)))
    else:
        print(f"rejected {upload_id}: {found.event['reason_code']}: {found.event['message']}")
    return 0 if found.processed else EXIT_REJECTED


def run_delete(args: argparse.Namespace) -> int:
    from infra.settings import load
    from processors.asset_references import DELETE_UPLOAD
    from sinks.redis_views import sync_client, upload_status_key
    from streams.cli.collection import fail, publish_command

    if not args.upload:
        return fail("upload delete", "MISSING_FIELD", "UPLOAD_ID: required", args.json)
    if not args.user:
        return fail("upload delete", "MISSING_FIELD", "--user: required (the uploader)", args.json)
    settings = load()
    try:
        client = sync_client(settings)
        raw = client.get(upload_status_key(args.upload))
        client.close()
    except Exception as exc:  # noqa: BLE001 - Redis unreachable
        return fail("upload delete", "UNAVAILABLE", f"cannot read the upload's status: {exc}", args.json)
    status = json.loads(raw) if raw else None
    if status is None:
        return fail("upload delete", "UNKNOWN_UPLOAD", f"upload_id: no upload {args.upload!r}", args.json)
    if not status.get("asset_id"):
        return fail("upload delete", "NO_ASSET", f"asset_id: upload {args.upload!r} has no asset (yet)", args.json)
    try:
        cmd = publish_command(DELETE_UPLOAD, status["asset_id"], user_id=args.user, upload_id=args.upload,
                              reason=args.reason, settings=settings)
    except ValueError as exc:
        return fail("upload delete", "BAD_ARGUMENT", str(exc), args.json)
    except Exception as exc:  # noqa: BLE001 - broker unreachable
        return fail("upload delete", "NOT_PUBLISHED", f"could not publish: {exc}", args.json)
    print(_json({"published": cmd}) if args.json
          else f"published DELETE_UPLOAD of {args.upload} (asset {status['asset_id']}) for {args.user}")
    return 0
