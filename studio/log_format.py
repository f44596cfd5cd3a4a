"""LOG_FORMAT=json: each log line one JSON object, for a log shipper to index without parsing text.

The object holds time, level, logger and message, then every field the call passed in `extra` (a
pipeline event's job, slot and request ids, provider, duration, outcome: generation.events), and
the traceback as `exc_info` when there is one.
"""

from __future__ import annotations

import json
import logging
from datetime import UTC, datetime

# What every LogRecord carries; anything else on a record came from `extra`.
_RECORD_ATTRIBUTES = frozenset(vars(logging.LogRecord("", 0, "", 0, "", (), None))) | {"message", "asctime"}


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        line = {
            "time": datetime.fromtimestamp(record.created, tz=UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        for key, value in vars(record).items():
            if key not in _RECORD_ATTRIBUTES and key not in line:
                line[key] = value
        if record.exc_info:
            line["exc_info"] = self.formatException(record.exc_info)
        # default=str: a field such as a Decimal or a UUID is written as its text, never dropped.
        return json.dumps(line, default=str)
