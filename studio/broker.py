"""kombu's filesystem transport with atomic message writes: the broker `make run` uses.

kombu writes a message file in place, under its final `<time>_<uuid>.<queue>.msg` name, while a
worker polling the same folder may already move and read it. A reader that gets there between the
open and the write reads a half-written (or empty) message, fails to decode it and the worker exits
("Unrecoverable error: JSONDecodeError"). Here the message is written under a name no reader
matches and renamed into place once complete; a rename within one folder is atomic on POSIX.
"""

from __future__ import annotations

import os
import uuid
from time import monotonic
from typing import Any

from kombu.exceptions import ChannelError
from kombu.transport import filesystem
from kombu.utils.encoding import str_to_bytes
from kombu.utils.json import dumps


class Channel(filesystem.Channel):
    def _put(self, queue: str, payload: Any, **kwargs: Any) -> None:
        name = f"{round(monotonic() * 1000)}_{uuid.uuid4()}.{queue}.msg"
        final = os.path.join(self.data_folder_out, name)
        # Readers pick files by their ".<queue>.msg" part; this name has none until the rename.
        partial = os.path.join(self.data_folder_out, f".partial-{uuid.uuid4().hex}")
        try:
            with open(partial, "wb") as fh:
                fh.write(str_to_bytes(dumps(payload)))
            os.replace(partial, final)
        except OSError as exc:
            try:
                os.remove(partial)
            except OSError:
                pass
            raise ChannelError(f"Cannot add file {final!r} to directory") from exc


class Transport(filesystem.Transport):
    Channel = Channel
