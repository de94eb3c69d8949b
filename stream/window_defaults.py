"""The window's defaults, in a module light enough for `train --help` (no numpy).

:class:`stream.window_types.WindowConfig` takes its defaults from here and the help texts
state them from here, so the two cannot disagree.
"""

DEFAULT_MAX_EVENTS = 64  # events per window (the newest): the store keeps them, the encoding reads them
DEFAULT_SPAN_MS = 3_600_000  # a window holds at most the last hour of a user's events
