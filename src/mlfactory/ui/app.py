"""The Streamlit script of `mlfactory ui`: three pages on one server's HTTP API.

Streamlit runs this file (`streamlit run`); `mlfactory.ui.launch` starts it with the API's
address in `MLFACTORY_UI_API`. The pages never load a model: every figure comes from the API.
"""

from __future__ import annotations

import os

import streamlit as st

from mlfactory.ui import card_page, monitoring_page, predict_page
from mlfactory.ui.client import MONITOR_TOKEN_ENV, ApiClient
from mlfactory.ui.launch import API_ENV

DEFAULT_API = "http://127.0.0.1:8000"


def main() -> None:
    """Lay out the app and run the page the browser asked for."""
    st.set_page_config(page_title="mlfactory", layout="wide")
    token = os.environ.get(MONITOR_TOKEN_ENV) or None  # the server's, when it sets one
    client = ApiClient(os.environ.get(API_ENV, DEFAULT_API), token=token)
    st.sidebar.caption(f"API: {client.base_url}")

    def predict() -> None:
        predict_page.render(client)

    def model_card() -> None:
        card_page.render(client)

    def monitoring() -> None:
        monitoring_page.render(client)

    pages = [
        # the default page is served at the app's root (/), whatever its url_path (one of
        # its own, so that it does not clash with the hidden /predict below)
        st.Page(predict, title="Predict", default=True, url_path="start"),
        st.Page(model_card, title="Model card", url_path="model-card"),
        st.Page(monitoring, title="Monitoring", url_path="monitoring"),
        # /predict, as the other pages have theirs: the same page, not listed twice
        st.Page(predict, title="Predict", url_path="predict", visibility="hidden"),
    ]
    st.navigation(pages).run()


main()
