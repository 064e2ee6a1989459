"""The lifecycle rules of plugin instances, shared by the hub and the command line."""


def resolve_enabled(configured: bool, stored: bool | None, stored_configured: bool | None) -> bool:
    """Whether an instance starts enabled: the one rule, for the hub and the CLI alike.

    The stored choice (made through the API) wins, unless the config file's ``enabled``
    changed since the store last saw it (``stored_configured``): editing the file is a
    newer decision than the API's.
    """
    if stored is None or stored_configured != configured:
        return configured
    return stored
