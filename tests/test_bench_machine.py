"""The benchmark's page-fault counts and machine description: minor faults per call come from
the fault reader around each timed block (a fake reader here, so the counts are known), every
implementation gets its own count, and a recording names its machine (processor, kernel build,
cores, caches, allocator, bandwidth, GEMM rate) in the JSON and the tables' header."""

import json
import os
import types

import pytest

import vaeiso_ext
from vaeiso_ext.bench import core, runner


class FakeClock:
    def __init__(self):
        self.t = 0.0

    def __call__(self):
        return self.t


class FakeFaults:
    """The process's fault counter: each call of an implementation adds its scripted faults."""

    def __init__(self):
        self.n = 0

    def __call__(self):
        return self.n


def _impl(clock, faults, ms, per_call):
    def fn():
        clock.t += ms * 1e-3
        faults.n += per_call

    return fn


@pytest.fixture
def fake(monkeypatch):
    clock, faults = FakeClock(), FakeFaults()
    monkeypatch.setattr(core, "WALL", clock)
    monkeypatch.setattr(core, "FAULT_READER", faults)
    monkeypatch.setattr(core, "LOAD_READER", lambda: 0.0)
    monkeypatch.setattr(core, "CPU_READER", lambda: {1: (0.0, 0.0)})
    monkeypatch.setattr(runner, "copy_bandwidth_gbps", lambda *a, **k: 12.5)
    monkeypatch.setattr(runner, "gemm_gflops", lambda *a, **k: 77.0)
    monkeypatch.setattr(core, "steady_allocator", lambda: "fake steady policy")

    def cases(device, quick, compile_baselines):
        return [
            core.Case(
                "fakeop",
                "tiny",
                "fwd",
                _impl(clock, faults, 2.0, 0),
                {"leaky": _impl(clock, faults, 6.0, 300), "some": _impl(clock, faults, 4.0, 3)},
                lambda: None,
            )
        ]

    monkeypatch.setitem(runner.CASE_FAMILIES, "fake", types.SimpleNamespace(cases=cases))
    return types.SimpleNamespace(clock=clock, faults=faults)


def test_time_block_counts_faults_per_call(fake):
    counted = core.Faults()
    fn = _impl(fake.clock, fake.faults, 1.0, 7)
    core.time_block(fn, "cpu", 5, core.Usage(), counted)
    core.time_block(fn, "cpu", 3, core.Usage(), counted)
    assert (counted.faults, counted.calls) == (56, 8) and counted.per_call == pytest.approx(7.0)
    # calls outside the timed blocks (warm-up) are not counted
    core.warm_up(fn, "cpu", 1e-3)
    assert counted.faults == 56
    # no reading (no getrusage): not measured, never a made-up zero
    none = core.Faults()
    none.add(None, 5, 3)
    assert none.per_call is None
    assert core.Faults().per_call is None  # no calls


def test_every_implementation_gets_its_own_fault_count(fake):
    report = runner.run(only=["fake"], progress=False)
    by = {r["impl"]: r for r in report["results"]}
    assert by["fused"]["faults_per_call"] == 0
    assert by["leaky"]["faults_per_call"] == pytest.approx(300)
    assert by["some"]["faults_per_call"] == pytest.approx(3)
    table = runner.format_table(report)
    assert "| op | size | mode | fused | leaky | some |" in table
    assert "| fakeop | tiny | fwd | 0.0 | 300 | 3.0 |" in table.splitlines()
    # the speed table is unchanged above it
    assert "| fakeop | tiny | fwd | 2.000 |  |  | 3.00x (3.00-3.00) | 2.00x (2.00-2.00) |" in table.splitlines()


def test_real_fault_reader_counts_fresh_pages():
    before = core.read_minflt()
    if before is None:
        pytest.skip("no getrusage")
    import mmap

    m = mmap.mmap(-1, 64 << 20)  # 64 MB of fresh anonymous pages, each faulted on first write
    for i in range(0, len(m), 4096):
        m[i] = 1
    after = core.read_minflt()
    m.close()
    assert after - before >= (64 << 20) // (2 << 20)  # at least one fault per 2 MB (huge pages)


