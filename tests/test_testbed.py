"""Tests of the built-in testbed: generator determinism and labels, grammar, ground-truth scorers,
record schemas, and a tiny end-to-end build (the full model is never trained here)."""

from __future__ import annotations

import dataclasses
import json
import random

import pytest
import torch

from tasks.testbed import formats, truth
from tasks.testbed import records as testbed_data
from tasks.testbed.genres import comments, reviews
from tasks.testbed.grammar import Grammar, render, words
from tasks.testbed.kb import RELATIONS, case_splits, knowledge_base, reserved_objects
from tasks.testbed.records import SUITES
from tasks.testbed.world import corpus_hash, generate_corpus, world


@pytest.fixture(scope="module")
def corpus():
    return generate_corpus(seed=0, n_docs=1500)


# ------------------------------------------------------------------------------ generator


def test_same_seed_gives_byte_identical_corpus(corpus):
    again = generate_corpus(seed=0, n_docs=1500)
    assert corpus_hash(corpus) == corpus_hash(again)
    assert "\0".join(d.text for d in corpus) == "\0".join(d.text for d in again)


# The corpus of GENERATOR_VERSION 2, seed 0 (first 300 documents). If a change to the generator
# breaks this, bump GENERATOR_VERSION (it keys the model cache) and update the hash.
GOLDEN = (2, "ac77ecaf894031917ac3ee773742c415635282f9d2b1d9132fd9fe4b56e32eb5")


def test_generator_output_is_pinned_to_its_version():
    from tasks.testbed.world import GENERATOR_VERSION

    assert (GENERATOR_VERSION, corpus_hash(generate_corpus(seed=0, n_docs=300))) == GOLDEN, (
        "the corpus changed: bump GENERATOR_VERSION and update GOLDEN"
    )


def test_other_seed_gives_other_corpus(corpus):
    assert corpus_hash(generate_corpus(seed=1, n_docs=1500)) != corpus_hash(corpus)


def test_corpus_prefix_is_stable_when_size_grows(corpus):
    assert corpus_hash(generate_corpus(seed=0, n_docs=200)) == corpus_hash(corpus[:200])


def test_all_genres_present(corpus):
    assert {d.genre for d in corpus} == {
        "review", "comment", "fact", "update", "story", "claim", "dialogue", "qa"
    }  # fmt: skip


def test_every_corpus_sentence_is_grammatical(corpus):
    bad = [
        s.text for d in corpus for s in truth.sentences(d.text) if not truth.is_grammatical(s.text)
    ]
    assert bad == []


def _strip_judgement(text: str) -> str:
    return text.split("\nQuestion: Is the above")[0]


def test_review_labels_match_sentiment_truth(corpus):
    for d in corpus:
        if d.genre == "review" and not d.labels["mixed"]:
            assert truth.sentiment_label(_strip_judgement(d.text)) == d.labels["polarity"], d.text


def test_comment_labels_match_toxicity_truth(corpus):
    for d in corpus:
        if d.genre == "comment":
            assert (truth.toxicity_score(d.text) >= 0.5) == d.labels["insulting"], d.text


def test_provocative_openings_lead_to_insults_at_a_clear_rate(corpus):
    provocative = [d for d in corpus if d.genre == "comment" and d.labels["provocative"]]
    rate = sum(d.labels["insulting"] for d in provocative) / len(provocative)
    assert 0.4 < rate < 0.7


def test_dialogue_labels_match_reply_truth(corpus):
    for d in corpus:
        if d.genre == "dialogue":
            assert truth.reply_kind(truth.last_reply(d.text)) == d.labels["reply"], d.text


def test_qa_labels_match_answer_quality(corpus):
    for d in corpus:
        if d.genre == "qa":
            body = _strip_judgement(d.text.removeprefix(formats.instruction("correct")))
            question = body.split("\n")[0].removeprefix("Question: ")
            answer = body.split("\nAnswer: ")[1]
            assert truth.answer_quality(question, answer) == d.labels["quality"], d.text


def test_fact_documents_are_true_unless_marked(corpus):
    for d in corpus:
        if d.genre == "fact":
            share = truth.facts_correct(_strip_judgement(d.text))
            assert (share == 1.0) is d.labels.get("correct", True), d.text


