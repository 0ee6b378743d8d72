"""The one exception type for user mistakes: `launch.py` prints it as one line."""


class Pix2PixError(Exception):
    """A user-facing error whose message names the file or config key and the fix."""
