"""What every experiment shares: the run configuration (a dataclass whose fields are the run's
full description and, through their metadata, its command-line options), the rules that keep a
run folder one run's record (refuse a different run on ``--resume``, refuse to replace a run
without ``--overwrite``), training with a status line, checkpoint reading (old layouts
included) and the reproduce / analyse pipeline. An experiment module subclasses
:class:`Experiment` and sets ``EXPERIMENT``; :mod:`vaeiso_ext.experiments` finds it."""

from __future__ import annotations

import argparse
import math
import os
import sys
import time
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field, fields, replace
from typing import Any, ClassVar

import torch

from ..train import (CheckpointError, TrainConfig, TrainingDiverged, check_world, checkpoint_steps,
                     launch_info, load_checkpoint, steps_per_epoch, train)

CHECKPOINT = "checkpoint.pt"
# What a run writes into its folder (figures/ holds the rest): any of them marks a run there.
RUN_FILES = (CHECKPOINT, "results.json", "report.md", "curve.json")
LAYOUT = 2  # meta["layout"] of checkpoints written since the experiments moved here


class UsageError(Exception):
    """A user error: the CLI prints ``error: <message>`` and exits with code 2."""


# ------------------------------------------------------------------ option types


def _number(kind, s: str):
    try:
        return kind(s)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected {'an integer' if kind is int else 'a number'}, "
                                         f"got {s!r}") from None


def positive_float(s: str) -> float:
    v = _number(float, s)
    if not (math.isfinite(v) and v > 0):
        raise argparse.ArgumentTypeError(f"expected a finite number > 0, got {s!r}")
    return v


def int_at_least(low: int):
    def parse(s: str) -> int:
        v = _number(int, s)
        if v < low:
            raise argparse.ArgumentTypeError(f"expected an integer >= {low}, got {s!r}")
        return v

    parse.__name__ = f"int>={low}"
    return parse


positive_int = int_at_least(1)
nonneg_int = int_at_least(0)


def opt(default, help: str, *, flag: str | None = None, type=None, choices=None, metavar=None,
        analysis_only: bool = False):
    """A config field that is also a command-line option (``--field-name`` unless ``flag``).
    ``analysis_only``: the field changes the analysis, not the training (e.g. how many held-out
    samples are analysed), so a different value never blocks ``--resume`` or the re-analysis of
    a finished run; the value asked for is used."""
    return field(default=default, metadata={"help": help, "flag": flag, "type": type,
                                            "choices": choices, "metavar": metavar,
                                            "analysis_only": analysis_only})


def option_name(f) -> str:
    """The command-line flag of a config field (``--lambda`` for ``lam``); a field that is not an
    option keeps its name."""
    if "help" not in f.metadata:
        return f.name
    return f.metadata.get("flag") or "--" + f.name.replace("_", "-")


def plural(n, unit: str) -> str:
    """``1 epoch``, ``2 epochs``, ``1.50 epochs``, ``1,200 Adam steps``: a count and its unit."""
    if isinstance(n, int) or float(n).is_integer():
        return f"{int(n):,} {unit}" + ("" if int(n) == 1 else "s")
    return f"{n:.2f} {unit}s"


# ------------------------------------------------------------------ configs


