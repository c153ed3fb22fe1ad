"""The one exception type for user mistakes.

Anything a user can fix (a missing file, a malformed CSV, an unknown label, a split that
does not match the data) is raised as :class:`AttrfitError` with a message that says what
is wrong, where, and what to do. The CLI prints it as one line on stderr and exits 2;
every other exception is a bug and keeps its traceback.
"""


class AttrfitError(Exception):
    """A problem with the user's input or environment, explained in one line."""
