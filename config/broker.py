"""Embedded mode's Celery broker: kombu's filesystem transport, with messages written whole.

kombu writes a message file in place, and its reader moves any file ending in ``.msg`` away
to read it (the writer's advisory lock does not stop a move), so a worker with its embedded
beat could take a message beat was still writing and fail on half a JSON document. Here a
message is written under a name the reader ignores and renamed into place, which is atomic.
"""

import os
import uuid
from time import monotonic

from kombu.transport import filesystem
from kombu.utils.encoding import str_to_bytes
from kombu.utils.json import dumps


class Channel(filesystem.Channel):
    def _put(self, queue, payload, **kwargs):
        """Put ``payload`` onto ``queue``, visible to readers only once it is whole."""
        name = f"{int(round(monotonic() * 1000))}_{uuid.uuid4()}.{queue}.msg"
        final = os.path.join(self.data_folder_out, name)
        writing = os.path.join(self.data_folder_out, f".{name}.writing")
        with open(writing, "wb") as file:
            file.write(str_to_bytes(dumps(payload)))
        os.replace(writing, final)


class Transport(filesystem.Transport):
    Channel = Channel
