"""`sluice tune` and `sluice iotune` run as an operator runs them: `--check`
on the real host reads and changes nothing; `--apply` / `--revert` against a
fake /proc and /sys tree (`--root`) change the files and put them back byte
for byte; `iotune` on a tmp dir writes a properties file. Every command has a
timeout."""
import json
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest

from conftest import sluice_bin

CMD_TIMEOUT_S = 60
NOBODY = 65534

# Files --check reads on a real host (those that exist are compared before/after).
HOST_FILES = [
    "/proc/sys/vm/swappiness",
    "/proc/sys/fs/aio-max-nr",
    "/proc/sys/net/core/somaxconn",
    "/proc/sys/net/core/rmem_max",
    "/sys/kernel/mm/transparent_hugepage/enabled",
    "/sys/devices/system/clocksource/clocksource0/current_clocksource",
]


def sluice(*args, check=True, timeout=CMD_TIMEOUT_S, prefix=()):
    out = subprocess.run([*prefix, str(sluice_bin()), *args], capture_output=True, text=True,
                         timeout=timeout)
    if check:
        assert out.returncode == 0, f"sluice {' '.join(args)} exited {out.returncode}:\n{out.stdout}\n{out.stderr}"
    return out


def snapshot(paths):
    snap = {}
    for p in paths:
        try:
            snap[str(p)] = Path(p).read_bytes()
        except OSError:
            pass
    return snap


def test_check_on_the_real_host_lists_settings_and_changes_nothing(tmp_path):
    files = HOST_FILES + [str(p) for p in Path("/sys/block").glob("*/queue/scheduler")] \
        + [str(p) for p in Path("/sys/block").glob("*/queue/nomerges")]
    before = snapshot(files)
    assert before, "no readable host file to compare"
    report = json.loads(sluice("tune", "--check", "--output", "json", "--data-dir", str(tmp_path)).stdout)
    checks = report["checks"]
    assert len(checks) >= 8, checks
    names = [c["name"] for c in checks]
    assert len(set(names)) == len(names), names
    for want in ["cpu_governor", "irq_affinity", "rps", "disk_scheduler", "disk_nomerges",
                 "transparent_hugepages", "swappiness", "aio_max_nr", "memlock", "clocksource",
                 "somaxconn", "rmem_max", "ballooning", "cstates", "irqbalance", "nic_rings"]:
        assert want in names, f"{want} missing from {names}"
    for c in checks:
        for key in ("name", "current", "recommended", "why", "status"):
            assert isinstance(c[key], str) and c[key], (key, c)
        assert isinstance(c["ok"], bool), c
    by = {c["name"]: c for c in checks}
    # What the kernel shows is what --check reports.
    if "/proc/sys/vm/swappiness" in before:
        assert by["swappiness"]["current"] == before["/proc/sys/vm/swappiness"].decode().strip()
    text = sluice("tune", "--check", "--data-dir", str(tmp_path)).stdout
    assert "swappiness" in text and "RECOMMENDED" in text
    assert snapshot(files) == before, "tune --check changed a host file"


def write(root: Path, rel: str, text: str):
    p = root / rel
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_text(text)


