"""One exception type for every problem a user can fix (bad input, wrong store, locked store).

The CLI turns it into a one-line message and exit code 2; library users catch it like any exception.
"""


class TnstoreError(Exception):
    """A problem with the user's input or store, with a message that says what to do."""