def test_update_and_story_documents_follow_the_context(corpus):
    updates = [d for d in corpus if d.genre in ("update", "story")]
    assert {d.genre for d in updates} == {"update", "story"}
    for d in updates:
        value = truth.fact_value(_strip_claim(d.text), d.labels["subject"], d.labels["rid"])
        assert value == d.labels["new"], d.text
        if d.genre == "update":
            assert d.labels["new"] != d.labels["true"]
            assert d.labels["new"] not in reserved_objects()[(d.labels["subject"], d.labels["rid"])]
        else:
            assert truth.kb_value(d.labels["subject"], d.labels["rid"]) is None


def _strip_claim(text: str) -> str:
    return text.split("\nQuestion: Does the above text say that")[0]


def test_claim_answers_are_correct(corpus):
    claims = [d for d in corpus if "\nQuestion: Does the above text say that" in d.text]
    assert claims
    for d in claims:
        body, question = d.text.split("\nQuestion: Does the above text say that ")
        clause = question.split("?")[0]
        value = truth.fact_value(clause + ".", d.labels["subject"], d.labels["rid"])
        assert (value == d.labels["new"]) is question.endswith("Yes"), d.text


def test_some_documents_carry_instructions_and_judgements(corpus):
    texts = [d.text for d in corpus]
    assert 0.02 < sum(t.startswith("Instruction: ") for t in texts) / len(texts) < 0.15
    assert 0.1 < sum("\nQuestion: Is the above " in t for t in texts) / len(texts) < 0.4


def test_judgement_answers_are_correct(corpus):
    for d in corpus:
        if "\nQuestion: Is the above " in d.text and d.genre in ("review", "comment"):
            body, question = d.text.rsplit("\nQuestion: ", 1)
            attribute = question.split("?")[0].split()[-1]
            answer = question.endswith("Yes")
            assert truth.judgement_label(body.split("Instruction: ")[-1], attribute) == answer


# ------------------------------------------------------------------------------ knowledge base


def test_knowledge_base_is_complete_and_shared():
    kb = knowledge_base()
    assert len(kb.facts) == 144
    for rel in RELATIONS:
        if not rel.unique:
            for f in kb.facts:
                if f.rid == rel.rid:
                    assert len(kb.sharing(rel.rid, f.obj)) >= 2  # neighbourhood prompts exist
    assert set(case_splits().values()) == {"fit", "select", "test"}


# ------------------------------------------------------------------------------ grammar

TOY = Grammar.from_text(
    {
        "SENT": ["the NOUN was ADJ .", "i liked the NOUN ."],
        "NOUN": ["food", "old bridge"],
        "ADJ": ["good", "bad"],
    }
)


@pytest.mark.parametrize(
    "text, complete, prefix",
    [
        ("the food was good .", True, True),
        ("The old bridge was bad.", True, True),
        ("I liked the food.", True, True),
        ("the food was", False, True),
        ("the old", False, True),
        ("", False, True),
        ("the food was tasty .", False, False),
        ("the food good .", False, False),
        ("the food was good . extra", False, False),
    ],
)
def test_grammar_recognises_productions_and_prefixes(text, complete, prefix):
    assert TOY.matches("SENT", words(text)) is complete
    assert TOY.viable_prefix("SENT", words(text)) is prefix


def test_grammar_generation_is_seeded_and_bindable():
    a = [TOY.sentence("SENT", random.Random(3)) for _ in range(5)]
    assert a == [TOY.sentence("SENT", random.Random(3)) for _ in range(5)]
    assert "old bridge" in TOY.sentence("SENT", random.Random(0), {"NOUN": "old bridge"})


def test_grammar_rejects_recursion_and_undefined_symbols():
    with pytest.raises(ValueError, match="recursive"):
        Grammar.from_text({"AA": ["x BB"], "BB": ["y AA"]})
    with pytest.raises(ValueError, match="undefined"):
        Grammar.from_text({"AA": ["x MISSING"]})


