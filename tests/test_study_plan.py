"""Planning a study: noise drawn per replicate, primary comparisons, and power before and after
(`grefel study plan --sd / --pilot / --half-width`), with their one-line errors."""

from __future__ import annotations

import math

import pytest
from scipy import stats as st
from typer.testing import CliRunner

from grefel.core.errors import GrefelError
from grefel.study import stats as S
from grefel.study.power import ci_half_width, minimum_detectable_effect, seeds_for_half_width
from grefel.study.spec import StudyFileError, parse_study
from grefel_cli.main import app

STUDY = """\
[study]
dataset = "toy"
seeds = 3
noise_per_seed = true
primary = ["reliability"]

[grid]
labels = ["clean", "sym20"]
reliability = ["both", "none"]
"""


def test_noise_drawn_per_seed_keeps_pairs_paired():
    study = parse_study(STUDY)
    assert study.noise_per_seed and study.primary == ["reliability"]
    assert sorted(study.label_sets) == ["sym20-s0", "sym20-s1", "sym20-s2"]
    assert [(x.noise, x.mode, x.seed) for x in study.label_sets.values()] == [(0.2, "symmetric", s) for s in range(3)]
    for seed in range(3):  # RB on and off at seed s train on the same draw, made with seed s
        on, off = study.run(f"sym20-rb_both-s{seed}"), study.run(f"sym20-rb_none-s{seed}")
        assert on.settings["labels"] == off.settings["labels"] == f"sym20-s{seed}"
        assert on.cell["labels"] == "sym20" and study.run(f"clean-rb_both-s{seed}").settings.get("labels") == "clean"
    again = type(study).from_json(study.to_json())
    assert again.noise_per_seed and again.primary == ["reliability"] and again.runs == study.runs


def test_a_study_without_the_keys_reads_as_before():
    old = parse_study(STUDY.replace("noise_per_seed = true\n", "").replace('primary = ["reliability"]\n', ""))
    assert not old.noise_per_seed and old.primary == [] and list(old.label_sets) == ["sym20"]
    assert old.run("sym20-rb_both-s2").settings["labels"] == "sym20"
    d = old.to_json()
    del d["noise_per_seed"], d["primary"]  # a study.json written before these keys
    assert type(old).from_json(d).primary == []


def test_the_summary_states_what_varied_per_replicate(tmp_path):
    from grefel.study.folder import save_plan

    save_plan(tmp_path, parse_study(STUDY), STUDY)
    s = S.summarize_study(tmp_path)
    assert s["noise_per_seed"] and s["replicates"]["varies"][-1] == "the label-noise draw"
    assert "the train / validation / test split" in s["replicates"]["fixed"]
    sym = next(x for x in s["settings"] if x["cell"]["labels"] == "sym20")
    assert sym["label_set"] == {"name": "sym20", "noise": 0.2, "mode": "symmetric", "per_seed": True}
    assert sym["settings"]["labels"] == "sym20"
    fixed = S.summarize_study(_plain(tmp_path / "plain"))
    assert "the label-noise draw (one per label set)" in fixed["replicates"]["fixed"]


def _plain(folder):
    from grefel.study.folder import save_plan

    text = STUDY.replace("noise_per_seed = true\n", "")
    save_plan(folder, parse_study(text), text)
    return folder


@pytest.mark.parametrize(
    "old, new, words",
    [
        ('labels = ["clean", "sym20"]', 'labels = ["clean", "mine"]', "'mine' must already exist in the dataset"),
        ('labels = ["clean", "sym20"]', 'labels = ["clean", "sym20-s3"]', "label set 'sym20-s3' fixes its noise seed"),
        ('primary = ["reliability"]', 'primary = ["rb"]', "unknown grid axis 'rb' in primary"),
        ('primary = ["reliability"]', "primary = 3", "primary must be a grid axis or a list"),
        ("noise_per_seed = true", 'noise_per_seed = "yes"', "noise_per_seed must be true or false"),
    ],
)
def test_bad_replicate_and_primary_settings_are_one_line(tmp_path, old, new, words):
    path = tmp_path / "s.toml"
    path.write_text(STUDY.replace(old, new))
    with pytest.raises(StudyFileError, match=words) as e:
        parse_study(path.read_text(), path)
    assert "\n" not in str(e.value) and str(e.value).startswith(f"{path}:")
    res = CliRunner().invoke(app, ["study", "plan", str(path)])
    assert res.exit_code == 1 and res.output.strip().count("\n") == 0


