"""Reporting: metric tables (text/Markdown), paper-style comparison tables, plots."""
