"""The files API's work: paths resolved beneath a held workspace fd, streamed writes and reads, archives
unpacked safely, listings, the audit of every request (docs/files.md)."""
