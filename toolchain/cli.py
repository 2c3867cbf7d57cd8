"""The `toolchain` command: parses arguments, builds each stage's config and calls one function of its API.

Every subcommand takes `--json` and then prints one JSON object as the last line of stdout; progress and
messages go to stderr. User errors are one line on stderr and exit status 2, never a traceback; an unexpected
failure is one line too, with the traceback in a crash log, and exit status 3.
"""

from __future__ import annotations

import argparse
import json
import sys
import traceback
from collections.abc import Callable
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

from . import console
from .errors import ToolchainError

MODEL_HELP = (
    "zoo name (e.g. resnet20), torchvision:NAME (e.g. torchvision:mobilenet_v2), timm:NAME (e.g. "
    "timm:mobilenetv3_large_100), package.module:factory (your own nn.Module class or function), or a checkpoint "
    "file toolchain wrote"
)
DATA_HELP = (
    "cifar10 (from $TOOLCHAIN_CIFAR10, else downloaded), an ImageFolder folder with train/ and test/ (or val/), "
    "or a .tar.gz of one"
)
USER_ERROR, CRASH = 2, 3


# --- from arguments to configs -------------------------------------------------------------------------------------


def model_source(args: argparse.Namespace, ref: str | None = None):
    """The MODEL argument and its options; a teacher (`ref`) is a plain MODEL."""
    from .models import ModelSource

    if ref is not None:
        return ModelSource(ref)
    return ModelSource(
        args.model,
        args.num_classes,
        args.input_size,
        Path(args.weights) if args.weights else None,
        args.model_args,
        args.mean,
        args.std,
    )


def json_object(value: str) -> dict[str, Any]:
    """argparse type for --model-args: a JSON object of constructor arguments."""
    try:
        parsed = json.loads(value)
    except json.JSONDecodeError as e:
        raise argparse.ArgumentTypeError(f"{value!r} is not JSON ({e.msg}): write e.g. '{{\"width\": 0.5}}'") from None
    if not isinstance(parsed, dict):
        raise argparse.ArgumentTypeError(f"{value!r} is not a JSON object: write e.g. '{{\"width\": 0.5}}'")
    return parsed


def three_numbers(value: str) -> tuple[float, float, float]:
    """argparse type for --mean and --std: three comma-separated numbers, R,G,B."""
    try:
        numbers = tuple(float(x) for x in value.split(","))
    except ValueError:
        numbers = ()
    if len(numbers) != 3:
        raise argparse.ArgumentTypeError(
            f"{value!r} is not three comma-separated numbers (R,G,B), e.g. 0.485,0.456,0.406"
        )
    return numbers  # type: ignore[return-value]


def actor_margin(value: str) -> float | str:
    """argparse type for --actor-margin: a number above 0, or `off`; the range is DDPGConfig's to check."""
    if value.lower() == "off":
        return "off"
    try:
        return float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{value!r} is not a number or `off`, e.g. 4") from None


def target_config(args: argparse.Namespace):
    from .latency.targets import TargetConfig

    return TargetConfig(
        args.device,
        args.threads,
        tuple(args.serial or ()),
        args.benchmark_binary,
        Path(args.table) if getattr(args, "table", None) else None,
        precision=getattr(args, "precision", "fp32"),
        allow_busy=args.allow_busy,
        on_cooldown=lambda hot, limit, left: console.info(
            f"phone at {hot:.1f} C, above {limit:.1f} C: waiting, at most {left:.0f} s more"
        ),
        on_busy=lambda problem, left: console.info(f"{problem}: waiting, at most {left:.0f} s more"),
    )


def progress_callback(progress, label: str) -> Callable[[int, int], None]:
    """A progress bar for work that reports (done, total); a total of 0 means there was nothing to do."""
    task = progress.add_task(label, total=None, status="")

    def update(done: int, total: int) -> None:
        if total == 0:
            progress.update(task, completed=1, total=1, status="nothing new to measure")
        else:
            progress.update(task, completed=done, total=total)

    return update


# --- subcommands ---------------------------------------------------------------------------------------------------


