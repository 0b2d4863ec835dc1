"""The benchmark: a quick run covers every op family and writes valid JSON; the correctness gate
reports a wrong kernel as a failure, never as a speedup; ratios come from alternating A/B pairs
with their spread; a busy machine (load average before the start, or the CPU share the process
got while timing) makes ``--json`` refuse to write unless ``--allow-busy``.

Everything but the first two tests runs on fake cases with a fake wall clock, a fake load reader
and a fake per-thread CPU reader (the seams of ``bench.core``): no assertion depends on real time."""

import json
import os
import statistics
import types

import pytest

from vaeiso_ext import ops
from vaeiso_ext.bench import core, runner


def test_quick_run_writes_json(tmp_path):
    path = tmp_path / "bench.json"
    # the test suite itself loads the machine: --allow-busy, and the file says whether it was busy
    rc = runner.main(["--quick", "--threads", "1", "--json", str(path), "--allow-busy"])
    assert rc == 0
    report = json.loads(path.read_text())
    assert report["copy_bandwidth_gbps"] > 0
    ops_seen = {r["op"] for r in report["results"]}
    for family in runner.CASE_FAMILIES:
        assert any(op.startswith(family) or family in op for op in ops_seen) or (
            family == "distance" and any(op.startswith("pair_distances") for op in ops_seen)
        ), family
    fused = [r for r in report["results"] if r["impl"] == "fused"]
    assert fused and all(r["status"] == "ok" and r["median_ms"] > 0 for r in fused)
    assert {r["mode"] for r in fused} >= {"fwd", "fwd+bwd"}
    # every baseline that can run here ran (peers are test extras, so all are installed)
    errors = [(r["op"], r["mode"], r["impl"], r["status"]) for r in report["results"] if r["status"] != "ok"]
    assert not errors, errors
    for r in report["results"]:
        if r["impl"] != "fused":
            assert len(r["ratios"]) == report["pairs"] >= 5
            assert r["ratio_min"] <= r["speedup"] <= r["ratio_max"]
    assert report["busy"] == bool(report["busy_reasons"])
    assert report["cpu_count"] == os.cpu_count()
    if core.read_cpu() is not None:  # Linux with schedstat: the real reader measured the share
        assert 0 < report["cpu_share"] <= 1
    table = runner.format_table(report)
    assert "| gdn |" in table
    assert ("WARNING" in table) == report["busy"]


def test_gate_catches_wrong_kernel():
    def wrong_gdn(x, beta, gamma, inverse=False, simplified=False):
        return ops.gdn(x, beta, gamma, inverse, simplified) * (1 + 1e-2)  # 1% off

    report = runner.run(
        "cpu",
        quick=True,
        threads=1,
        only=["gdn"],
        compile_baselines=False,
        overrides={"gdn": {"fused_gdn": wrong_gdn}},
        progress=False,
    )
    # the op's rows (the nn.GDN module rows call ops.gdn itself, not the override)
    rows = [r for r in report["results"] if r["op"] in ("gdn", "igdn")]
    fused = [r for r in rows if r["impl"] == "fused"]
    assert fused and all(r["status"].startswith("FAILED") for r in fused)
    assert all(r["speedup"] is None for r in rows)
    assert "FAILED" in runner.format_table(report)


# ------------------------------------------------------------------ fakes


class FakeClock:
    """The wall clock: advances only when a fake implementation "runs"."""

    def __init__(self):
        self.t = 0.0

    def __call__(self):
        return self.t


class FakeCPU:
    """Per-thread (CPU s, run-queue wait s) counters: every reading advances thread 1 by ``cpu``
    and ``wait``, so each timed block (one reading before, one after) gets exactly that."""

    def __init__(self, cpu, wait):
        self.step, self.now = (cpu, wait), (0.0, 0.0)

    def __call__(self):
        self.now = (self.now[0] + self.step[0], self.now[1] + self.step[1])
        return {1: self.now}


