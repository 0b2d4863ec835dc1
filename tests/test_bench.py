"""The benchmark: a quick run covers every op family and writes valid JSON; the correctness gate
reports a wrong kernel as a failure, never as a speedup."""

import json

import torch

from vaeiso_ext import ops
from vaeiso_ext.bench import runner


def test_quick_run_writes_json(tmp_path):
    path = tmp_path / "bench.json"
    rc = runner.main(["--quick", "--threads", "1", "--json", str(path)])
    assert rc == 0
    report = json.loads(path.read_text())
    assert report["copy_bandwidth_gbps"] > 0
    ops_seen = {r["op"] for r in report["results"]}
    for family in runner.CASE_FAMILIES:
        assert any(op.startswith(family) or family in op for op in ops_seen) or (
            family == "distance" and any(op.startswith("pair_distances") for op in ops_seen)), family
    fused = [r for r in report["results"] if r["impl"] == "fused"]
    assert fused and all(r["status"] == "ok" and r["median_ms"] > 0 for r in fused)
    assert {r["mode"] for r in fused} >= {"fwd", "fwd+bwd"}
    # every baseline that can run here ran (peers are test extras, so all are installed)
    errors = [(r["op"], r["mode"], r["impl"], r["status"]) for r in report["results"] if r["status"] != "ok"]
    assert not errors, errors
    table = runner.format_table(report)
    assert "| gdn |" in table


def test_gate_catches_wrong_kernel():
    def wrong_gdn(x, beta, gamma, inverse=False, simplified=False):
        return ops.gdn(x, beta, gamma, inverse, simplified) * (1 + 1e-2)  # 1% off

    report = runner.run("cpu", quick=True, threads=1, only=["gdn"], compile_baselines=False,
                        overrides={"gdn": {"fused_gdn": wrong_gdn}}, progress=False)
    fused = [r for r in report["results"] if r["impl"] == "fused"]
    assert fused and all(r["status"].startswith("FAILED") for r in fused)
    assert all(r["speedup"] is None for r in report["results"])
    assert "FAILED" in runner.format_table(report)