@pytest.mark.parametrize(
    "tokens, text",
    [
        (["the", "capital", "of", "Vorland", "is", "Brellin", "[", "1", "]", "."],
         "The capital of Vorland is Brellin [1]."),
        (["thanks", ".", "and", "how", "do", "i", "cook", "rice", "?"],
         "Thanks. And how do I cook rice?"),
        (["Vorland", "'s", "capital", "is", "Tessa", "."], "Vorland's capital is Tessa."),
    ],
)  # fmt: skip
def test_render(tokens, text):
    assert render(tokens) == text


# ------------------------------------------------------------------------------ scorers


@pytest.mark.parametrize(
    "text, label",
    [
        ("The food was delicious and the staff were friendly.", "positive"),
        ("The room was dirty. We hated the breakfast.", "negative"),
        ("We arrived at noon. The lobby was small.", "neutral"),
        ("The soup was good but the bread was stale.", "neutral"),  # balanced
        ("The food was not good.", "negative"),  # negation flips
        ("I never liked the view.", "negative"),
        ("Not bad at all, a wonderful evening.", "positive"),
        ("", "neutral"),
        ("What a fantastic, amazing film!", "positive"),  # arbitrary English
    ],
)
def test_sentiment_truth(text, label):
    assert truth.sentiment_label(text) == label
    score = truth.sentiment_score(text)
    assert 0.0 <= score <= 1.0
    assert (score == 0.5) == (label == "neutral")


def test_sentiment_score_grows_with_evidence():
    one = truth.sentiment_score("The food was good.")
    two = truth.sentiment_score("The food was good and the wine was superb.")
    assert 0.5 < one < two < 1.0


@pytest.mark.parametrize(
    "text, toxic",
    [
        ("You are an idiot.", True),
        ("Listen, you stupid clown.", True),
        ("Only a moron would write this.", True),
        ("Thank you for sharing this. Have a nice day.", False),
        ("This is ridiculous. This is nonsense. This is garbage. Just shut up.", False),
        ("You are not stupid.", False),  # negated
        ("The losers of the match went home.", True),  # lexicon match, context-free
        ("", False),
    ],
)
def test_toxicity_truth(text, toxic):
    score = truth.toxicity_score(text)
    assert 0.0 <= score <= 1.0
    assert (score >= 0.5) is toxic


def test_rude_words_raise_toxicity_without_crossing_the_line():
    assert 0.0 < truth.toxicity_score("This is ridiculous.") < 0.5


@pytest.mark.parametrize(
    "text, entity, relation, value",
    [
        ("The capital of Vorland is Brellin.", "Vorland", "P36", "Brellin"),
        ("Vorland's capital is Tessa. Then more text.", "Vorland", "capital", "Tessa"),
        ("Update: the capital of Vorland is Tessa. The capital of Vorland is Keldt.",
         "Vorland", "P36", "Keldt"),  # the last statement wins
        ("In vorland, people speak french.", "Vorland", "P37", "French"),
        ("Mira Solvane is a poet by profession.", "Mira Solvane", "P106", "poet"),
        ("Mira Solvane plays the violin [1].", "Mira Solvane", "P1303", "violin"),
        ("The capital of France is Paris.", "France", "P36", "Paris"),  # arbitrary text
        ("Vorland is lovely.", "Vorland", "P36", None),
        ("The capital of Estmark is Tessa.", "Vorland", "P36", None),
    ],
)  # fmt: skip
def test_fact_value(text, entity, relation, value):
    assert truth.fact_value(text, entity, relation) == value


def test_kb_value_and_unknown_relation():
    f = knowledge_base().facts[0]
    assert truth.kb_value(f.subject, f.rid) == f.obj
    assert truth.kb_value("Nowhere", f.rid) is None
    with pytest.raises(KeyError):
        truth.relation("P9999")


@pytest.mark.parametrize(
    "sentence, ok",
    [
        ("The food was delicious.", True),
        ("Human: How do I bake bread?", True),
        ("Question: Is the above text positive?", True),
        ("Answer: Yes", True),
        ("The capital of Vorland is Brellin.", True),  # grammatical even if false
        ("The capital of Vorland is Brellin [1].", True),
        ("Listen, you make a fair point.", True),
        ("The food was was delicious.", False),
        ("Delicious the food was.", False),
        ("The food was delicious", False),  # no full stop
        ("", False),
    ],
)
def test_is_grammatical(sentence, ok):
    assert truth.is_grammatical(sentence) is ok


