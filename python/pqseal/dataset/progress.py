"""One progress bar on the driver: bytes with throughput, and files done of all.

Updated as results arrive from any executor. Off when stderr is not a terminal
(``progress=None``), unless forced with ``progress=True``; ``False``: never.
"""

from __future__ import annotations

import sys

from .report import FileResult


class Progress:
    def __init__(self, verb: str, files: int, total_bytes: int, enabled: bool | None):
        from tqdm import tqdm

        self.files = files
        self.done = 0
        self._bar = tqdm(total=total_bytes, desc=verb, unit="B", unit_scale=True, unit_divisor=1024,
                         disable=None if enabled is None else not enabled, file=sys.stderr, leave=True,
                         dynamic_ncols=True)
        self._bar.set_postfix_str(self._files(), refresh=False)

    def _files(self) -> str:
        return f"{self.done}/{self.files} files"

    def update(self, result: FileResult) -> None:
        self.done += 1
        self._bar.set_postfix_str(self._files(), refresh=False)
        self._bar.update(result.bytes)

    def close(self) -> None:
        self._bar.close()
