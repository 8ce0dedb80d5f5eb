"""Skills: SKILL.md directories from the server and each tenant\x27s workspace (docs/skills.md)."""
