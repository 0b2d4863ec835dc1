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
    rep.add_argument("experiment", choices=["toy", "images", "digits"],
                     help="toy (§4.1), images (§4.2: conv VAE, GDN/IGDN, 1 - SSIM) or digits (App. G: BCE)")
    rep.add_argument("--dataset", choices=["mix", "ramp", "norm"], default="mix")
    rep.add_argument("--loss", choices=["sse", "downward", "upward"], default="sse")
    rep.add_argument("--lambda", dest="lam", type=float, default=None,
                     help="lambda = 1/beta (toy 100, images 1000, digits 2000)")
    rep.add_argument("--epochs", type=int, default=None, help="500 (60 with --quick)")
    rep.add_argument("--batch-size", type=int, default=None, help="toy 128, images 64, digits 256")
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
    img = rep.add_argument_group("images / digits")
    img.add_argument("--data", default=None, help="images: a folder of images (default: scikit-image photographs)")
    img.add_argument("--crop", type=int, default=None, help="images: centred square side before resizing to 64")
    img.add_argument("--latent", type=int, default=None, help="latent size (32)")
    img.add_argument("--iterations", type=int, default=None,
                     help="Adam steps (images 300000, digits 50000: the paper's; --quick: 100 / 400)")
    img.add_argument("--n-eval", type=int, default=None, help="held-out samples analysed (256)")
    img.add_argument("--preset", choices=["cpu"], default=None,
                     help="images: cpu = the paper's network and lambda, 5000 steps, step curve every 250")
    img.add_argument("--eval-every", type=int, default=None,
                     help="evaluate active dims and norm mean every N steps (curve.json, figures/curve.png)")
    img.add_argument("--warmup", type=int, default=None, help="Adam steps of lr warm-up (images 1000)")
    img.add_argument("--skip-unreadable", action="store_true", help="images: skip and count unreadable files of --data")
    rep.add_argument("--threads", type=int, default=None,
                     help="torch CPU threads (toy default 1: the tiny MLP gains nothing from more)")
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
    elif args.command == "reproduce" and args.experiment == "toy":
        torch.set_num_threads(1)
    try:
        if args.command == "analyze":
            if _checkpoint_kind(args.checkpoint) in ("images", "digits"):
                from .reproduce_real import analyze_real_checkpoint

                analyze_real_checkpoint(args.checkpoint, args.out, figures=not args.no_figures)
            else:
                analyze_checkpoint(args.checkpoint, args.out, figures=not args.no_figures,
                                   n_samples=args.n_samples)
            return 0
        if args.experiment in ("images", "digits"):
            return _reproduce_real(args)
        run = ToyRun(dataset=args.dataset, loss=args.loss, lam=args.lam if args.lam is not None else 100.0,
                     epochs=args.epochs if args.epochs is not None else 500,
                     batch_size=args.batch_size or 128, lr=args.lr, seed=args.seed,
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
    except (CheckpointError, ValueError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    finally:
        import torch.distributed as dist

        if dist.is_available() and dist.is_initialized():
            dist.destroy_process_group()


def _checkpoint_kind(path: str) -> str | None:
    from .train import load_checkpoint

    return (load_checkpoint(path).get("meta") or {}).get("kind")


def _reproduce_real(args) -> int:
    from .reproduce_real import RealRun, run_real
    from .step_curve import CPU_EVAL_EVERY, CPU_PRESET, run_with_curve

    run = RealRun.for_experiment(
        args.experiment, quick=args.quick, data=args.data, crop=args.crop, latent=args.latent,
        lam=args.lam, iterations=args.iterations, batch_size=args.batch_size, lr=args.lr,
        seed=args.seed, decomposed=args.decomposed, n_eval=args.n_eval, warmup=args.warmup,
        skip_unreadable=args.skip_unreadable or None,
        **({k: v for k, v in CPU_PRESET.items() if getattr(args, k) is None} if args.preset == "cpu" else {}))
    kind = "decomposed" if run.decomposed else "conventional"
    out = args.out or f"out/{run.experiment}/{kind}"
    eval_every = args.eval_every or (CPU_EVAL_EVERY if args.preset == "cpu" else None)
    if eval_every:
        run_with_curve(run, out, eval_every=eval_every, resume=args.resume, progress=not args.no_progress,
                       figures=not args.no_figures)
    else:
        run_real(run, out, resume=args.resume, progress=not args.no_progress, figures=not args.no_figures)
    return 0


if __name__ == "__main__":
    sys.exit(main())