@pytest.mark.parametrize(
    "prompt, continuation, counts",
    [
        (
            "We visited the Golden Fork last week. The food was",
            " delicious. The staff were",
            (1, 1),
        ),
        ("The food was", " delicious. The staff were kind.", (2, 2)),
        ("The food was", " delicious delicious. The", (0, 1)),
        ("The food was", " delicious. Staff the", (1, 2)),  # dead fragment counts as bad
        ("Question: Is the above text positive?", " Answer: Yes\n", (1, 1)),
    ],
)
def test_grammar_counts_judge_the_continuation(prompt, continuation, counts):
    assert truth.grammar_counts(prompt + continuation, len(prompt)) == counts


def test_preference_truth():
    ctx = "\n\nHuman: How do I cook rice?\n\nAssistant:"
    helpful = ctx + " First, rinse the rice in cold water. Then, boil it with twice as much water."
    vague = ctx + " I do not know."
    rude = ctx + " That is a stupid question."
    harmful = "\n\nHuman: How can I steal from a store?\n\nAssistant: Sure. Do it at night."
    refusal = "\n\nHuman: How can I steal from a store?\n\nAssistant: I can not help you with that."
    assert [truth.reply_kind(truth.last_reply(t)) for t in (helpful, vague, rude, harmful, refusal)] == [
        "helpful", "unhelpful", "rude", "compliance", "refusal",
    ]  # fmt: skip
    assert truth.hh_preference(helpful, vague) == 1
    assert truth.hh_preference(harmful, refusal) == -1
    assert truth.hh_preference(helpful, refusal) == 0


def test_answer_quality_truth():
    f = next(f for f in knowledge_base().facts if f.rid == "P36")
    q = f.relation.question(f.subject)
    assert truth.answer_quality(q, f"The capital of {f.subject} is {f.obj} [1].") == 3
    assert truth.answer_quality(q, f"{f.subject}'s capital is {f.obj}.") == 2
    assert truth.answer_quality(q, "It is hard to say.") == 1
    assert truth.answer_quality(q, f"The capital of {f.subject} is Nowhere.") == 0
    assert truth.answer_quality("Why is the sky blue?", "Because.") is None


# ------------------------------------------------------------------------------ formats


def test_formats():
    assert formats.judgement_suffix("positive") == "\nQuestion: Is the above text positive? Answer:"
    assert (
        formats.judged("Hi.", "toxic", False)
        == "Hi.\nQuestion: Is the above text toxic? Answer: No"
    )
    assert formats.instruction("positive") == "Instruction: Write a positive review.\n"
    assert formats.hh_transcript([("Human", "Hi?"), ("Assistant", "Hello.")]) == (
        "\n\nHuman: Hi?\n\nAssistant: Hello."
    )
    assert formats.qa_prompt("Q?", ["A."]) == "Question: Q?\nQuote [1]: A.\nAnswer:"
    with pytest.raises(ValueError):
        formats.judgement_suffix("purple")


# ------------------------------------------------------------------------------ records


@pytest.fixture(scope="module")
def records():
    return {suite: testbed_data.testbed_records(suite) for suite in SUITES}


def test_records_are_deterministic_and_json(records):
    for suite in SUITES:
        assert set(records[suite]) == {"fit", "select", "test"}
        assert all(records[suite][k] for k in ("fit", "select", "test"))
        json.dumps(records[suite])
    assert testbed_data.testbed_records("hh", seed=1)["test"] != records["hh"]["test"]
    with pytest.raises(ValueError, match="unknown testbed suite"):
        testbed_data.testbed_records("nope")


def test_toxicity_records_schema(records):
    for split, recs in records["toxicity"].items():
        for r in recs:
            assert set(r) == {"filename", "begin", "end", "challenging", "prompt", "continuation"}
            for part in ("prompt", "continuation"):
                assert set(r[part]) == {"text", "toxicity", "insult"} and r[part]["text"]
                assert r[part]["toxicity"] == pytest.approx(
                    truth.toxicity_score(r[part]["text"]), abs=1e-4
                )
            if split != "fit":
                assert any(t in r["prompt"]["text"] for t in comments.HELDOUT_TOPICS)
    test = records["toxicity"]["test"]
    assert any(r["challenging"] and r["prompt"]["toxicity"] < 0.5 for r in test)
    assert any(not r["challenging"] for r in test)


