"""What reports and help texts say agrees with what is trained and with the command-line reference
(docs/experiments.md): a run on crops drawn afresh at every step is not reported in epochs of a
fixed sample set, every preset the command line offers is documented, and no help text promises a
time."""

import re
from pathlib import Path

import pytest
import torch

from vaeiso_ext.cli import _parser
from vaeiso_ext.experiments import experiments
from vaeiso_ext.experiments.outputs import run_title

# the command-line reference, whose table has one row per experiment
CLI_DOC = (Path(__file__).resolve().parents[1] / "docs" / "experiments.md").read_text()


def test_a_run_on_fresh_crops_is_reported_as_such(tmp_path):
    from vaeiso_ext.experiments.images import EXPERIMENT as IMAGES
    from vaeiso_ext.experiments.images import ImagesConfig

    torch.set_num_threads(1)
    cfg = ImagesConfig(size=32, iterations=3, latent=2, batch_size=4, lr=1e-4, n_eval=2, warmup=2)
    res = IMAGES.reproduce(cfg, str(tmp_path), progress=False, figures=False, echo=None)
    t = res["training"]
    assert t["fresh_samples"] and t["steps"] == 3
    report = (tmp_path / "report.md").read_text()
    assert "trained 3 Adam steps of 4 samples drawn afresh at every step (12 samples in all) in 1 process" in report
    assert not re.search(r"epochs? of [\d,]+ samples", report)
    assert "epoch" not in run_title(res, "x")


def test_a_run_on_a_fixed_sample_set_is_reported_in_epochs():
    from vaeiso_ext.experiments.runs import trained_text

    t = {"steps": 12, "epochs_done": 2, "n_train": 600, "batch_size": 100, "complete": True, "world_size": 1}
    assert trained_text(t) == "trained 12 Adam steps = 2 epochs of 600 samples (batch 100) in 1 process"
    assert run_title({"training": t, "config": {"lam": 1}}, "x").endswith("12 steps (2 epochs)")


def _subparser(name):
    sub = next(a for a in _parser()._actions if a.dest == "command").choices["reproduce"]
    return next(a for a in sub._actions if a.dest == "experiment").choices[name]


@pytest.mark.parametrize("name", list(experiments()))
def test_every_preset_offered_is_documented_and_offered_once(name):
    exp = experiments()[name]
    p = _subparser(name)
    flags = {s for a in p._actions for s in a.option_strings}
    preset = next((a for a in p._actions if a.dest == "preset"), None)
    named = sorted(preset.choices) if preset else []
    assert "quick" not in named  # --quick is the one way to ask for it
    row = next(line for line in CLI_DOC.splitlines() if line.startswith(f"| `reproduce {name} "))
    for k in exp.presets:
        want = "--quick" if k == "quick" else f"--preset {k}"
        assert (want.split()[0] in flags) and want in row, (name, want)
    # a help text that gives a time gives the reference's (which says how it was measured)
    for a in p._actions:
        for part in re.findall(r"\(([^()]*\b(?:minute|second|seconds|minutes)\b[^()]*)\)", a.help or ""):
            assert part in row, (name, part)
