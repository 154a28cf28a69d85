"""Sample media for the main job, tests and the benchmark, generated with ffmpeg at run time (the
repository ships no binary media). ``tag`` goes into the container metadata, so each tag gives
different bytes (a new content key) for the same picture and sound."""
from __future__ import annotations

import subprocess
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Sample:
    name: str               # file name, e.g. "landscape.mp4"
    args: tuple[str, ...]   # ffmpeg arguments between the global options and the output

    def make(self, out_dir: str | Path, tag: str = "", ffmpeg: str = "ffmpeg") -> Path:
        out_dir = Path(out_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
        path = out_dir / self.name
        metadata = ["-metadata", f"comment=vitrina sample {tag}"] if tag else []
        subprocess.run([ffmpeg, "-nostdin", "-hide_banner", "-v", "error", "-y", *self.args, *metadata, str(path)],
                       check=True, timeout=300, stdin=subprocess.DEVNULL)
        return path


def video(name: str, width: int, height: int, seconds: float, *, fps: int = 25, audio: bool = True,
          pattern: str = "testsrc2") -> Sample:
    args = ["-f", "lavfi", "-i", f"{pattern}=size={width}x{height}:rate={fps}:duration={seconds:g}"]
    if audio:
        args += ["-f", "lavfi", "-i", f"sine=frequency=440:sample_rate=48000:duration={seconds:g}"]
    args += ["-c:v", "libx264", "-preset", "ultrafast", "-pix_fmt", "yuv420p", "-g", str(fps)]
    if audio:
        args += ["-c:a", "aac", "-b:a", "96k", "-shortest"]
    return Sample(name, tuple(args + ["-movflags", "+faststart"]))


def audio_only(name: str = "audio_only.m4a", seconds: float = 2.0) -> Sample:
    return Sample(name, ("-f", "lavfi", "-i", f"sine=frequency=330:sample_rate=44100:duration={seconds:g}",
                         "-c:a", "aac", "-b:a", "96k"))


DEMO_SAMPLES = {
    "landscape": video("landscape_720p.mp4", 1280, 720, 3),
    "portrait": video("portrait_phone.mp4", 360, 640, 2, fps=30),
    "audio": audio_only(),
    # long enough (>= VITRINA_PER_TITLE_MIN_S, 20 s) for the per-title ladder (complexity probe)
    "long": video("long_360p.mp4", 640, 360, 24, pattern="testsrc"),
}


def make_demo_samples(out_dir: str | Path, tag: str) -> dict[str, Path]:
    return {key: sample.make(out_dir, tag) for key, sample in DEMO_SAMPLES.items()}
