"""Reports built from result records: the markdown leaderboard and the paper-reported rows
it is compared against.

Nothing here runs a model; it only reads :class:`~gcdbench.api.record.ResultRecord` objects.
"""

from __future__ import annotations
