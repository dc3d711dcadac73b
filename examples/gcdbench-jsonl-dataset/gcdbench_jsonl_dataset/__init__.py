"""A dataset plugin for gcdbench: ``support_tickets``, one JSON-lines file shipped inside
this package (the worked example of docs/plugins/datasets.md).

gcdbench loads this module through the ``gcdbench`` entry point in ``pyproject.toml`` and
calls :func:`register_datasets`.
"""

from __future__ import annotations

from pathlib import Path

from gcdbench.api import DatasetDefinition, Register, RemoteFile, hookimpl

# The folder of data/tickets.jsonl inside the installed package: read in place, so the
# dataset needs neither a download nor --data-dir.
DATA_DIR = Path(__file__).resolve().parent / "data"

SUPPORT_TICKETS = DatasetDefinition(
    name="support_tickets",
    description="Made-up customer-support messages, 8 issue types (a gcdbench example)",
    layout="single-jsonl",
    files=(
        RemoteFile(
            name="tickets.jsonl",
            url="",  # no public source: the file ships with the plugin (local_dir)
            sha256="96ebf9e4ee13cc8e6be3c0cb532c182e6b669cf7d0df9be2061270f5833117be",
        ),
    ),
    num_classes=8,
    task="support issue",  # prompts ask which texts share the same "support issue"
    license="CC0-1.0",
    source="written for gcdbench's dataset-plugin guide (make_tickets.py)",
    # Label key (as in the file, lower-cased) -> the name people and LLMs see.
    label_names={
        "app_crash": "app crashes or freezes",
        "billing_error": "wrong or unexpected charge",
        "cancel_subscription": "cancel a subscription",
        "change_address": "change the delivery address",
        "damaged_item": "item arrived damaged",
        "late_delivery": "late or missing delivery",
        "password_reset": "cannot log in or reset password",
        "refund_request": "refund request",
    },
    local_dir=DATA_DIR,
)


@hookimpl
def register_datasets(register: Register) -> None:
    register(SUPPORT_TICKETS)
