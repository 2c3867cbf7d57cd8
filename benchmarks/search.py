"""AMC against random search, the rules and Torch-Pruning on CIFAR-10 under a host latency budget (50% of the unpruned
model's), no fine-tuning, over several seeds.

    .venv/bin/python benchmarks/search.py                                     # resnet20 and plain20, 3 seeds
    .venv/bin/python benchmarks/search.py --models mobilenet_v2_cifar --seeds 0 1 2

Every strategy runs in the same harness (same table, budget, reward on 1,000 `val` images with the default
reward, finalists re-scored on all of `val` together with the rules). The chosen policy of each run is scored on
the full `test` split. Writes the section "Search under a latency budget (MODELS)" of BENCHMARKS.md.

A full run takes hours on 2 cores, so it is done run by run: each finished search's figures are kept in
benchmarks/results/search/ under the fingerprint of the table it searched against (commit them, and the same
command continues on another day, skipping what is there), and a search stopped half-way resumes from its folder
under --out. Another CPU has another table, so there the searches run anew, and the section shows each table's rows
apart: a budget is a share of the latency a table predicts, so results on two tables do not compare. Delete the
results after changing the search, or they are reported as they are. `--kept-only` runs no search and writes the
section from the kept results alone: a model whose searches take hours shows its figures so far, each row saying
how many seeds it has.
`--only random` runs the random searches still to run and reports the rest from what is kept. `--table` searches
against a given table instead of this host's (e.g. the shipped table of another CPU, to add seeds to its rows from
any machine): the rollouts are priced on it and nothing is timed.
"""

from __future__ import annotations

import argparse
import csv
import json
import statistics
import sys
import time
from itertools import product
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _report import latency_table, machine, table, write_section  # noqa: E402

from toolchain.compress import Budget, SearchConfig, search_and_prune  # noqa: E402
from toolchain.data import load_split  # noqa: E402
from toolchain.evaluate import evaluate  # noqa: E402
from toolchain.files import write_atomic  # noqa: E402
from toolchain.latency.runners import LiteRTHostRunner  # noqa: E402
from toolchain.latency.table import default_table_path  # noqa: E402
from toolchain.layout import RunLayout  # noqa: E402
from toolchain.models import load_checkpoint, load_model, zoo_checkpoint  # noqa: E402
from toolchain.search.ddpg import PRESETS  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results" / "search"

# (label, strategy, agent preset); rules are deterministic, so they run once whatever the seed. The other agent
# presets come last: they are alternatives to the default, and where a search takes half an hour
# (mobilenet_v2_cifar on 2 cores) the comparisons against random search and the rules are kept first
RUNS = [
    ("amc", "amc", "default"),
    ("random", "random", "default"),
    ("uniform", "uniform", "default"),
    ("shallow", "shallow", "default"),
    ("torch-pruning", "torch-pruning", "default"),
    ("amc (paper's DDPG, noise decays to 0)", "amc", "paper"),
    ("amc (8 updates per step, long memory)", "amc", "many-updates"),
]


def mean_std(values: list[float], percent: bool = True) -> str:
    """Mean ± standard deviation, or the mean alone where one run gives no spread to speak of."""
    scale = 100 if percent else 1
    if not percent:
        return f"{statistics.mean(values):.0f}"
    mean = f"{scale * statistics.mean(values):.2f}"
    return f"{mean} ± {scale * statistics.stdev(values):.2f}" if len(values) > 1 else mean


def run_name(strategy: str, agent: str) -> str:
    return strategy if agent == "default" else f"{strategy}-{agent}"


def kept_tables(arch: str, current: str) -> list[str]:
    """The fingerprints of the tables `arch` has kept results for, the current host's first."""
    kept = {path.stem.rsplit("-table", 1)[1] for path in RESULTS.glob(f"{arch}-*-table*.json")}
    return [current, *sorted(kept - {current})]


