"""What the searches of benchmarks/search.py found, and how well each picked from it: run after that script, on the
run folders it leaves under --out.

    .venv/bin/python benchmarks/search_pool.py --models resnet20 plain20

For every search of the current host's table, or of `--table` (AMC with each agent preset, random search), its
`--pool` best distinct policies by reward (top-1 on the 1,000 `val` reward images) are scored on all of `val` and on
`test`, with the policy the search returned, each pruned as that search's reward pruned it (its recorded settings).
Per strategy: the returned policy's test top-1 against the best test top-1 in its own pool (what a perfect pick
among those policies would have got); the rank correlation (Spearman) of the reward, and of all-`val` top-1 (what
the finalists are re-scored on), with test top-1 over the pooled policies; and per model the best test top-1 of any
pooled policy: the most these searches' findings could give. Writes the section "Search pools (MODELS)" of
BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _report import latency_table, spearman, table, write_section  # noqa: E402

from toolchain.compress import SearchConfig, reward_pruner  # noqa: E402
from toolchain.data import load_split  # noqa: E402
from toolchain.evaluate import evaluate  # noqa: E402
from toolchain.graph import analyze  # noqa: E402
from toolchain.latency.runners import LiteRTHostRunner  # noqa: E402
from toolchain.latency.table import default_table_path  # noqa: E402
from toolchain.layout import RunLayout  # noqa: E402
from toolchain.models import load_model  # noqa: E402
from toolchain.search.ddpg import PRESETS  # noqa: E402
from toolchain.search.run import logged_keep, read_log, top_policies  # noqa: E402

REWARD_SETTINGS = ("reward", "calibration_images", "bn_images", "bn_augment")


def searched_with(settings: dict) -> SearchConfig:
    """The reward settings a search recorded, which its policies are pruned by again here. A search recorded before
    `bn_augment` existed re-estimated on plain images."""
    return SearchConfig(
        settings["data"],
        reward=settings["reward"],
        calibration_images=settings["calibration_images"],
        bn_images=settings["bn_images"],
        bn_augment=settings.get("bn_augment", False),
    )


def label(settings: dict) -> str:
    """`amc (PRESET)` or `random`, from a run's recorded settings, followed by the reward settings it searched with
    where they are not the defaults: searches with other rewards are rows of their own."""
    name = settings["strategy"]
    if name == "amc":
        agent = {k.split(".", 1)[1]: v for k, v in settings.items() if k.startswith("agent.")}
        name += f" ({next((preset for preset, config in PRESETS.items() if vars(config) == agent), 'custom')})"
    searched, default = searched_with(settings), SearchConfig(settings["data"])
    other = [
        f"{key} {getattr(searched, key)}" for key in REWARD_SETTINGS if getattr(searched, key) != getattr(default, key)
    ]
    return ", ".join([name, *other])


def searches(
    out: Path, arch: str, table_name: str, episodes: int, ratio: float
) -> dict[str, list[tuple[int, RunLayout]]]:
    """The finished searches of `arch` against the table `table_name`, by label, with their seeds."""
    found: dict[str, list[tuple[int, RunLayout]]] = {}
    for root in sorted(out.glob(f"{arch}-*")):
        layout = RunLayout(root)
        if not (layout.config.exists() and layout.best_policy.exists()):
            continue
        settings = json.loads(layout.config.read_text())
        if (
            settings["strategy"] in ("amc", "random")
            and Path(settings["table"]).name == table_name
            and settings["episodes"] == episodes
            and settings["budget.ratio"] == ratio
        ):
            found.setdefault(label(settings), []).append((settings["seed"], layout))
    return found


def pool(layout: RunLayout, groups: int, size: int) -> list[tuple[tuple[int, ...], float]]:
    """The `size` best distinct policies of a search by reward, with their reward."""
    rewards = {logged_keep(row, groups): float(row["accuracy"]) for row in read_log(layout.root)}
    return [(keep, rewards[keep]) for keep in top_policies(layout.root, groups, size)]


def survey(name: str, found: dict[str, list[tuple[int, RunLayout]]], pool_size: int) -> tuple[list[list], str]:
    """One model's rows: each strategy's searches' returned policies against their pools; and the best pooled
    policy."""
    rows = []
    loaded = load_model(name)
    spec = loaded.spec
    graph = analyze(loaded.model, spec.input_size)
    val, test = load_split("cifar10", "val", spec.input_size), load_split("cifar10", "test", spec.input_size)
    scored: dict[tuple[SearchConfig, tuple[int, ...]], tuple[float, float]] = {}  # -> (val, test) top-1

    def score(keep: tuple[int, ...], searched: SearchConfig, prune) -> tuple[float, float]:
        key = (searched, keep)
        if key not in scored:
            pruned = prune(keep)
            scored[key] = (evaluate(pruned, spec, val), evaluate(pruned, spec, test))
        return scored[key]

    best = (0.0, "")
    for strategy, layouts in found.items():
        returned, ceiling, rewards, vals, tests = [], [], [], [], []
        for seed, layout in layouts:
            searched = searched_with(json.loads(layout.config.read_text()))
            prune = reward_pruner(loaded, graph, searched, layout.features)  # the run's own feature sample
            chosen = tuple(g["keep"] for g in json.loads(layout.best_policy.read_text())["groups"])
            returned.append(score(chosen, searched, prune)[1])
            own = []
            for keep, reward in pool(layout, len(graph.channels), pool_size):
                v, t = score(keep, searched, prune)
                rewards.append(reward)
                vals.append(v)
                tests.append(t)
                own.append(t)
                best = max(best, (t, f"{strategy}, seed {seed}"))
            ceiling.append(max(own + [returned[-1]]))  # the returned policy may be a rule, outside the pool
            print(name, strategy, layout.root.name, f"returned {returned[-1]:.4f} best {ceiling[-1]:.4f}", flush=True)
        rows.append(
            [
                name,
                strategy,
                len(layouts),
                len(tests),
                f"{100 * statistics.mean(returned):.2f}",
                f"{100 * statistics.mean(ceiling):.2f}",
                f"{spearman(rewards, tests):.2f}",
                f"{spearman(vals, tests):.2f}",
            ]
        )
    return rows, f"{name} {100 * best[0]:.2f}% ({best[1]})"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--models", nargs="+", default=["resnet20", "plain20"])
    parser.add_argument("--pool", type=int, default=8, help="best distinct policies scored per search")
    parser.add_argument("--episodes", type=int, default=400)
    parser.add_argument("--ratio", type=float, default=0.5)
    parser.add_argument("--out", default="runs/bench-search", help="where benchmarks/search.py left its runs")
    parser.add_argument(
        "--table", type=latency_table, help="the searches against this latency table (default: this host's)"
    )
    args = parser.parse_args()
    table_name = (args.table.path if args.table else default_table_path(LiteRTHostRunner().target)).name
    rows, ceilings = [], []
    for name in args.models:
        found = searches(Path(args.out), name, table_name, args.episodes, args.ratio)
        if not found:
            print(f"skipping {name}: no finished searches against {table_name} under {args.out}", flush=True)
            continue
        model_rows, ceiling = survey(name, found, args.pool)
        rows += model_rows
        ceilings.append(ceiling)
    if not rows:
        sys.exit(f"no finished searches against {table_name} under {args.out}: run benchmarks/search.py first")
    body = "\n".join(
        [
            f"The searches of `benchmarks/search.py` against the table {table_name}, {args.episodes} "
            f"episodes, {int(100 * args.ratio)}% of the predicted latency. Per search, its {args.pool} best "
            "distinct policies by reward (top-1 on the 1,000 `val` reward images) scored on all of `val` and on",
            "`test`, no fine-tuning, each pruned as its search's reward prunes (its recorded settings). `returned`:",
            "mean test top-1 of the policy each search returned (its finalists and the rules re-scored on all of",
            "`val`); `best in pool`: mean over the searches of the best test top-1 among that search's pooled",
            "policies and the one it returned, what a perfect pick would have returned. Spearman: rank correlation",
            "with test top-1 over all the strategy's pooled policies.",
            "",
            table(
                [
                    "model",
                    "strategy",
                    "searches",
                    "policies",
                    "returned: test top-1 (%)",
                    "best in pool: test top-1 (%)",
                    "Spearman, reward",
                    "Spearman, all of val",
                ],
                rows,
            ),
            "",
            "Best test top-1 of any pooled policy: " + "; ".join(ceilings) + ".",
        ]
    )
    print(body)
    write_section(
        f"Search pools ({', '.join(args.models)})",
        " ".join(
            ["python benchmarks/search_pool.py --models", *args.models, f"--pool {args.pool}"]
            + ([f"--table {args.table.path}"] if args.table else [])
        ),
        body,
    )


if __name__ == "__main__":
    main()
