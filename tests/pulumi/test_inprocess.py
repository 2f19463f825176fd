"""In-process runs (components/inprocess.py) follow each other in one process, whatever came before:
the test suite, the offline render and the benchmarks all run the program several times."""

from __future__ import annotations

from tests.pulumi import harness as h


def test_a_run_after_a_refused_config_registers_normally() -> None:
    good, secret = h.build_config([h.target("a", "1877.17", h.checksummed()[0])])
    bad = {**good, f"{h.NS}:namespace": "Not_A_Namespace"}
    h.run_failing(bad, secret)
    recorder, result = h.run(good, secret)
    assert recorder.of_type("kubernetes:apps/v1:DaemonSet")
    assert set(result.outputs["targets"]) == {"a"}
