"""The verdict program on real serial logs recorded by load-check.sh (tests/verify/logs/README.md).

Recorded logs are used as they came off the serial console (CR LF line ends, the SeaBIOS and kernel
screen-clearing escape sequences, busybox insmod's two attempts per module). Cases the machines here
cannot produce on demand are made from a real log by one stated edit, in the test that uses them.
"""

from __future__ import annotations

import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.verify.verdict_run import LOGS, VERDICT, Verdict, run_verdict

R50 = "6.1.0-50-amd64"
R47 = "6.1.0-47-amd64"
R612 = "6.12.95+deb12-amd64"
VERMAGIC_50 = "6.1.0-50-amd64 SMP preempt mod_unload modversions "
OPEN_EXPORTS = LOGS / "exports-open-535.261.03.txt"
PROPRIETARY_EXPORTS = LOGS / "exports-proprietary-535.261.03.txt"
PASS_OPEN = LOGS / "pass-open-6.1.0-50-amd64.log"
PASS_PROPRIETARY = LOGS / "pass-proprietary-6.1.0-50-amd64.log"


def _assert_one_line_detail(verdict: Verdict, release: str) -> None:
    assert list(verdict.values) == ["LOAD_CHECK_VERDICT", "LOAD_CHECK_KERNEL", "LOAD_CHECK_DETAIL"]
    assert verdict.values["LOAD_CHECK_KERNEL"] == release
    assert verdict.values["LOAD_CHECK_DETAIL"]


# --- real logs, as recorded -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("log", "exports"),
    [(PASS_OPEN, OPEN_EXPORTS), (PASS_PROPRIETARY, PROPRIETARY_EXPORTS)],
    ids=["open", "proprietary"],
)
def test_right_kernel_passes(log: Path, exports: Path) -> None:
    verdict = run_verdict(log, exports, R50, VERMAGIC_50)
    assert verdict.returncode == 0, verdict.values
    assert verdict.values["LOAD_CHECK_VERDICT"] == "pass"
    assert verdict.category == "loads"
    # the expected misses are named with their insmod status: ENOENT for unresolved NVIDIA symbols,
    # EINVAL for nvidia-peermem built without InfiniBand peer memory
    assert (
        "nvidia-uvm=2 nvidia-modeset=2 nvidia-drm=2 nvidia-peermem=22" in verdict.values["LOAD_CHECK_DETAIL"]
    )
    _assert_one_line_detail(verdict, R50)


@pytest.mark.parametrize(
    ("log", "release", "category", "evidence"),
    [
        (
            "wrong-abi-open-6.1.0-50-on-6.1.0-47.log",
            R47,
            "wrong-abi",
            "nvidia: disagrees about version of symbol module_layout",
        ),
        (
            "wrong-series-open-6.1.0-50-on-6.12.95.log",
            R612,
            "wrong-series",
            "this_module section size must match the kernel's built struct module size",
        ),
        (
            "missing-dep-open-6.1.0-50-amd64.log",
            R50,
            "missing-dependency",
            "nvidia.ko needs symbol drm_gem_object_free",
        ),
        (
            # SeaBIOS's "Booting from ROM..." lost its line end and the BEGIN marker followed on the
            # same line (load-check.sh's /init now prints a line end first): not trusted.
            "glued-marker-open-6.1.0-50-amd64.log",
            R50,
            "unexpected",
            "a load-check marker is not at the start of its line",
        ),
        (
            "panic-init-exited-open-6.1.0-50-amd64.log",
            R50,
            "panic",
            "Kernel panic - not syncing: Attempted to kill init!",
        ),
    ],
    ids=["wrong-abi", "wrong-series", "missing-dependency", "glued-marker", "panic"],
)
def test_real_failures_have_their_own_message(log: str, release: str, category: str, evidence: str) -> None:
    verdict = run_verdict(LOGS / log, OPEN_EXPORTS, release, VERMAGIC_50)
    assert verdict.returncode == 1
    assert verdict.values["LOAD_CHECK_VERDICT"] == "fail"
    assert verdict.category == category
    assert evidence in verdict.values["LOAD_CHECK_DETAIL"]
    _assert_one_line_detail(verdict, release)


def test_wrong_abi_names_the_kernel_the_modules_were_built_for() -> None:
    verdict = run_verdict(LOGS / "wrong-abi-open-6.1.0-50-on-6.1.0-47.log", OPEN_EXPORTS, R47, VERMAGIC_50)
    assert f"than {R47}, its vermagic says {R50}" in verdict.values["LOAD_CHECK_DETAIL"]


# --- made from a real log by one edit ----------------------------------------------------------------


