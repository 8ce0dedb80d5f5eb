"""The Python wrapper of the OpenAnalyst server documentation, kept exactly as published."""
# ruff: noqa: E701
# mypy: ignore-errors

import requests


# --- copied verbatim from the spec ("Building on Top") ------------------------------------------------------
class OpenAnalystClient:
    def __init__(self, base_url="http://localhost:3080"):
        self.base = base_url

    def chat(self, message, model=None, effort=None):
        payload = {"message": message}
        if model: payload["model"] = model
        if effort: payload["effort"] = effort
        return requests.post(f"{self.base}/v1/chat", json=payload, stream=True)

    def create_session(self):
        return requests.post(f"{self.base}/sessions").json()

    def send_message(self, session_id, message):
        return requests.post(
            f"{self.base}/sessions/{session_id}/message",
            json={"message": message},
            stream=True
        )

    def get_history(self, session_id):
        return requests.get(f"{self.base}/sessions/{session_id}").json()
# --- end of the spec's text ---------------------------------------------------------------------------------
