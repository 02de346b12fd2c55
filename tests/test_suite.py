"""The official suite: shipped tasks, groups and recipes, the training mixture, data fetching, and
a whole Track A + Track B run over mirror shards with the tiny LLM."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
from suite_mirror import write_suite_mirror

from xares_fusion.cli import main
from xares_fusion.config import load_eval_tasks, load_recipe, load_task
from xares_fusion.data.mixture import mixture_probabilities
from xares_fusion.data.shards import MissingDataError, expand_patterns, require_shards

REFERENCE = Path(__file__).resolve().parents[2] / "shared" / "reference" / "xares_llm_official_configs.json"

TRACK_A = {
    "asvspoof2015": "Accuracy",
    "cremad": "Accuracy",
    "esc-50": "Accuracy",
    "fluentspeechcommands": "Accuracy",
    "freemusicarchive": "Accuracy",
    "fsd50k": "mAP",
    "fsdkaggle2018": "mAP",
    "gtzan": "Accuracy",
    "libricount": "Accuracy",
    "nsynth": "Accuracy",
    "speechcommandsv1": "Accuracy",
    "urbansound8k": "Accuracy",
    "vocalsound": "Accuracy",
    "voxceleb1": "Accuracy",
    "voxlingua33": "Accuracy",
}
TRACK_B = {"aishell-1": "iCER", "librispeech": "iWER", "clotho": "FENSE", "mecat": "DATE", "songdescriber": "FENSE"}

# Seed 000, Table 2: sampling ratios (%) of the official "all" recipe.
TABLE_2 = {
    "esc-50": 0.453,
    "speechcommandsv1": 6.154,
    "fluentspeechcommands": 2.717,
    "fsdkaggle2018": 2.378,
    "voxceleb1": 4.529,
    "nsynth": 3.692,
    "aishell-1": 6.154,
    "cremad": 0.679,
    "songdescriber": 0.226,
    "asvspoof2015": 2.038,
    "freemusicarchive": 7.246,
    "fsd50k": 1.019,
    "urbansound8k": 1.019,
    "gtzan": 1.019,
    "vocalsound": 2.378,
    "clotho": 2.462,
    "librispeech": 6.154,
    "libricount": 0.453,
    "voxlingua33": 24.615,
    "mecat": 24.615,
}


def test_tracks_names_metrics_and_classes() -> None:
    for group, expected, track in (("track_a", TRACK_A, "A"), ("track_b", TRACK_B, "B")):
        _, tasks = load_eval_tasks(group)
        assert {t.name: t.metric for t in tasks} == expected
        assert all(t.track == track and t.weight == 1.0 for t in tasks)
    assert load_task("fsd50k").metric_args == {"num_classes": 200}
    assert load_task("fsdkaggle2018").metric_args == {"num_classes": 41}
    assert [t.name for t in load_eval_tasks("task1")[1]] == sorted(TRACK_A)  # alias of track_a
    assert [t.name for t in load_eval_tasks("task2")[1]] == [t.name for t in load_eval_tasks("track_b")[1]]
    assert len(load_eval_tasks("all")[1]) == 20


def test_single_task_variants_keep_their_own_names() -> None:
    suite, single = load_task("fsd50k"), load_task("fsd50k-single")
    assert len(expand_patterns(suite.eval.shards)) == 32 and expand_patterns(single.eval.shards) == [
        "FSD50k/test/eval_with_text_000000.tar.gz"
    ]
    assert single.name != suite.name and single.identity() != suite.identity()
    assert single.train == suite.train and single.prompt == suite.prompt  # inherited by 'extends'
    assert load_task("nsynth-single").key_for("eval") == "text;caption;captions;label;labels"
    assert load_task("esc-50-single").key_for("train") == "text;caption;captions;label;labels"
    assert load_recipe("esc-50").data.mixture[0].task == "esc-50-single"


def test_recipes_separate_model_data_optim() -> None:
    for name in ("task1", "task2", "all"):
        recipe = load_recipe(name)
        assert recipe.optim.max_steps == 100_000 and recipe.model.llm.name_or_path == "HuggingFaceTB/SmolLM2-135M"
        assert recipe.model.lora.r == 8 and recipe.optim.lr == 1e-4 and recipe.optim.batch_size == 4
    assert {e.task for e in load_recipe("task1").data.mixture} == set(TRACK_A)
    assert {e.task for e in load_recipe("task2").data.mixture} == set(TRACK_B)
    assert load_recipe("voxlingua33").optim.max_steps == 30_000
    tuned = load_recipe("task1", ["model.llm.name_or_path=toy-llama", "optim.max_steps=5"])
    assert tuned.model.llm.name_or_path == "toy-llama" and tuned.data == load_recipe("task1").data


def test_all_recipe_reproduces_table_2() -> None:
    recipe = load_recipe("all")
    counts = [len(expand_patterns(load_task(e.task).train.shards)) for e in recipe.data.mixture]
    probs = mixture_probabilities([e.prob for e in recipe.data.mixture], counts)
    ratios = {e.task: round(100 * p, 3) for e, p in zip(recipe.data.mixture, probs)}
    assert ratios == TABLE_2


@pytest.mark.skipif(not REFERENCE.is_file(), reason="the shared reference configs are not beside this checkout")
def test_tasks_match_the_official_configs() -> None:
    reference = json.loads(REFERENCE.read_text())
    suite = {
        **reference["eval"]["task1/eval/eval_task1_config.yaml"],
        **reference["eval"]["task2/eval/eval_task2_config.yaml"],
    }
    train = reference["train"]["all/train/all_train_config.yaml"]["datasets"]
    for name, official in suite.items():
        task = load_task(name.removeprefix("eval_"))
        assert task.eval.shards == official["data"]["data"]
        assert (task.key_for("eval"), task.prompt_for("eval")) == (official["data"]["key"], official["data"]["prompt"])
        assert (task.metric, task.metric_args) == (official["metric"], official.get("metric_args", {}))
        assert task.eval.batch_size == official["batch_size"] and task.eval.repo_id == official["data"]["repo_id"]
        matches = [d for d in train.values() if d["data"] == task.train.shards]
        assert len(matches) == 1 and matches[0]["key"] == task.key_for("train")
        assert matches[0]["prompt"] == task.prompt_for("train") and matches[0]["repo_id"] == task.train.repo_id
    for key, official in reference["train"].items():
        if key.startswith("single/"):
            recipe = load_recipe(key.split("/")[-1].removesuffix("_config.yaml"))
            assert recipe.optim.max_steps == official.get("max_steps", 10_000)
            ((_, data),) = official["datasets"].items()
            task = load_task(recipe.data.mixture[0].task)
            assert task.train.shards == data["data"] and task.key_for("train") == data["key"]


def test_missing_shards_name_the_fetch_command(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XARES_FUSION_DATA_HOME", str(tmp_path))
    with pytest.raises(MissingDataError) as info:
        require_shards(load_task("gtzan").eval, "gtzan", "eval")
    message = str(info.value)
    assert str(tmp_path / "mispeech/xares_llm_data/GTZAN/test/gtzan_fold_9_0000000.tar.gz") in message
    assert "Fix: xares-fusion fetch-data gtzan" in message


def test_fetch_data_offline_lists_files_and_fix(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    monkeypatch.setenv("XARES_FUSION_DATA_HOME", str(tmp_path))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert main(["fetch-data", "cremad"]) == 4  # DataError
    err = capsys.readouterr().err
    assert "8 file(s) could not be fetched" in err  # 6 train + 2 test shards and "Traceback" not in err
    assert str(tmp_path / "mispeech/xares_llm_data/CremaD/train/train_cremad_with_text_000000.tar.gz") in err
    assert "valid_cremad_with_text_000001.tar.gz" in err and "Fix: run `xares-fusion fetch-data cremad" in err


def test_validate_and_list(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    assert main(["validate"]) == 0
    assert "config files valid" in capsys.readouterr().out
    broken = tmp_path / "broken.yaml"
    broken.write_text("name: b\ntasks: [gtzan, nope]\n")
    assert main(["validate", str(broken)]) == 1
    assert "field 'tasks[1]' ('nope')" in capsys.readouterr().out
    assert main(["list", "groups"]) == 0
    assert capsys.readouterr().out.strip() == "groups: all, mini, mini-demo, synthetic, track_a, track_b"


SMOKE_RECIPE = """
name: suite-smoke
model: {encoder: logmel, llm: {name_or_path: toy-llama}}
data:
  mixture: [{tasks}]
  shuffle_buffer: 4
