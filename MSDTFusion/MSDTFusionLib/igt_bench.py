"""OpenIGTLink throughput, latency and soak benchmark on loopback (image + transforms, as PLUS streams them).

``run_igt_bench(seconds=20, fps=30)`` replays the bundled PLUS recording in a loop at ``fps`` (by default from a
separate process, as a real PLUS Server would be, so that the sender's work does not compete for this process's
GIL), receives it with :class:`~MSDTFusionLib.igt.IgtClient` into a headless MRML scene and reports:

- ``image_fps`` and per-transform rates, MB/s;
- latency from the message timestamp to the complete message on the socket (median / p95 / max, ms) and to the
  message applied to MRML by ``process_pending`` (the "end-to-end" figure a GUI sees);
- the first vs the last quarter of the run (rate and median latency) and ``rate_decay`` = last/first: a leak,
  a growing queue or a slowing scene shows up as a ratio below 1 or a growing latency;
- dropped messages (sequence gaps, queue overflow), errors, reconnects, and resident memory at the start, after
  the first quarter (warm) and at the end.

The issue's target (``meets_target``): >= ``fps`` images/s (1 % tolerance for the measuring window), median
latency <= 10 ms, no rate decay (last quarter >= 95 % of the first) and nothing dropped; a 5-minute soak is
``run_igt_bench(seconds=300)`` or ``python -m MSDTFusionLib.igt_bench --seconds 300``.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from .igt import IgtClient, free_port
from .igtsim import IgtSimulator

SAMPLE = (Path(__file__).resolve().parents[2] / "Testing" / "Data" / "plus_tracked_ultrasound"
          / "SpinePhantomFreehand.igs.mha")


def _rss_mb() -> float | None:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return round(int(line.split()[1]) / 1024.0, 1)
    except OSError:
        pass
    return None


def _ms(values, q) -> float | None:
    return round(float(np.percentile(values, q)) * 1000.0, 3) if len(values) else None


def _start_simulator_process(path: Path, port: int, fps: float, seconds: float) -> subprocess.Popen:
    here = Path(__file__).resolve()
    paths = [str(here.parents[1]), str(here.parents[2] / "MSDT"), os.environ.get("PYTHONPATH", "")]
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in paths if p))
    command = [sys.executable, "-m", "MSDTFusionLib.igtsim", str(path), "--port", str(port), "--fps", str(fps),
               "--loop", "--wait-for-client", "--seconds", str(seconds + 30)]
    return subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


def run_igt_bench(seconds: float = 20.0, fps: float = 30.0, path=None, separate_process: bool = True,
                  poll_interval: float = 0.002) -> dict:
    """Stream for ``seconds`` at ``fps`` over loopback and measure (see the module docstring)."""
    from MSDTLib.app import new_scene, shutdown_scene

    path = Path(path) if path else SAMPLE
    port = free_port()
    process = simulator = None
    if separate_process:
        process = _start_simulator_process(path, port, fps, seconds)
    else:
        simulator = IgtSimulator(path, port, fps=fps, loop=True, wait_for_client=True).start()

    scene = new_scene()
    records = []  # (is_image, timestamp, receive_time, applied_time, bytes)

    def on_update(update):
        image = update.message_type == "IMAGE"
        size = update.message.image.nbytes if image else 48
        records.append((image, update.timestamp, update.receive_time, time.time(), size, update.device))

    client = IgtClient(scene, "127.0.0.1", port, retry_interval=0.05)
    client.add_listener(on_update)
    rss_start = _rss_mb()
    client.start()
    try:
        started = time.monotonic()
        while not records and time.monotonic() - started < 30:  # the simulator process needs a moment
            client.process_pending()
            time.sleep(poll_interval)
        if not records:
            raise RuntimeError(f"no data from the simulator on port {port} ({client.status})")
        begin = time.monotonic()
        end = begin + seconds
        rss_quarter = None
        while time.monotonic() < end:
            client.process_pending()
            if rss_quarter is None and time.monotonic() - begin >= seconds / 4:
                rss_quarter = _rss_mb()  # after warm-up: growth from here on would be a leak
            time.sleep(poll_interval)
        stats = client.statistics()
    finally:
        client.stop()
        if simulator is not None:
            simulator.stop()
        if process is not None:
            process.terminate()
            try:
                process.wait(10)
            except subprocess.TimeoutExpired:
                process.kill()
        rss_end = _rss_mb()
        shutdown_scene(scene)

    images = np.array([(r[1], r[2], r[3], r[4]) for r in records if r[0]])
    transforms = np.array([(r[1], r[2], r[3]) for r in records if not r[0]])
    first, last = images[0, 1], images[-1, 1]
    span = last - first
    quarter = span / 4.0

    def window(lo, hi):
        rows = images[(images[:, 1] >= lo) & (images[:, 1] <= hi)]
        length = rows[-1, 1] - rows[0, 1] if len(rows) > 1 else 0.0
        return {"images": int(len(rows)), "fps": round((len(rows) - 1) / length, 3) if length > 0 else None,
                "latency_median_ms": _ms(rows[:, 1] - rows[:, 0], 50) if len(rows) else None}

    first_q, last_q = window(first, first + quarter), window(last - quarter, last)
    image_fps = (len(images) - 1) / span if span > 0 else None
    latency = images[:, 1] - images[:, 0]
    result = {
        "seconds": round(span, 3), "target_fps": fps, "file": path.name,
        "simulator": "separate process" if separate_process else "thread in this process",
        "images": int(len(images)), "transforms": int(len(transforms)),
        "image_fps": round(image_fps, 3) if image_fps else None,
        "transform_fps": {name: info["fps"] for name, info in stats["devices"].items() if info["type"] == "TRANSFORM"},
        "throughput_mb_s": round(float(images[:, 3].sum()) / span / 1e6, 2) if span > 0 else None,
        "latency_ms": {"median": _ms(latency, 50), "p95": _ms(latency, 95), "max": _ms(latency, 100)},
        "transform_latency_ms": {"median": _ms(transforms[:, 1] - transforms[:, 0], 50) if len(transforms) else None,
                                 "p95": _ms(transforms[:, 1] - transforms[:, 0], 95) if len(transforms) else None},
        "end_to_end_ms": {"median": _ms(images[:, 2] - images[:, 0], 50), "p95": _ms(images[:, 2] - images[:, 0], 95)},
        "first_quarter": first_q, "last_quarter": last_q,
        "rate_decay": round(last_q["fps"] / first_q["fps"], 4) if first_q["fps"] and last_q["fps"] else None,
        "dropped": stats["dropped"], "errors": stats["errors"], "reconnects": stats["reconnects"],
        "rss_mb_start": rss_start, "rss_mb_first_quarter": rss_quarter, "rss_mb_end": rss_end,
    }
    result["meets_target"] = bool(
        result["image_fps"] and result["image_fps"] >= 0.99 * fps
        and result["latency_ms"]["median"] is not None and result["latency_ms"]["median"] <= 10.0
        and result["rate_decay"] is not None and result["rate_decay"] >= 0.95 and result["dropped"] == 0)
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m MSDTFusionLib.igt_bench", description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=20.0, help="measuring time (300 for the soak)")
    parser.add_argument("--fps", type=float, default=30.0, help="frames per second sent (default 30)")
    parser.add_argument("--file", type=Path, help="PLUS .igs.mha to replay (default: the bundled sample)")
    parser.add_argument("--in-process", action="store_true", help="run the simulator as a thread of this process")
    parser.add_argument("--out", type=Path, help="also write the result as JSON here")
    args = parser.parse_args(argv)
    result = run_igt_bench(args.seconds, args.fps, args.file, not args.in_process)
    text = json.dumps(result, indent=2)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text)
    print(text)
    return 0 if result["meets_target"] else 1


if __name__ == "__main__":
    sys.exit(main())
