"""The report's computed paragraph and alignment table, on hand-made results with hand-computed numbers."""

from __future__ import annotations

from helpers import make_result

from spiritlens.aggregates import aggregate_by_modality
from spiritlens.experiment.report import alignment_section, findings


def text_results():
    """Two T->T prompts, 7 rows, subject rows [2, 4), 4 layers, low 0.1, high 0.9.

    Row 3 (last subject) restores 0.6/0.4 at layer 0, row 4 (first subsequent) 0.2 at layer 1,
    row 6 (last) 0.5 at layer 1 and 0.9 from layer 2."""
    results = []
    for last_subject in (0.6, 0.4):
        results.append(make_result(7, (2, 4), n_layers=4, low=0.1, high=0.9, set_rows={
            3: [last_subject, 0.3, 0.1, 0.1], 4: [0.1, 0.2, 0.1, 0.1], 6: [0.1, 0.5, 0.9, 0.9]}))
    return results


def test_findings_state_the_computed_peaks():
    paragraphs = findings(aggregate_by_modality(text_results()))
    assert len(paragraphs) == 1
    text = paragraphs[0]
    # ATE = 0.9 - 0.1; the last token peaks at 0.8 from layer 2 on (first maximum: layer 2)
    assert text.startswith("T→T (2 prompts): corrupting the subject lowers p(answer) from 0.900 to 0.100 "
                           "on average (ATE 0.800).")
    assert "Hidden states: the largest AIE is 0.800 at the last token, layer 2." in text
    # layers 0-1: last subject (0.6 + 0.4) / 2 - 0.1 = 0.4 at layer 0; first subsequent 0.2 - 0.1 = 0.1 at layer 1
    assert ("In layers 0-1 the largest at a subject token is 0.400 at the last subject token, layer 0, larger than "
            "the largest after the subject (0.100 at the first subsequent token, layer 1; ratio 4.0; their 95% CIs "
            "overlap).") in text  # last subject: 0.5 and 0.3, t(0.975, 1) x 0.1 = 1.27 wide; first subsequent: 0


def test_findings_mention_no_overlap_when_the_cis_separate_the_peaks():
    same = [make_result(7, (2, 4), n_layers=4, low=0.1, high=0.9, set_rows={
        3: [0.5, 0.3, 0.1, 0.1], 4: [0.1, 0.2, 0.1, 0.1], 6: [0.1, 0.5, 0.9, 0.9]}) for _ in range(3)]
    text = findings(aggregate_by_modality(same))[0]  # three equal prompts: CIs of width 0
    assert "larger than the largest after the subject (0.100 at the first subsequent token, layer 1; ratio 4.0)." \
        in text and "overlap" not in text


def test_findings_say_when_the_subject_site_does_not_lead():
    results = [make_result(7, (2, 4), n_layers=4, set_rows={3: [0.15] * 4, 4: [0.5, 0.1, 0.1, 0.1],
                                                               6: [0.1, 0.3, 0.4, 0.9]})]
    text = findings(aggregate_by_modality(results))[0]
    assert "0.050 at the last subject token, layer 0, not larger than the largest after the subject " \
           "(0.400 at the first subsequent token, layer 0; ratio 0.1)" in text
    assert text.startswith("T→T (1 prompt): ")
    assert "the largest AIE is 0.800 at the last token, layer 3." in text


def test_findings_mention_where_a_plateau_starts():
    results = [make_result(7, (2, 4), n_layers=6, set_rows={6: [0.1, 0.2, 0.85, 0.86, 0.87, 0.9]})]
    text = findings(aggregate_by_modality(results))[0]
    # peak 0.8 at layer 5; 90% of it (0.72) is first reached at layer 2 (0.75)
    assert "the largest AIE is 0.800 at the last token, layer 5 (90% of it from layer 2)." in text


