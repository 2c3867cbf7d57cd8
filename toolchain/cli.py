"""The `toolchain` command: a thin layer that parses arguments and calls the typed API of each stage.

Every subcommand takes `--json` and then prints one JSON object as the last line of stdout; progress and
messages go to stderr. User errors are one line on stderr and exit status 2, never a traceback.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from dataclasses import asdict
from pathlib import Path
from typing import Any, Callable

from . import console
from .errors import ToolchainError

MODEL_HELP = "zoo name (e.g. resnet20), torchvision:NAME (e.g. torchvision:mobilenet_v2), or a toolchain checkpoint file"
DATA_HELP = "cifar10 (from $TOOLCHAIN_CIFAR10, else downloaded), an ImageFolder folder with train/ and test/ (or val/), or a .tar.gz of one"


# --- subcommands ---------------------------------------------------------------------------------------------------


def cmd_zoo(args: argparse.Namespace) -> dict[str, Any]:
    from .models import count_macs, count_params, list_models, load_model, zoo_checkpoint, zoo_description

    rows = []
    for name in list_models():
        loaded = load_model(name)
        rows.append({
            "name": name,
            "checkpoint": zoo_checkpoint(name).is_file(),
            "top1_test": loaded.metrics.get("top1_test"),
            "params": count_params(loaded.model),
            "macs": count_macs(loaded.model, loaded.spec.input_size),
            "input_size": loaded.spec.input_size,
            "description": zoo_description(name),
        })
    if not args.json:
        from rich.table import Table

        table = Table("model", "checkpoint", "test top-1", "params", "MACs", "input", "description")
        for r in rows:
            top1 = f"{100 * r['top1_test']:.2f}%" if r["top1_test"] is not None else "-"
            table.add_row(r["name"], "yes" if r["checkpoint"] else "no", top1, f"{r['params'] / 1e6:.2f}M",
                          f"{r['macs'] / 1e6:.1f}M", f"{r['input_size']}x{r['input_size']}", r["description"])
        console.Console().print(table)
        print("Any torchvision classifier also works as torchvision:NAME (untrained; --num-classes, --input-size).")
    return {"models": rows}


def cmd_eval(args: argparse.Namespace) -> dict[str, Any]:
    from .data import load_split
    from .models import load_model
    from .train import evaluate

    loaded = load_model(args.model, args.num_classes, args.input_size)
    data = load_split(args.data, args.split, loaded.spec.input_size, args.limit)
    check_classes(loaded.spec.classes, data.classes, args.model)
    top1 = evaluate(loaded.model, loaded.spec, data, args.batch_size)
    if not args.json:
        print(f"{args.model}: top-1 {100 * top1:.2f}% on {len(data)} {args.split} images")
    return {"top1": top1, "n": len(data), "split": args.split, "model": args.model}


def cmd_train(args: argparse.Namespace) -> dict[str, Any] | None:
    from . import distributed
    from .data import load_split
    from .models import load_model, save_checkpoint
    from .train import EpochResult, TrainConfig, evaluate, train

    distributed.init_from_env()
    out = Path(args.out)
    loaded = load_model(args.model, args.num_classes, args.input_size, pretrained=False)
    teacher = None
    if args.distill:
        if not args.teacher:
            raise ToolchainError("--distill needs --teacher MODEL, e.g. the unpruned model a pruned checkpoint came from")
        teacher = load_model(args.teacher).model
    train_set = load_split(args.data, "train", loaded.spec.input_size, args.limit)
    val_set = load_split(args.data, "val", loaded.spec.input_size, args.limit)
    test_set = load_split(args.data, "test", loaded.spec.input_size, args.limit)
    spec = loaded.spec
    check_classes(spec.classes, train_set.classes, args.model)
    spec = spec.with_classes(train_set.classes)  # record the data's class names, not placeholders
    cfg = TrainConfig(epochs=args.epochs, batch_size=args.batch_size, lr=args.lr, weight_decay=args.weight_decay,
                      distill=args.distill, seed=args.seed)
    resume = out.with_name(f".{out.name}.resume")
    world = distributed.world_size()
    console.info(f"training {args.model} on {len(train_set)} images for {cfg.epochs} epochs (val {len(val_set)}, test {len(test_set)})"
                 + (f", data-parallel over {world} processes" if world > 1 else ""))
    with console.progress_bar() as progress:
        task = progress.add_task("train", total=None, status="")

        def on_step(step: int, total: int, loss: float) -> None:
            progress.update(task, completed=step, total=total, status=f"loss {loss:.3f}")

        def on_epoch(r: EpochResult) -> None:
            val = f", val top-1 {100 * r.val_top1:.2f}%" if r.val_top1 is not None else ""
            if distributed.is_main():
                progress.console.print(f"epoch {r.epoch}/{cfg.epochs}: loss {r.loss:.3f}, train top-1 {100 * r.train_top1:.2f}%{val}")

        history = train(loaded.model, spec, train_set, cfg, val_set, resume, on_step, on_epoch, teacher)
    if not distributed.is_main():
        return None
    top1_test = evaluate(loaded.model, spec, test_set)
    metrics = {"top1_test": top1_test, "top1_val": history[-1].val_top1 if history else None, "test_images": len(test_set),
               "train_config": asdict(cfg), "data": args.data, "processes": world}
    save_checkpoint(out, loaded.model, spec, metrics)
    resume.unlink(missing_ok=True)
    if not args.json:
        print(f"wrote {out}: test top-1 {100 * top1_test:.2f}% on {len(test_set)} images")
    return {"checkpoint": str(out), "top1_test": top1_test, "top1_val": metrics["top1_val"], "epochs": cfg.epochs,
            "processes": world}


def open_runner(args: argparse.Namespace, runs: int | None = None):
    """The runner for --device: host (LiteRT + XNNPACK), host-ort (ONNX Runtime), or a phone profile over ADB.
    `runs` fixes the number of timed runs per model (default: each runner's adaptive choice)."""
    from .latency.runners import LiteRTHostRunner, OnnxRuntimeHostRunner

    host_timing = {"runs": runs, "min_runs": runs, "budget_s": 0.0} if runs else {}
    if args.device == "host":
        return LiteRTHostRunner(threads=args.threads or 1, **host_timing)
    if args.device == "host-ort":
        return OnnxRuntimeHostRunner(threads=args.threads or 1, **host_timing)
    from android_bench.adb import DeviceError
    from android_bench.devices import load_profile

    from .latency.android import AndroidRunner

    if args.device != "android":
        try:
            load_profile(args.device)
        except DeviceError as e:
            if args.device.endswith(".toml"):  # a profile file of the user's: say what is wrong in it
                raise ToolchainError(str(e)) from None
            raise ToolchainError(f"unknown device {args.device!r}: use host, host-ort, a phone profile (pixel, pixel1) "
                                 "or android (profile derived from the phone)") from None
    timing = {"num_runs": runs} if runs else {}
    return AndroidRunner(args.device, args.serial or (), args.threads, args.benchmark_binary,
                         on_cooldown=lambda hot, limit, left: console.info(
                             f"phone at {hot:.1f} C, above {limit:.1f} C: waiting, at most {left:.0f} s more"), **timing)


def cmd_import_logs(args: argparse.Namespace) -> dict[str, Any]:
    from .latency.importer import import_logs, load_model_config, read_logs
    from .latency.runners import Target
    from .latency.table import LatencyTable, default_table_path

    if not args.model_config:
        raise ToolchainError("--import-log needs --model-config CONFIG.json naming the signature of every logged op, in order")
    if args.device.startswith("host"):
        raise ToolchainError("--import-log is for phone logs: pass the phone's device name, e.g. --device pixel1")
    target = Target(args.device, "benchmark_model", args.runtime_version, "fp32", args.threads or 1, args.delegate, args.device)
    name, signatures = load_model_config(args.model_config)
    logs = read_logs(args.import_log)
    path = Path(args.table) if args.table else default_table_path(target)
    table = LatencyTable.open(path, target)
    added = import_logs(table, signatures, logs, name)
    table.save()
    if not args.json:
        print(f"{path}: {added} op entries from {len(args.import_log)} logs of {name} ({len(table)} entries in the table)")
    return {"table": str(path), "imported": added, "logs": len(args.import_log), "entries": len(table), "target": target.as_dict()}


def cmd_profile(args: argparse.Namespace) -> dict[str, Any]:
    if args.import_log:
        return cmd_import_logs(args)
    if not args.model:
        raise ToolchainError("profile needs --model MODEL (or --import-log LOG... --model-config CONFIG.json)")
    from .export import to_model_file
    from .graph import analyze
    from .surgery import pruned_copy
    from .latency.profiler import profile
    from .latency.table import LatencyTable, default_table_path, file_safe
    from .models import load_model

    loaded = load_model(args.model, args.num_classes, args.input_size)
    graph = analyze(loaded.model, loaded.spec.input_size)
    serials = list(dict.fromkeys(args.serial or []))
    if len(serials) > 1 and args.device in ("host", "host-ort"):
        raise ToolchainError("--serial picks phones: drop it for --device host, or use a phone profile such as --device pixel")
    if len(serials) > 1 and args.validate:
        raise ToolchainError("--validate measures one phone: pass a single --serial")

    def build(model_format: str):
        return lambda keep: to_model_file(pruned_copy(loaded.model, graph, keep), loaded.spec.input_size, model_format)

    def profile_one(serial: str | None, progress, task) -> tuple[Any, Path, dict[str, Any]]:
        runner = open_runner(argparse.Namespace(**{**vars(args), "serial": [serial] if serial else args.serial}))
        path = Path(args.table) if args.table else default_table_path(runner.target)
        if serial and len(serials) > 1:  # one table per phone: same-model phones still differ (binning, cooling)
            path = path.with_name(f"{path.stem}-{file_safe(serial)}{path.suffix}")
        table = LatencyTable.open(path, runner.target)
        progress.update(task, description=f"profile {serial or runner.target.device}")
        result = profile(graph, runner, table, build(runner.model_format), args.channel_step,
                         on_progress=lambda done, total: progress.update(task, completed=done, total=total, status=f"{len(table)} entries"))
        return runner, path, {"table": str(path), "serial": serial, "shapes": result.wanted, "measured": result.measured,
                              "entries": len(table), "target": runner.target.as_dict()}

    console.info(f"profiling {args.model} ({len(graph.groups)} channel groups, {len(graph.ops('onnx' if args.device == 'host-ort' else 'tflite'))} ops) on "
                 + (f"{len(serials)} phones in parallel" if len(serials) > 1 else args.device))
    with console.progress_bar() as progress:
        if len(serials) > 1:
            from concurrent.futures import ThreadPoolExecutor

            tasks = [progress.add_task(f"profile {s}", total=None, status="") for s in serials]
            with ThreadPoolExecutor(len(serials)) as pool:  # phones measure in parallel; each writes its own table
                futures = [pool.submit(profile_one, s, progress, t) for s, t in zip(serials, tasks)]
            failed = [f"{s}: {f.exception()}" for s, f in zip(serials, futures) if f.exception()]
            if failed:
                raise ToolchainError(f"profiling failed on {'; '.join(failed)} (the other phones' tables are complete; rerun to resume)")
            done = [f.result() for f in futures]
            for _, _, r in done:
                if not args.json:
                    print(f"{r['serial']}: {r['table']}: {r['measured']} new of {r['shapes']} shapes measured ({r['entries']} entries)")
            return {"tables": [r for _, _, r in done]}
        runner, path, out = profile_one(None, progress, progress.add_task("profile", total=None, status=""))
    if not args.json:
        print(f"{path}: {out['measured']} new of {out['shapes']} shapes measured ({out['entries']} entries in the table)")
    if args.validate:
        out["fidelity"] = validate_table(args, graph, runner, path, build(runner.model_format))
    return out


def validate_table(args: argparse.Namespace, graph, runner, path: Path, build) -> dict[str, Any]:
    from .latency.fidelity import measure_fidelity, plot_fidelity
    from .latency.predictor import LatencyPredictor
    from .latency.table import LatencyTable

    predictor = LatencyPredictor(graph, LatencyTable.open(path, runner.target))
    with console.progress_bar() as progress:
        task = progress.add_task("validate", total=args.samples, status="")
        report = measure_fidelity(graph, predictor, runner, build, args.samples, args.seed,
                                  lambda done, total: progress.update(task, completed=done))
    plot = Path(args.plot) if args.plot else path.with_name(f"fidelity-{Path(args.model).stem}.png")
    plot_fidelity(report, f"{args.model} on {runner.target.device}", plot)
    s = report.summary()
    if not args.json:
        print(f"fidelity over {s['samples']} variants: MAPE {100 * s['mape']:.1f}%, {100 * s['within_5pct']:.0f}% within ±5%, "
              f"{100 * s['within_10pct']:.0f}% within ±10%; plot {plot}")
    return {**s, "plot": str(plot)}


def cmd_predict(args: argparse.Namespace) -> dict[str, Any]:
    from .graph import analyze
    from .latency.predictor import LatencyPredictor
    from .latency.table import LatencyTable, default_table_path
    from .models import load_model
    from .policy import load_policy

    loaded = load_model(args.model, args.num_classes, args.input_size)
    graph = analyze(loaded.model, loaded.spec.input_size)
    if args.table:  # the table names its own target: no need to reach the device (a phone may not be attached)
        table = LatencyTable.open(args.table, None)
    else:
        target = open_runner(args).target
        path = default_table_path(target)
        if not path.exists():
            raise ToolchainError(f"no latency table at {path}: run `toolchain profile --device {args.device} --model {args.model}` first")
        table = LatencyTable.open(path, target)
    keep = None
    if args.policy:
        keep = list(load_policy(args.policy, graph, loaded.spec.arch).keep)
    predictor = LatencyPredictor(graph, table)
    latency = predictor.predict(keep)
    if not args.json:
        print(f"{args.model}{' with ' + args.policy if args.policy else ''}: {latency:.3f} ms predicted on {table.target.describe()}")
    return {"latency_ms": latency, "table": str(table.path), "calibrated": predictor.calibrated}


def cmd_prune(args: argparse.Namespace) -> dict[str, Any]:
    from dataclasses import replace

    from .data import load_split, normalize
    from .graph import analyze
    from .models import count_macs, count_params, load_model, save_checkpoint
    from .policy import load_policy
    from .prune import apply_policy, collect_features

    loaded = load_model(args.model, args.num_classes, args.input_size)
    if loaded.spec.policy is not None:
        raise ToolchainError(f"{args.model} is already pruned: prune the dense model it came from with a smaller policy")
    graph = analyze(loaded.model, loaded.spec.input_size)
    for warning in graph.warnings:
        console.info(f"warning: {warning}")
    policy = load_policy(args.policy, graph, loaded.spec.arch, args.channel_multiple, args.min_channels)
    features = None
    if not args.no_reconstruct:
        if not args.data:
            raise ToolchainError("least-squares reconstruction needs training images: pass --data DATA, or --no-reconstruct")
        images = load_split(args.data, "train", loaded.spec.input_size, args.calibration_images)
        check_classes(loaded.spec.classes, images.classes, args.model)
        console.info(f"sampling features of {len(images)} training images for least-squares reconstruction")
        batches = (normalize(x, loaded.spec.mean, loaded.spec.std) for x, _ in images.batches(250))
        features = collect_features(loaded.model, graph, batches)
    pruned = apply_policy(loaded.model, graph, policy, features)
    spec = replace(loaded.spec, policy=policy.to_dict())
    size = loaded.spec.input_size
    stats = {"params": count_params(pruned), "macs": count_macs(pruned, size),
             "dense_params": count_params(loaded.model), "dense_macs": count_macs(loaded.model, size)}
    save_checkpoint(args.out, pruned, spec, {"pruned_from": args.model, "reconstructed": features is not None, **stats})
    if not args.json:
        print(f"wrote {args.out}: {stats['params'] / 1e6:.3f}M params ({100 * stats['params'] / stats['dense_params']:.0f}% of dense), "
              f"{stats['macs'] / 1e6:.1f}M MACs ({100 * stats['macs'] / stats['dense_macs']:.0f}%)")
    return {"checkpoint": str(args.out), "keep": list(policy.keep), **stats}


def cmd_compress(args: argparse.Namespace) -> dict[str, Any] | None:
    from . import distributed
    from .compress import Hooks, PipelineConfig, SearchConfig, check_config, compress
    from .latency.table import default_table_path
    from .models import load_model
    from .search.env import Episode
    from .train import TrainConfig

    distributed.init_from_env()
    loaded = load_model(args.model, args.num_classes, args.input_size)
    runner = open_runner(args)
    table = Path(args.table) if args.table else default_table_path(runner.target)
    out = Path(args.out) if args.out else Path("runs") / f"{Path(args.model).stem}-{args.strategy}"
    search = SearchConfig(args.data, args.latency_ms, args.latency_ratio, args.protocol, args.strategy, args.episodes,
                          args.seed, args.lbound, args.rbound, args.channel_multiple, args.reward_images,
                          args.calibration_images, args.warmup_episodes, args.finalists, args.sigma, args.sigma_decay)
    config = PipelineConfig(search, TrainConfig(epochs=args.finetune_epochs, lr=args.finetune_lr, warmup_epochs=0.0,
                                                distill=args.distill, seed=args.seed),
                            tuple(args.stages or ()), args.precision, args.limit, enforce_measured=args.enforce_measured)
    check_config(config, runner.model_format)  # before the progress display, so an error is the only line
    with console.progress_bar() as progress:
        profiling = progress.add_task("profile", total=None, status="")
        searching = progress.add_task("search", total=search.episodes, status="", visible=False)
        tuning = progress.add_task("fine-tune", total=None, status="", visible=False)

        def on_profile(done: int, total: int) -> None:
            if total == 0:  # the table already has every shape
                progress.update(profiling, completed=1, total=1, status="nothing new to measure")
            else:
                progress.update(profiling, completed=done, total=total)

        def on_episode(i: int, episode: Episode, best: Episode) -> None:
            progress.update(searching, completed=i, visible=True, status=(
                f"reward {episode.reward:+.3f} | best top-1 {100 * best.accuracy:.2f}% at {best.latency_ms:.3f} ms"))

        def on_stage(message: str) -> None:
            if distributed.is_main():
                progress.console.print(message)
            if message.startswith("stage "):  # a new stage searches and fine-tunes again
                progress.reset(searching, visible=False)
                progress.reset(tuning, visible=False)

        def on_train_step(step: int, total: int, loss: float) -> None:
            progress.update(tuning, completed=step, total=total, visible=True, status=f"loss {loss:.3f}")

        hooks = Hooks(on_stage, on_profile, on_episode, on_train_step)
        result = compress(loaded, runner, table, config, out, args.resume, hooks)
    if result is None:  # a torchrun worker other than rank 0: it fine-tuned its shard, rank 0 reports
        return None
    final, exported = result.final, result.exported
    assert final.search is not None
    best = final.search.best
    summary = {"out": str(out), "report": str(out / "report.md"), "model_file": exported.path, "sidecar": exported.sidecar,
               "checkpoint": str(final.checkpoint), "policy": str(final.search.checkpoint.parent / "best_policy.json"),
               "budget_ms": result.budget_ms, "dense_predicted_ms": result.dense_predicted_ms, "predicted_ms": best.latency_ms,
               "measured_ms": result.measured.median_ms, "dense_measured_ms": result.dense_measured.median_ms,
               "within_budget": result.within_budget, "speedup": result.dense_measured.median_ms / result.measured.median_ms,
               "top1_val": best.accuracy, "top1_test_dense": result.dense_top1, "top1_test_pruned": final.top1_pruned,
               "top1_test_finetuned": final.top1_finetuned, "top1_test_exported": exported.parity.top1_exported,
               "size_bytes": exported.size_bytes, "keep": list(best.keep), "strategy": args.strategy,
               "stages": len(result.stages), "attempts": result.attempts}
    if not args.json:
        c = console.Console(soft_wrap=True)  # one line per figure, also when stdout is a file
        c.print(f"test top-1: unpruned {100 * result.dense_top1:.2f}% -> pruned {100 * final.top1_pruned:.2f}% -> "
                f"fine-tuned {100 * final.top1_finetuned:.2f}% -> exported {100 * exported.parity.top1_exported:.2f}%")
        verdict = "[green]within budget[/]" if result.within_budget else "[bold red]OVER BUDGET: rerun with --enforce-measured[/]"
        c.print(f"latency on {result.target}: {result.measured.median_ms:.3f} ms measured, {best.latency_ms:.3f} ms predicted, "
                f"budget {result.budget_ms:.3f} ms: {verdict} ({summary['speedup']:.2f}x faster than unpruned)")
        print(f"model: {exported.path} (+ {Path(exported.sidecar).name}, {Path(exported.labels).name})")
        print(f"report: {out / 'report.md'}")
    return summary


def cmd_export(args: argparse.Namespace) -> dict[str, Any]:
    from .data import load_split
    from .export import export
    from .models import load_model

    loaded = load_model(args.model, args.num_classes, args.input_size)
    if not args.data:
        raise ToolchainError("export checks the file against PyTorch on real images: pass --data DATA")
    check = load_split(args.data, "test", loaded.spec.input_size, args.check_images)
    check_classes(loaded.spec.classes, check.classes, args.model)
    calibration = load_split(args.data, "train", loaded.spec.input_size, args.calibration_images) if args.precision == "int8" else None
    result = export(loaded.model, loaded.spec, Path(args.out), args.format, args.precision, check, calibration)
    p = result.parity
    if not args.json:
        print(f"wrote {result.path} ({result.size_bytes / 1e6:.2f} MB, {args.format} {args.precision}) with {result.sidecar} and "
              f"{result.labels}; parity on {p.images} test images: top-1 agreement {100 * p.top1_agreement:.2f}%, "
              f"max |logit diff| {p.max_abs_diff:.2g}, top-1 {100 * p.top1_exported:.2f}% (PyTorch {100 * p.top1_pytorch:.2f}%)")
    return asdict(result)


def cmd_bench(args: argparse.Namespace) -> dict[str, Any]:
    path = Path(args.file)
    if not path.is_file():
        raise ToolchainError(f"{path} does not exist: pass a .tflite (or, with --device host-ort, .onnx) file")
    runner = open_runner(args, args.runs)
    if path.suffix != f".{runner.model_format}":
        raise ToolchainError(f"{runner.target.device} times {runner.model_format} files, not {path.name}: export with --format {runner.model_format}")
    timings = runner.time_models([path.read_bytes()] * args.repeats)
    best = min(timings, key=lambda t: t.median_ms)
    result = {"file": str(path), "median_ms": best.median_ms, "p10_ms": best.p10_ms, "p90_ms": best.p90_ms, "runs": best.runs,
              "repeats": args.repeats, "target": runner.target.as_dict()}
    if not args.json:
        print(f"{path.name} on {runner.target.describe()}: median {best.median_ms:.3f} ms (p10 {best.p10_ms:.3f}, "
              f"p90 {best.p90_ms:.3f}) over {best.runs} runs, fastest of {args.repeats} sessions")
    return result


def cmd_devices(args: argparse.Namespace) -> dict[str, Any]:
    from android_bench.adb import DeviceError, attached_usb_serials, connect
    from android_bench.runner import AndroidBenchmark, detect_profile, read_device_info

    serials = list(dict.fromkeys([*(args.serial or []), *filter(None, [os.environ.get("ANDROID_SERIAL")]), *attached_usb_serials()]))
    rows = []
    for serial in serials:
        try:
            device = connect(serial)
            info = read_device_info(device)
            profile = detect_profile(device)
            temps = AndroidBenchmark(device, profile).read_temperatures()
            rows.append({"serial": serial, "model": info.model, "abi": info.abi, "android": info.android,
                         "cores": int(device.shell("nproc").strip() or 0), "profile": profile.name, "temperatures_c": temps})
            device.close()
        except DeviceError as e:
            rows.append({"serial": serial, "error": str(e)})
    if not args.json:
        if not rows:
            print("no Android device reachable: plug in a phone with USB debugging on, or pass --serial HOST:PORT")
        for r in rows:
            if "error" in r:
                print(f"{r['serial']}: {r['error']}")
            else:
                hottest = max(r["temperatures_c"].values(), default=float("nan"))
                print(f"{r['serial']}: {r['model']} ({r['abi']}, Android {r['android']}, {r['cores']} cores, "
                      f"profile {r['profile']}), hottest zone {hottest:.1f} C")
    return {"devices": rows}


def check_classes(model_classes: tuple[str, ...], data_classes: tuple[str, ...], model: str) -> None:
    if len(model_classes) != len(data_classes):
        raise ToolchainError(f"model {model} predicts {len(model_classes)} classes but the data has {len(data_classes)}: "
                             f"use data with the model's classes, or train a new model with --num-classes {len(data_classes)}")


def whole_number(minimum: int) -> Callable[[str], int]:
    """argparse type for counts, steps and multiples: 0 images, runs or channels would fail only deep inside."""
    def parse(value: str) -> int:
        try:
            n = int(value)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{value!r} is not a whole number") from None
        if n < minimum:
            raise argparse.ArgumentTypeError(f"{value} is too small: use {minimum} or more")
        return n
    return parse


def in_range(low: float, high: float, example: str, include_high: bool = False) -> Callable[[str], float]:
    """argparse type for a number in (low, high), or (low, high] with include_high."""
    def parse(value: str) -> float:
        try:
            x = float(value)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{value!r} is not a number") from None
        if not (low < x <= high if include_high else low < x < high):
            bound = f"above {low:g}" if high == float("inf") else f"{low:g} < x {'<=' if include_high else '<'} {high:g}"
            raise argparse.ArgumentTypeError(f"{value} is out of range: use a number {bound}, e.g. {example}")
        return x
    return parse


def distill_weight(value: str) -> float:
    weight = float(value)
    if not 0 <= weight <= 1:
        raise argparse.ArgumentTypeError(f"{value} is out of range: use 0 (labels only) to 1 (teacher only), e.g. 0.5")
    return weight


def stage_fractions(value: str) -> list[float]:
    try:
        return [float(x) for x in value.split(",")]  # their range and order: compress.check_config, before any work
    except ValueError:
        raise argparse.ArgumentTypeError(f"{value!r} is not a comma-separated list of fractions, e.g. 0.5,0.35,0.25") from None


POSITIVE, NON_NEGATIVE = whole_number(1), whole_number(0)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="toolchain", description=__doc__.splitlines()[0] if __doc__ else None)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def add(name: str, help: str, fn: Callable) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help, description=help)
        p.add_argument("--json", action="store_true", help="print one JSON object as the last line of stdout")
        p.set_defaults(fn=fn)
        return p

    def model_args(p: argparse.ArgumentParser, required: bool = True) -> None:
        p.add_argument("--model", required=required, help=MODEL_HELP)
        p.add_argument("--num-classes", type=POSITIVE, help="classifier outputs for a new zoo/torchvision model")
        p.add_argument("--input-size", type=POSITIVE, help="input image side for a new model (zoo 32, torchvision 224)")

    p = add("train", "train a model (or continue training a checkpoint) and write a checkpoint", cmd_train)
    model_args(p)
    p.add_argument("--data", required=True, help=DATA_HELP)
    p.add_argument("--epochs", type=POSITIVE, default=30)
    p.add_argument("--batch-size", type=POSITIVE, default=128)
    p.add_argument("--lr", type=in_range(0, float("inf"), "0.1"), default=0.1, help="peak learning rate (after a 1-epoch warm-up, cosine decay)")
    p.add_argument("--weight-decay", type=float, default=5e-4)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--teacher", help="model to distill from (e.g. the unpruned model of a pruned checkpoint)")
    p.add_argument("--distill", type=distill_weight, default=0.0, help="weight of the distillation loss against --teacher (0: none)")
    p.add_argument("--limit", type=POSITIVE, help="use only a fixed N images of each split (quick runs)")
    p.add_argument("--out", required=True, help="checkpoint to write (.pt); a killed run with the same --out resumes. "
                   "Under torchrun --nproc_per_node=K, trains data-parallel")

    p = add("eval", "top-1 accuracy of a model on a data split", cmd_eval)
    model_args(p)
    p.add_argument("--data", required=True, help=DATA_HELP)
    p.add_argument("--split", default="test", choices=["test", "val", "train"])
    p.add_argument("--limit", type=POSITIVE, help="evaluate only a fixed random N images of the split (the same N every time)")
    p.add_argument("--batch-size", type=POSITIVE, default=500)

    add("zoo", "list the model zoo with checkpoints, accuracy, parameters and MACs", cmd_zoo)

    def target_args(p: argparse.ArgumentParser, table: bool = True) -> None:
        p.add_argument("--device", default="host", help="host (LiteRT + XNNPACK on this CPU), host-ort (ONNX Runtime), "
                       "or a phone over ADB: a profile from android_bench/devices (pixel, pixel1) or android (derived)")
        p.add_argument("--threads", type=POSITIVE, help="threads (host: 1; phones: the profile's default)")
        p.add_argument("--serial", action="append", help="phone serial or HOST:PORT (default: $ANDROID_SERIAL or the only one attached); "
                       "profile takes it several times to measure on several phones in parallel, one table each")
        p.add_argument("--benchmark-binary", help=f"benchmark_model for the phone's ABI (default: ${'TOOLCHAIN_BENCHMARK_MODEL'})")
        if table:
            p.add_argument("--table", help="latency table JSON (default: latency_tables/<target>.json)")

    p = add("profile", "measure per-layer latency on a target and store it in a latency table", cmd_profile)
    model_args(p, required=False)
    target_args(p)
    p.add_argument("--channel-step", type=POSITIVE, default=8, help="channel grid spacing for pruned widths")
    p.add_argument("--validate", action="store_true", help="also measure random pruned variants end to end and report prediction error")
    p.add_argument("--samples", type=POSITIVE, default=20, help="variants for --validate")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--plot", help="where --validate writes its predicted-vs-measured PNG")
    p.add_argument("--import-log", nargs="+", metavar="LOG", help="benchmark_model logs with per-op profiles to import instead of measuring")
    p.add_argument("--model-config", help="JSON naming the signature of every op in the logs, in run order")
    p.add_argument("--runtime-version", default="unknown", help="runtime version of the imported logs' benchmark_model")
    p.add_argument("--delegate", default="none", help="delegate the imported logs ran with (none, xnnpack, ...)")

    p = add("prune", "apply a pruning policy and write the physically smaller checkpoint", cmd_prune)
    model_args(p)
    p.add_argument("--policy", required=True, help="pruning policy JSON, or uniform:RATIO (every group keeps RATIO)")
    p.add_argument("--data", help=DATA_HELP + "; training images for least-squares reconstruction")
    p.add_argument("--no-reconstruct", action="store_true", help="keep the selected channels' weights as they are")
    p.add_argument("--calibration-images", type=POSITIVE, default=2000, help="training images sampled for reconstruction")
    p.add_argument("--channel-multiple", type=POSITIVE, default=8, help="round kept channels of uniform:R to this multiple")
    p.add_argument("--min-channels", type=POSITIVE, default=8, help="never keep fewer channels than this (or the layer's width)")
    p.add_argument("--out", required=True, help="pruned checkpoint to write (.pt)")

    p = add("export", "export a checkpoint to .tflite (fp32/fp16/int8) or .onnx, verified against PyTorch", cmd_export)
    model_args(p)
    p.add_argument("--format", choices=["tflite", "onnx"], default="tflite")
    p.add_argument("--precision", choices=["fp32", "fp16", "int8"], default="fp32")
    p.add_argument("--data", help=DATA_HELP + "; test images for the parity check, train images for int8 calibration")
    p.add_argument("--check-images", type=POSITIVE, default=500, help="test images the parity check runs on")
    p.add_argument("--calibration-images", type=POSITIVE, default=500, help="train images for int8 calibration")
    p.add_argument("--out", required=True, help="model file to write (.tflite or .onnx); the sidecar JSON and labels go beside it")

    p = add("bench", "measure a .tflite file's end-to-end latency on a target", cmd_bench)
    p.add_argument("file", help="model file (.tflite; .onnx with --device host-ort)")
    target_args(p, table=False)
    p.add_argument("--runs", type=POSITIVE, default=200, help="timed runs per session (after warm-up)")
    p.add_argument("--repeats", type=POSITIVE, default=3, help="fresh sessions; the fastest median is reported")

    p = add("devices", "list reachable Android devices with model, ABI, Android version, cores and temperatures", cmd_devices)
    p.add_argument("--serial", action="append", help="also try this serial or HOST:PORT")

    from .search.strategies import STRATEGIES

    p = add("compress", "AMC search under a latency budget, prune, fine-tune, export and measure on the target", cmd_compress)
    model_args(p)
    target_args(p)
    p.add_argument("--data", required=True, help=DATA_HELP)
    budget = p.add_mutually_exclusive_group(required=True)
    budget.add_argument("--latency-ms", type=in_range(0, float("inf"), "40"), help="latency budget in milliseconds on the target")
    budget.add_argument("--latency-ratio", type=in_range(0, 1, "0.5"), help="latency budget as a fraction of the unpruned model's")
    budget.add_argument("--stages", type=stage_fractions, metavar="R1,R2,...",
                        help="iterative schedule: search + fine-tune per stage, each budget a fraction of the unpruned "
                             "latency, e.g. 0.5,0.35,0.25")
    p.add_argument("--protocol", choices=["resource", "accuracy"], default="resource",
                   help="resource: never exceed the budget (action wall); accuracy: reward -error*log(latency)")
    p.add_argument("--strategy", choices=STRATEGIES, default="amc")
    p.add_argument("--episodes", type=POSITIVE, default=400)
    p.add_argument("--warmup-episodes", type=NON_NEGATIVE, default=100, help="random-action episodes before DDPG learns")
    p.add_argument("--sigma", type=float, default=0.5, help="DDPG exploration noise (std of the truncated normal) after warm-up")
    p.add_argument("--sigma-decay", type=in_range(0, 1, "0.95", include_high=True), default=0.95, help="factor applied to --sigma after every DDPG episode")
    p.add_argument("--lbound", type=in_range(0, 1, "0.2", include_high=True), default=0.2, help="smallest keep ratio per group")
    p.add_argument("--rbound", type=in_range(0, 1, "1.0", include_high=True), default=1.0, help="largest keep ratio per group")
    p.add_argument("--channel-multiple", type=POSITIVE, default=8)
    p.add_argument("--reward-images", type=POSITIVE, default=1000, help="val images the reward is measured on")
    p.add_argument("--finalists", type=POSITIVE, default=5, help="best policies re-scored on the whole val split at the end")
    p.add_argument("--calibration-images", type=POSITIVE, default=2000, help="train images sampled for reconstruction")
    p.add_argument("--finetune-epochs", type=NON_NEGATIVE, default=0, help="fine-tune epochs after each search (0: none)")
    p.add_argument("--finetune-lr", type=in_range(0, float("inf"), "0.01"), default=0.01, help="fine-tuning peak learning rate (cosine decay)")
    p.add_argument("--distill", type=distill_weight, default=0.0, help="weight of distillation from the unpruned model while fine-tuning (0: none)")
    p.add_argument("--precision", choices=["fp32", "fp16", "int8"], default="fp32", help="precision of the exported model file")
    p.add_argument("--enforce-measured", action="store_true",
                   help="if the measured latency exceeds the budget, tighten it by measured/predicted and search again")
    p.add_argument("--limit", type=POSITIVE, help="use at most N train and test images for fine-tuning and test figures (quick runs)")
    p.add_argument("--out", help="output folder (default runs/MODEL-STRATEGY)")
    p.add_argument("--resume", action="store_true", help="continue a killed search in --out")
    p.add_argument("--seed", type=int, default=0)

    p = add("predict", "predict a model's (or pruned variant's) latency from a latency table", cmd_predict)
    model_args(p)
    target_args(p)
    p.add_argument("--policy", help="pruning policy JSON, or uniform:RATIO")

    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        result = args.fn(args)
    except ToolchainError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        again = "the same command with --resume" if args.command == "compress" else "the same command"
        print(f"interrupted: rerun {again} to continue where it stopped", file=sys.stderr)
        return 130
    if args.json and result is not None:  # None: a torchrun worker whose rank 0 reports
        print(json.dumps(result, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
