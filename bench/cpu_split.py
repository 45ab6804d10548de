"""Where a running txuac's CPU goes, sampled with Linux perf: compiled code, interpreted
code the compiled code calls (the routing script's layer, Twisted's callbacks), interpreted
code with no compiled caller (Twisted's loop, the transports) and the kernel.

cProfile sees only interpreted functions (a compiled function is one opaque call) and
slows them more than the rest, so it cannot say how the time of a compiled build splits.
perf samples the process as it runs: each sample's stack of C functions tells whose code
it was in. A sample is *compiled* when no ``_PyEval_EvalFrameDefault`` (the interpreter)
lies between it and the nearest mypyc function (``CPyDef_*``), CPython's own work for that
function included (allocating, freeing, dict look-ups); *interpreted, called from
compiled* when the interpreter is nearer; *interpreted* alone when no mypyc function is
on the stack; *kernel* when it was in the kernel (sending, receiving, waking up).

Usage, beside a load (``./dev bench proxy --calls 4000`` in another terminal)::

    python bench/cpu_split.py --pid $(pgrep -f 'twisted uac') [--seconds 8] [--top 10]

It needs ``perf`` (Debian: linux-perf) allowed to trace the process (root, or
kernel.perf_event_paranoid <= 1) and a CPython with symbols (pyenv builds have them).
"""

from __future__ import annotations

import argparse
import collections
import os
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field

KERNEL = "kernel"
COMPILED = "compiled (with CPython's work for it)"
CALLED_FROM_COMPILED = "interpreted, called from compiled code"
INTERPRETED = "interpreted, no compiled caller (loop, shell)"
CATEGORIES = (COMPILED, CALLED_FROM_COMPILED, INTERPRETED, KERNEL)
INTERPRETER_FRAME = "_PyEval_EvalFrameDefault"
COMPILED_PREFIXES = ("CPyDef_", "CPyPy_")
KERNEL_ADDRESSES = 0xFFFF800000000000  # x86-64: the kernel's half of the address space


@dataclass
class Split:
    """Samples per category, and the compiled functions whose interpreted callees they were in."""

    samples: collections.Counter = field(default_factory=collections.Counter)
    interpreted_callers: collections.Counter = field(default_factory=collections.Counter)

    @property
    def total(self) -> int:
        return sum(self.samples.values())


def classify(frames: list[tuple[int, str]], split: Split) -> None:
    """Count one sample, ``frames`` (address, symbol) from the leaf outwards."""
    if not frames:
        return
    if frames[0][0] >= KERNEL_ADDRESSES:
        split.samples[KERNEL] += 1
        return
    symbols = [symbol for _, symbol in frames]
    compiled = next((i for i, s in enumerate(symbols) if s.startswith(COMPILED_PREFIXES)), None)
    interpreter = next((i for i, s in enumerate(symbols) if s.startswith(INTERPRETER_FRAME)), None)
    if compiled is None:
        split.samples[INTERPRETED] += 1
    elif interpreter is not None and interpreter < compiled:
        split.samples[CALLED_FROM_COMPILED] += 1
        split.interpreted_callers[symbols[compiled]] += 1
    else:
        split.samples[COMPILED] += 1


def read_samples(lines) -> Split:
    """The split of ``perf script -F ip,sym`` output: one frame a line, samples apart by a
    blank line."""
    split = Split()
    frames: list[tuple[int, str]] = []
    for line in lines:
        parts = line.split(None, 1)
        if not parts:
            classify(frames, split)
            frames = []
            continue
        try:
            frames.append((int(parts[0], 16), parts[1].strip() if len(parts) > 1 else "?"))
        except ValueError:
            continue
    classify(frames, split)
    return split


def record(pid: int, seconds: float, frequency: int, workdir: str) -> Split:
    data = os.path.join(workdir, "perf.data")
    recorded = subprocess.run(["perf", "record", "--call-graph", "dwarf,16384", "-F", str(frequency), "-p", str(pid),
                               "-o", data, "--", "sleep", str(seconds)], stdout=subprocess.DEVNULL,
                              stderr=subprocess.PIPE, text=True)
    if recorded.returncode != 0:
        raise SystemExit(f"perf record failed (no such process, or not allowed to trace it: root, or "
                         f"kernel.perf_event_paranoid <= 1):\n{recorded.stderr.strip()[-2000:]}")
    script = subprocess.Popen(["perf", "script", "-i", data, "-F", "ip,sym"], stdout=subprocess.PIPE,
                              stderr=subprocess.DEVNULL, text=True)
    assert script.stdout is not None
    split = read_samples(script.stdout)
    script.wait()
    return split


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--pid", type=int, required=True, help="txuac's process")
    parser.add_argument("--seconds", type=float, default=8.0, help="how long to sample (8)")
    parser.add_argument("--frequency", type=int, default=499, help="samples a second (499)")
    parser.add_argument("--top", type=int, default=10, help="compiled callers of interpreted code listed (10)")
    args = parser.parse_args()
    if shutil.which("perf") is None:
        parser.error("perf is not installed (Debian: apt-get install linux-perf)")
    with tempfile.TemporaryDirectory(prefix="txuac-cpu-split-") as workdir:
        split = record(args.pid, args.seconds, args.frequency, workdir)
    if not split.total:
        print(f"no samples of process {args.pid} (idle, or perf may not trace it)")
        return 1
    print(f"process {args.pid}, {split.total:,} samples over {args.seconds:g} s")
    for category in CATEGORIES:
        count = split.samples[category]
        print(f"  {100 * count / split.total:5.1f}%  {category} ({count:,})")
    print("interpreted code called from (nearest compiled function):")
    for caller, count in split.interpreted_callers.most_common(args.top):
        print(f"  {100 * count / split.total:5.1f}%  {caller}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