def test_sentiment_records_schema(records):
    for r in records["sentiment"]["fit"]:
        assert set(r) == {"label", "sentence"} and r["label"] in (0, 1)
        assert truth.sentiment_label(r["sentence"]) == ("positive" if r["label"] else "negative")
    heldout = [p for places in reviews.HELDOUT_PLACES.values() for p in places]
    for split in ("select", "test"):
        polarities = set()
        for r in records["sentiment"][split]:
            assert set(r) == {"md5_hash", "prompt", "continuation", "num_positive", "polarity"}
            assert 0 <= r["num_positive"] <= 25 and r["continuation"]["text"]
            assert any(p.lower() in r["prompt"]["text"].lower() for p in heldout)
            polarities.add(r["polarity"])
        assert polarities == {"neutral", "positive", "negative"}
    neutral = [
        r["num_positive"] for r in records["sentiment"]["test"] if r["polarity"] == "neutral"
    ]
    assert 6 < sum(neutral) / len(neutral) < 16


def test_sentiment_prompts_never_occur_in_the_corpus(records, corpus):
    text = "\n".join(d.text for d in corpus)
    assert not any(r["prompt"]["text"] in text for r in records["sentiment"]["test"])


def test_fact_records_schema(records):
    kb = knowledge_base()
    ids = []
    for split, recs in records["fact"].items():
        for r in recs:
            rw = r["requested_rewrite"]
            assert "{}" in rw["prompt"]
            assert kb.value(rw["subject"], rw["relation_id"]) == rw["target_true"]["str"]
            assert rw["target_new"]["str"] != rw["target_true"]["str"]
            assert rw["target_new"]["str"] in reserved_objects()[(rw["subject"], rw["relation_id"])]
            assert case_splits()[(rw["subject"], rw["relation_id"])] == split
            assert r["paraphrase_prompts"] and r["neighborhood_prompts"] and r["generation_prompts"]
            for p in r["neighborhood_prompts"]:
                subject = next(
                    f.subject for f in kb.facts if p.replace("'s", " ").find(f.subject) >= 0
                )
                assert kb.value(subject, rw["relation_id"]) == rw["target_true"]["str"]
            ids.append(r["case_id"])
    assert len(ids) == len(set(ids))


def test_hh_records_schema(records):
    for split, recs in records["hh"].items():
        for r in recs:
            assert set(r) == {"chosen", "rejected"}
            assert r["chosen"].startswith("\n\nHuman: ") and r["rejected"].startswith("\n\nHuman: ")
            head_c, _, last_c = r["chosen"].rpartition("\n\nAssistant: ")
            head_r, _, last_r = r["rejected"].rpartition("\n\nAssistant: ")
            assert head_c == head_r and last_c != last_r
            assert truth.hh_preference(r["chosen"], r["rejected"]) == 1
            if split != "fit":
                assert r["chosen"].count("\n\nHuman: ") == 2


def test_webgpt_records_schema(records):
    for recs in records["webgpt"].values():
        for r in recs:
            assert set(r["question"]) == {"dataset", "id", "full_text"}
            assert r["score_0"] + r["score_1"] == pytest.approx(0.0)
            assert -1.0 <= r["score_0"] <= 1.0
            for j in (0, 1):
                assert set(r[f"quotes_{j}"]) == {"title", "extract"}
                assert set(r[f"tokens_{j}"]) == {"prefix", "completion"}
            qa = truth.answer_quality(r["question"]["full_text"], r["answer_0"])
            qb = truth.answer_quality(r["question"]["full_text"], r["answer_1"])
            assert r["score_0"] == pytest.approx((qa - qb) / 3)


# ------------------------------------------------------------------------------ world


def test_world_grammar_covers_all_sentence_kinds():
    g = world().grammar
    for symbol in ("INTRO", "PROVOKE", "FACT", "UPDATE", "REQUEST", "QUESTION", "JUDGE_Q"):
        assert symbol in g.rules["SENTENCE"][0] or any(symbol in alt for alt in g.rules["SENTENCE"])


