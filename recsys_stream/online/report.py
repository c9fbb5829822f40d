"""``recsys-stream report``: what was served and clicked, per model and experiment arm.

Reads the online stage's committed counters (a RocksDB secondary of ``online.state_dir``) and
prints, per tenant x algorithm x version x source x experiment x arm (positions summed;
``--by-position`` splits them): impressions, clicks, CTR with its 95 % Wilson interval,
conversions. Then, per experiment, each arm against the control (its first arm): the CTR
difference, its p-value and the sample a test would need to detect that difference (alpha
0.05, power 0.8).

The test's unit is the user, the experiment's assignment unit: a user's impressions are not
independent of each other, and the impression-level two-proportion z-test found 9 of 100 A/A
splits significant at 5 % (``benchmarks/online.py``). The stage keeps per arm the exact sums
of per-user impressions and clicks and their squares and product
(``UserAttribution.user_moments``), and the CTR of each arm is compared by the delta method
(``stats.compare_users``). Those sums are cumulative: ``--since`` narrows the table, not the
test. Experiments counted before the sums were kept fall back to the z-test.
"""

from __future__ import annotations

from collections import defaultdict

from recsys_stream.online.attribution import HOUR_MS
from recsys_stream.online.stats import UserMoments, compare, compare_users, wilson
from recsys_stream.online.store import OnlineStore

COLUMNS = ("algorithm", "version", "source", "experiment", "arm")


def rows(store: OnlineStore, tenant: str, since_ms: int = 0, experiment: str | None = None,
         by_position: bool = False) -> list[dict]:
    """The report's table: one dict per group, sorted, with counts, CTR and its interval."""
    groups: dict[tuple, list[int]] = defaultdict(lambda: [0, 0, 0])
    for (hour, t, algorithm, version, source, exp, arm, position, _method), c in store.counts():
        if t != tenant or (hour + 1) * HOUR_MS <= since_ms:
            continue
        if experiment is not None and exp != experiment:
            continue
        key = (algorithm, version, source, exp, arm) + ((position,) if by_position else ())
        g = groups[key]
        for n in range(3):
            g[n] += c[n]
    out = []
    for key, (imp, clicks, conv) in sorted(groups.items()):
        lo, hi = wilson(clicks, imp)
        row = dict(zip(COLUMNS + (("position",) if by_position else ()), key))
        row.update(impressions=imp, clicks=clicks, ctr=clicks / imp if imp else 0.0,
                   ctr_low=lo, ctr_high=hi, conversions=conv)
        out.append(row)
    return out


def arm_tests(table: list[dict], arm_order: dict[str, list[str]],
              moments: dict[tuple[str, str], UserMoments] | None = None) -> list[dict]:
    """Each experiment's arms against its control (the first arm in ``arm_order``, or the
    first arm name in sorted order when the experiment is no longer configured); per user by
    ``moments`` (``OnlineStore.moments``) where both arms have them, else per impression."""
    moments = moments or {}
    per_arm: dict[str, dict[str, list[int]]] = defaultdict(lambda: defaultdict(lambda: [0, 0]))
    for r in table:
        if r["experiment"]:
            a = per_arm[r["experiment"]][r["arm"]]
            a[0] += r["impressions"]
            a[1] += r["clicks"]
    out = []
    for exp, arms in sorted(per_arm.items()):
        order = arm_order.get(exp) or sorted(arms)
        control = order[0]
        if control not in arms:
            continue
        ci, cc = arms[control]
        for arm in (a for a in order[1:] if a in arms):
            ai, ac = arms[arm]
            um, cm = moments.get((exp, arm)), moments.get((exp, control))
            t = compare_users(um, cm) if um and cm and um.n and cm.n else compare(ac, ai, cc, ci)
            out.append({"experiment": exp, "arm": arm, "control": control,
                        "ctr": ac / ai if ai else 0.0, "control_ctr": cc / ci if ci else 0.0,
                        "difference": t.difference, "p_value": t.p_value,
                        "impressions_needed": t.users_needed})
    return out


def render(table: list[dict], tests: list[dict]) -> str:
    """The report as text, one line per group and per arm test."""
    lines = []
    for r in table:
        where = " ".join(f"{k}={r[k]}" for k in COLUMNS + (("position",) if "position" in r
                                                            else ()) if r[k] not in ("",))
        lines.append(f"{where}  impressions={r['impressions']} clicks={r['clicks']} "
                     f"ctr={r['ctr']:.4f} [{r['ctr_low']:.4f}, {r['ctr_high']:.4f}] "
                     f"conversions={r['conversions']}")
    for t in tests:
        lines.append(f"experiment={t['experiment']} arm={t['arm']} vs {t['control']}: "
                     f"ctr {t['ctr']:.4f} vs {t['control_ctr']:.4f}, difference "
                     f"{t['difference']:+.4f}, p = {t['p_value']:.3g}, impressions needed per "
                     f"arm {t['impressions_needed']:.0f}")
    return "\n".join(lines) if lines else "no served answers counted yet"