def test_default_allocator_unless_steady_is_asked_for(fake, tmp_path):
    out = tmp_path / "r.json"
    assert runner.main(["--only", "fake", "--json", str(out)]) == 0
    report = json.loads(out.read_text())
    assert report["allocator"] == core.default_allocator() == report["machine"]["allocator"]
    assert "default" in report["allocator"] and "fake steady policy" not in runner.format_header(report)
    assert runner.main(["--only", "fake", "--steady-allocator", "--json", str(out)]) == 0
    report = json.loads(out.read_text())
    assert report["allocator"] == "fake steady policy" == report["machine"]["allocator"]
    assert "fake steady policy" in runner.format_header(report)
    assert "fake steady policy" in runner.format_table(report)  # the faults table says it too


def test_steady_allocator_refused_where_it_cannot_be_set(fake, monkeypatch, capsys):
    monkeypatch.setattr(core, "steady_allocator", lambda: None)
    assert runner.main(["--only", "fake", "--steady-allocator"]) == 2
    assert "--steady-allocator" in capsys.readouterr().err


def _fake_sysfs(tmp_path, caches):
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text(
        "processor\t: 0\nvendor_id\t: AuthenticAMD\nmodel name\t: AMD EPYC 7B13 64-Core Processor\n"
        "flags\t\t: fpu avx2\n\nprocessor\t: 1\nmodel name\t: AMD EPYC 7B13 64-Core Processor\n"
    )
    cache = tmp_path / "cache"
    for i, (level, kind, size) in enumerate(caches):
        d = cache / f"index{i}"
        d.mkdir(parents=True)
        (d / "level").write_text(f"{level}\n")
        (d / "type").write_text(f"{kind}\n")
        (d / "size").write_text(f"{size}\n")
    (cache / "uevent").write_text("")  # not an index entry
    return str(cpuinfo), str(cache)


def test_machine_info_reads_model_and_caches(fake, tmp_path, monkeypatch, capsys):
    cpuinfo, cache = _fake_sysfs(
        tmp_path, [(1, "Data", "32K"), (1, "Instruction", "32K"), (2, "Unified", "512K"), (3, "Unified", "32768K")]
    )
    monkeypatch.setattr(core, "CPUINFO_PATH", cpuinfo)
    monkeypatch.setattr(core, "CACHE_DIR", cache)
    report = runner.run(only=["fake"], progress=False)
    m = report["machine"]
    assert m["cpu_model"] == "AMD EPYC 7B13 64-Core Processor"
    assert m["l2_kb"] == 512 and m["l3_kb"] == 32768
    assert m["cpu_isa"] == vaeiso_ext.build_info()["cpu_isa"] and m["cores"] == os.cpu_count()
    assert m["copy_bandwidth_gbps"] == 12.5 and m["gemm_gflops"] == 77.0
    header = runner.format_header(report)
    first = header.splitlines()[0]
    for part in (
        "AMD EPYC 7B13 64-Core Processor",
        f"{m['cpu_isa']} CPU kernels",
        f"{os.cpu_count()} cores",
        "L2 512 KB",
        "L3 32 MB",
        "12.5 GB/s",
        "77 GFLOP/s",
        core.default_allocator(),
    ):
        assert part in first, (part, first)
    # --table of the recording prints the same header
    path = tmp_path / "r.json"
    path.write_text(json.dumps(report))
    capsys.readouterr()
    assert runner.main(["--table", str(path)]) == 0
    assert first in capsys.readouterr().out.splitlines()


def test_machine_info_without_sysfs(fake, tmp_path, monkeypatch):
    monkeypatch.setattr(core, "CPUINFO_PATH", str(tmp_path / "absent"))
    monkeypatch.setattr(core, "CACHE_DIR", str(tmp_path / "absent"))
    m = runner.run(only=["fake"], progress=False)["machine"]
    assert m["cpu_model"] and m["l2_kb"] is None and m["l3_kb"] is None
    assert "L2 n/a, L3 n/a" in core.format_machine(m)


def test_machine_info_of_this_machine_is_sane():
    m = core.machine_info("cpu", core.default_allocator(), 10.0, 50.0)
    assert isinstance(m["cpu_model"], str) and m["cpu_model"].strip()
    assert m["cpu_isa"] in ("baseline", "avx2", "avx512")
    assert m["cores"] >= 1
    for key in ("l2_kb", "l3_kb"):
        assert m[key] is None or 16 <= m[key] <= 1 << 21, (key, m[key])  # 16 KB .. 2 GB
    if m["l2_kb"] and m["l3_kb"]:
        assert m["l3_kb"] >= m["l2_kb"]
    json.dumps(m)  # JSON-ready