def cmd_zoo(args: argparse.Namespace) -> dict[str, Any]:
    from .models import describe_zoo

    rows = describe_zoo()
    if not args.json:
        from rich.table import Table

        table = Table("model", "checkpoint", "test top-1", "params", "MACs", "input", "description")
        for r in rows:
            top1 = f"{100 * r['top1_test']:.2f}%" if r["top1_test"] is not None else "-"
            table.add_row(
                r["name"],
                "yes" if r["checkpoint"] else "no",
                top1,
                f"{r['params'] / 1e6:.2f}M",
                f"{r['macs'] / 1e6:.1f}M",
                f"{r['input_size']}x{r['input_size']}",
                r["description"],
            )
        console.Console().print(table)
        print("Any torchvision classifier also works as torchvision:NAME (untrained; --num-classes, --input-size).")
    return {"models": rows}


def cmd_eval(args: argparse.Namespace) -> dict[str, Any]:
    from .evaluate import evaluate_model

    result = evaluate_model(model_source(args), args.data, args.split, args.limit, args.batch_size)
    if not args.json:
        print(f"{args.model}: top-1 {100 * result.top1:.2f}% on {result.images} {args.split} images")
    return {"top1": result.top1, "n": result.images, "split": args.split, "model": args.model}


def cmd_train(args: argparse.Namespace) -> dict[str, Any] | None:
    from . import distributed
    from .train import EpochResult, TrainConfig, train_model

    cfg = TrainConfig(
        epochs=args.epochs,
        batch_size=args.batch_size,
        lr=args.lr,
        weight_decay=args.weight_decay,
        distill=args.distill,
        seed=args.seed,
        bf16=args.bf16,
    )
    teacher = model_source(args, args.teacher) if args.teacher else None
    with console.progress_bar() as progress:
        task = progress.add_task("train", total=None, status="")

        def on_epoch(r: EpochResult) -> None:
            val = f", val top-1 {100 * r.val_top1:.2f}%" if r.val_top1 is not None else ""
            if distributed.is_main():
                progress.console.print(
                    f"epoch {r.epoch}/{cfg.epochs}: loss {r.loss:.3f}, train top-1 {100 * r.train_top1:.2f}%{val}"
                )

        result = train_model(
            model_source(args),
            args.data,
            cfg,
            Path(args.out),
            args.limit,
            teacher,
            console.info,
            lambda step, total, loss: progress.update(task, completed=step, total=total, status=f"loss {loss:.3f}"),
            on_epoch,
        )
    if result is None:  # a torchrun worker: rank 0 reports
        return None
    if not args.json:
        print(f"wrote {result.checkpoint}: test top-1 {100 * result.top1_test:.2f}%")
    return {
        "checkpoint": str(result.checkpoint),
        "top1_test": result.top1_test,
        "top1_val": result.top1_val,
        "epochs": result.epochs,
        "processes": result.processes,
    }


def cmd_profile(args: argparse.Namespace) -> dict[str, Any]:
    from .profiling import ProfileConfig, Validation, profile_model

    config = ProfileConfig(
        args.channel_step,
        Validation(args.samples, args.seed, Path(args.plot) if args.plot else None) if args.validate else None,
        args.trust_table,
    )
    source, target = model_source(args), target_config(args)
    with console.progress_bar() as progress:
        reports = profile_model(source, target, config, lambda label: progress_callback(progress, label), console.info)
    rows = []
    for r in reports:
        row = {
            "table": str(r.table),
            "serial": r.serial,
            "shapes": r.shapes,
            "measured": r.measured,
            "entries": r.entries,
            "runs": r.runs,
            "packed": r.packed,
            "target": r.target.as_dict(),
            **({"fidelity": r.fidelity} if r.fidelity else {}),
        }
        rows.append(row)
        if not args.json:
            print(
                f"{r.serial + ': ' if r.serial else ''}{r.table}: {r.measured} new of {r.shapes} shapes measured "
                f"in {r.runs} benchmark runs, {r.packed} of them in packs ({r.entries} entries)"
            )
            if r.fidelity:
                f = r.fidelity
                print(
                    f"fidelity over {f['samples']} variants: MAPE {100 * f['mape']:.1f}%, "
                    f"{100 * f['within_5pct']:.0f}% within "
                    f"±5%, {100 * f['within_10pct']:.0f}% within ±10%; as shares of the unpruned model timed "
                    f"alongside (at {f['unpruned_ratio']:.2f}x its prediction): MAPE {100 * f['share_mape']:.1f}%, "
                    f"{100 * f['share_within_10pct']:.0f}% within ±10%; plot {f['plot']}"
                )
    return rows[0] if len(rows) == 1 else {"tables": rows}


