"""Domain errors of the files API: a stable code and a message; ``server.api.files`` maps codes to statuses.

    FilesError
    ├── codes for bad paths:      INVALID_PATH, FILE_PATH_HAS_SYMLINK, FILE_PATH_CONFLICT
    ├── codes for what is there:  FILE_NOT_FOUND, NOT_A_FILE, NOT_A_DIRECTORY
    ├── codes for sizes:          FILE_TOO_LARGE, ARCHIVE_TOO_LARGE, WORKSPACE_FULL, INVALID_RANGE
    └── codes for archives:       INVALID_ARCHIVE, UNSUPPORTED_ARCHIVE
"""

from __future__ import annotations


class FilesError(Exception):
    """A refusal of a files request, with a code from the table above."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


__all__ = ["FilesError"]