def _derived(tmp_path: Path, source: Path, edit: Callable[[str], str]) -> Path:
    text = source.read_bytes().decode()
    out = tmp_path / f"derived-{source.name}"
    out.write_bytes(edit(text).encode())
    assert out.read_bytes() != source.read_bytes(), "the edit changed nothing: the test would prove nothing"
    return out


def _cut_before(marker: str) -> Callable[[str], str]:
    def edit(text: str) -> str:
        return text[: text.index(marker)]

    return edit


def _cut_after(marker: str) -> Callable[[str], str]:
    def edit(text: str) -> str:
        end = text.index(marker) + len(marker)
        return text[: text.index("\n", end) + 1]

    return edit


def _insert_after(marker: str, lines: str) -> Callable[[str], str]:
    def edit(text: str) -> str:
        end = text.index("\n", text.index(marker)) + 1
        return text[:end] + lines + text[end:]

    return edit


def _replace(old: str, new: str) -> Callable[[str], str]:
    def edit(text: str) -> str:
        assert old in text
        return text.replace(old, new)

    return edit


def _drop_lines_containing(needle: str) -> Callable[[str], str]:
    def edit(text: str) -> str:
        return "".join(line for line in text.splitlines(keepends=True) if needle not in line)

    return edit


@pytest.mark.parametrize(
    ("edit", "category", "evidence"),
    [
        # QEMU never started the kernel, or it printed nothing: an empty capture (also only blank lines).
        (lambda _text: "", "no-output", "printed nothing"),
        (lambda _text: "\r\n  \r\n", "no-output", "printed nothing"),
        # The kernel ran but our /init never did: the capture ends before the BEGIN marker.
        (_cut_before("LOAD_CHECK BEGIN"), "no-init", "never ran the load-check /init"),
        # A hang: `timeout` killed QEMU while nvidia-modeset was loading, so the capture stops there.
        (
            _cut_after("LOAD_CHECK LOAD kind=nvidia name=nvidia-modeset"),
            "timeout",
            "while loading nvidia-modeset",
        ),
        # A panic while a module loads, even if a (stale) END marker follows.
        (
            _insert_after(
                "LOAD_CHECK LOAD kind=nvidia name=nvidia-drm",
                "[    8.600000] Kernel panic - not syncing: Fatal exception\r\n",
            ),
            "panic",
            "Fatal exception",
        ),
        # An oops inside nvidia.ko's init that the kernel survived.
        (
            _insert_after(
                "LOAD_CHECK LOAD kind=nvidia name=nvidia\r",
                "[    6.5] BUG: unable to handle page fault for address: 0000000000000008\r\n",
            ),
            "oops",
            "while loading nvidia (BUG: unable to handle page fault",
        ),
        # ENODEV without NVIDIA's own message: some other init failure we do not recognise.
        (
            _drop_lines_containing("NVRM: No NVIDIA GPU found"),
            "unexpected",
            "nvidia.ko failed with No such device",
        ),
        # nvidia-peermem refusing for a reason other than the missing InfiniBand peer-memory API.
        (
            _drop_lines_containing("without IB peer memory"),
            "unexpected",
            "nvidia-peermem.ko insmod status 22",
        ),
        # An in-kernel dependency that did not load (EEXIST here).
        (
            _replace("STATUS kind=dep name=video status=0", "STATUS kind=dep name=video status=17"),
            "dependency-failed",
            "in-kernel dependency video did not load (insmod status 17",
        ),
        # An insmod status nobody expects (ENOMEM).
        (
            _replace("STATUS kind=nvidia name=nvidia status=19", "STATUS kind=nvidia name=nvidia status=12"),
            "unexpected",
            "nvidia.ko insmod status 12",
        ),
        # ENOENT from nvidia.ko with no "Unknown symbol" line to explain it (here: the NVRM lines kept,
        # status changed) is not a missing dependency we can name.
        (
            _replace("STATUS kind=nvidia name=nvidia status=19", "STATUS kind=nvidia name=nvidia status=2"),
            "unexpected",
            "nvidia.ko failed with status 2 without naming an unknown symbol",
        ),
        # A marker the program does not know is distrusted, not skipped.
        (
            _insert_after("LOAD_CHECK BEGIN", "LOAD_CHECK SKIP everything\r\n"),
            "unexpected",
            "LOAD_CHECK SKIP",
        ),
        # A module whose result line is missing.
        (
            _drop_lines_containing("STATUS kind=nvidia name=nvidia-drm"),
            "unexpected",
            "no result for nvidia-drm",
        ),
    ],
    ids=[
        "empty",
        "blank",
        "no-init",
        "timeout",
        "panic-inserted",
        "oops",
        "enodev-without-nvrm",
        "peermem-other-einval",
        "dependency-failed",
        "unknown-status",
        "enoent-without-symbol",
        "unknown-marker",
        "missing-result",
    ],
)
def test_derived_failures(tmp_path: Path, edit: Callable[[str], str], category: str, evidence: str) -> None:
    log = _derived(tmp_path, PASS_OPEN, edit)
    verdict = run_verdict(log, OPEN_EXPORTS, R50, VERMAGIC_50)
    assert verdict.returncode == 1, verdict.values
    assert verdict.values["LOAD_CHECK_VERDICT"] == "fail"
    assert verdict.category == category, verdict.values["LOAD_CHECK_DETAIL"]
    assert evidence in verdict.values["LOAD_CHECK_DETAIL"]
    _assert_one_line_detail(verdict, R50)