@dataclass
class Config:
    """Base of the experiment configs. Every field is part of the run's description (stored in
    its checkpoint, compared on ``--resume``, printed in its report); fields made with
    :func:`opt` are command-line options too. ``LENGTH`` names the field that may grow on
    ``--resume`` (``epochs`` or ``iterations``)."""

    LENGTH: ClassVar[str] = "epochs"
    # Fields added after runs were recorded: the value a stored description lacking the field
    # means (how those runs were trained), where that differs from today's default.
    LEGACY: ClassVar[dict] = {}

    def validate(self) -> "Config":
        """Cross-field checks; raise :class:`UsageError`."""
        return self

    def description(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "Config":
        names = {f.name for f in fields(cls)}
        unknown = {k: v for k, v in d.items() if k not in names and v is not None}
        if unknown:
            raise CheckpointError(f"the run description holds fields this version does not know: "
                                  f"{sorted(unknown)} (written by a newer vaeiso_ext?)")
        return cls(**{**{k: v for k, v in cls.LEGACY.items() if k not in d},
                      **{k: v for k, v in d.items() if k in names}})

    def length(self) -> int:
        return int(getattr(self, self.LENGTH))

    @classmethod
    def analysis_only(cls) -> tuple[str, ...]:
        """The fields that do not change the training (:func:`opt`'s ``analysis_only``)."""
        return tuple(f.name for f in fields(cls) if f.metadata.get("analysis_only"))

    def training_description(self) -> dict:
        """The description without the analysis-only fields: what a run folder's training is."""
        skip = self.analysis_only()
        return {k: v for k, v in self.description().items() if k not in skip}


def differing_fields(saved: Config, requested: Config, ignore=()) -> list[str]:
    """``--flag: saved -> requested`` for every field that differs (analysis-only fields never
    do: they change no training), named by its command-line flag."""
    a, b = asdict(saved), asdict(requested)
    skip = set(ignore) | set(type(requested).analysis_only())
    return [f"{option_name(f)}: {a[f.name]!r} (saved) -> {b[f.name]!r} (requested)"
            for f in fields(requested) if f.name in a and f.name not in skip and a[f.name] != b[f.name]]


# ------------------------------------------------------------------ status lines


@contextmanager
def status(message: str, enabled: bool = True):
    """``message ...`` on stderr, completed with the seconds it took."""
    t0 = time.perf_counter()
    if enabled and launch_info()[0] == 0:
        print(f"{message} ...", end="", file=sys.stderr, flush=True)
    try:
        yield
    finally:
        if enabled and launch_info()[0] == 0:
            print(f" {time.perf_counter() - t0:.1f} s", file=sys.stderr, flush=True)


# ------------------------------------------------------------------ checkpoints


def checkpoint_path(path: str) -> str:
    """``path`` itself, or ``path/checkpoint.pt`` for a folder."""
    return os.path.join(path, CHECKPOINT) if os.path.isdir(path) else path


def read_run(path: str) -> tuple[dict, str, dict]:
    """(checkpoint, experiment name, description) of a checkpoint file or run folder. Reads the
    current layout (``meta = {"experiment", "description", "layout"}``) and the one before
    (``meta = {"kind": "toy"|"images"|"digits", "run": {...}}``)."""
    path = checkpoint_path(path)
    ck = load_checkpoint(path)
    return (ck, *_run_of(ck, path))


def _run_of(ck: dict, path: str) -> tuple[str, dict]:
    """(experiment name, description) of a loaded checkpoint."""
    meta = ck.get("meta") or {}
    if "experiment" in meta and "description" in meta:
        return meta["experiment"], dict(meta["description"])
    if meta.get("kind") in ("toy", "images", "digits") and isinstance(meta.get("run"), dict):
        desc = dict(meta["run"])
        desc.pop("experiment", None)
        return meta["kind"], desc
    raise CheckpointError(f"checkpoint {path!r} holds no run description (not written by "
                          "`python -m vaeiso_ext reproduce`)")


def folder_run(out: str) -> tuple[str, dict | None] | None:
    """What run ``out`` holds: None if none; (what, description or None) otherwise. A checkpoint
    that cannot be continued gives (``a damaged checkpoint (why)``, None)."""
    ck = os.path.join(out, CHECKPOINT)
    if os.path.exists(ck):
        try:
            loaded = load_checkpoint(ck)
        except CheckpointError as e:  # truncated (an interrupted copy, a full disk) or corrupt
            return f"a damaged checkpoint ({e})", None
        try:
            name, desc = _run_of(loaded, ck)
            return f"a {name} run", {"experiment": name, **desc}
        except CheckpointError as e:
            return f"a checkpoint this version cannot continue ({e})", None
    present = [f for f in RUN_FILES if os.path.exists(os.path.join(out, f))]
    res_path = os.path.join(out, "results.json")
    if os.path.exists(res_path):  # an analysis written without its checkpoint (analyze --out)
        import json

        try:
            with open(res_path) as f:
                res = json.load(f)
            if res.get("experiment") and isinstance(res.get("config"), dict):
                return f"the outputs of a {res['experiment']} run", {"experiment": res["experiment"],
                                                                      **res["config"]}
        except (OSError, ValueError):
            pass
    if present:
        return f"the outputs of a run ({', '.join(present)})", None
    return None


def clear_run(out: str) -> None:
    """Remove a run's files (``--overwrite``): the checkpoint, results, report and figures."""
    for f in RUN_FILES:
        p = os.path.join(out, f)
        if os.path.exists(p):
            os.unlink(p)
    figs = os.path.join(out, "figures")
    if os.path.isdir(figs):
        for f in os.listdir(figs):
            if f.endswith(".png"):
                os.unlink(os.path.join(figs, f))


def trained_summary(ck_or_history, cfg: Config, n_train: int, batch_size: int, *,
                    fresh: bool = False) -> dict:
    """What a checkpoint (or a finished training's history) actually trained, in how many
    processes (``world_size``, ``backend``: None for one); ``fresh``: the samples were drawn
    afresh at every step (a stream), so an "epoch" is only the stream's reseeding period;
    ``evals`` (the records of a ``train_hooks`` evaluation) only where there are any."""
    if isinstance(ck_or_history, dict):
        steps = checkpoint_steps(ck_or_history, n_train)
        history = list(ck_or_history["history"])
        evals = list(ck_or_history.get("evals") or [])
        world, backend = int(ck_or_history.get("world_size", 1)), ck_or_history.get("backend")
        if world > 1 and backend is None:  # written before the backend was recorded
            backend = "unknown"
    else:
        history = list(ck_or_history)
        steps = int(history[-1]["step"]) if history and "step" in history[-1] else 0
        evals = list(getattr(ck_or_history, "evals", None) or [])
        world, backend = int(getattr(ck_or_history, "world_size", 1)), getattr(ck_or_history, "backend", None)
    spe = steps_per_epoch(n_train, batch_size)
    requested = cfg.length()
    done = steps if cfg.LENGTH == "iterations" else steps / spe
    secs = [h["seconds"] for h in history]
    return {"steps": steps, "epochs_done": steps / spe if steps % spe else steps // spe,
            "n_train": n_train, "batch_size": batch_size, "steps_per_epoch": spe,
            "length_field": cfg.LENGTH, "requested": requested, "complete": done >= requested,
            "final": history[-1] if history else None, "world_size": world, "backend": backend,
            "fresh_samples": bool(fresh),
            "seconds": sum(secs), "seconds_per_epoch_median": sorted(secs)[len(secs) // 2] if secs else None,
            **({"evals": evals} if evals else {})}  # the train_hooks() curve, if the run has one


def trained_text(t: dict) -> str:
    """``trained 1,200 Adam steps = 2 epochs of 600 samples (batch 100) in 1 process`` (+ what
    was asked); for a stream, ``trained 50 Adam steps of 16 samples drawn afresh at every step``."""
    if t.get("fresh_samples"):
        s = (f"trained {plural(t['steps'], 'Adam step')} of {t['batch_size']} samples drawn afresh at every "
             f"step ({plural(t['steps'] * t['batch_size'], 'sample')} in all)")
    else:
        s = (f"trained {plural(t['steps'], 'Adam step')} = {plural(t['epochs_done'], 'epoch')} of "
             f"{plural(t['n_train'], 'sample')} (batch {t['batch_size']})")
    world = int(t.get("world_size", 1))
    s += (f" data-parallel in {world} processes ({t.get('backend')})" if world > 1 else " in 1 process")
    if not t["complete"]:
        s += (f"; INCOMPLETE: {plural(t['requested'], t['length_field'].rstrip('s'))} "
              f"{'was' if t['requested'] == 1 else 'were'} requested")
    return s


# ------------------------------------------------------------------ experiments


class Experiment:
    """One experiment: its config, data, model, metric, analysis and outputs. Subclasses set the
    class attributes and implement the hooks below; :meth:`reproduce` and :meth:`analyze` are the
    shared pipeline."""

    name: str = ""
    help: str = ""
    description: str = ""
    order: int = 100                # position in ``reproduce --help``
    config_cls: type[Config] = Config
    # name -> (help, field overrides); "quick" becomes --quick, all of them --preset NAME
    presets: dict[str, tuple[str, dict]] = {}
    default_threads: int | None = None
    analyzable: bool = True

    # -------------------------------------------------------------- the command line

    def add_arguments(self, p: argparse.ArgumentParser) -> None:
        """The config's options, the presets, then the options every run has."""
        g = p.add_argument_group(f"{self.name} run")
        defaults = self.config_cls()
        for f in fields(self.config_cls):
            md = f.metadata
            if "help" not in md:
                continue
            flag = md["flag"] or "--" + f.name.replace("_", "-")
            default = getattr(defaults, f.name)
            if f.type in (bool, "bool"):
                g.add_argument(flag, dest=f.name, action="store_const", const=True, default=None,
                               help=md["help"])
                continue
            shown = "" if default is None else f" (default {default:g})" if isinstance(default, float) \
                else f" (default {default})"
            g.add_argument(flag, dest=f.name, default=None, type=md["type"], choices=md["choices"],
                           metavar=md["metavar"], help=md["help"] + shown)
        if "quick" in self.presets:
            g.add_argument("--quick", action="store_true", help=self.presets["quick"][0])
        named = sorted(set(self.presets) - {"quick"})  # --quick is the one way to ask for "quick"
        if named:
            g.add_argument("--preset", choices=named,
                           help="; ".join(f"{k}: {self.presets[k][0]}" for k in named))
        self.add_run_arguments(p)

    @staticmethod
    def add_run_arguments(p: argparse.ArgumentParser) -> None:
        g = p.add_argument_group("output")
        g.add_argument("--out", default=None, help="run folder (default out/<experiment>/...)")
        g.add_argument("--resume", action="store_true",
                       help="continue the run in OUT (refused if any setting differs)")
        g.add_argument("--overwrite", action="store_true", help="replace the run that OUT holds")
        g.add_argument("--threads", type=positive_int, default=None, help="torch CPU threads")
        g.add_argument("--no-figures", action="store_true")
        g.add_argument("--no-progress", action="store_true", help="no progress bar or status lines")

    def config_from_args(self, args: argparse.Namespace) -> Config:
        """Defaults, then the preset, then every option given explicitly."""
        values: dict[str, Any] = {}
        preset = getattr(args, "preset", None) or ("quick" if getattr(args, "quick", False) else None)
        if getattr(args, "quick", False) and getattr(args, "preset", None) is not None:
            raise UsageError("--quick and --preset: give one")
        if preset:
            values.update(self.presets[preset][1])
        for f in fields(self.config_cls):
            v = getattr(args, f.name, None)
            if v is not None:
                values[f.name] = v
        try:
            cfg = self.config_cls(**values)
        except (TypeError, ValueError) as e:
            raise UsageError(str(e)) from None
        return cfg.validate()

    def default_out(self, cfg: Config) -> str:
        return os.path.join("out", self.name)

    def main(self, args: argparse.Namespace, echo=print) -> dict | None:
        cfg = self.config_from_args(args)
        out = args.out or self.default_out(cfg)
        return self.reproduce(cfg, out, resume=args.resume, overwrite=args.overwrite,
                              progress=not args.no_progress, figures=not args.no_figures, echo=echo)

    # -------------------------------------------------------------- hooks (per experiment)

    def load_data(self, cfg: Config, progress: bool):
        """The run's data (anything; passed back to the hooks below)."""
        raise NotImplementedError

    def n_train(self, data) -> int:
        return int(self.train_x(data).shape[0])

    def train_x(self, data) -> torch.Tensor:
        raise NotImplementedError

    def fresh(self, data) -> bool:
        """Whether training draws fresh samples at every step (a stream, e.g. random crops)."""
        return hasattr(self.train_x(data), "set_epoch")

    def new_model(self, cfg: Config) -> torch.nn.Module:
        raise NotImplementedError

    def metric(self, cfg: Config):
        raise NotImplementedError

    def train_config(self, cfg: Config) -> TrainConfig:
        raise NotImplementedError

    def train_hooks(self, cfg: Config, data) -> dict:
        """Extra keyword arguments of :func:`vaeiso_ext.train.train` (e.g. ``evaluate`` and
        ``eval_every`` for a held-out curve)."""
        return {}

    def analyze_model(self, cfg: Config, model, data, trained: dict, *, n_samples: int | None,
                      progress: bool) -> dict:
        """The results dict (the schema of results.json)."""
        raise NotImplementedError

    def write_outputs(self, out: str, results: dict, model, data, *, figures: bool) -> list[str]:
        raise NotImplementedError

    def summary(self, results: dict) -> str:
        """The table the CLI prints."""
        raise NotImplementedError

    def suggestion(self, cfg: Config) -> str:
        """Advice after a divergence."""
        return (f"try a smaller learning rate (--lr, now {getattr(cfg, 'lr', '?'):g}) or lambda "
                f"(--lambda, now {getattr(cfg, 'lam', '?'):g})")

    # -------------------------------------------------------------- the pipeline

    @staticmethod
    def model_from_checkpoint(ck: dict, path: str) -> torch.nn.Module:
        """The checkpoint's model, rebuilt from its stored ``model_config``."""
        from ..models import build_model

        try:
            model = build_model(ck["model_config"])
            model.load_state_dict(ck["model"])
        except Exception as e:
            raise CheckpointError(f"checkpoint {path!r}: its weights do not fit its model "
                                  f"({type(e).__name__})") from None
        return model

    def meta(self, cfg: Config) -> dict:
        return {"experiment": self.name, "description": cfg.description(), "layout": LAYOUT}

    def fit(self, cfg: Config, checkpoint: str | None = None, *, progress: bool = True):
        """Train a fresh model of ``cfg`` (no run-folder rules, no outputs); returns
        (model, data, history). For scripts and tests; the CLI uses :meth:`reproduce`."""
        cfg.validate()
        data = self.load_data(cfg, progress)
        model = self.new_model(cfg)
        history = train(model, self.train_x(data), self.metric(cfg), self.train_config(cfg),
                        checkpoint=checkpoint, progress=progress, meta=self.meta(cfg),
                        **self.train_hooks(cfg, data))
        return model, data, history

    def check_folder(self, cfg: Config, out: str, *, resume: bool, overwrite: bool):
        """Enforce the run-folder rules before anything is written; returns the saved config
        (``--resume``, or the same run asked for again) or None (a fresh run)."""
        if resume and overwrite:
            raise UsageError("--resume and --overwrite: give one")
        ck_path = os.path.join(out, CHECKPOINT)
        if resume and not os.path.exists(ck_path):
            raise UsageError(f"--resume: no checkpoint at {ck_path!r}")
        held = None if overwrite else folder_run(out)
        has_ck = os.path.exists(ck_path)
        if held is not None and held[1] is None and has_ck:
            # --resume would only fail on it: the way out is to start again
            raise UsageError(f"{out!r} holds {held[0]}: it cannot be resumed; pass --overwrite"
                             f"{' (without --resume)' if resume else ''} to replace the run, or "
                             "choose another --out")
        if resume:
            name = held[1]["experiment"]
            if name != self.name:
                raise UsageError(f"--resume refused: {out!r} holds a {name} run, not a {self.name} run")
            saved = self.config_cls.from_dict({k: v for k, v in held[1].items() if k != "experiment"})
            diff = differing_fields(saved, cfg, ignore=(cfg.LENGTH,))
            if diff:
                raise UsageError(f"--resume refused: {out!r} holds a different {self.name} run; "
                                 f"differing options: {'; '.join(diff)}. Use another --out, or "
                                 "--overwrite (without --resume) to replace it")
            check_world(ck_path, load_checkpoint(ck_path), launch_info()[1], what=UsageError)
            # analysis-only options are taken as asked for now
            return replace(saved, **{k: getattr(cfg, k) for k in cfg.analysis_only()})
        if held is not None and has_ck and self.same_run(held[1], cfg):
            return cfg  # this very run asked for again: re-analysed if finished
        if held is not None:
            ours = has_ck and held[1].get("experiment") == self.name
            raise UsageError(f"{out!r} already holds {held[0]}: pass "
                             f"{'--resume to continue it or ' if ours else ''}--overwrite to replace "
                             "it (or choose another --out)")
        return None

    def same_run(self, desc: dict | None, cfg: Config) -> bool:
        """Whether a stored description (with its ``experiment``) is ``cfg``'s run: every field
        equal but the analysis-only ones."""
        if desc is None or desc.get("experiment") != self.name:
            return False
        try:  # read as --resume reads it: fields added since take the value they meant then
            saved = self.config_cls.from_dict({k: v for k, v in desc.items() if k != "experiment"})
        except (CheckpointError, TypeError, ValueError):
            return False
        return saved.training_description() == cfg.training_description()

    def reproduce(self, cfg: Config, out: str, *, resume: bool = False, overwrite: bool = False,
                  progress: bool = True, figures: bool = True, echo=print) -> dict | None:
        """Train (or resume), analyse and write one run into ``out``; returns the results (None
        on ranks other than 0 under torchrun). Errors are raised before anything is written."""
        t0 = time.perf_counter()
        cfg.validate()
        saved = self.check_folder(cfg, out, resume=resume, overwrite=overwrite)
        data = self.load_data(cfg, progress)
        n_train = self.n_train(data)
        ck_path = os.path.join(out, CHECKPOINT)
        tcfg = self.train_config(cfg)
        ck = load_checkpoint(ck_path) if saved is not None else None
        model = self.model_from_checkpoint(ck, ck_path) if ck is not None else self.new_model(cfg)
        if ck is not None and checkpoint_steps(ck, n_train) >= tcfg.total_steps(n_train):
            asked = cfg.length()
            cfg = saved  # the run as it was trained (with the analysis options asked for now)
            trained = trained_summary(ck, cfg, n_train, tcfg.batch_size, fresh=self.fresh(data))
            if echo:
                echo(f"already done: {out} holds a run that {trained_text(trained)}; "
                     f"{plural(asked, cfg.LENGTH.rstrip('s'))} requested; re-analysing it")
            model.eval()
        elif ck is not None and not resume:
            raise UsageError(f"{out!r} holds this run unfinished ({checkpoint_steps(ck, n_train):,} of "
                             f"{tcfg.total_steps(n_train):,} Adam steps): pass --resume to continue "
                             "it or --overwrite to start again")
        else:
            if overwrite and launch_info()[0] == 0:
                clear_run(out)
            try:
                history = train(model, self.train_x(data), self.metric(cfg), tcfg, checkpoint=ck_path,
                                resume=ck is not None, progress=progress, meta=self.meta(cfg),
                                kl_threshold=getattr(cfg, "kl_threshold", 0.1),
                                **self.train_hooks(cfg, data))
            except TrainingDiverged as e:
                kept = (f"the last good checkpoint (step {e.good_step}) is kept in {ck_path}"
                        if e.good_step else "no checkpoint was written")
                raise UsageError(f"{e}; {kept}; {self.suggestion(cfg)}") from None
            trained = trained_summary(history, cfg, n_train, tcfg.batch_size, fresh=self.fresh(data))
        if launch_info()[0] != 0:
            return None
        res = self.analyze_model(cfg, model, data, trained, n_samples=None, progress=progress)
        res["wall_seconds"] = time.perf_counter() - t0
        paths = self.write_outputs(out, res, model, data, figures=figures)
        if echo:
            echo(self.summary(res))
            echo("wrote " + ", ".join(paths))
        return res

    def other_run(self, out: str, ck: dict, checkpoint: str, cfg: Config) -> str | None:
        """What ``out`` holds if it is not this checkpoint's run (None if it holds nothing, or
        this run): a checkpoint counts as this run only when it is the same file content; the
        outputs of an earlier ``analyze --out`` only when their description (analysis-only
        options aside), Adam steps and world size are this checkpoint's."""
        import filecmp
        import json

        held = folder_run(out)
        if held is None:
            return None
        theirs = os.path.join(out, CHECKPOINT)
        if os.path.exists(theirs):
            same = filecmp.cmp(theirs, checkpoint, shallow=False)
            return None if same else f"{held[0]} (another checkpoint)"
        if not self.same_run(held[1], cfg):
            return held[0]
        try:
            with open(os.path.join(out, "results.json")) as f:
                t = json.load(f).get("training") or {}
        except (OSError, ValueError):
            return held[0]
        world = int(ck.get("world_size", 1))
        steps = checkpoint_steps(ck, int(t.get("n_train") or 1))  # n_train: old checkpoints only
        if t.get("steps") != steps or int(t.get("world_size", 1)) != world:
            return (f"{held[0]} trained otherwise ({t.get('steps')} Adam steps in world size "
                    f"{t.get('world_size', 1)}; this checkpoint: {steps} in world size {world})")
        return None

    def analyze(self, ck: dict, desc: dict, checkpoint: str, out: str | None = None, *,
                n_samples: int | None = None, overwrite: bool = False, figures: bool = True,
                progress: bool = True, echo=print) -> dict:
        """Re-analyse a checkpoint into ``out`` (default its folder); nothing is written before
        the analysis has finished."""
        cfg = self.config_cls.from_dict(desc)
        here = os.path.dirname(os.path.abspath(checkpoint))
        out = out or here
        if os.path.abspath(out) != here and not overwrite:
            other = self.other_run(out, ck, checkpoint, cfg)
            if other is not None:
                raise UsageError(f"{out!r} already holds {other}: pass --overwrite to write this "
                                 "analysis there (or choose another --out)")
        data = self.load_data(cfg, progress)
        model = self.model_from_checkpoint(ck, checkpoint)
        model.eval()
        trained = trained_summary(ck, cfg, self.n_train(data), int(ck["train"]["batch_size"]),
                                  fresh=self.fresh(data))
        res = self.analyze_model(cfg, model, data, trained, n_samples=n_samples, progress=progress)
        paths = self.write_outputs(out, res, model, data, figures=figures)
        if echo:
            echo(self.summary(res))
            echo("wrote " + ", ".join(paths))
        return res
