"""Profile one ingester run with py-spy (every thread) and print where the time goes.

    .venv/bin/python benchmarks/profile.py --concurrency 16      # 100 files x 4 MB

Sets up the same moto server, latency proxy and dataset as ``sweep.py``, runs
``measure.py`` for the ingester under ``py-spy record`` (install py-spy into the venv
first; it is not a dependency) and prints the functions with the most samples, by
self time and including callees. The raw collapsed stacks are kept in
``--out`` for a flame graph (``py-spy`` writes ``--format speedscope`` too).
"""

from __future__ import annotations

import argparse
import collections
import json
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from bifrost_async.config import parse_size  # noqa: E402
from bifrost_async.endpoint import run_moto_server  # noqa: E402
from bifrost_async.faultproxy import FaultProxy  # noqa: E402
from dataset import (  # noqa: E402  # benchmarks/ is a folder of scripts
    select_files,
    set_dummy_credentials,
    upload,
)


def summarize(raw: Path, top: int) -> str:
    """The top functions by self samples and by inclusive samples."""
    own: collections.Counter[str] = collections.Counter()
    inclusive: collections.Counter[str] = collections.Counter()
    total = 0
    for line in raw.read_text().splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack:
            continue

        count = int(count_text)
        frames = [frame for frame in stack.split(";") if not frame.startswith("thread")]
        total += count
        if frames:
            own[frames[-1]] += count

        for frame in set(frames):
            inclusive[frame] += count

    lines = [f"{total} samples", "", "self:"]
    lines += [f"{100 * n / total:5.1f}%  {name}" for name, n in own.most_common(top)]
    lines += ["", "inclusive:"]
    lines += [
        f"{100 * n / total:5.1f}%  {name}" for name, n in inclusive.most_common(top)
    ]
    return "\n".join(lines)


def main() -> None:
    """Set up, profile one run, print the summary."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--files", type=int, default=100)
    parser.add_argument("--size", default="4MB")
    parser.add_argument("--latency", type=float, default=0.03)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument(
        "--zero-copy",
        nargs="?",
        const="copy",
        default="off",
        choices=("copy", "in-place", "off"),
        help="profile --zero-copy (copy) or --zero-copy in-place",
    )
    parser.add_argument("--top", type=int, default=40)
    parser.add_argument("--idle", action="store_true", help="count idle threads too")
    parser.add_argument("--out", type=Path, default=Path("/tmp/bifrost-profile.txt"))
    args = parser.parse_args()
    set_dummy_credentials()
    files = select_files(args.files, parse_size(args.size, "--size"), None)
    workdir = Path(tempfile.mkdtemp(prefix="bifrost-profile-"))
    try:
        with run_moto_server() as endpoint:
            upload(endpoint, "bench", "data/", files)
            with FaultProxy(endpoint, delay=args.latency) as proxy:
                spec = {
                    "kind": "ingester",
                    "endpoint": proxy.url,
                    "bucket": "bench",
                    "prefix": "data/",
                    "concurrency": args.concurrency,
                    "zero_copy": args.zero_copy,
                    "workdir": str(workdir / "run"),
                }
                command = [
                    shutil.which("py-spy", path=str(Path(sys.executable).parent))
                    or "py-spy",
                    "record",
                    "--rate",
                    "200",
                    "--format",
                    "raw",
                    "--output",
                    str(args.out),
                    "--threads",
                    *(["--idle"] if args.idle else []),
                    "--",
                    sys.executable,
                    str(HERE / "measure.py"),
                    json.dumps(spec),
                ]
                subprocess.run(command, check=True)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)

    print(summarize(args.out, args.top))


if __name__ == "__main__":
    main()