def test_a_label_set_table_with_a_seed_is_refused_under_noise_per_seed():
    text = (
        STUDY.replace('"sym20"]', '"hard"]') + '\n[label_sets]\nhard = { noise = 0.4, mode = "asymmetric", seed = 1 }\n'
    )
    with pytest.raises(StudyFileError, match="'hard' fixes its noise seed"):
        parse_study(text)
    study = parse_study(text.replace(", seed = 1", ""))
    assert study.label_sets["hard-s2"].seed == 2 and study.label_sets["hard-s2"].mode == "asymmetric"


def test_label_sets_are_made_per_seed_in_the_dataset(tmp_path):
    from helpers import make_prepared

    from grefel.data.corrupt import read_label_set_attrs
    from grefel.data.shards import PreparedDataset
    from grefel.study.run import ensure_label_sets

    root = make_prepared(tmp_path / "toy", n_per_class=10, num_classes=3)
    study = parse_study(STUDY.replace('dataset = "toy"', f'dataset = "{root}"').replace("seeds = 3", "seeds = 2"))
    assert sorted(ensure_label_sets(study)) == ["sym20-s0", "sym20-s1"]
    ds = PreparedDataset(root)
    assert [read_label_set_attrs(ds, f"sym20-s{s}")["seed"] for s in (0, 1)] == [0, 1]


# -- power -----------------------------------------------------------------------------------------------
def test_mde_and_seeds_for_a_half_width_by_hand():
    """Half-width t(0.975, n-1) sd / sqrt(n): at sd 1.2, 3 seeds give 2.98, 4 give 1.91, so a half-width of
    2 needs 4; the MDE is the effect at which the noncentral t gives 80 % power."""
    assert ci_half_width(1.2, 4) == pytest.approx(st.t.ppf(0.975, 3) * 1.2 / 2, rel=1e-12)
    assert seeds_for_half_width(1.2, 2) == 4 and ci_half_width(1.2, 3) > 2 >= ci_half_width(1.2, 4)
    assert seeds_for_half_width(5.4, 2) == 31 and ci_half_width(5.4, 30) > 2 >= ci_half_width(5.4, 31)
    assert 17 < minimum_detectable_effect(5.4, 3) < 18  # the demo's 3 seeds at sd 5.4 points: about 17.6 points


@pytest.mark.parametrize("n, alpha", [(2, 0.05), (3, 0.05), (3, 0.05 / 3), (3, 0.01), (5, 0.025), (31, 0.05)])
def test_the_mde_is_where_the_paired_t_test_has_80_percent_power(n, alpha):
    """Checked with the noncentral t directly, both tails; 3 seeds at alpha 0.05 / 3 is where statsmodels'
    solve_power stops at 61 % power. The root is found to 1e-12 in the effect size, where the power's
    slope is below 1."""
    d = minimum_detectable_effect(1.0, n, alpha)
    crit, nc = st.t.ppf(1 - alpha / 2, n - 1), d * math.sqrt(n)
    assert st.nct.sf(crit, n - 1, nc) + st.nct.sf(crit, n - 1, -nc) == pytest.approx(0.8, abs=1e-9)
    assert minimum_detectable_effect(2.5, n, alpha) == pytest.approx(2.5 * d, rel=1e-12)  # in the unit of sd


