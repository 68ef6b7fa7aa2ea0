"""Error types. Each carries a message a user can act on; the CLI prints it without a traceback."""

from __future__ import annotations


class ShepardError(Exception):
    """Base class of every error Shepard raises on purpose."""


class ConfigError(ShepardError):
    """The flock configuration is missing or invalid."""


class BundleError(ShepardError):
    """An input bundle (zip) or its inputs file is unusable. Nothing was registered."""


class ParamsError(ShepardError):
    """Job parameters break the runtime contract (reserved name, bad type, bad name)."""


class StorageError(ShepardError):
    """An object store could not complete an operation (missing key, bad key, disk full)."""


class CatalogError(ShepardError):
    """The job catalog could not be reached or refused an operation."""


class CatalogMissing(CatalogError):
    """The catalog a flock names holds no catalog (deleted, emptied): only `init` makes one."""


class JobNotFound(ShepardError):
    """No job with the given id exists in the catalog."""


class PayloadError(ShepardError):
    """The payload could not be started (missing command, image, ...)."""


class ResourceError(ShepardError):
    """The flock asks for resources (GPUs) that the host running its jobs cannot give."""


class DeployError(ShepardError):
    """A deployment failed: the image did not build, or a quick-deploy folder is unusable."""
