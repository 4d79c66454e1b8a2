"""The embedded broker: kombu's filesystem transport, made safe for several processes.

kombu's own ``filesystem://`` transport creates a message file and then writes into it, so a
worker polling the folder can pick up the file while it is still empty and crash on the
half-written JSON. This transport writes each message under a temporary name and renames it
into place (an atomic step on one filesystem), and a consumer skips a file it cannot read
instead of dying. Use it with ``CELERY_BROKER_URL=localfs://`` (the default).
"""

from __future__ import annotations

import logging
import os
import uuid
from time import monotonic

from kombu.transport import TRANSPORT_ALIASES, filesystem
from kombu.utils.encoding import str_to_bytes
from kombu.utils.json import dumps

log = logging.getLogger(__name__)


class Channel(filesystem.Channel):
    def _put(self, queue, payload, **kwargs):
        name = f"{int(round(monotonic() * 1000)):015d}_{uuid.uuid4()}.{queue}.msg"
        final = os.path.join(self.data_folder_out, name)
        temporary = os.path.join(self.data_folder_out, f".{name}.tmp")
        with open(temporary, "wb") as handle:
            handle.write(str_to_bytes(dumps(payload)))
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, final)

    def _get(self, queue):
        while True:
            try:
                return super()._get(queue)
            except ValueError:  # an unreadable message file: skip it, keep the worker alive
                log.error("skipped an unreadable message file in queue %s", queue)


class Transport(filesystem.Transport):
    Channel = Channel
    driver_name = "localfs"


TRANSPORT_ALIASES.setdefault("localfs", "config.broker:Transport")