def fake_host(root: Path, data_dir: Path):
    """A small machine: 2 CPUs with a governor and a deep idle state, a NIC with
    two queue IRQs, a disk under the data dir, sysctls, memlock, irqbalance
    running and a balloon device."""
    files = {
        "proc/sys/vm/swappiness": "60\n",
        "proc/sys/fs/aio-max-nr": "65536\n",
        "proc/sys/net/core/somaxconn": "128\n",
        "proc/sys/net/core/rmem_max": "212992\n",
        "proc/sys/net/core/wmem_max": "212992\n",
        "sys/kernel/mm/transparent_hugepage/enabled": "[always] madvise never\n",
        "sys/devices/system/cpu/online": "0-1\n",
        "sys/devices/system/clocksource/clocksource0/current_clocksource": "hpet\n",
        "sys/devices/system/clocksource/clocksource0/available_clocksource": "tsc hpet acpi_pm \n",
        "proc/interrupts": "           CPU0       CPU1\n"
                           " 24:          1          0  IO-APIC   5-edge      ACPI:Ged\n"
                           " 40:        100        200  PCI-MSI 1-edge      eth0-TxRx-0\n"
                           " 41:        100        200  PCI-MSI 2-edge      eth0-TxRx-1\n"
                           "NMI:          0          0   Non-maskable interrupts\n",
        "proc/irq/40/smp_affinity": "3\n",
        "proc/irq/41/smp_affinity": "3\n",
        "sys/class/net/eth0/queues/rx-0/rps_cpus": "0\n",
        "sys/class/net/eth0/queues/tx-0/xps_cpus": "0\n",
        "proc/self/limits": "Limit                     Soft Limit           Hard Limit           Units\n"
                            "Max locked memory         65536                65536                bytes\n",
        "proc/321/comm": "irqbalance\n",
        "proc/1/comm": "init\n",
    }
    for cpu in ("cpu0", "cpu1"):
        files[f"sys/devices/system/cpu/{cpu}/cpufreq/scaling_governor"] = "powersave\n"
        files[f"sys/devices/system/cpu/{cpu}/cpufreq/scaling_available_governors"] = "performance powersave\n"
        for state, name, latency in (("state0", "POLL", "0"), ("state1", "C6", "100")):
            files[f"sys/devices/system/cpu/{cpu}/cpuidle/{state}/name"] = name + "\n"
            files[f"sys/devices/system/cpu/{cpu}/cpuidle/{state}/latency"] = latency + "\n"
            files[f"sys/devices/system/cpu/{cpu}/cpuidle/{state}/disable"] = "0\n"
    disk = "sys/devices/virtual/block/vdz"
    files[f"{disk}/queue/scheduler"] = "none [mq-deadline] kyber \n"
    files[f"{disk}/queue/nomerges"] = "0\n"
    files[f"{disk}/queue/write_cache"] = "write back\n"
    for rel, text in files.items():
        write(root, rel, text)
    (root / "sys/class/net/eth0/device").mkdir(parents=True)
    (root / "sys/bus/virtio/drivers/virtio_balloon/virtio0").mkdir(parents=True)
    (root / "sys/block").mkdir(parents=True)
    os.symlink("../devices/virtual/block/vdz", root / "sys/block/vdz")
    # The data dir's device, as stat shows it, is the fake disk.
    st = os.stat(data_dir)
    disk_args = ["--data-dir", str(data_dir)]
    if os.major(st.st_dev) == 0:
        disk_args = ["--disk", "vdz"]  # tmpfs/overlay: no block device to trace
    else:
        (root / "sys/dev/block").mkdir(parents=True)
        os.symlink("../../devices/virtual/block/vdz",
                   root / f"sys/dev/block/{os.major(st.st_dev)}:{os.minor(st.st_dev)}")
    return disk_args


def tree(root: Path):
    return {str(p.relative_to(root)): p.read_bytes()
            for p in sorted(root.rglob("*")) if p.is_file() and not p.is_symlink()}


def test_apply_and_revert_against_a_fake_root(tmp_path):
    root = tmp_path / "root"
    data = tmp_path / "data"
    data.mkdir()
    disk_args = fake_host(root, data)
    common = ["--root", str(root), "--profile", "latency", *disk_args]
    original = tree(root)

    report = json.loads(sluice("tune", "--check", "--output", "json", *common).stdout)
    by = {c["name"]: c for c in report["checks"]}
    assert by["swappiness"]["current"] == "60" and not by["swappiness"]["ok"]
    assert by["disk_scheduler"]["current"] == "mq-deadline", by["disk_scheduler"]
    assert by["cpu_governor"]["current"] == "powersave"
    assert by["irqbalance"]["fix"]["kind"] == "manual"
    assert by["memlock"]["current"] == "soft 65536, hard 65536"
    assert by["nic_rings"]["status"] == "unknown", "no ethtool against a fake root"
    assert tree(root) == original, "--check wrote"

    # One setting by name: only its file changes.
    out = sluice("tune", "--apply", "swappiness", *common)
    changed = {k for k, v in tree(root).items() if original.get(k) != v}
    assert changed == {"proc/sys/vm/swappiness", "var/lib/sluice/tune-state.json"}, (changed, out.stdout)
    assert (root / "proc/sys/vm/swappiness").read_text() == "1\n"

    # Then everything --apply can write; what needs the operator is said, not done.
    out = sluice("tune", "--apply", *common)
    assert "memlock: not applied, needs the operator: ulimit -l" in out.stdout, out.stdout
    assert "irqbalance: not applied, needs the operator" in out.stdout
    assert "ballooning: not applied, needs the operator" in out.stdout
    expect = {
        "proc/sys/vm/swappiness": "1\n",
        "proc/sys/fs/aio-max-nr": "1048576\n",
        "proc/sys/net/core/somaxconn": "4096\n",
        "proc/sys/net/core/rmem_max": "16777216\n",
        "proc/sys/net/core/wmem_max": "16777216\n",
        "sys/kernel/mm/transparent_hugepage/enabled": "always madvise [never]\n",
        "sys/devices/system/clocksource/clocksource0/current_clocksource": "tsc\n",
        "sys/devices/system/cpu/cpu0/cpufreq/scaling_governor": "performance\n",
        "sys/devices/system/cpu/cpu1/cpufreq/scaling_governor": "performance\n",
        "sys/devices/system/cpu/cpu0/cpuidle/state1/disable": "1\n",
        "sys/devices/system/cpu/cpu0/cpuidle/state0/disable": "0\n",
        "sys/devices/virtual/block/vdz/queue/scheduler": "[none] mq-deadline kyber \n",
        "sys/devices/virtual/block/vdz/queue/nomerges": "2\n",
        "sys/devices/virtual/block/vdz/queue/write_cache": "write back\n",
        "proc/irq/40/smp_affinity": "1\n",
        "proc/irq/41/smp_affinity": "2\n",
        "sys/class/net/eth0/queues/rx-0/rps_cpus": "3\n",
        "sys/class/net/eth0/queues/tx-0/xps_cpus": "3\n",
    }
    for rel, text in expect.items():
        assert (root / rel).read_text() == text, rel
    state = json.loads((root / "var/lib/sluice/tune-state.json").read_text())
    swap = [c for c in state["changes"] if c["path"] == "/proc/sys/vm/swappiness"]
    assert len(swap) == 1 and swap[0]["before"] == "60\n", "the first apply's value is kept"

    after = json.loads(sluice("tune", "--check", "--output", "json", *common).stdout)
    not_ok = {c["name"] for c in after["checks"] if not c["ok"]}
    assert not_ok == {"irqbalance", "memlock", "ballooning", "nic_rings"}, not_ok

    sluice("tune", "--revert", "--root", str(root))
    assert tree(root) == original, "revert did not restore every file byte for byte"
    again = sluice("tune", "--revert", "--root", str(root))
    assert "nothing to revert" in again.stdout


