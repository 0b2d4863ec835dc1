"""Command line: ``python -m vaeiso_ext reproduce toy [...]`` and ``python -m vaeiso_ext analyze
CHECKPOINT``. Under ``torchrun`` ``reproduce`` trains data-parallel; rank 0 writes."""

from __future__ import annotations

import argparse
import sys

import torch


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m vaeiso_ext",
                                description="Reproduce and analyse the paper's beta-VAE experiments.")
    sub = p.add_subparsers(dest="command", required=True)

    rep = sub.add_parser("reproduce", help="train + analyse + report")
    rep.add_argument("experiment", choices=["toy"], help="which experiment (§4.1 toy data)")
    rep.add_argument("--dataset", choices=["mix", "ramp", "norm"], default="mix")
    rep.add_argument("--loss", choices=["sse", "downward", "upward"], default="sse")
    rep.add_argument("--lambda", dest="lam", type=float, default=100.0, help="lambda = 1/beta (100)")
    rep.add_argument("--epochs", type=int, default=None, help="500 (60 with --quick)")
    rep.add_argument("--batch-size", type=int, default=128)
    rep.add_argument("--lr", type=float, default=1e-3)
    rep.add_argument("--decomposed", action="store_true", help="lambda (D(x,x_breve) + D(x_breve,x_hat)) + KL")
    rep.add_argument("--quick", action="store_true", help="60 epochs (the demo)")
    rep.add_argument("--seed", type=int, default=0, help="model init and training randomness")
    rep.add_argument("--data-seed", type=int, default=0, help="dataset (basis and samples)")
    rep.add_argument("--n-train", type=int, default=50_000)
    rep.add_argument("--n-test", type=int, default=10_000, help="held-out samples for the analysis")
    rep.add_argument("--out", default=None, help="output folder (default out/toy/<dataset>_<loss>)")
    rep.add_argument("--resume", action="store_true", help="continue from OUT/checkpoint.pt")
    rep.add_argument("--sweep", action="store_true",
                     help="App. E.2 grid: lambda x dataset x loss (restrict with the options below)")
    rep.add_argument("--datasets", default="mix,ramp,norm", help="sweep: comma-separated datasets")
    rep.add_argument("--losses", default="sse,downward,upward", help="sweep: comma-separated losses")
    rep.add_argument("--lambdas", default="1,2,5,10,20,50,100,200,500,1000", help="sweep: lambdas")
    rep.add_argument("--threads", type=int, default=1,
                     help="torch CPU threads (1: the tiny MLP gains nothing from more)")
    rep.add_argument("--no-figures", action="store_true")
    rep.add_argument("--no-progress", action="store_true")

    an = sub.add_parser("analyze", help="analyse a checkpoint written by `reproduce`")
    an.add_argument("checkpoint")
    an.add_argument("--out", default=None, help="output folder (default: the checkpoint's folder)")
    an.add_argument("--n-samples", type=int, default=None, help="use the first N held-out samples")
    an.add_argument("--threads", type=int, default=None)
    an.add_argument("--no-figures", action="store_true")
    return p


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    from .reproduce import ToyRun, analyze_checkpoint, quick, run_toy, sweep
    from .train import CheckpointError

    if args.threads:
        torch.set_num_threads(args.threads)
    try:
        if args.command == "analyze":
            analyze_checkpoint(args.checkpoint, args.out, figures=not args.no_figures,
                               n_samples=args.n_samples)
            return 0
        run = ToyRun(dataset=args.dataset, loss=args.loss, lam=args.lam,
                     epochs=args.epochs if args.epochs is not None else 500,
                     batch_size=args.batch_size, lr=args.lr, seed=args.seed,
                     decomposed=args.decomposed, n_train=args.n_train, n_test=args.n_test,
                     data_seed=args.data_seed)
        if args.quick and args.epochs is None:
            run = quick(run)
        run.validate()
        if args.sweep:
            out = args.out or "out/sweep"
            sweep(run, out, datasets=args.datasets.split(","), losses=args.losses.split(","),
                  lambdas=[float(v) for v in args.lambdas.split(",")], progress=not args.no_progress)
        else:
            out = args.out or f"out/toy/{run.dataset}_{run.loss}"
            run_toy(run, out, resume=args.resume, progress=not args.no_progress,
                    figures=not args.no_figures)
        return 0
    except (CheckpointError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    finally:
        import torch.distributed as dist

        if dist.is_available() and dist.is_initialized():
            dist.destroy_process_group()


if __name__ == "__main__":
    sys.exit(main())
