"""Smaller findings of issue 28's probe, each reproduced: text that would act in a receiver's chat."""

from __future__ import annotations

from manager.webhooks import events


def test_slack_text_is_shown_never_acted_on() -> None:
    """A reason holding `<!channel>` paged the whole channel, and `<https://x|text>` made a link."""
    body = {
        "kind": "rolled_back",
        "text": "rollout 7: rolled back: <!channel> see <https://evil.example|the runbook> & co",
        "event": {
            "seq": 42,
            "at": "2026-12-06T22:00:00Z",
            "actor": "<@U123>",
            "action": "rollout.rolled_back",
        },
    }
    sent = events.slack(body)
    shown = [sent["text"], sent["blocks"][0]["text"]["text"], sent["blocks"][1]["elements"][0]["text"]]
    for text in shown:
        assert "<" not in text and ">" not in text
    assert "&lt;!channel&gt;" in sent["text"] and "&amp; co" in sent["text"]
    assert "&lt;@U123&gt;" in shown[2]
