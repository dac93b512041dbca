"""Running a game: the durable round loop, the run folder, provenance."""

from .loop import aplay_rounds, play_rounds
from .provenance import versions
from .rundir import RunDir, RunDirError

__all__ = ["RunDir", "RunDirError", "aplay_rounds", "play_rounds", "versions"]
