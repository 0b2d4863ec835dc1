"""Command line: ``python -m vaeiso_ext reproduce <experiment> [options]`` (one subcommand per
module of :mod:`vaeiso_ext.experiments`, with that experiment's options only) and ``python -m
vaeiso_ext analyze CHECKPOINT|RUN_DIR``. Every user error is one ``error: ...`` line on stderr and
exit code 2. Under ``torchrun`` ``reproduce`` joins the process group first and trains
data-parallel; rank 0 alone prints and writes (``analyze`` refuses torchrun: it is one process's
work)."""

from __future__ import annotations

import argparse
import sys
import time

import torch


class _Parser(argparse.ArgumentParser):
    """An argparse parser whose errors are one ``error:`` line (raised, so that :func:`main`
    returns 2 instead of exiting)."""

    def __init__(self, *a, **kw):
        kw.setdefault("allow_abbrev", False)  # --data must not silently mean --dataset
        super().__init__(*a, **kw)

    def error(self, message):
        from .experiments import UsageError

        raise UsageError(f"{message} (see `{self.prog} --help`)")


# how long a rank > 0 that met an error waits for torchrun to stop it (see main)
_OTHER_RANK_ERROR_WAIT_S = 30


def _parser() -> argparse.ArgumentParser:
    from .experiments import experiments
    from .experiments.config import int_at_least, positive_int

    p = _Parser(prog="python -m vaeiso_ext", description="Reproduce and analyse the paper's beta-VAE experiments.")
    sub = p.add_subparsers(dest="command", required=True, parser_class=_Parser)
    rep = sub.add_parser(
        "reproduce",
        help="train + analyse + report one experiment",
        description="Train, analyse and report one of the paper's experiments. "
        "`reproduce <experiment> --help` lists its options.",
    )
    exps = rep.add_subparsers(dest="experiment", required=True, metavar="EXPERIMENT", parser_class=_Parser)
    for name, exp in experiments().items():
        e = exps.add_parser(name, help=exp.help, description=exp.description)
        exp.add_arguments(e)
        e.set_defaults(exp=exp)

    an = sub.add_parser(
        "analyze",
        help="re-analyse a run written by `reproduce`",
        description="Re-analyse the checkpoint of a run (any experiment, older "
        "checkpoint layouts included) and rewrite its outputs.",
    )
    an.add_argument("checkpoint", help="a checkpoint file, or a run folder holding checkpoint.pt")
    an.add_argument("--out", default=None, help="output folder (default: the checkpoint's folder)")
    an.add_argument("--overwrite", action="store_true", help="write into an --out holding another run")
    an.add_argument(
        "--n-samples",
        type=int_at_least(2),
        default=None,
        help="analyse the first N held-out samples (default: the run's setting)",
    )
    an.add_argument("--threads", type=positive_int, default=None, help="torch CPU threads")
    an.add_argument("--no-figures", action="store_true")
    an.add_argument("--no-progress", action="store_true", help="no progress bar or status lines")
    return p


def main(argv: list[str] | None = None) -> int:
    from .checkpoint import CheckpointError
    from .distributed import init_distributed, launch_info
    from .experiments import UsageError, analyze_checkpoint

    finished = False
    try:
        parser = _parser()
        args, extra = parser.parse_known_args(argv)
        if extra:
            cmd = f"reproduce {args.experiment}" if args.command == "reproduce" else args.command
            raise UsageError(
                f"unrecognized arguments for `{cmd}`: {' '.join(extra)} (see `{parser.prog} {cmd} --help`)"
            )
        if launch_info()[1] > 1:
            if args.command != "reproduce":
                raise UsageError(f"`{args.command}` runs in one process: run it without torchrun")
            # joined before anything else, so that every rank knows its rank from the start
            # (status lines, folder checks, which rank writes)
            init_distributed()
        echo = print if launch_info()[0] == 0 else None
        if args.threads:
            torch.set_num_threads(args.threads)
        elif args.command == "reproduce" and args.exp.default_threads:
            torch.set_num_threads(args.exp.default_threads)
        if args.command == "analyze":
            analyze_checkpoint(
                args.checkpoint,
                args.out,
                n_samples=args.n_samples,
                overwrite=args.overwrite,
                figures=not args.no_figures,
                progress=not args.no_progress,
            )
        else:
            args.exp.main(args, echo=echo)
        finished = True
        return 0
    except (UsageError, CheckpointError, ValueError, FileNotFoundError, ImportError) as e:
        rank = launch_info()[0]
        if rank == 0:  # every rank meets the same error: rank 0 says it, once
            print(f"error: {e}", file=sys.stderr)
        else:
            # torchrun stops every rank as soon as one exits with an error: a rank > 0 leaving
            # first would stop rank 0 before its line. It waits for that stop instead, and speaks
            # only if rank 0 has not failed (an error this rank alone met).
            time.sleep(_OTHER_RANK_ERROR_WAIT_S)
            print(f"error (rank {rank}): {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("\ninterrupted: the last checkpoint written is kept (continue with --resume)", file=sys.stderr)
        return 130
    finally:
        import torch.distributed as dist

        if dist.is_available() and dist.is_initialized():
            # After a run that finished, every rank waits for the others before the group is
            # torn down: a rank that destroyed it while rank 0 was still writing its results
            # sometimes aborted inside gloo ("terminate called without an active exception").
            # Not after an error, where the other ranks may never arrive.
            if finished:
                dist.barrier()
            dist.destroy_process_group()


if __name__ == "__main__":
    sys.exit(main())
