"""The built-in dataset catalogue: the three GLEAN/Loop GCD intent benchmarks and five
ClusterLLM "small" clustering sets.

URLs pin a commit, and every file carries the sha256 of its published bytes, so a
download is checked and a local folder is marked verified only when it matches.
StackOverflow's class names (its labels are the numbers 1..20) have no public file; they
are listed here in the standard order of Xu et al. (2015).
"""

from __future__ import annotations

from typing import Any

from gcdbench.api import Register, hookimpl
from gcdbench.api.dataset import DatasetDefinition, RemoteFile

GLEAN_BASE = (
    "https://raw.githubusercontent.com/amazon-science/Glean/"
    "927665aed383c88a2083e3c0d042f70a92392d2c/data"
)
CLUSTERLLM_BASE = (
    "https://raw.githubusercontent.com/jpzambranoleon/Cluster-Swarm/"
    "54583c53ec7c3899803e00b98a07be3ca1743baa/datasets"
)

STACKOVERFLOW_NAMES = {
    "1": "wordpress",
    "2": "oracle",
    "3": "svn",
    "4": "apache",
    "5": "excel",
    "6": "matlab",
    "7": "visual-studio",
    "8": "cocoa",
    "9": "osx",
    "10": "bash",
    "11": "spring",
    "12": "hibernate",
    "13": "scala",
    "14": "sharepoint",
    "15": "ajax",
    "16": "qt",
    "17": "drupal",
    "18": "linq",
    "19": "haskell",
    "20": "magento",
}


def _tsv_files(name: str, train: str, dev: str, test: str) -> tuple[RemoteFile, ...]:
    hashes = {"train.tsv": train, "dev.tsv": dev, "test.tsv": test}
    return tuple(RemoteFile(f, f"{GLEAN_BASE}/{name}/{f}", sha) for f, sha in hashes.items())


def _jsonl_file(name: str, sha: str) -> tuple[RemoteFile, ...]:
    return (RemoteFile("small.jsonl", f"{CLUSTERLLM_BASE}/{name}/small.jsonl", sha),)


def _gcd(
    name: str, description: str, k: int, licence: str, source: str, **kw: Any
) -> DatasetDefinition:
    return DatasetDefinition(
        name=name,
        description=description,
        layout="gcd-tsv",
        num_classes=k,
        task="intent",  # GLEAN's prompts say "intent" for all three, StackOverflow included
        license=licence,
        source=source,
        **kw,
    )


def _small(
    name: str, description: str, k: int, task: str, licence: str, sha: str
) -> DatasetDefinition:
    return DatasetDefinition(
        name=name,
        description=description,
        layout="single-jsonl",
        files=_jsonl_file(name, sha),
        num_classes=k,
        task=task,
        license=licence,
        source=f"ClusterLLM data release (Zhang et al. 2023), as in {CLUSTERLLM_BASE}/{name}",
    )


DATASETS: tuple[DatasetDefinition, ...] = (
    _gcd(
        "banking",
        "BANKING77 banking-support intents, GLEAN/Loop split",
        77,
        "CC BY 4.0",
        "BANKING77 (Casanueva et al. 2020); split of amazon-science/Glean and Lackel/LOOP",
        files=_tsv_files(
            "banking",
            train="ed07418e59a34b76baad3dc697f3ede12139cd8f56e7a746fb38ab78d2b4d196",
            dev="b808b9f0b01574ca30d233fa690f43b8c44899a0ce1a737be66b06e1132802a7",
            test="684f0b9df082f50ae78243fd56b99d5c8f7debbbfb7086d6df9c5d08ced7d574",
        ),
    ),
    _gcd(
        "clinc",
        "CLINC150 in-scope intents (no out-of-scope), GLEAN/Loop split",
        150,
        "CC BY 3.0",
        "CLINC150 (Larson et al. 2019); split of amazon-science/Glean and Lackel/LOOP",
        files=_tsv_files(
            "clinc",
            train="927bbeacbe134c524d1967196c3209d7e7fcd76e8de9ff24e43dc76ed5400dad",
            dev="f5ec4e85abfb84b377bd0fcecafd60de8e1ff111f48b3680226c0dad1511f2d5",
            test="a056d1e4981d36c783cbee0dd6d055b48537a5eaca94b2cf44b34b1df83a1684",
        ),
    ),
    _gcd(
        "stackoverflow",
        "StackOverflow question titles, 20 tags, GLEAN/Loop split",
        20,
        "research use",
        "StackOverflow titles (Xu et al. 2015); split of amazon-science/Glean and Lackel/LOOP",
        files=_tsv_files(
            "stackoverflow",
            train="9b5eeaf8ffa9f16b692684419695d7b8f2d093e9da9528658fe631ac026fc28d",
            dev="4c02e8d422e3db998b95e8af49fbae59443e6c2617b3d4c9279aaa7705434921",
            test="08a8bd2e82cef0a5b61715687953302abaa9fb43a17f847e260b15ae5fdadc8c",
        ),
        label_names=STACKOVERFLOW_NAMES,
    ),
    _small(
        "arxiv_fine",
        "arXiv paper titles by fine-grained category (ArxivS2S, MTEB clustering)",
        93,
        "topic",
        "CC0",
        "c19c9ab1411fd62209e1ca1cb5c1739813dee87c6063a54a06d1d6db28d982ff",
    ),
    _small(
        "go_emotion",
        "Reddit comments by emotion (GoEmotions, single-label only)",
        27,
        "emotion",
        "Apache-2.0",
        "c1d8280049c0710a23dc4d3aec87dddc30c5f9e5e71cb27cc027962ac7b5a5cb",
    ),
    _small(
        "massive_intent",
        "MASSIVE (en-US) virtual-assistant utterances by intent",
        59,
        "intent",
        "CC BY 4.0",
        "14b59ecae82ea9b074d0991fb4b97f18f916d0c71f77ef38f308a540511c6dd1",
    ),
    _small(
        "massive_scenario",
        "MASSIVE (en-US) virtual-assistant utterances by scenario",
        18,
        "scenario",
        "CC BY 4.0",
        "8b6ee95845539624348f973b46b9d1a7eb3ecb5be3b7e42bedb8603cd1ca172b",
    ),
    _small(
        "mtop_intent",
        "MTOP (en) task-oriented utterances by intent",
        102,
        "intent",
        "CC BY-SA 4.0",
        "18ee35b37d6af5840c80a14fa703d7f79275bbca694d9162414eafe4ba164179",
    ),
)


@hookimpl
def register_datasets(register: Register) -> None:
    for definition in DATASETS:
        register(definition)
