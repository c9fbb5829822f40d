"""What frequency caps cost the worker per served answer, by how many answers a user holds.

    OPENBLAS_NUM_THREADS=1 .venv/bin/python benchmarks/caps_cost.py [--answers 2000]

For users already holding 0, 50, 200 and 512 (``contracts.caps.MAX_SHOWN``) answers of 10 items
within the window, times ``nearline.caps.apply`` of one more answer (the fold into the state
and the check whether the capped set changed) and the encoding of the state that a commit
writes, against a state without caps (the peer: what a commit encodes today). Pure Python, no
broker: the worker's other costs per answer (decode, commit, changelog) are apart.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402

from benchmarks._common import load_note, log  # noqa: E402
from recsys_stream.contracts.caps import CapRule  # noqa: E402
from recsys_stream.contracts.user_state import UserHistory  # noqa: E402
from recsys_stream.nearline.caps import Served, apply  # noqa: E402

RULE = CapRule(3, 24 * 3_600_000)


def user(held: int, rng) -> UserHistory:
    h = UserHistory("t", "u")
    h.items = {f"h{i}": [1.0, 1000, 1000] for i in range(50)}  # a 50-item history
    for n in range(held):
        apply(h, Served("t", "u", f"r{n}", tuple(f"i{j}" for j in rng.integers(0, 400, 10)),
                        1000 + n), None, n, RULE)
    return h


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--answers", type=int, default=100, help="answers timed per size")
    args = ap.parse_args()
    rng = np.random.default_rng(0)
    plain = user(0, rng)
    t0 = time.perf_counter()
    for _ in range(args.answers):
        plain.encode()
    base_us = (time.perf_counter() - t0) / args.answers * 1e6
    log(f"a 50-item state without caps: encode {base_us:.1f} us ({load_note()})")
    for held in (0, 50, 200, 512):
        h = user(held, rng)
        answers = [Served("t", "u", f"x{n}", tuple(f"i{j}" for j in rng.integers(0, 400, 10)),
                          10_000 + n) for n in range(args.answers)]
        t0 = time.perf_counter()
        for n, s in enumerate(answers):
            apply(h, s, None, n, RULE)
        apply_us = (time.perf_counter() - t0) / args.answers * 1e6
        t0 = time.perf_counter()
        for _ in range(200):
            data = h.encode()
        enc_us = (time.perf_counter() - t0) / 200 * 1e6
        log(f"holding {held} answers (then {len(h.caps.shown)}): apply {apply_us:.1f} us per "
            f"answer; the state encodes in {enc_us:.0f} us ({enc_us / base_us:.1f}x without "
            f"caps), {len(data):,} bytes ({load_note()})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
