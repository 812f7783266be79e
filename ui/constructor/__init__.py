"""The Constructor (/new): drafts, their validation and the code generated from them (no Dash, no I/O)."""
