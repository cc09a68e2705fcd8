"""Streamlit glue shared by the pages (imports streamlit; never imported by the core)."""
