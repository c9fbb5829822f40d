"""Read py-spy's collapsed stacks (``--format raw``) and print where a process's time goes.

Each line of a raw file is ``frame;frame;...;leaf count``. *Self* time is the samples whose
leaf is the function; *inclusive* time is the samples with the function anywhere on the stack
(counted once per sample even when recursive). Idle samples (the event loop waiting in
``epoll``/``select``) are reported apart so the shares are of busy time.
"""

from __future__ import annotations

import re
from collections import Counter
from pathlib import Path

_IDLE = re.compile(r"\b(select|poll|epoll_wait|_run_once \(asyncio|wait \(threading)")


def _frame_name(frame: str) -> str:
    # py-spy frames look like "function (path/to/module.py:123)": keep the function and the
    # module's file name, drop the line so one function is one row.
    m = re.match(r"(.*) \((.*?):\d+\)$", frame)
    if not m:
        return frame
    return f"{m.group(1)} ({Path(m.group(2)).name})"


def read(paths) -> tuple[Counter, Counter, int, int]:
    """Self and inclusive sample counts by function over the files, busy and idle totals."""
    own, incl = Counter(), Counter()
    busy = idle = 0
    for path in paths:
        for line in Path(path).read_text().splitlines():
            stack, _, n = line.rpartition(" ")
            if not stack or not n.isdigit():
                continue
            n = int(n)
            frames = [_frame_name(f) for f in stack.split(";")]
            if _IDLE.search(frames[-1]):
                idle += n
                continue
            busy += n
            own[frames[-1]] += n
            for f in set(frames):
                incl[f] += n
    return own, incl, busy, idle


def summarise(paths, top: int = 30) -> None:
    own, incl, busy, idle = read(paths)
    total = busy + idle
    print(f"\nprofile: {busy} busy samples, {idle} idle ({idle / max(total, 1):.0%}) over "
          f"{len(list(paths))} process(es)")
    print("self time (share of busy samples):")
    for name, n in own.most_common(top):
        print(f"  {n / max(busy, 1):6.1%}  {name}")
    print("inclusive time:")
    for name, n in incl.most_common(top):
        print(f"  {n / max(busy, 1):6.1%}  {name}")


def tree(paths, root: str, floor: float = 0.015, depth: int = 8) -> None:
    """The call tree below ``root`` (every stack through it), as shares of ``root``'s
    samples; branches under ``floor`` are left out."""
    counts: Counter = Counter()
    for path in paths:
        for line in Path(path).read_text().splitlines():
            stack, _, n = line.rpartition(" ")
            if not stack or not n.isdigit():
                continue
            frames = [_frame_name(f) for f in stack.split(";")]
            if root not in frames:
                continue
            below = tuple(frames[frames.index(root):])
            for j in range(1, len(below) + 1):
                counts[below[:j]] += int(n)
    total = counts[(root,)]
    print(f"{root}: {total} samples")

    def show(prefix: tuple, level: int) -> None:
        kids = [(n, k) for k, n in counts.items()
                if len(k) == len(prefix) + 1 and k[:len(prefix)] == prefix]
        for n, k in sorted(kids, reverse=True):
            if n / max(total, 1) >= floor:
                print("  " * level + f"{n / total:6.1%} {k[-1]}")
                if level < depth:
                    show(k, level + 1)
    show((root,), 1)


if __name__ == "__main__":
    import sys
    summarise(sys.argv[1:], top=int(__import__("os").environ.get("TOP", 40)))