def cmd_import_logs(args: argparse.Namespace) -> dict[str, Any]:
    from .latency.importer import import_log_files

    r = import_log_files(
        args.device,
        args.logs,
        args.model_config,
        Path(args.table) if args.table else None,
        args.threads or 1,
        args.runtime_version,
        args.delegate,
    )
    if not args.json:
        print(f"{r.table}: {r.imported} op entries from {r.logs} logs of {r.model} ({r.entries} entries in the table)")
    return {
        "table": str(r.table),
        "imported": r.imported,
        "logs": r.logs,
        "entries": r.entries,
        "target": r.target.as_dict(),
    }


def cmd_predict(args: argparse.Namespace) -> dict[str, Any]:
    from .profiling import predict_latency

    p = predict_latency(model_source(args), target_config(args), args.policy, args.trust_table, console.info)
    if not args.json:
        print(
            f"{args.model}{' with ' + args.policy if args.policy else ''}: {p.latency_ms:.3f} ms predicted on "
            f"{p.target.describe()}"
        )
    return {"latency_ms": p.latency_ms, "table": str(p.table), "calibrated": p.calibrated}


def cmd_prune(args: argparse.Namespace) -> dict[str, Any]:
    from .prune import prune_model

    if not args.no_reconstruct and not args.data:
        raise ToolchainError(
            "least-squares reconstruction needs training images: pass --data DATA, or --no-reconstruct"
        )
    r = prune_model(
        model_source(args),
        args.policy,
        Path(args.out),
        None if args.no_reconstruct else args.data,
        args.calibration_images,
        args.channel_multiple,
        args.min_channels,
        console.info,
    )
    for warning in r.warnings:
        console.info(f"warning: {warning}")
    if not args.json:
        print(
            f"wrote {r.checkpoint}: {r.params / 1e6:.3f}M params ({100 * r.params / r.unpruned_params:.0f}% of "
            "unpruned), "
            f"{r.macs / 1e6:.1f}M MACs ({100 * r.macs / r.unpruned_macs:.0f}%)"
        )
    return {
        "checkpoint": str(r.checkpoint),
        "keep": list(r.policy.keep),
        "params": r.params,
        "macs": r.macs,
        "unpruned_params": r.unpruned_params,
        "unpruned_macs": r.unpruned_macs,
    }


def pipeline_config(args: argparse.Namespace):
    from .compress import Budget, PipelineConfig, SearchConfig
    from .search.ddpg import PRESETS
    from .search.env import EnvConfig
    from .train import TrainConfig

    budget = None if args.stages else Budget(ms=args.latency_ms, ratio=args.latency_ratio)
    search = SearchConfig(
        data=args.data,
        strategy=args.strategy,
        episodes=args.episodes,
        seed=args.seed,
        env=EnvConfig(protocol=args.protocol, lbound=args.lbound, rbound=args.rbound, multiple=args.channel_multiple),
        agent=replace(
            PRESETS[args.agent],
            **{
                k: v
                for k, v in (
                    ("warmup_episodes", args.warmup_episodes),
                    ("sigma", args.sigma),
                    ("sigma_decay", args.sigma_decay),
                    ("sigma_min", args.sigma_min),
                )
                if v is not None
            },
            **(
                {}
                if args.actor_margin is None
                else {"actor_margin": None if args.actor_margin == "off" else args.actor_margin}
            ),
        ),
        reward=args.reward,
        bn_images=args.bn_images,
        bn_augment=not args.bn_plain,
        trust_table=args.trust_table,
        reward_images=args.reward_images,
        calibration_images=args.calibration_images,
        finalists=args.finalists,
    )
    finetune = TrainConfig(
        epochs=args.finetune_epochs, lr=args.finetune_lr, warmup_epochs=0.0, distill=args.distill, seed=args.seed
    )
    return PipelineConfig(
        search=search,
        budget=budget,
        stages=tuple(args.stages or ()),
        finetune=finetune,
        precision=args.precision,
        limit=args.limit,
        enforce_measured=args.enforce_measured,
        measure=not args.no_measure,
    )