def _impl(clock, name, durations_ms, log):
    """A fake implementation: each call takes the next duration (the last repeats) on the clock."""
    it = iter(durations_ms)
    last = [durations_ms[-1]]

    def fn():
        last[0] = next(it, last[0])
        clock.t += last[0] * 1e-3
        log.append(name)

    return fn


@pytest.fixture
def fake(monkeypatch):
    """Fake seams and one fake op family "fake": a fused op of 2 ms and a baseline of 6 ms."""
    clock = FakeClock()
    monkeypatch.setattr(core, "WALL", clock)
    monkeypatch.setattr(runner, "copy_bandwidth_gbps", lambda *a, **k: 10.0)
    monkeypatch.setattr(runner, "gemm_gflops", lambda *a, **k: 100.0)
    monkeypatch.setattr(core, "steady_allocator", lambda: "fake allocator policy")  # leave pytest's malloc alone
    env = types.SimpleNamespace(clock=clock, log=[], load=0.0, cases_built=0)
    monkeypatch.setattr(core, "LOAD_READER", lambda: env.load)
    monkeypatch.setattr(core, "CPU_READER", FakeCPU(1.0, 0.0))  # quiet: every asked-for second got

    def cases(device, quick, compile_baselines):
        env.cases_built += 1
        return [
            core.Case(
                "fakeop",
                "tiny",
                "fwd",
                _impl(clock, "A", [2.0], env.log),
                {"slow": _impl(clock, "B", [6.0], env.log)},
                lambda: None,
                bytes=4_000_000,
            )
        ]

    monkeypatch.setitem(runner.CASE_FAMILIES, "fake", types.SimpleNamespace(cases=cases))
    return env


# ------------------------------------------------------------------ pairs and spreads


def test_pairs_alternate_and_ratios_are_baseline_over_fused(fake):
    pairs = 6
    warm = 3  # warm-up calls of each implementation (all under 0.5 s)
    f_ms = [2.0, 2.0, 4.0, 2.0, 1.0, 2.0]
    b1_ms = [6.0, 9.0, 4.0, 2.0, 5.0, 6.0]
    b2_ms = [1.0, 1.0, 1.0, 3.0, 1.0, 1.0]
    log = fake.log
    # the fused op is timed in each baseline's pairs: warm-up, then pairs for b1, pairs for b2
    fused = _impl(fake.clock, "A", [2.0] * warm + f_ms + f_ms, log)
    case = core.Case(
        "op",
        "s",
        "fwd",
        fused,
        {
            "b1": _impl(fake.clock, "B", [6.0] * warm + b1_ms, log),
            "b2": _impl(fake.clock, "C", [1.0] * warm + b2_ms, log),
        },
        lambda: None,
    )
    # block_s so short that every block is one call: block medians are the scripted durations
    rows = core.run_case(case, "cpu", bandwidth=0, pairs=pairs, block_s=1e-4)
    assert log == ["A"] * warm + ["B"] * warm + ["A", "B"] * pairs + ["C"] * warm + ["A", "C"] * pairs
    by = {r.impl: r for r in rows}
    for name, b_ms in (("b1", b1_ms), ("b2", b2_ms)):
        r = by[name]
        want = [b / f for f, b in zip(f_ms, b_ms)]
        assert r.ratios == pytest.approx(want)
        assert len(r.ratios) == pairs >= core.MIN_PAIRS
        assert r.ratio_min == pytest.approx(min(want)) and r.ratio_max == pytest.approx(max(want))
        assert r.ratio_min <= r.speedup <= r.ratio_max
        assert r.speedup == pytest.approx(statistics.median(want))
        assert r.median_ms == pytest.approx(statistics.median(b_ms))
        assert r.fused_ms == pytest.approx(statistics.median(f_ms))
    assert by["fused"].median_ms == pytest.approx(statistics.median(f_ms + f_ms))