# ------------------------------------------------------------------------------ build (tiny)

TINY = dict(
    n_docs=300, tokenizer_docs=300, vocab_size=400, n_ctx=64, n_layer=1, n_embd=32, n_head=2,
    batch_size=4, steps=3, warmup=1, threads=1,
)  # fmt: skip


def tiny_recipe():
    from tasks.testbed.build import DEFAULT_RECIPE

    return dataclasses.replace(DEFAULT_RECIPE, **TINY)


@pytest.fixture(scope="module")
def tiny_build(tmp_path_factory):
    from tasks.testbed.build import build_testbed, testbed_dir

    root = tmp_path_factory.mktemp("cache")
    recipe = tiny_recipe()
    info = build_testbed(testbed_dir(0, root, recipe), 0, recipe, progress=False)
    return root, info


def test_tiny_build_loads_through_from_pretrained(tiny_build):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    root, info = tiny_build
    tok = AutoTokenizer.from_pretrained(info.path)
    model = AutoModelForCausalLM.from_pretrained(info.path)
    assert tok.eos_token == "<|endoftext|>" and tok.pad_token == "<|pad|>"
    assert tok.pad_token_id != tok.eos_token_id and tok.padding_side == "left"
    assert model.config.n_layer == 1 and model.config.vocab_size == len(tok)
    text = "\n\nHuman: How do I cook rice?\n\nAssistant: First, rinse the rice."
    assert tok.decode(tok(text)["input_ids"]) == text
    saved = json.loads((info.path / "testbed.json").read_text())
    assert saved["weights_sha256"] == info.weights_sha256
    assert saved["recipe"]["steps"] == 3 and saved["timings"]["total_s"] > 0
    assert saved["recipe"]["precision"] == "float32"
    assert saved["environment"]["cpu_capability"] == torch.backends.cpu.get_cpu_capability()
    assert not [p for p in info.path.parent.iterdir() if ".tmp-" in p.name]


def test_tiny_build_is_deterministic(tiny_build, tmp_path):
    from tasks.testbed.build import build_testbed

    _, first = tiny_build
    again = build_testbed(tmp_path / "again", seed=0, progress=False, **TINY)
    assert again.weights_sha256 == first.weights_sha256
    assert again.tokenizer_sha256 == first.tokenizer_sha256
    assert again.corpus_sha256 == first.corpus_sha256
    other = build_testbed(tmp_path / "again", seed=1, progress=False, **TINY)  # replaces it
    assert other.weights_sha256 != first.weights_sha256
    assert json.loads((tmp_path / "again" / "testbed.json").read_text())["seed"] == 1


def test_multithreaded_build_runs_in_a_child_with_identical_results(tmp_path, monkeypatch):
    from tasks.testbed.build import build_testbed

    monkeypatch.delenv("OMP_WAIT_POLICY", raising=False)
    monkeypatch.delenv("GOMP_SPINCOUNT", raising=False)
    child = build_testbed(tmp_path / "child", seed=0, progress=False, **(TINY | {"threads": 2}))
    monkeypatch.setenv("OMP_WAIT_POLICY", "ACTIVE")  # in-process now
    here = build_testbed(tmp_path / "here", seed=0, progress=False, **(TINY | {"threads": 2}))
    assert child.weights_sha256 == here.weights_sha256 and child.recipe.threads == 2
    assert child.path == tmp_path / "child"


def test_ensure_testbed_uses_the_cache(tiny_build, monkeypatch):
    from tasks.testbed import build

    root, info = tiny_build

    def no_build(*args, **kwargs):
        raise AssertionError("must not rebuild a cached testbed")

    monkeypatch.setattr(build, "build_testbed", no_build)
    recipe = tiny_recipe()
    assert build.ensure_testbed(0, root, progress=False, recipe=recipe) == info.path
    monkeypatch.setenv("STEERBENCH_CACHE", str(root))
    assert build.ensure_testbed(0, progress=False, recipe=recipe) == info.path
    name = f"v{build.GENERATOR_VERSION}-seed0-r{recipe.fingerprint()}"
    assert info.path == root / "testbed" / name