def cmd_compress(args: argparse.Namespace) -> dict[str, Any] | None:
    from . import distributed
    from .compress import Hooks, compress_model
    from .search.env import Episode

    config = pipeline_config(args)  # before the progress display, so that a bad setting is the only line
    source = model_source(args)
    out = Path(args.out) if args.out else Path("runs") / f"{source.name}-{args.strategy}"
    with console.progress_bar() as progress:
        profiling = progress_callback(progress, "profile")
        searching = progress.add_task("search", total=config.search.episodes, status="", visible=False)
        tuning = progress.add_task("fine-tune", total=None, status="", visible=False)

        def on_episode(i: int, episode: Episode, best: Episode) -> None:
            progress.update(
                searching,
                completed=i,
                visible=True,
                status=(
                    f"reward {episode.reward:+.3f} | best top-1 {100 * best.accuracy:.2f}% at {best.latency_ms:.3f} ms"
                ),
            )

        def on_stage(index: int, stages: int) -> None:  # each stage searches and fine-tunes again
            progress.reset(searching, visible=False)
            progress.reset(tuning, visible=False)

        def on_message(message: str) -> None:
            if distributed.is_main():
                progress.console.print(message)

        def on_train_step(step: int, total: int, loss: float) -> None:
            progress.update(tuning, completed=step, total=total, visible=True, status=f"loss {loss:.3f}")

        result = compress_model(
            source,
            target_config(args),
            config,
            out,
            args.resume,
            Hooks(on_message, on_stage, profiling, on_episode, on_train_step),
        )
    if result is None:  # a torchrun worker other than rank 0: it fine-tuned its shard, rank 0 reports
        return None
    summary = {**result.summary(), "strategy": args.strategy}
    if not args.json:
        final, exported = result.final, result.exported
        c = console.Console(soft_wrap=True)  # one line per figure, also when stdout is a file
        c.print(
            f"test top-1: unpruned {100 * result.unpruned_top1:.2f}% -> pruned {100 * final.top1_pruned:.2f}% -> "
            f"fine-tuned {100 * final.top1_finetuned:.2f}% -> exported {100 * exported.parity.top1_exported:.2f}%"
        )
        verdict = (
            "[green]within budget[/]"
            if result.within_budget
            else "[bold red]OVER BUDGET: rerun with --enforce-measured[/]"
        )
        measured = (
            f"{result.measured.median_ms:.3f} ms measured"
            if result.measured is not None
            else "not measured (--no-measure)"
        )
        c.print(
            f"latency on {result.target}: {measured}, {final.search.best.latency_ms:.3f} ms "
            f"predicted, budget {result.budget_ms:.3f} ms: {verdict} ({result.speedup:.2f}x faster than unpruned)"
        )
        print(f"model: {exported.path} (+ {Path(exported.sidecar).name}, {Path(exported.labels).name})")
        print(f"report: {result.layout.report}")
    return summary


def cmd_export(args: argparse.Namespace) -> dict[str, Any]:
    from .export import export_model

    if not args.data:
        raise ToolchainError("export checks the file against PyTorch on real images: pass --data DATA")
    result = export_model(
        model_source(args),
        args.data,
        Path(args.out),
        args.format,
        args.precision,
        args.check_images,
        args.calibration_images,
    )
    p = result.parity
    if not args.json:
        print(
            f"wrote {result.path} ({result.size_bytes / 1e6:.2f} MB, {args.format} {args.precision}) with "
            f"{result.sidecar} and "
            f"{result.labels}; parity on {p.images} test images: top-1 agreement {100 * p.top1_agreement:.2f}%, "
            f"max |logit diff| {p.max_abs_diff:.2g}, top-1 {100 * p.top1_exported:.2f}% (PyTorch "
            f"{100 * p.top1_pytorch:.2f}%)"
        )
    return asdict(result)


def cmd_bench(args: argparse.Namespace) -> dict[str, Any]:
    from .latency.targets import bench

    r = bench(Path(args.file), target_config(args), args.runs, args.repeats)
    t = r.timing
    if not args.json:
        print(
            f"{r.file.name} on {r.target.describe()}: median {t.median_ms:.3f} ms (p10 {t.p10_ms:.3f}, p90 "
            f"{t.p90_ms:.3f}) "
            f"over {t.runs} runs, fastest of {r.repeats} sessions"
        )
    return {
        "file": str(r.file),
        "median_ms": t.median_ms,
        "p10_ms": t.p10_ms,
        "p90_ms": t.p90_ms,
        "runs": t.runs,
        "repeats": r.repeats,
        "target": r.target.as_dict(),
    }


