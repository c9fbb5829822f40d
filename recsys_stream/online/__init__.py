"""Online evaluation: what was served, joined with what users did next (DESIGN.md, "Online
evaluation and experiments"). A stage of its own, beside ``nearline/``."""
