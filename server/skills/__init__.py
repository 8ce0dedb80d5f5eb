"""Skills: SKILL.md directories from the server and each tenant's workspace (docs/skills.md)."""
