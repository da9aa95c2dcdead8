"""``slam bench-learned``: the JSON keys the acceptance reads, the summary table."""

from __future__ import annotations

import json
import math

from slam.cli.bench_learned import _clean, headline, table
from slam.cli.main import build_parser


def _fake() -> dict:
    prec = {"orb": 0.5, "learned": 0.6, "orb_mocap": 0.2, "learned_mocap": 0.21,
            "oracle": 0.71, "oracle_mocap": 0.3}
    tum = {"precision_1px": prec, "precision_3px": prec, "precision_5px": prec,
           "repeatability_3px": 0.53,
           "ms_per_1000_keypoints": {"median_ms": 12.5},
           "net_ms_per_1000_keypoints": {"median_ms": 8.0}}
    recall = {"bow": {"recall_at_1": 0.3, "recall_at_5": 0.9},
              "learned": {"recall_at_1": 0.8, "recall_at_5": 0.95}}
    return {"descriptor_detail": {"tum_fr1_rpy": tum},
            "embedding_detail": {"test_span": recall, "full_sequence": recall}}


def test_headline_has_the_acceptance_keys() -> None:
    result = _fake()
    result.update(headline(result))
    assert result["descriptor"]["precision_3px"]["learned"] == 0.6
    assert result["descriptor"]["precision_3px"]["orb"] == 0.5
    assert result["descriptor"]["precision_3px"]["oracle"] == 0.71
    assert result["descriptor"]["repeatability_3px"] == 0.53
    assert result["descriptor"]["ms_per_1000_keypoints"] == 12.5
    assert result["embedding"]["recall_at_1"] == {"bow": 0.3, "learned": 0.8}
    result["slam"] = {"orb": {"ate_rmse_m": 0.02, "fps": 30.0, "tracked_frames": 10,
                              "frames": 10}}
    text = table(result)
    assert "matching precision @3px" in text and "12.5 ms per 1000 keypoints" in text
    assert "0.710 / 0.710 / 0.710; repeatability @3px 0.530" in text
    assert "ATE 0.0200 m" in text


def test_nan_becomes_null_and_the_command_is_registered() -> None:
    assert json.loads(json.dumps(_clean({"a": [math.nan, 1.0], "b": {"c": math.inf}}))) == {
        "a": [None, 1.0], "b": {"c": None}}
    args = build_parser().parse_args(["bench-learned", "--skip-slam", "--out", "x.json"])
    assert args.skip_slam and str(args.out) == "x.json"
