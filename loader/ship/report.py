"""What one ship did: events, batches and bytes shipped, what was held back, and where the time went."""

from __future__ import annotations

from dataclasses import dataclass, field

from ..timing import StepTimes


@dataclass
class ShipReport(StepTimes):
    events_shipped: int = 0
    batches_shipped: int = 0
    bytes_shipped: int = 0
    quarantined: list[str] = field(default_factory=list)  # batches that cannot be staged
    undrainable: dict[str, int] = field(default_factory=dict)  # streams with pending events but no table
    per_stream: dict[str, dict[str, int]] = field(default_factory=dict)  # events, batches, quarantined
    seconds: float = 0.0
    # Where ``seconds`` went: "stage" (Parquet), "upload" (with its checks),
    # "handover" (the rows leave the buffer), "housekeeping" (space handed back).
    # Uploads and hand-overs overlap the next stage: the sum can pass ``seconds``.
    step_seconds: dict[str, float] = field(default_factory=dict)
    peak_rss_mb: float = 0.0  # of this process so far, for operators watching memory
    due: dict[str, str] = field(default_factory=dict)  # with due_only: the streams shipped, and why
    # The object store's requests by operation (billing.OPERATIONS), as sent: what this ship cost.
    requests: dict[str, int] = field(default_factory=dict)

    def as_dict(self) -> dict:
        return dict(self.__dict__)

    def line(self) -> str:
        """One line about this ship, for the log."""
        from ..billing import describe
        from ..text import counted

        if not (self.batches_shipped or self.quarantined):
            return "ship: nothing due" if self.due == {} else "ship: nothing to ship"
        return (
            f"ship: {counted(self.events_shipped, 'event')} in {counted(self.batches_shipped, 'batch')} "
            f"({self.bytes_shipped:,} bytes) in {self.seconds:.1f}s; {describe(self.requests)}"
            + (f"; quarantined {self.quarantined}" if self.quarantined else "")
        )

    def stream(self, stream: str) -> dict[str, int]:
        """``per_stream``'s figures of ``stream``."""
        return self.per_stream.setdefault(stream, {"events": 0, "batches": 0, "quarantined": 0})

    def shipped(self, stream: str, events: int, nbytes: int) -> None:
        """Count one batch handed over."""
        self.events_shipped += events
        self.batches_shipped += 1
        self.bytes_shipped += nbytes
        mine = self.stream(stream)
        mine["events"] += events
        mine["batches"] += 1