def run_once(
    loaded, runner, table_path: Path, test, strategy: str, agent: str, seed: int, args, fingerprint: str, search: bool
) -> dict | None:
    """One search and its figures, or the figures kept from an earlier run of the same settings on the table with
    `fingerprint` (only those, and None where there are none, unless `search`)."""
    key = f"{loaded.spec.arch}-{strategy}-{agent}-seed{seed}-{args.episodes}ep-ratio{args.ratio}-table{fingerprint}"
    record = RESULTS / f"{key}.json"
    if record.exists():
        return json.loads(record.read_text())
    if not search:
        return None
    layout = RunLayout(Path(args.out) / key)
    resume = layout.search_log.exists()
    config = SearchConfig(
        "cifar10",
        strategy=strategy,
        episodes=args.episodes,
        seed=seed,
        agent=PRESETS[agent],
        trust_table=True,
    )
    started = time.perf_counter()
    outcome = search_and_prune(loaded, runner, table_path, config, Budget(ratio=args.ratio), layout, resume)
    pruned = load_checkpoint(outcome.layout.pruned)
    with open(outcome.layout.search_log) as f:
        distinct = len({tuple(v for k, v in r.items() if k.startswith("keep_")) for r in csv.DictReader(f)})
    result = {
        "test": evaluate(pruned.model, pruned.spec, test),
        "val": outcome.best.accuracy,
        "distinct": distinct,
        "minutes": None if resume else (time.perf_counter() - started) / 60,
        "chosen_from": outcome.chosen_from,
        "machine": machine(),
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    write_atomic(record, json.dumps(result, indent=1) + "\n")
    return result


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--models", nargs="+", default=["resnet20", "plain20"])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--episodes", type=int, default=400)
    parser.add_argument("--ratio", type=float, default=0.5)
    parser.add_argument("--out", default="runs/bench-search")
    parser.add_argument("--kept-only", action="store_true", help="run no search: report the kept results alone")
    parser.add_argument(
        "--only",
        nargs="+",
        choices=[run_name(strategy, agent) for _, strategy, agent in RUNS],
        help="run these searches alone; the others report their kept results",
    )
    parser.add_argument("--table", type=latency_table, help="search against this latency table (default: this host's)")
    args = parser.parse_args()
    # another CPU's table is searched as it is: with no runner, nothing is timed here
    runner = None if args.table else LiteRTHostRunner()
    table_path = args.table.path if args.table else default_table_path(runner.target)
    current = (args.table.target if args.table else runner.target).fingerprint
    rows, machines, missing = [], {}, {}
    for name in args.models:
        if not zoo_checkpoint(name).exists():
            print(f"skipping {name}: no trained checkpoint committed", flush=True)
            continue
        loaded = load_model(name)
        test = load_split("cifar10", "test", loaded.spec.input_size)
        unpruned = evaluate(loaded.model, loaded.spec, test)
        for fingerprint, (label, strategy, agent) in product(kept_tables(loaded.spec.arch, current), RUNS):
            seeds = args.seeds if strategy in ("amc", "random") else args.seeds[:1]
            tests, vals, distinct, minutes, chosen = [], [], [], [], set()
            # only the table searched against (this host's, or --table) gets searches: others' missing seeds stay so
            search = (
                fingerprint == current
                and not args.kept_only
                and (not args.only or run_name(strategy, agent) in args.only)
            )
            for seed in seeds:
                result = run_once(loaded, runner, table_path, test, strategy, agent, seed, args, fingerprint, search)
                if result is None:
                    if fingerprint == current:
                        missing[label] = missing.get(label, 0) + 1
                    continue
                tests.append(result["test"])
                vals.append(result["val"])
                distinct.append(result["distinct"])
                if result["minutes"] is not None:
                    minutes.append(result["minutes"])
                chosen.add(result["chosen_from"])
                machines.setdefault(fingerprint, set()).add(result["machine"])
                print(name, label, seed, f"{result['test']:.4f}", result["chosen_from"], flush=True)
            if not tests:
                continue
            rows.append(
                [
                    name,
                    fingerprint,
                    label,
                    f"{100 * unpruned:.2f}%",
                    len(tests) if len(tests) == len(seeds) else f"{len(tests)} of {len(seeds)}",
                    mean_std(tests),
                    mean_std(vals),
                    mean_std(distinct, percent=False),
                    ", ".join(sorted(chosen)),
                    f"{statistics.mean(minutes):.1f}" if minutes else "-",
                ]
            )
    body = "\n".join(
        [
            f"Budget: {int(100 * args.ratio)}% of each unpruned model's predicted host latency (LiteRT + XNNPACK,",
            f"1 thread). {args.episodes} episodes for `amc` and `random`, one for the rules and Torch-Pruning",
            "(deterministic). Top-1 without fine-tuning, after L1 selection, least-squares reconstruction and",
            "BatchNorm re-estimation on augmented train images (the default reward). The 5 best policies of a search",
            "and the three rules are re-scored on all of `val` and the best is chosen (`chosen from` says whose it",
            "was); `test` is scored once, on the chosen policy. Mean ± standard deviation over the seeds; `distinct`",
            "counts the different policies a search evaluated; `minutes` leaves out searches that were resumed or",
            "shared their cores with other searches.",
            "",
            "A budget is a share of the unpruned model's latency as a table predicts it, so rows compare within one",
            "table (`table`: the fingerprint of the host it was measured on; searched on "
            + "; ".join(f"{fp}: {' and '.join(sorted(machines[fp]))}" for fp in sorted(machines))
            + ").",
            "",
            *(
                [
                    f"Still to run against table {current}, seeds per strategy: "
                    + ", ".join(f"{label} {count}" for label, count in missing.items())
                    + " (rows with fewer seeds than asked, or none). The same command without --kept-only or --only"
                    " runs them, keeping what is here.",
                    "",
                ]
                if missing
                else []
            ),
            table(
                [
                    "model",
                    "table",
                    "strategy",
                    "unpruned test",
                    "seeds",
                    "test top-1 (%)",
                    "val top-1 (%)",
                    "distinct",
                    "chosen from",
                    "minutes",
                ],
                rows,
            ),
        ]
    )
    print(body)
    write_section(
        f"Search under a latency budget ({', '.join(args.models)})",
        "python benchmarks/search.py "
        + " ".join(
            [
                f"--models {' '.join(args.models)}",
                f"--seeds {' '.join(map(str, args.seeds))}",
                f"--episodes {args.episodes}",
                f"--ratio {args.ratio}",
                *(["--kept-only"] if args.kept_only else []),
                *([f"--only {' '.join(args.only)}"] if args.only else []),
                *([f"--table {args.table.path}"] if args.table else []),
            ]
        ),
        body,
    )


if __name__ == "__main__":
    main()