optim: {max_steps: 6, batch_size: 4, lr: 3.0e-3, warmup_steps: 2, save_steps: 100, log_steps: 3}
"""


def test_whole_suite_runs_end_to_end(isolated_homes: dict, tmp_path: Path) -> None:
    tasks = write_suite_mirror("all")
    recipe = tmp_path / "suite-smoke.yaml"
    recipe.write_text(SMOKE_RECIPE.replace("{tasks}", ", ".join(f"{{task: {t.name}}}" for t in tasks)))
    out = tmp_path / "run"
    assert main(["run", "logmel", str(recipe), "all", "--limit", "2", "--output-dir", str(out), "--no-progress"]) == 0
    scores = pd.read_csv(out / "scores.tsv", sep="\t").set_index("Task")
    assert set(scores.index) == set(TRACK_A) | set(TRACK_B) | {"Track A Overall", "Track B Overall", "Overall"}
    assert scores["score"].notna().all()
    assert scores.loc["Track A Overall", "metric"] == "weighted mean"
    assert scores.loc["Track B Overall", "metric"] == "weighted mean (unofficial)"
    assert scores.loc["clotho", "metric"] == "FENSE (proxy) (unofficial)"
    assert scores.loc["mecat", "metric"] == "DATE (proxy) (unofficial)"
    assert scores.loc["Track A Overall", "score"] == pytest.approx(scores.loc[list(TRACK_A), "score"].mean(), abs=1e-6)
    record = json.loads((out / "result.json").read_text())
    assert record["overall_unofficial"] is True
    clotho = pd.read_csv(out / "predictions_clotho.csv")
    assert len(clotho) == 2 and clotho["index"].tolist() == [0, 0]  # two reference rows of one clip
    assert all(len(pd.read_csv(out / f"predictions_{t.name}.csv")) <= 2 for t in tasks)
