"""Writing a ZIP while it streams out: the one sink every streamed archive is written into
(studio.files' job downloads, generation.lib.dataset's training datasets)."""

from __future__ import annotations

from collections.abc import Iterator


class ZipSink:
    """A write-only, unseekable file for zipfile: it collects bytes until the generator takes them.

    Having no tell()/seek() makes zipfile write data descriptors instead of seeking back, which is
    what lets the archive stream out while it is being written, in constant memory.
    """

    def __init__(self) -> None:
        self._chunks: list[bytes] = []

    def write(self, data: bytes) -> int:
        self._chunks.append(bytes(data))
        return len(data)

    def flush(self) -> None:
        pass

    def drain(self) -> Iterator[bytes]:
        chunks, self._chunks = self._chunks, []
        if chunks:
            yield b"".join(chunks)
