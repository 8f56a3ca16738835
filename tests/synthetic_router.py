"""Synthetic calibration data with a known answer, for the router tests and benchmarks/router.py
(which puts tests/ on its path to import it; it is not part of the package).

Prompts are real sentences from distinct topics (so a sentence encoder separates them); each topic
has one best teacher, and scores are noisy around per-(topic, teacher) means. A router that reads
the prompt can learn the topic -> teacher map; a single teacher (strongest, CAR) cannot.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import numpy as np

# topic -> (question frames with {a} and {b}, fillers for {a}, fillers for {b})
TOPICS: dict[str, tuple[list[str], list[str], list[str]]] = {
    "cooking": (
        [
            "How long should I roast {a} {b}?",
            "What spices go well with {a} cooked {b}?",
            "Can you give me a simple recipe for {a} prepared {b}?",
            "Why does my {a} turn out dry when I cook it {b}?",
            "What side dish pairs best with {a} served {b}?",
        ],
        [
            "chicken thighs",
            "salmon fillets",
            "pork belly",
            "sweet potatoes",
            "a leg of lamb",
            "tofu",
            "brussels sprouts",
            "beef brisket",
            "cauliflower",
            "duck breast",
            "mushrooms",
            "eggplant",
        ],
        [
            "in a cast iron pan",
            "on the barbecue",
            "in a slow cooker",
            "at 200 degrees",
            "in an air fryer",
            "for a dinner party",
            "with garlic butter",
            "in the oven overnight",
        ],
    ),
    "programming": (
        [
            "How do I {a} in {b}?",
            "What is the fastest way to {a} using {b}?",
            "Why does my code crash when I try to {a} in {b}?",
            "Write a function that can {a} in {b}.",
            "Which library should I use to {a} with {b}?",
        ],
        [
            "parse a JSON file",
            "sort a list of dictionaries",
            "read a CSV file line by line",
            "reverse a linked list",
            "make an HTTP request",
            "handle exceptions cleanly",
            "merge two arrays",
            "write unit tests",
            "profile memory usage",
            "connect to a SQL database",
            "spawn a thread",
            "serialize an object",
        ],
        ["Python", "Rust", "JavaScript", "Go", "Java", "C++", "TypeScript", "Haskell"],
    ),
    "astronomy": (
        [
            "Why does {a} appear {b} from Earth?",
            "How far away is {a} and can we see it {b}?",
            "What would happen to {a} if it were {b}?",
            "Explain how astronomers study {a} {b}.",
            "Is {a} visible {b} with a small telescope?",
        ],
        [
            "the Andromeda galaxy",
            "Jupiter's great red spot",
            "the planet Mars",
            "a neutron star",
            "Saturn's rings",
            "the Orion nebula",
            "a black hole",
            "Halley's comet",
            "the Moon's far side",
            "the planet Venus",
            "a red giant star",
            "the Milky Way's core",
        ],
        [
            "at night",
            "during an eclipse",
            "in the winter sky",
            "from the southern hemisphere",
            "near the horizon",
            "twice as massive",
            "much closer to the Sun",
            "in infrared light",
        ],
    ),
    "health": (
        [
            "What are the common symptoms of {a} in {b}?",
            "How is {a} usually treated in {b}?",
            "Can {a} be prevented in {b} through diet?",
            "When should {b} see a doctor about {a}?",
            "What causes {a} in {b}?",
        ],
        [
            "high blood pressure",
            "type 2 diabetes",
            "a vitamin D deficiency",
            "seasonal allergies",
            "chronic back pain",
            "iron deficiency anemia",
            "migraine headaches",
            "asthma",
            "insomnia",
            "acid reflux",
            "a sprained ankle",
            "high cholesterol",
        ],
        [
            "children",
            "older adults",
            "pregnant women",
            "athletes",
            "teenagers",
            "office workers",
            "people over fifty",
            "young adults",
        ],
    ),
    "law": (
        [
            "What are my rights as {b} if {a}?",
            "Can {b} sue when {a}?",
            "What does the law say for {b} when {a}?",
            "Do I need a lawyer as {b} if {a}?",
            "How long does {b} have to file a claim after {a}?",
        ],
        [
            "my landlord keeps my deposit",
            "my employer withholds wages",
            "a contract is broken",
            "a neighbour's tree damages my fence",
            "a product injures me",
            "my flight is cancelled",
            "someone copies my copyrighted work",
            "my car is towed illegally",
            "a will is contested",
            "I am fired without notice",
            "a company leaks my data",
            "a seller hides a defect",
        ],
        [
            "a tenant",
            "an employee",
            "a small business owner",
            "a consumer",
            "a freelancer",
            "a homeowner",
            "a passenger",
            "an heir",
        ],
    ),
    "gardening": (
        [
            "When is the best time to plant {a} {b}?",
            "How often should I water {a} grown {b}?",
            "Why are the leaves of my {a} turning yellow {b}?",
            "What soil do {a} need when grown {b}?",
            "How do I protect {a} from pests {b}?",
        ],
        [
            "tomato plants",
            "rose bushes",
            "basil",
            "lemon trees",
            "strawberries",
            "tulip bulbs",
            "blueberry shrubs",
            "cucumbers",
            "lavender",
            "potatoes",
            "orchids",
            "hydrangeas",
        ],
        [
            "in containers",
            "in a greenhouse",
            "in clay soil",
            "on a balcony",
            "in a cold climate",
            "in raised beds",
            "in partial shade",
            "during a dry summer",
        ],
    ),
    "music": (
        [
            "How do I learn to play {a} {b}?",
            "What are the best exercises for {a} {b}?",
            "Which famous pieces feature {a} {b}?",
            "How should a beginner practice {a} {b}?",
            "What is the history of {a} {b}?",
        ],
        [
            "the violin",
            "jazz piano chords",
            "the acoustic guitar",
            "the drums",
            "the cello",
            "music theory",
            "singing harmonies",
            "the saxophone",
            "sight reading",
            "the ukulele",
            "fingerstyle guitar",
            "the trumpet",
        ],
        [
            "by ear",
            "in an orchestra",
            "in twenty minutes a day",
            "as an adult",
            "for a recital",
            "in a rock band",
            "without a teacher",
            "in classical style",
        ],
    ),
    "finance": (
        [
            "Should I {a} {b}?",
            "What are the tax consequences if I {a} {b}?",
            "How much should I save before I {a} {b}?",
            "What are the risks when I {a} {b}?",
            "Is it smart to {a} {b}?",
        ],
        [
            "invest in index funds",
            "pay off my mortgage early",
            "open a retirement account",
            "buy government bonds",
            "refinance my student loans",
            "start an emergency fund",
            "invest in real estate",
            "buy company stock",
            "consolidate my credit card debt",
            "lease a car",
            "buy an annuity",
            "rebalance my portfolio",
        ],
        [
            "during a recession",
            "in my twenties",
            "when interest rates rise",
            "before retirement",
            "with a low income",
            "after getting married",
            "while self employed",
            "this year",
        ],
    ),
}


def topic_prompts(topic: str) -> list[str]:
    frames, a_fill, b_fill = TOPICS[topic]
    return [f.format(a=a, b=b) for f, a, b in itertools.product(frames, a_fill, b_fill)]


@dataclass
class SyntheticCalibration:
    prompts: list[str]
    topics: np.ndarray  # topic index per prompt
    topic_names: list[str]
    teachers: list[str]
    quality: np.ndarray  # n x T
    learnability: np.ndarray  # n x T
    best_teacher: dict[str, str]  # topic -> teacher with the best mean quality there


def make_synthetic(
    n_prompts: int = 400,
    n_teachers: int = 4,
    n_topics: int = 4,
    seed: int = 0,
    quality_noise: float = 0.1,
    loglik_noise: float = 0.15,
) -> SyntheticCalibration:
    """`n_prompts` distinct prompts spread evenly over `n_topics` topics.

    Teacher 0 ("strong") is good everywhere (quality 0.65, but the student learns it worst: mean
    log-likelihood -1.6); specialist j >= 1 is excellent (0.9) on its topics and poor (0.35)
    elsewhere, with log-likelihood around -1.1. Topics go to specialists in turn; with more topics
    than specialists the extra topics are the strong teacher's. The strongest teacher on average is
    teacher 0; the per-prompt best is the topic's specialist.
    """
    if not 2 <= n_teachers:
        raise ValueError("need at least two teachers")
    if not 1 <= n_topics <= len(TOPICS):
        raise ValueError(f"n_topics must be in [1, {len(TOPICS)}]")
    rng = np.random.default_rng(seed)
    names = list(TOPICS)[:n_topics]
    per_topic = [topic_prompts(t) for t in names]
    counts = np.full(n_topics, n_prompts // n_topics)
    counts[: n_prompts % n_topics] += 1
    prompts: list[str] = []
    topics: list[int] = []
    for k, (pool, c) in enumerate(zip(per_topic, counts, strict=True)):
        if c > len(pool):
            raise ValueError(f"topic {names[k]} has {len(pool)} distinct prompts, {c} requested")
        pick = rng.choice(len(pool), size=int(c), replace=False)
        prompts += [pool[i] for i in pick]
        topics += [k] * int(c)
    order = rng.permutation(len(prompts))
    prompts = [prompts[i] for i in order]
    topic_arr = np.asarray(topics)[order]

    teachers = ["strong"] + [f"specialist-{j}" for j in range(1, n_teachers)]
    mean_q = np.full((n_topics, n_teachers), 0.35)
    mean_q[:, 0] = 0.65
    for k in range(n_topics):
        if k < n_teachers - 1:
            mean_q[k, 1 + k] = 0.9
    mean_l = np.full(n_teachers, -1.1) + rng.normal(0, 0.05, n_teachers)
    mean_l[0] = -1.6
    n = len(prompts)
    quality = mean_q[topic_arr] + rng.normal(0, quality_noise, (n, n_teachers))
    learnability = mean_l[None, :] + rng.normal(0, loglik_noise, (n, n_teachers))
    best = {names[k]: teachers[int(np.argmax(mean_q[k]))] for k in range(n_topics)}
    return SyntheticCalibration(prompts, topic_arr, names, teachers, quality, learnability, best)


_OPENERS = ["", "Quick question: ", "I was wondering, ", "Please help me. ", "Could you explain this? "]


def distinct_prompts(n: int, seed: int = 0) -> list[str]:
    """`n` distinct real-sentence prompts over every topic (up to ~19K), shuffled by `seed`."""
    pool = [o + p for o in _OPENERS for t in TOPICS for p in topic_prompts(t)]
    if n > len(pool):
        raise ValueError(f"only {len(pool)} distinct synthetic prompts exist, {n} requested")
    pick = np.random.default_rng(seed).choice(len(pool), size=n, replace=False)
    return [pool[i] for i in pick]