def test_unknown_setting_and_profile_are_refused(tmp_path):
    out = sluice("tune", "--apply", "swapiness", "--root", str(tmp_path), check=False)
    assert out.returncode != 0 and "no setting 'swapiness'" in out.stderr
    bad = tmp_path / "p.toml"
    bad.write_text("[settings]\nswappiness = \"low\"\n")
    out = sluice("tune", "--check", "--profile-file", str(bad), "--root", str(tmp_path), check=False)
    assert out.returncode != 0 and "swappiness" in out.stderr


@pytest.mark.skipif(os.geteuid() != 0 or not shutil.which("setpriv"),
                    reason="needs root (to drop to an unprivileged user) and setpriv")
def test_apply_without_permission_is_refused_and_changes_nothing():
    exe = sluice_bin()
    probe = subprocess.run(["setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups",
                            "test", "-x", str(exe)])
    if probe.returncode != 0:
        pytest.skip(f"{exe} is not executable by uid {NOBODY}")
    work = Path(tempfile.mkdtemp(prefix="sluice-tune-"))
    try:
        work.chmod(0o755)
        root = work / "root"
        data = work / "data"
        data.mkdir()
        disk_args = fake_host(root, data)
        state = work / "state"
        state.mkdir()
        state.chmod(0o777)  # the state file may be written; the kernel files may not
        original = tree(root)
        drop = ("setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups")
        out = sluice("tune", "--apply", "swappiness", "--root", str(root), *disk_args,
                     "--state-file", str(state / "s.json"), check=False, prefix=drop)
        assert out.returncode == 1, out
        assert "/proc/sys/vm/swappiness" in out.stderr and "EACCES" in out.stderr, out.stderr
        assert "not permitted" in out.stderr
        assert tree(root) == original
        assert not (state / "s.json").exists(), "a failed apply leaves nothing to revert"
        # Without a writable state dir it refuses before writing anything.
        out = sluice("tune", "--apply", "--root", str(root), *disk_args, check=False, prefix=drop)
        assert out.returncode == 1 and "var/lib/sluice" in out.stderr and "EACCES" in out.stderr, out.stderr
        assert tree(root) == original
    finally:
        shutil.rmtree(work, ignore_errors=True)


def test_iotune_writes_a_properties_file(tmp_path):
    dev = tmp_path / "dev"
    dev.mkdir()
    props_path = tmp_path / "io.properties"
    out = sluice("iotune", str(dev), "--duration", "3", "--output", str(props_path), timeout=30)
    props = {}
    for line in props_path.read_text().splitlines():
        if line.startswith("#") or not line.strip():
            continue
        k, _, v = line.partition("=")
        props[k] = v
    for key in ("seq_write.bytes_per_second", "seq_read.bytes_per_second", "rand_read_4k.qd1.iops",
                "rand_read_4k.max_iops", "rand_read_4k.saturation_queue_depth",
                "fdatasync.latency_us.p50", "fdatasync.latency_us.p99", "fdatasync.count"):
        assert int(props[key]) > 0, (key, props)
    assert props["iotune.direct_io"] in ("true", "false")
    if props["iotune.engine"] == "io_uring":
        assert "rand_read_4k.qd64.iops" in props
    assert list(dev.iterdir()) == [], "scratch file left behind"
    assert "IOPS" in out.stdout
