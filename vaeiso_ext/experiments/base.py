"""What every experiment shares: :class:`Experiment`, the reproduce / analyse pipeline (the
command line of a run, training with a status line, the rules that keep a run folder one run's
record: refuse a different run on ``--resume``, refuse to replace a run without ``--overwrite``).
An experiment module subclasses :class:`Experiment` with its :class:`~.config.Config` and sets
``EXPERIMENT``; :mod:`vaeiso_ext.experiments` finds it. The run's configuration lives in
:mod:`.config`, the run folder and checkpoints in :mod:`.runs`."""

from __future__ import annotations

import argparse
import os
import time
from dataclasses import fields, replace
from typing import Any

import torch

from ..checkpoint import CheckpointError, checkpoint_steps, load_checkpoint
from ..distributed import check_world, launch_info
from ..train import TrainConfig, TrainingDiverged, train
from .config import Config, UsageError, differing_fields, option_name, positive_int
from .runs import CHECKPOINT, LAYOUT, clear_run, folder_run, plural, trained_summary, trained_text


class Experiment:
    """One experiment: its config, data, model, metric, analysis and outputs. Subclasses set the
    class attributes and implement the hooks below; :meth:`reproduce` and :meth:`analyze` are the
    shared pipeline."""

    name: str = ""
    help: str = ""
    description: str = ""
    order: int = 100  # position in ``reproduce --help``
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
            flag = option_name(f)
            default = getattr(defaults, f.name)
            if f.type in (bool, "bool"):
                g.add_argument(flag, dest=f.name, action="store_const", const=True, default=None, help=md["help"])
                continue
            shown = (
                ""
                if default is None
                else f" (default {default:g})"
                if isinstance(default, float)
                else f" (default {default})"
            )
            g.add_argument(
                flag,
                dest=f.name,
                default=None,
                type=md["type"],
                choices=md["choices"],
                metavar=md["metavar"],
                help=md["help"] + shown,
            )
        if "quick" in self.presets:
            g.add_argument("--quick", action="store_true", help=self.presets["quick"][0])
        named = sorted(set(self.presets) - {"quick"})  # --quick is the one way to ask for "quick"
        if named:
            g.add_argument("--preset", choices=named, help="; ".join(f"{k}: {self.presets[k][0]}" for k in named))
        self.add_run_arguments(p)

    @staticmethod
    def add_run_arguments(p: argparse.ArgumentParser) -> None:
        g = p.add_argument_group("output")
        g.add_argument("--out", default=None, help="run folder (default out/<experiment>/...)")
        g.add_argument("--resume", action="store_true", help="continue the run in OUT (refused if any setting differs)")
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
        return self.reproduce(
            cfg,
            out,
            resume=args.resume,
            overwrite=args.overwrite,
            progress=not args.no_progress,
            figures=not args.no_figures,
            echo=echo,
        )

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

    def analyze_model(self, cfg: Config, model, data, trained: dict, *, n_samples: int | None, progress: bool) -> dict:
        """The results dict (the schema of results.json)."""
        raise NotImplementedError

    def write_outputs(self, out: str, results: dict, model, data, *, figures: bool) -> list[str]:
        raise NotImplementedError

    def summary(self, results: dict) -> str:
        """The table the CLI prints."""
        raise NotImplementedError

    def suggestion(self, cfg: Config) -> str:
        """Advice after a divergence."""
        return (
            f"try a smaller learning rate (--lr, now {getattr(cfg, 'lr', '?'):g}) or lambda "
            f"(--lambda, now {getattr(cfg, 'lam', '?'):g})"
        )

    # -------------------------------------------------------------- the pipeline

    @staticmethod
    def model_from_checkpoint(ck: dict, path: str) -> torch.nn.Module:
        """The checkpoint's model, rebuilt from its stored ``model_config``."""
        from ..models import build_model

        try:
            model = build_model(ck["model_config"])
            model.load_state_dict(ck["model"])
        except Exception as e:
            raise CheckpointError(
                f"checkpoint {path!r}: its weights do not fit its model ({type(e).__name__})"
            ) from None
        return model

    def meta(self, cfg: Config) -> dict:
        return {"experiment": self.name, "description": cfg.description(), "layout": LAYOUT}

    def fit(self, cfg: Config, checkpoint: str | None = None, *, progress: bool = True):
        """Train a fresh model of ``cfg`` (no run-folder rules, no outputs); returns
        (model, data, history). For scripts and tests; the CLI uses :meth:`reproduce`."""
        cfg.validate()
        data = self.load_data(cfg, progress)
        model = self.new_model(cfg)
        history = train(
            model,
            self.train_x(data),
            self.metric(cfg),
            self.train_config(cfg),
            checkpoint=checkpoint,
            progress=progress,
            meta=self.meta(cfg),
            **self.train_hooks(cfg, data),
        )
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
            raise UsageError(
                f"{out!r} holds {held[0]}: it cannot be resumed; pass --overwrite"
                f"{' (without --resume)' if resume else ''} to replace the run, or "
                "choose another --out"
            )
        if resume:
            name = held[1]["experiment"]
            if name != self.name:
                raise UsageError(f"--resume refused: {out!r} holds a {name} run, not a {self.name} run")
            saved = self.config_cls.from_dict({k: v for k, v in held[1].items() if k != "experiment"})
            diff = differing_fields(saved, cfg, ignore=(cfg.LENGTH,))
            if diff:
                raise UsageError(
                    f"--resume refused: {out!r} holds a different {self.name} run; "
                    f"differing options: {'; '.join(diff)}. Use another --out, or "
                    "--overwrite (without --resume) to replace it"
                )
            check_world(ck_path, load_checkpoint(ck_path), launch_info()[1], what=UsageError)
            # analysis-only options are taken as asked for now
            return replace(saved, **{k: getattr(cfg, k) for k in cfg.analysis_only()})
        if held is not None and has_ck and self.same_run(held[1], cfg):
            return cfg  # this very run asked for again: re-analysed if finished
        if held is not None:
            ours = has_ck and held[1].get("experiment") == self.name
            raise UsageError(
                f"{out!r} already holds {held[0]}: pass "
                f"{'--resume to continue it or ' if ours else ''}--overwrite to replace "
                "it (or choose another --out)"
            )
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

    def reproduce(
        self,
        cfg: Config,
        out: str,
        *,
        resume: bool = False,
        overwrite: bool = False,
        progress: bool = True,
        figures: bool = True,
        echo=print,
    ) -> dict | None:
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
                echo(
                    f"already done: {out} holds a run that {trained_text(trained)}; "
                    f"{plural(asked, cfg.LENGTH.rstrip('s'))} requested; re-analysing it"
                )
            model.eval()
        elif ck is not None and not resume:
            raise UsageError(
                f"{out!r} holds this run unfinished ({checkpoint_steps(ck, n_train):,} of "
                f"{tcfg.total_steps(n_train):,} Adam steps): pass --resume to continue "
                "it or --overwrite to start again"
            )
        else:
            if overwrite and launch_info()[0] == 0:
                clear_run(out)
            try:
                history = train(
                    model,
                    self.train_x(data),
                    self.metric(cfg),
                    tcfg,
                    checkpoint=ck_path,
                    resume=ck is not None,
                    progress=progress,
                    meta=self.meta(cfg),
                    kl_threshold=getattr(cfg, "kl_threshold", 0.1),
                    **self.train_hooks(cfg, data),
                )
            except TrainingDiverged as e:
                kept = (
                    f"the last good checkpoint (step {e.good_step}) is kept in {ck_path}"
                    if e.good_step
                    else "no checkpoint was written"
                )
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
            return (
                f"{held[0]} trained otherwise ({t.get('steps')} Adam steps in world size "
                f"{t.get('world_size', 1)}; this checkpoint: {steps} in world size {world})"
            )
        return None

    def analyze(
        self,
        ck: dict,
        desc: dict,
        checkpoint: str,
        out: str | None = None,
        *,
        n_samples: int | None = None,
        overwrite: bool = False,
        figures: bool = True,
        progress: bool = True,
        echo=print,
    ) -> dict:
        """Re-analyse a checkpoint into ``out`` (default its folder); nothing is written before
        the analysis has finished."""
        cfg = self.config_cls.from_dict(desc)
        here = os.path.dirname(os.path.abspath(checkpoint))
        out = out or here
        if os.path.abspath(out) != here and not overwrite:
            other = self.other_run(out, ck, checkpoint, cfg)
            if other is not None:
                raise UsageError(
                    f"{out!r} already holds {other}: pass --overwrite to write this "
                    "analysis there (or choose another --out)"
                )
        data = self.load_data(cfg, progress)
        model = self.model_from_checkpoint(ck, checkpoint)
        model.eval()
        trained = trained_summary(ck, cfg, self.n_train(data), int(ck["train"]["batch_size"]), fresh=self.fresh(data))
        res = self.analyze_model(cfg, model, data, trained, n_samples=n_samples, progress=progress)
        paths = self.write_outputs(out, res, model, data, figures=figures)
        if echo:
            echo(self.summary(res))
            echo("wrote " + ", ".join(paths))
        return res
