"""Errors a user can cause. The CLI turns each into one line and exit code 2."""


class UserError(Exception):
    """Bad input, a missing object, or a state the user must fix; never a bug."""


class NotFound(UserError):
    """A named object does not exist in the registry."""


class SchemaBehind(UserError):
    """The registry's schema is older than this release of variantctl."""
