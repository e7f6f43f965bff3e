"""--screen and --verify-top: parsed from the config dataclass, checked before any work."""

from __future__ import annotations

import pytest

from spiritlens.experiment.config import ExperimentConfig


def test_screen_fields_and_their_checks(tmp_path):
    config = ExperimentConfig(out=tmp_path, screen="attribution_qk", verify_top=5)
    assert config.to_dict()["screen"] == "attribution_qk" and config.to_dict()["verify_top"] == 5
    assert ExperimentConfig(out=tmp_path).screen == "none"
    for kwargs, message in (({"screen": "atp"}, "--screen must be one of none, attribution, attribution_qk"),
                            ({"verify_top": 3}, "--verify-top checks a screen"),
                            ({"screen": "attribution", "verify_top": 0}, "--verify-top must be an integer >= 1"),
                            ({"screen": "attribution", "verify_top": 2, "row_mode": "mean"}, "--row-mode mean"),
                            ({"screen": "attribution", "verify_top": 2, "verify_rank": "gd"},
                             "--verify-rank must be one of estimate, graddrop")):
        with pytest.raises(ValueError, match=message):
            ExperimentConfig(out=tmp_path, **kwargs)
