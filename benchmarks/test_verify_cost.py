"""One SigV4 ``verify`` of a signed heartbeat: the endpoint's verifier against the botocore-built
one it replaced, in the same run (``verify_cost.py``).  Both times are reported; gated: their
ratio, with a wide margin (0.26-0.47 measured on a loaded 2-core machine)."""

from __future__ import annotations

import old_source
import pytest
from conftest import report

GATE = 0.6


def test_verify_costs_a_fraction_of_the_botocore_built_one() -> None:
    import verify_cost

    try:
        figures = verify_cost.measure(number=1000, repeat=5)
    except old_source.NotInHistory as exc:
        pytest.skip(f"no former verifier to compare with: {exc}")
    report("sigv4 verify, botocore-built (before)", figures["verify_ns_before"])
    report("sigv4 verify", figures["verify_ns_after"],
           ratio_to_before=figures["ratio_after_to_before"])
    assert figures["ratio_after_to_before"] <= GATE, figures
