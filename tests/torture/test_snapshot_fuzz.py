"""Hostile snapshots: the decoder accepts only what it can write back (issue 11 item 6).

``snapshot_fuzz`` makes valid snapshots and damages them (binary keys, -inf, counts past
2**64 - 1, times past int64, duplicated series, flipped bytes, ...).  For every input the
decoder accepts, decode -> encode -> decode must be the identity and a merge with itself must
either be refused with ValueError or survive its own round trip; everything else must be
refused with SnapshotFormatError.  CI size 5,000 inputs (about a second); ET_TORTURE=full runs
120,000.
"""

from __future__ import annotations

import os

import snapshot_fuzz

from .conftest import torture_size


def test_snapshot_decoder_fuzz(torture_report) -> None:
    tries = torture_size(ci=5_000, full=120_000)
    seed = int(os.environ.get("ET_FUZZ_SEED", "20261203"))
    outcome = snapshot_fuzz.run(tries, seed)
    torture_report(tries=outcome.tries, accepted=outcome.accepted, refused=outcome.refused,
                   crashed=outcome.crashed, seed=seed)
    assert outcome.tries == tries
    assert outcome.crashed == 0, outcome.first_crash
    assert outcome.accepted and outcome.refused, "the inputs reach both sides of the decoder"