def cmd_devices(args: argparse.Namespace) -> dict[str, Any]:
    from .latency.android import list_devices

    rows = list_devices(args.serial or ())
    if not args.json:
        if not rows:
            print("no Android device reachable: plug in a phone with USB debugging on, or pass --serial HOST:PORT")
        for r in rows:
            if "error" in r:
                print(f"{r['serial']}: {r['error']}")
            else:
                hottest = max(r["temperatures_c"].values(), default=float("nan"))
                b = r["benchmark_model"]
                binary = (
                    "no benchmark_model yet"
                    if b is None
                    else (
                        f"benchmark_model {b['version'] or 'own build'} ({b['dialect'] or 'unknown tool'}, "
                        f"{'verified' if b['verified'] else 'unverified'})"
                    )
                )
                print(
                    f"{r['serial']}: {r['model']} ({r['abi']}, Android {r['android']}, {r['cores']} cores, "
                    f"profile {r['profile']}), hottest zone {hottest:.1f} C, {binary}"
                )
    return {"devices": rows}


# --- the parser ----------------------------------------------------------------------------------------------------


class _Parser(argparse.ArgumentParser):
    """argparse, with its errors as one line that says where the usage is, instead of the whole usage first."""

    def error(self, message: str):
        self.exit(USER_ERROR, f"error: {self.prog}: {message} (see `{self.prog} --help`)\n")