def test_alignment_section_counts_low_confidence():
    results = []
    for known_id, confidence in ((12, 0.2), (3, 0.7), (40, 0.45)):
        for kind in ("hidden", "mlp"):  # one line per prompt, not per kind
            results.append(make_result(5, (2, 3), kind=kind, modality="speech", known_id=known_id, aligner="ctc",
                                       alignment_confidence=confidence))
    lines = alignment_section(results)
    text = "\n".join(lines)
    assert "**2 of 3** S→T alignments were flagged" in text and "the CTC aligner warns under 0.5" in text
    assert [line for line in lines if line.startswith("| ") and line[2].isdigit()] == [
        "| 3 | 0.700 | no |", "| 12 | 0.200 | yes |", "| 40 | 0.450 | yes |"]


def test_alignment_section_uses_the_aligners_own_flag():
    # pocketsphinx's confidences are on another scale (right transcripts 0.08-0.38 on espeak-ng): its own
    # threshold (0.05) and coverage decide, recorded with each result, not the CTC path's 0.5.
    results = [make_result(5, (2, 3), modality="speech", known_id=kid, aligner="pocketsphinx",
                           alignment_confidence=conf, alignment_low_confidence=low, alignment_coverage=cov)
               for kid, conf, low, cov in ((7, 0.21, False, 0.99), (8, 0.03, True, 0.98), (9, 0.3, True, 0.61))]
    lines = alignment_section(results)
    text = "\n".join(lines)
    assert "Forced alignment (pocketsphinx)" in text and "warns under 0.05" in text
    assert "**2 of 3** S→T alignments were flagged" in text
    assert [line for line in lines if line.startswith("| ") and line[2].isdigit()] == [
        "| 7 | 0.210 | 99% | no |", "| 8 | 0.030 | 98% | yes |", "| 9 | 0.300 | 61% | yes |"]
    assert alignment_section([make_result(5, (2, 3))]) == []  # T->T only: no section


def test_findings_compare_sites_by_each_rows_own_ie_and_name_romes_shift():
    # As in the toy's report: further tokens only in prompts corrupted to a higher score. ROME's AIE puts
    # 0.2 on them at every layer; their rows' own IE is 0, and the subject site is what leads.
    high_low = make_result(8, (2, 4), low=0.5, high=0.9, n_layers=4, set_rows={3: [0.8, 0.6, 0.5, 0.5]})
    plain = make_result(6, (2, 4), low=0.1, high=0.9, n_layers=4, set_rows={3: [0.4, 0.2, 0.1, 0.1]})
    text = findings(aggregate_by_modality([high_low, plain]))[0]
    assert ("In layers 0-1 the largest at a subject token is 0.300 at the last subject token, layer 0, larger than "
            "the largest after the subject (0.000 at the first subsequent token, layer 0") in text
    assert ("ROME's AIE for the further tokens is 0.200 at layer 0, where their rows' own IE is 0.000") in text
    assert text.endswith("(aie.json also keeps ROME's pooled AIE).")


def test_sample_prompts_are_those_with_the_largest_total_effect():
    from spiritlens.experiment.report import sample_ids

    results = {kid: {"hidden": make_result(5, (1, 3), low=low, high=0.9), "mlp": make_result(5, (1, 3), low=0.0)}
               for kid, low in ((3, 0.85), (17, 0.2), (40, 0.6), (41, 0.6))}
    # total effects 0.05, 0.7, 0.3, 0.3: the largest first, ties in the given order
    assert sample_ids([3, 17, 40, 41], results, 3) == [17, 40, 41]
    assert sample_ids([3, 17, 41, 40], results, 2) == [17, 41]
    assert sample_ids([3], results, 3) == [3]


def test_findings_say_no_effect_instead_of_a_peak():
    # every restored cell equals its prompt's corrupted score up to float32 rounding (a trace with noise 1e-9);
    # the prompts with further tokens are corrupted to a higher score, so ROME's pooled AIE is 0.1 there
    results = [make_result(8, (2, 4), low=0.3, high=0.3 + 1e-7, n_layers=4, set_rows={5: [0.3 + 2e-7] * 4}),
               make_result(6, (2, 4), low=0.1, high=0.1, n_layers=4)]
    text = findings(aggregate_by_modality(results))[0]
    assert "Hidden states: no effect; every restored cell's indirect effect is within float32 rounding of 0" in text
    assert "largest" not in text and "ROME's AIE" not in text