@pytest.mark.parametrize(
    "edit",
    [
        lambda _text: "",
        _cut_before("LOAD_CHECK BEGIN"),
        _cut_after("LOAD_CHECK LOAD kind=nvidia name=nvidia-drm"),
    ],
    ids=["nothing-yet", "before-init", "while-loading"],
)
def test_qemu_stopped_at_the_time_limit_is_a_timeout(tmp_path: Path, edit: Callable[[str], str]) -> None:
    """`timeout` killed QEMU (124): however far the guest got, the message says it ran out of time."""
    log = _derived(tmp_path, PASS_OPEN, edit)
    verdict = run_verdict(log, OPEN_EXPORTS, R50, VERMAGIC_50, qemu_exit=124)
    assert verdict.returncode == 1
    assert verdict.category == "timeout"
    assert "QEMU was stopped at the time limit" in verdict.values["LOAD_CHECK_DETAIL"]


def test_time_limit_after_the_end_marker_does_not_matter() -> None:
    """A guest that printed END but was slow to power off still has a complete, judged log."""
    assert run_verdict(PASS_OPEN, OPEN_EXPORTS, R50, VERMAGIC_50, qemu_exit=124).returncode == 0


def test_plain_line_ends_pass_the_same(tmp_path: Path) -> None:
    """The verdict must not depend on the console's CR LF or the escape sequences."""
    clean = _derived(
        tmp_path,
        PASS_OPEN,
        lambda text: (
            text.replace("\r", "")
            .replace("\x1bc", "")
            .replace("\x1b[?7l", "")
            .replace("\x1b[2J", "")
            .replace("\x1b[0m", "")
        ),
    )
    assert run_verdict(clean, OPEN_EXPORTS, R50).values == run_verdict(PASS_OPEN, OPEN_EXPORTS, R50).values


def test_unknown_symbol_not_exported_by_nvidia_fails(tmp_path: Path) -> None:
    """nvidia-modeset misses nvidia_get_rm_ops: fine while nvidia.ko exports it, a real gap otherwise."""
    exports = tmp_path / "exports"
    symbols = OPEN_EXPORTS.read_text().splitlines()
    assert "nvidia_get_rm_ops" in symbols
    exports.write_text("\n".join(s for s in symbols if s != "nvidia_get_rm_ops") + "\n")
    verdict = run_verdict(PASS_OPEN, exports, R50)
    assert verdict.returncode == 1
    assert verdict.category == "missing-dependency"
    assert "nvidia-modeset.ko needs symbol nvidia_get_rm_ops" in verdict.values["LOAD_CHECK_DETAIL"]


def test_other_booted_kernel_fails(tmp_path: Path) -> None:
    verdict = run_verdict(PASS_OPEN, OPEN_EXPORTS, "6.1.0-50-cloud-amd64")
    assert verdict.returncode == 1
    assert verdict.category == "wrong-kernel"
    assert f"booted {R50}, not 6.1.0-50-cloud-amd64" in verdict.values["LOAD_CHECK_DETAIL"]


def test_vermagic_naming_another_release_fails() -> None:
    verdict = run_verdict(PASS_OPEN, OPEN_EXPORTS, R50, "6.1.0-47-amd64 SMP preempt mod_unload modversions ")
    assert verdict.returncode == 1
    assert verdict.category == "vermagic"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--log", str(PASS_OPEN), "--release", R50], "usage: verdict.sh"),
        (["--log", "/nonexistent.log", "--exports", str(OPEN_EXPORTS), "--release", R50], "does not exist"),
        (["--bogus", "x"], "unknown option '--bogus'"),
    ],
    ids=["missing-exports", "missing-log", "unknown-option"],
)
def test_bad_usage_is_one_line(args: list[str], message: str) -> None:
    result = subprocess.run([str(VERDICT), *args], capture_output=True, text=True, check=False)
    assert result.returncode == 2
    assert result.stdout == ""
    assert len(result.stderr.splitlines()) == 1
    assert message in result.stderr
