"""The web UI (`mlfactory ui`): a Streamlit app that talks to a running server over HTTP only."""
