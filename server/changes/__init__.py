"""Change reports per tool call: inotify on the mounted workspace, an index of sizes and hashes, and the
hook the dispatcher calls (docs/changes.md)."""
