"""PSS of a process tree: smaps_rollup parsing, the parent pid in a stat line, and the sum over a /proc tree."""

from __future__ import annotations

from pathlib import Path

from bench.procmem import children, parse_cpu_ticks, parse_kb_fields, parse_ppid, sample_group, tree

# A real smaps_rollup, as Linux 6.x writes it.
SMAPS_ROLLUP = """\
55d0c2a4e000-7ffc5b7f6000 ---p 00000000 00:00 0                          [rollup]
Rss:              412340 kB
Pss:              398765 kB
Pss_Dirty:        390001 kB
Pss_Anon:         385000 kB
Pss_File:          13765 kB
Pss_Shmem:             0 kB
Shared_Clean:      15000 kB
Shared_Dirty:        120 kB
Private_Clean:      2000 kB
Private_Dirty:    395220 kB
Referenced:       410000 kB
Anonymous:        385100 kB
LazyFree:              0 kB
AnonHugePages:         0 kB
ShmemPmdMapped:        0 kB
FilePmdMapped:         0 kB
Shared_Hugetlb:        0 kB
Private_Hugetlb:       0 kB
Swap:                  0 kB
SwapPss:               0 kB
Locked:                0 kB
"""


def test_smaps_rollup_fields_in_bytes() -> None:
    fields = parse_kb_fields(SMAPS_ROLLUP)
    assert fields["Pss"] == 398765 * 1024
    assert fields["Rss"] == 412340 * 1024
    assert fields["Pss_Anon"] == 385000 * 1024
    assert fields["Private_Dirty"] == 395220 * 1024
    assert "55d0c2a4e000-7ffc5b7f6000 ---p 00000000 00" not in fields  # the header line is no field
    assert len(fields) == 21


def test_status_lines_without_kb_are_left_out() -> None:
    assert parse_kb_fields("Name:\tpython\nVmHWM:\t  2048 kB\nThreads:\t12\n") == {"VmHWM": 2048 * 1024}


def test_parent_pid_after_a_command_name_with_spaces_and_parentheses() -> None:
    assert parse_ppid("4242 (python) S 17 4242 17 0 -1 4194560 1234") == 17
    assert parse_ppid("4243 (a b) c)) R 4242 4242 17 0 -1") == 4242


def test_cpu_ticks_are_user_plus_system_time() -> None:
    # fields 14 (utime) and 15 (stime) of proc(5), after a command name holding ") "
    line = "4243 (a) b) S 1 4243 4243 0 -1 4194560 900 0 0 0 1500 250 0 0 20 0 3 0"
    assert parse_cpu_ticks(line) == 1750


def _process(proc: Path, pid: int, ppid: int, pss_kb: int | None, rss_kb: int = 0) -> None:
    directory = proc / str(pid)
    directory.mkdir()
    (directory / "stat").write_text(f"{pid} (python3 -m x) S {ppid} {pid} 1 0 -1 0\n")
    if pss_kb is not None:
        rollup = f"000-fff ---p 0 00:00 0 [rollup]\nRss: {rss_kb} kB\nPss: {pss_kb} kB\n"
        (directory / "smaps_rollup").write_text(rollup)


def test_the_sum_covers_the_process_and_all_its_descendants(tmp_path: Path) -> None:
    _process(tmp_path, 100, 1, 300_000, rss_kb=310_000)  # the worker
    _process(tmp_path, 101, 100, 120_000)  # a forked snapshot copy
    _process(tmp_path, 102, 101, 1_000)  # a child of the copy
    _process(tmp_path, 103, 100, None)  # exited: its stat is still there, its smaps_rollup not
    _process(tmp_path, 200, 1, 999_999)  # not in the tree
    (tmp_path / "self").mkdir()  # not a pid
    assert sorted(children(100, tmp_path)) == [101, 103]
    assert sorted(tree(100, tmp_path)) == [100, 101, 102, 103]
    sample = sample_group(100, tmp_path)
    assert sample.pss == (300_000 + 120_000 + 1_000) * 1024
    assert sample.root_pss == 300_000 * 1024
    assert sample.root_rss == 310_000 * 1024
    assert sample.processes == 3
