"""Reports built from result records: the markdown leaderboard, the paper-reported rows it
is compared against, and ``gcdbench report``'s figures.

Everything here reads :class:`~gcdbench.api.record.ResultRecord` objects; only the run view
(gcdbench/report/run_view.py) runs a model: the frozen encoder, to project a run's test texts.
"""

from __future__ import annotations
