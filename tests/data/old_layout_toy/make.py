"""How checkpoint.pt and results.json here were made (run once, before the experiments moved to
vaeiso_ext/experiments/; kept for the record, it imports modules that no longer exist):
    python tests/data/old_layout_toy/make.py tests/data/old_layout_toy
"""
# Written once with the pre-issue-15 layout (vaeiso_ext/reproduce.py at commit 2dd86e6):
# a ToyRun checkpoint exactly as train_toy() writes it, with a small model (the analysis rebuilds
# the model from the checkpoint's model_config, so small widths load the same way).
import sys, os, json
from dataclasses import asdict
import torch
from vaeiso_ext.reproduce import ToyRun, make_data, analyze_checkpoint
from vaeiso_ext.models import ToyVAE
from vaeiso_ext.metrics import by_name
from vaeiso_ext.train import train
out = sys.argv[1]
run = ToyRun(dataset="ramp", loss="downward", lam=20.0, epochs=2, batch_size=100, n_train=600,
             n_test=300, seed=3, data_seed=1).validate()
data = make_data(run)
torch.manual_seed(run.seed)
model = ToyVAE(latent=run.latent, enc_hidden=(12,), dec_hidden=(12,))
train(model, data.x_train, by_name(run.loss), run.train_config(), checkpoint=os.path.join(out, "checkpoint.pt"),
      progress=False, meta={"kind": "toy", "run": asdict(run)})
analyze_checkpoint(os.path.join(out, "checkpoint.pt"), out, figures=False, echo=None)