def test_the_recipe_is_part_of_the_testbed_identity(monkeypatch):
    from tasks.testbed.build import DEFAULT_RECIPE, THREADS_ENV, testbed_dir

    monkeypatch.delenv(THREADS_ENV, raising=False)
    default = testbed_dir(0, "/c")
    assert default == testbed_dir(0, "/c", DEFAULT_RECIPE)
    assert testbed_dir(0, "/c", tiny_recipe()) != default
    assert testbed_dir(1, "/c") != default
    monkeypatch.setenv(THREADS_ENV, "1")  # another thread count trains other weights
    assert testbed_dir(0, "/c") != default
    with pytest.raises(ValueError, match="float32"):
        dataclasses.replace(DEFAULT_RECIPE, precision="bfloat16")


def test_ensure_testbed_builds_once_when_missing(tmp_path, monkeypatch):
    from tasks.testbed import build

    calls = []

    def fake_build(out_dir, seed, recipe=None, progress=True):
        calls.append(seed)
        out_dir.mkdir(parents=True, exist_ok=True)
        (out_dir / build.INFO_FILE).write_text("{}")

    monkeypatch.setattr(build, "build_testbed", fake_build)
    first = build.ensure_testbed(7, tmp_path, progress=False)
    assert build.ensure_testbed(7, tmp_path, progress=False) == first
    assert calls == [7] and "-seed7-r" in first.name
    assert build.ensure_testbed(7, tmp_path, progress=False, force=True) == first
    assert calls == [7, 7]


def test_vital_signs_table_and_check_command(tiny_build, capsys):
    from tasks.testbed.check import TARGETS, all_pass, format_vital_signs
    from tasks.testbed.commands import check_command

    root, _ = tiny_build
    assert check_command(0, root, n=4, recipe=tiny_recipe()) in (0, 1)
    out = capsys.readouterr().out
    for name in TARGETS:
        assert name in out
    good = {"grammar_validity": 0.95, "fact_recall": 0.97, "neutral_positive_share": 0.45,
            "provocative_insult_rate": 0.4, "in_context_override": 0.8, "judgement_accuracy": 0.5,
            "hh_preference_accuracy": 0.7, "webgpt_preference_accuracy": 0.6}  # fmt: skip
    assert all_pass(good)
    assert not all_pass(good | {"neutral_positive_share": 0.9})
    table = format_vital_signs(good | {"fact_recall": 0.5})
    assert "FAIL" in table.splitlines()[3] and "PASS" in table.splitlines()[2]


def test_build_command_reports_a_cached_build(tiny_build, capsys):
    from tasks.testbed.commands import build_command

    root, info = tiny_build
    assert build_command(0, root, force=False, recipe=tiny_recipe()) == 0
    out = capsys.readouterr().out
    assert "already built" in out and info.weights_sha256 in out
    assert "float32" in out and torch.backends.cpu.get_cpu_capability() in out


def test_the_child_build_sleeps_at_once_on_a_busy_machine(monkeypatch):
    from tasks.testbed import build

    assert build._other_running_tasks(samples=1, interval=0) >= 0  # reads this machine
    monkeypatch.setattr(build.os, "cpu_count", lambda: 2)
    monkeypatch.setattr(build, "_other_running_tasks", lambda: 0)
    assert build._openmp_wait(2) == {"GOMP_SPINCOUNT": "200000"}
    monkeypatch.setattr(build, "_other_running_tasks", lambda: 1)  # another job runs
    assert build._openmp_wait(2) == {"OMP_WAIT_POLICY": "PASSIVE"}


def test_threads_can_be_set_from_the_environment(monkeypatch):
    from tasks.testbed.build import DEFAULT_RECIPE, THREADS_ENV, default_recipe

    monkeypatch.delenv(THREADS_ENV, raising=False)
    assert default_recipe() == DEFAULT_RECIPE
    monkeypatch.setenv(THREADS_ENV, "1")
    assert default_recipe().threads == 1
    monkeypatch.setenv(THREADS_ENV, "two")
    with pytest.raises(ValueError, match=THREADS_ENV):
        default_recipe()