def test_blocks_repeat_calls_and_take_the_median(fake):
    # 1 ms calls in a 5.5 ms block: 5 calls a block, the block's time is their median
    calls = []
    fn = _impl(fake.clock, "A", [1.0, 1.0, 1.0, 1.0, 9.0, 1.0, 1.0, 1.0], calls)
    reps = core.warm_up(fn, "cpu", block_s=5.5e-3)
    assert reps == 5 and len(calls) == 3
    usage = core.Usage()
    assert core.time_block(fn, "cpu", reps, usage) == pytest.approx(1.0)  # the 9 ms outlier is not the median
    assert len(calls) == 8 and usage.blocks == 1 and usage.wall_s == pytest.approx(13e-3)


def test_too_few_pairs_is_refused(fake, capsys):
    case = core.Case("op", "s", "fwd", lambda: None, {}, lambda: None)
    with pytest.raises(ValueError, match="pairs"):
        core.run_case(case, "cpu", 0, pairs=core.MIN_PAIRS - 1)
    assert runner.main(["--only", "fake", "--pairs", str(core.MIN_PAIRS - 1)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: --pairs")


def test_wrong_fused_result_is_a_failed_row_and_nothing_is_timed(fake):
    def check():
        raise AssertionError("op: max abs error 0.1")

    case = core.Case(
        "op", "s", "fwd", _impl(fake.clock, "A", [1.0], fake.log), {"b": _impl(fake.clock, "B", [1.0], fake.log)}, check
    )
    rows = core.run_case(case, "cpu", 0, pairs=5, block_s=1e-4)
    assert [r.status for r in rows] == ["FAILED: op: max abs error 0.1"]
    assert rows[0].speedup is None and fake.log == []


def test_table_shows_median_ratio_with_spread(fake):
    report = runner.run(only=["fake"], progress=False)
    assert report["pairs"] == core.PAIRS and report["busy"] is False
    slow = [r for r in report["results"] if r["impl"] == "slow"][0]
    assert slow["ratios"] == pytest.approx([3.0] * core.PAIRS)
    table = runner.format_table(report)
    assert "| fakeop | tiny | fwd | 2.000 | 2.0 | 20% | 3.00x (3.00-3.00) |" in table.splitlines()
    assert "WARNING" not in table
    # a spread with large ratios: fewer decimals, each bound formatted like the median
    report["results"][1].update(speedup=123.4, ratio_min=98.76, ratio_max=150.2)
    assert "| 123x (98.8-150) |" in runner.format_table(report)


def test_compute_bound_cases_get_gflops_beside_the_same_run_gemm(fake, monkeypatch):
    """A case that counts its FLOPs gets GFLOP/s and the fraction of the run's GEMM throughput."""
    clock = fake.clock

    def cases(device, quick, compile_baselines):
        return [
            core.Case(
                "flopop",
                "tiny",
                "fwd",
                _impl(clock, "A", [2.0], fake.log),
                {"slow": _impl(clock, "B", [6.0], fake.log)},
                lambda: None,
                flops=50_000_000,
            )
        ]

    monkeypatch.setitem(runner.CASE_FAMILIES, "flop", types.SimpleNamespace(cases=cases))
    report = runner.run(only=["flop"], progress=False)
    assert report["gemm_gflops"] == 100.0
    row = [r for r in report["results"] if r["impl"] == "fused"][0]
    assert row["gflops"] == pytest.approx(25.0) and row["gemm_fraction"] == pytest.approx(0.25)  # 0.05 GFLOP in 2 ms
    table = runner.format_table(report)
    assert "| op | size | mode | fused ms | GB/s | % copy bw | GFLOP/s | % GEMM | vs slow |" in table
    assert "| flopop | tiny | fwd | 2.000 |  |  | 25.0 | 25% | 3.00x (3.00-3.00) |" in table
    assert "float32 GEMM 100 GFLOP/s" in runner.format_header(report)
    # a memory-bound family alone: no GFLOP/s columns
    assert "GFLOP/s" not in runner.format_table(runner.run(only=["fake"], progress=False))


def test_cli_records_the_allocator_policy(fake, tmp_path):
    out = tmp_path / "r.json"
    assert runner.main(["--only", "fake", "--steady-allocator", "--json", str(out)]) == 0
    report = json.loads(out.read_text())
    assert report["allocator"] == "fake allocator policy"
    assert "fake allocator policy" in runner.format_header(report)


def test_steady_allocator_fixes_glibc_thresholds():
    """In a subprocess (it changes malloc for the whole process): on glibc the policy is set and
    a large temporary no longer costs a fresh mapping each time."""
    import subprocess
    import sys

    code = (
        "import resource, torch\n"
        "from vaeiso_ext.bench import core\n"
        "def faults():\n"
        "  a = resource.getrusage(resource.RUSAGE_SELF).ru_minflt\n"
        "  for _ in range(20): torch.empty(4 << 20).fill_(1)\n"
        "  return resource.getrusage(resource.RUSAGE_SELF).ru_minflt - a\n"
        "before = faults(); policy = core.steady_allocator(); faults(); after = faults()\n"
        "print(policy, before, after)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd="/")
    assert out.returncode == 0, out.stderr[-2000:]
    words = out.stdout.split()
    if words[0] == "None":
        pytest.skip("not glibc")
    before, after = int(words[-2]), int(words[-1])
    assert "glibc malloc" in out.stdout
    assert after < before / 4  # 16 MB temporaries: re-faulted each time before, reused after


# ------------------------------------------------------------------ busy detection


def test_busy_rule():
    n = 4
    quiet_load = core.LOAD_PER_CORE * n
    assert core.busy_reasons(quiet_load, n, core.MIN_CPU_SHARE) == []  # at the limits: quiet
    assert core.busy_reasons(None, n, None) == []  # unmeasured is no reason
    (why,) = core.busy_reasons(quiet_load + 0.01, n, 1.0)
    assert f"{quiet_load + 0.01:.2f}" in why and "load average" in why
    (why,) = core.busy_reasons(0.0, n, 0.61)
    assert "61.0%" in why
    assert len(core.busy_reasons(9.0, n, 0.5)) == 2


def test_cpu_share_counts_only_time_asked_for():
    # a single-threaded baseline on a quiet 2-thread run: one thread ran all the time, the other
    # slept (asked for nothing): the process got all it asked for, though CPU / (wall x 2) = 50%
    u = core.Usage()
    u.add(1.0, {1: (0.0, 0.0), 2: (5.0, 1.0)}, {1: (1.0, 0.0), 2: (5.0, 1.0)})
    assert u.share == pytest.approx(1.0)
    # two threads sharing the cores with another process: each ran 0.5 s and waited 0.5 s
    u.add(1.0, {1: (1.0, 0.0), 2: (5.0, 1.0)}, {1: (1.5, 0.5), 2: (5.5, 1.5)})
    assert u.share == pytest.approx(2.0 / 3.0)  # (1 + 1) s got of (1 + 2) s asked for
    # a thread born inside a block counts from zero; one that ended is left out
    v = core.Usage()
    v.add(1.0, {1: (0.0, 0.0), 9: (3.0, 3.0)}, {1: (0.4, 0.0), 7: (0.4, 0.2)})
    assert v.share == pytest.approx(0.8 / 1.0)
    # no CPU reading (not Linux): no share, and so no busy verdict from it
    w = core.Usage()
    w.add(1.0, None, None)
    assert w.share is None


def test_run_records_load_and_share(fake, monkeypatch):
    loads = iter([0.25, 1.75])
    monkeypatch.setattr(core, "LOAD_READER", lambda: next(loads))
    monkeypatch.setattr(core, "CPU_READER", FakeCPU(0.6, 0.4))
    report = runner.run(only=["fake"], quick=True, progress=False)
    assert report["load_before"] == 0.25 and report["load_after"] == 1.75
    assert report["cpu_share"] == pytest.approx(0.6)
    assert report["cpu_count"] == os.cpu_count()
    assert report["timing"]["blocks"] == 2 * core.QUICK_PAIRS
    assert report["busy"] is True and len(report["busy_reasons"]) == 1 and "60.0%" in report["busy_reasons"][0]


def _one_error_line(err):
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    return lines[0]


def test_json_refused_when_cpu_share_low(fake, monkeypatch, tmp_path, capsys):
    monkeypatch.setattr(core, "CPU_READER", FakeCPU(0.5, 0.5))
    path = tmp_path / "out.json"
    assert runner.main(["--only", "fake", "--quick", "--json", str(path)]) == 2
    assert not path.exists() and os.listdir(tmp_path) == []
    out, err = capsys.readouterr()
    line = _one_error_line(err)
    assert "--allow-busy" in line and "50.0%" in line and str(path) in line
    assert "WARNING" in out and "| fakeop |" in out  # the table is still printed, with the warning


def test_json_refused_before_the_start_when_loaded(fake, tmp_path, capsys):
    fake.load = 0.31 * os.cpu_count() + 0.1
    path = tmp_path / "out.json"
    assert runner.main(["--only", "fake", "--json", str(path)]) == 2
    line = _one_error_line(capsys.readouterr().err)
    assert "--allow-busy" in line and f"{fake.load:.2f}" in line
    assert fake.cases_built == 0 and os.listdir(tmp_path) == []  # nothing run, nothing written


def test_allow_busy_writes_a_file_marked_busy(fake, tmp_path, capsys):
    fake.load = 0.5 * os.cpu_count()
    path = tmp_path / "out.json"
    assert runner.main(["--only", "fake", "--quick", "--json", str(path), "--allow-busy"]) == 0
    report = json.loads(path.read_text())
    assert report["busy"] is True and "load average" in report["busy_reasons"][0]
    assert report["load_before"] == fake.load and report["cpu_share"] == pytest.approx(1.0)
    for key in ("load_after", "cpu_count"):
        assert key in report
    assert "marked busy" in capsys.readouterr().out
    # every table made from the file carries the warning: the function and --table
    assert runner.format_table(report).startswith("> **WARNING: recorded on a busy machine**")
    assert runner.main(["--table", str(path)]) == 0
    out = capsys.readouterr().out
    assert "WARNING: recorded on a busy machine" in out and "| fakeop |" in out


def test_busy_run_without_json_prints_the_warning(fake, monkeypatch, capsys):
    monkeypatch.setattr(core, "CPU_READER", FakeCPU(0.5, 0.5))
    assert runner.main(["--only", "fake", "--quick"]) == 0
    out, err = capsys.readouterr()
    assert "WARNING: recorded on a busy machine" in out and err == ""


def test_quiet_run_writes_an_unmarked_file(fake, tmp_path, capsys):
    path = tmp_path / "out.json"
    assert runner.main(["--only", "fake", "--quick", "--json", str(path)]) == 0
    report = json.loads(path.read_text())
    assert report["busy"] is False and report["busy_reasons"] == []
    assert "WARNING" not in capsys.readouterr().out
    assert runner.main(["--table", str(tmp_path / "missing.json")]) == 2
    assert "missing.json" in _one_error_line(capsys.readouterr().err)


def test_small_call_family_runs_alone():
    """``--only small``: the small-call cases (where per-call overhead shows) run on their own,
    fwd and fwd+bwd for each of the three ops, and pass the float64 gate."""
    report = runner.run("cpu", quick=True, threads=1, only=["small"], compile_baselines=False, progress=False)
    fused = [r for r in report["results"] if r["impl"] == "fused"]
    assert {(r["op"], r["mode"]) for r in fused} == {
        (op, mode) for op in ("small gdn", "small ssim", "small pair_distances") for mode in ("fwd", "fwd+bwd")
    }
    assert all(r["status"] == "ok" for r in report["results"]), [r["status"] for r in report["results"]]
    sizes = {r["op"]: r["size"] for r in fused}
    assert sizes == {"small gdn": "N=1 C=8 8x8", "small ssim": "1x1x16x16", "small pair_distances": "sse N=4 K=2 16"}