def test_plan_prints_power_from_a_given_sd():
    path_text = STUDY.replace("seeds = 3", "seeds = 5")
    power = S.power_plan(parse_study(path_text), sd=1.2, half_width=2)
    rows = {(r["axis"], tuple(r["context"].values())): r for r in power["comparisons"]}
    rb = rows[("reliability", ("clean",))]
    assert rb["mde"] == pytest.approx(minimum_detectable_effect(1.2, 5), rel=1e-12) and rb["seeds_for_half_width"] == 4
    assert rb["family"] == "Holm" and rb["family_size"] == 2  # the primary family: RB on clean and on sym20
    assert rb["mde_holm_first_step"] == pytest.approx(minimum_detectable_effect(1.2, 5, 0.025), rel=1e-12)
    lab = rows[("labels", ("both",))]
    assert lab["family"] == "exploratory" and lab["mde_holm_first_step"] is None
    assert S.power_plan(parse_study(path_text)) is None


def test_plan_cli_power_and_its_one_line_errors(tmp_path):
    path = tmp_path / "s.toml"
    path.write_text(STUDY)
    runner = CliRunner()
    res = runner.invoke(app, ["study", "plan", str(path), "--sd", "1.2", "--half-width", "2"], terminal_width=200)
    assert res.exit_code == 0, res.output
    assert "power of the paired t-test" in res.output and f"{minimum_detectable_effect(1.2, 3):.1f}" in res.output
    res = runner.invoke(app, ["study", "plan", str(path), "--half-width", "2"])
    assert res.exit_code == 2 and "--sd or --pilot" in res.output
    res = runner.invoke(app, ["study", "plan", str(path), "--sd", "0"])
    assert res.exit_code == 1 and "above 0" in res.output and res.output.strip().count("\n") == 0


def _pilot(folder, seeds: int, rights: dict):
    """A finished pilot study of ``seeds`` seeds: per cell the right answers of each seed's run."""
    from test_study_stats import _write_run

    from grefel.study.folder import save_plan

    text = f'[study]\ndataset = "toy"\nseeds = {seeds}\n\n[grid]\nreliability = ["both", "none"]\n'
    folder.mkdir(parents=True)
    save_plan(folder, parse_study(text), text)
    for cell, ks in rights.items():
        for seed, k in enumerate(ks):
            _write_run(folder, f"{cell}-s{seed}", k)
    return folder


def test_power_from_a_pilot_study_and_too_small_a_pilot(tmp_path):
    pilot = _pilot(tmp_path / "pilot", 3, {"rb_both": [30, 33, 35], "rb_none": [28, 29, 33]})
    target = parse_study('[study]\ndataset = "toy"\nseeds = 10\n\n[grid]\nreliability = ["both", "none"]\n')
    power = S.power_plan(target, pilot=pilot, half_width=2)
    (row,) = power["comparisons"]
    sd = 100 * st.tstd([2 / 40, 4 / 40, 2 / 40])  # the pilot's paired differences, in points
    assert row["sd"] == pytest.approx(sd, rel=1e-12) and row["pilot_n"] == 3
    assert row["mde"] == pytest.approx(minimum_detectable_effect(sd, 10), rel=1e-12)
    assert row["seeds_for_half_width"] == seeds_for_half_width(sd, 2)

    small = _pilot(tmp_path / "small", 1, {"rb_both": [30], "rb_none": [28]})
    with pytest.raises(GrefelError, match="fewer than 2 finished seed pairs"):
        S.power_plan(target, pilot=small)
    path = tmp_path / "t.toml"
    path.write_text('[study]\ndataset = "toy"\nseeds = 10\n\n[grid]\nreliability = ["both", "none"]\n')
    res = CliRunner().invoke(app, ["study", "plan", str(path), "--pilot", str(small)])
    assert res.exit_code == 1 and "fewer than 2 finished seed pairs" in res.output
    assert res.output.strip().count("\n") == 0