def stage_fractions(value: str) -> list[float]:
    try:
        return [float(x) for x in value.split(",")]  # their range and order: PipelineConfig, before any work
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{value!r} is not a comma-separated list of fractions, e.g. 0.5,0.35,0.25"
        ) from None


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="toolchain", description=__doc__.splitlines()[0] if __doc__ else None)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND", parser_class=_Parser)

    def add(name: str, help: str, fn: Callable) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help, description=help)
        p.add_argument("--json", action="store_true", help="print one JSON object as the last line of stdout")
        p.set_defaults(fn=fn)
        return p

    def model_args(p: argparse.ArgumentParser) -> None:
        p.add_argument("--model", required=True, help=MODEL_HELP)
        p.add_argument(
            "--weights",
            help="a state_dict file for the architecture MODEL names (torch.save(model.state_dict()),"
            " wrappers such as {'state_dict': ...} and DataParallel's module. prefix are fine; or .safetensors)",
        )
        p.add_argument(
            "--model-args",
            type=json_object,
            default={},
            metavar="JSON",
            help="constructor arguments of the architecture, e.g. '{\"width_mult\": 0.5}'",
        )
        p.add_argument(
            "--num-classes",
            type=int,
            help="classifier outputs of a new model (default: the weights', else the architecture's)",
        )
        p.add_argument(
            "--input-size",
            type=int,
            help="input image side (default: the architecture's: zoo 32, torchvision 224, timm its pretrained config)",
        )
        p.add_argument(
            "--mean",
            type=three_numbers,
            metavar="R,G,B",
            help="input normalisation mean in [0, 1] units "
            "(default: the architecture's, e.g. ImageNet's 0.485,0.456,0.406)",
        )
        p.add_argument(
            "--std", type=three_numbers, metavar="R,G,B", help="input normalisation std (default: the architecture's)"
        )

    p = add("train", "train a model (or continue training a checkpoint) and write a checkpoint", cmd_train)
    model_args(p)
    p.add_argument("--data", required=True, help=DATA_HELP)
    p.add_argument("--epochs", type=int, default=30)
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--lr", type=float, default=0.1, help="peak learning rate (after a 1-epoch warm-up, cosine decay)")
    p.add_argument("--weight-decay", type=float, default=5e-4)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--teacher", help="model to distill from (e.g. the unpruned model of a pruned checkpoint)")
    p.add_argument(
        "--distill", type=float, default=0.0, help="weight of the distillation loss against --teacher (0: none)"
    )
    p.add_argument(
        "--bf16",
        action="store_true",
        help="forward passes in bfloat16 autocast: 1.6x faster for resnet20 on CPUs with AVX-512 BF16 (see "
        "BENCHMARKS.md); weights stay fp32",
    )
    p.add_argument("--limit", type=int, help="use only a fixed N images of each split (quick runs)")
    p.add_argument(
        "--out",
        required=True,
        help="checkpoint to write (.pt); a killed run with the same --out resumes. "
        "Under torchrun --nproc_per_node=K, trains data-parallel",
    )

    p = add("eval", "top-1 accuracy of a model on a data split", cmd_eval)
    model_args(p)
    p.add_argument("--data", required=True, help=DATA_HELP)
    p.add_argument("--split", default="test", choices=["test", "val", "train"])
    p.add_argument(
        "--limit", type=int, help="evaluate only a fixed random N images of the split (the same N every time)"
    )
    p.add_argument(
        "--batch-size",
        type=int,
        help="images per forward pass (default: 32 at 32 px, fewer for larger inputs but at least 6)",
    )

    add("zoo", "list the model zoo with checkpoints, accuracy, parameters and MACs", cmd_zoo)

    def target_args(p: argparse.ArgumentParser, table: bool = True) -> None:
        p.add_argument(
            "--device",
            default="host",
            help="host (LiteRT + XNNPACK on this CPU), host-ort (ONNX Runtime), "
            "or a phone over ADB: a profile from android_bench/devices (pixel, pixel1) or android (derived)",
        )
        p.add_argument("--threads", type=int, help="threads (host: 1; phones: the profile's default)")
        p.add_argument(
            "--serial",
            action="append",
            help="phone serial or HOST:PORT (default: $ANDROID_SERIAL or the only one attached); "
            "profile takes it several times to measure on several phones in parallel, one table each",
        )
        p.add_argument(
            "--benchmark-binary",
            help="benchmark_model for the phone's ABI (default: $TOOLCHAIN_BENCHMARK_MODEL, "
            "else the build android_bench/benchmark_model.toml pins, downloaded once into $TOOLCHAIN_CACHE and "
            "checked; a mirror: $TOOLCHAIN_BENCHMARK_MODEL_URL; your own pins: $TOOLCHAIN_BENCHMARK_MODEL_MANIFEST)",
        )
        p.add_argument(
            "--trust-table",
            action="store_true",
            help="skip timing a few of the latency table's entries and the unpruned model on the target before "
            "using the table (by default a table off by more than 10%% is rescaled or measured again)",
        )
        p.add_argument(
            "--allow-busy",
            action="store_true",
            help="time on the host even while other processes keep its cores busy (default: wait for quiet, then "
            "refuse; $TOOLCHAIN_ALLOW_BUSY=1 does the same)",
        )
        if table:
            p.add_argument("--table", help="latency table JSON (default: latency_tables/<target>.json)")

    p = add("profile", "measure per-layer latency on a target and store it in a latency table", cmd_profile)
    model_args(p)
    target_args(p)
    p.add_argument(
        "--precision",
        choices=["fp32", "fp16", "int8"],
        default="fp32",
        help="precision of the models timed: each has its own table (int8 runs 3-4x faster than fp32)",
    )
    p.add_argument("--channel-step", type=int, default=8, help="channel grid spacing for pruned widths")
    p.add_argument(
        "--validate",
        action="store_true",
        help="also measure random pruned variants end to end and report prediction error",
    )
    p.add_argument("--samples", type=int, default=20, help="variants for --validate")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--plot", help="where --validate writes its predicted-vs-measured PNG")

    p = add(
        "import-logs",
        "add per-op profiles of whole-model benchmark_model runs on a phone to its latency table",
        cmd_import_logs,
    )
    p.add_argument("logs", nargs="+", metavar="LOG", help="benchmark_model outputs with --enable_op_profiling")
    p.add_argument(
        "--model-config", required=True, help="JSON naming the signature of every op in the logs, in run order"
    )
    p.add_argument("--device", required=True, help="the phone's device name, e.g. pixel1")
    p.add_argument("--threads", type=int, help="threads the logged runs used (default 1)")
    p.add_argument("--runtime-version", default="unknown", help="runtime version of the logs' benchmark_model")
    p.add_argument("--delegate", default="none", help="delegate the logged runs used (none, xnnpack, ...)")
    p.add_argument("--table", help="latency table JSON (default: latency_tables/<target>.json)")

    p = add("prune", "apply a pruning policy and write the physically smaller checkpoint", cmd_prune)
    model_args(p)
    p.add_argument("--policy", required=True, help="pruning policy JSON, or uniform:RATIO (every group keeps RATIO)")
    p.add_argument("--data", help=DATA_HELP + "; training images for least-squares reconstruction")
    p.add_argument("--no-reconstruct", action="store_true", help="keep the selected channels' weights as they are")
    p.add_argument("--calibration-images", type=int, default=2000, help="training images sampled for reconstruction")
    p.add_argument("--channel-multiple", type=int, default=8, help="round kept channels of uniform:R to this multiple")
    p.add_argument(
        "--min-channels", type=int, default=8, help="never keep fewer channels than this (or the layer's width)"
    )
    p.add_argument("--out", required=True, help="pruned checkpoint to write (.pt)")

    p = add("export", "export a checkpoint to .tflite (fp32/fp16/int8) or .onnx, verified against PyTorch", cmd_export)
    model_args(p)
    p.add_argument("--format", choices=["tflite", "onnx"], default="tflite")
    p.add_argument("--precision", choices=["fp32", "fp16", "int8"], default="fp32")
    p.add_argument("--data", help=DATA_HELP + "; test images for the parity check, train images for int8 calibration")
    p.add_argument("--check-images", type=int, default=500, help="test images the parity check runs on")
    p.add_argument("--calibration-images", type=int, default=500, help="train images for int8 calibration")
    p.add_argument(
        "--out", required=True, help="model file to write (.tflite or .onnx); the sidecar JSON and labels go beside it"
    )

    p = add("bench", "measure a .tflite file's end-to-end latency on a target", cmd_bench)
    p.add_argument("file", help="model file (.tflite; .onnx with --device host-ort)")
    target_args(p, table=False)
    p.add_argument("--runs", type=int, default=200, help="timed runs per session (after warm-up)")
    p.add_argument("--repeats", type=int, default=3, help="fresh sessions; the fastest median is reported")

    p = add(
        "devices",
        "list reachable Android devices with model, ABI, Android version, cores and temperatures",
        cmd_devices,
    )
    p.add_argument("--serial", action="append", help="also try this serial or HOST:PORT")

    from .compress import REWARDS
    from .search.ddpg import PRESETS
    from .search.strategies import STRATEGIES

    p = add(
        "compress",
        "AMC search under a latency budget, prune, fine-tune, export and measure on the target",
        cmd_compress,
    )
    model_args(p)
    target_args(p)
    p.add_argument("--data", required=True, help=DATA_HELP)
    budget = p.add_mutually_exclusive_group(required=True)
    budget.add_argument("--latency-ms", type=float, help="latency budget in milliseconds on the target")
    budget.add_argument("--latency-ratio", type=float, help="latency budget as a fraction of the unpruned model's")
    budget.add_argument(
        "--stages",
        type=stage_fractions,
        metavar="R1,R2,...",
        help="iterative schedule: search + fine-tune per stage, each budget a fraction of the unpruned "
        "latency, e.g. 0.5,0.35,0.25",
    )
    p.add_argument(
        "--protocol",
        choices=["resource", "accuracy"],
        default="resource",
        help="resource: never exceed the budget (action wall); accuracy: reward -error*log(latency)",
    )
    p.add_argument("--strategy", choices=STRATEGIES, default="amc")
    p.add_argument("--episodes", type=int, default=400)
    p.add_argument(
        "--agent",
        choices=PRESETS,
        default="default",
        help="DDPG settings: the default is the AMC paper's (noise decayed x0.95 from episode 100, one update per "
        "step, 100-episode memory) with noise never below 0.1; paper, exactly the paper's (noise decays to 0); "
        "many-updates keeps exploring longer (x0.99), learns 8x more per episode from a memory as long as the "
        "search and keeps the actor out of its sigmoid's flat ends",
    )
    p.add_argument("--warmup-episodes", type=int, help="random-action episodes before DDPG learns (preset: 100)")
    p.add_argument("--sigma-min", type=float, help="exploration noise never decays below this (preset: 0.1; paper 0)")
    p.add_argument(
        "--actor-margin",
        type=actor_margin,
        help="the actor's output before its sigmoid is pulled back within +-this, where the critic can still move "
        "it (many-updates preset: 4; `off`: no pull, as in the default and paper presets)",
    )
    p.add_argument(
        "--reward",
        choices=REWARDS,
        default="reconstruct+bn",
        help="how a policy is pruned before its accuracy is measured: L1 selection alone, with "
        "least-squares reconstruction, with BatchNorm statistics re-estimated, or both",
    )
    p.add_argument("--bn-images", type=int, default=500, help="train images BatchNorm statistics are re-estimated on")
    p.add_argument(
        "--bn-plain",
        action="store_true",
        help="re-estimate BatchNorm statistics on train images as they are, not augmented as in training",
    )
    p.add_argument(
        "--sigma", type=float, help="DDPG exploration noise (std of the truncated normal) after warm-up (preset: 0.5)"
    )
    p.add_argument(
        "--sigma-decay",
        type=float,
        help="factor applied to --sigma after every DDPG episode (preset: 0.95; many-updates 0.99)",
    )
    p.add_argument("--lbound", type=float, default=0.2, help="smallest keep ratio per group")
    p.add_argument("--rbound", type=float, default=1.0, help="largest keep ratio per group")
    p.add_argument("--channel-multiple", type=int, default=8)
    p.add_argument("--reward-images", type=int, default=1000, help="val images the reward is measured on")
    p.add_argument("--finalists", type=int, default=5, help="best policies re-scored on the whole val split at the end")
    p.add_argument("--calibration-images", type=int, default=2000, help="train images sampled for reconstruction")
    p.add_argument("--finetune-epochs", type=int, default=0, help="fine-tune epochs after each search (0: none)")
    p.add_argument("--finetune-lr", type=float, default=0.01, help="fine-tuning peak learning rate (cosine decay)")
    p.add_argument(
        "--distill",
        type=float,
        default=0.0,
        help="weight of distillation from the unpruned model while fine-tuning (0: none)",
    )
    p.add_argument(
        "--precision", choices=["fp32", "fp16", "int8"], default="fp32", help="precision of the exported model file"
    )
    p.add_argument(
        "--no-measure",
        action="store_true",
        help="search against --table alone, e.g. a phone's that is not attached: the file is exported but not "
        "measured, and the report says so",
    )
    p.add_argument(
        "--enforce-measured",
        action="store_true",
        help="if the measured latency exceeds the budget, tighten it by measured/predicted and search again",
    )
    p.add_argument(
        "--limit", type=int, help="use at most N train and test images for fine-tuning and test figures (quick runs)"
    )
    p.add_argument("--out", help="output folder (default runs/MODEL-STRATEGY)")
    p.add_argument("--resume", action="store_true", help="continue a killed search in --out")
    p.add_argument("--seed", type=int, default=0)

    p = add("predict", "predict a model's (or pruned variant's) latency from a latency table", cmd_predict)
    model_args(p)
    target_args(p)
    p.add_argument(
        "--precision",
        choices=["fp32", "fp16", "int8"],
        default="fp32",
        help="precision of the models timed: each has its own table (int8 runs 3-4x faster than fp32)",
    )
    p.add_argument("--policy", help="pruning policy JSON, or uniform:RATIO")

    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        result = args.fn(args)
    except ToolchainError as e:
        return _fail(str(e))
    except KeyboardInterrupt:
        again = "the same command with --resume" if args.command == "compress" else "the same command"
        print(f"interrupted: rerun {again} to continue where it stopped", file=sys.stderr)
        return 130
    except OSError as e:  # a path the user gave (or the cache) that cannot be read or written
        where = f" {e.filename}" if e.filename else ""
        return _fail(f"cannot use{where}: {e.strerror or e}: choose another path, or free space or permissions there")
    except Exception as e:  # the tool's own bug: one line here, the traceback in a file for a report
        log = _crash_log(args.command)
        print(
            f"error: {args.command} failed unexpectedly ({type(e).__name__}: "
            f"{str(e).splitlines()[0][:200] if str(e) else ''}); "
            f"details in {log}",
            file=sys.stderr,
        )
        return CRASH
    if args.json and result is not None:  # None: a torchrun worker whose rank 0 reports
        print(json.dumps(result, default=str))
    return 0


def _fail(message: str) -> int:
    print(f"error: {' '.join(message.split())}", file=sys.stderr)  # one line, whatever a message carried
    return USER_ERROR


def _crash_log(command: str) -> Path:
    import tempfile
    import time

    path = Path(tempfile.gettempdir()) / f"toolchain-crash-{time.strftime('%Y%m%d-%H%M%S')}-{command}.log"
    path.write_text(f"toolchain {' '.join(sys.argv[1:])}\n\n{traceback.format_exc()}")
    return path


if __name__ == "__main__":
    sys.exit(main())
