"""One-field dialogs: how long to delay the next action, which script to open."""

from __future__ import annotations

from pathlib import Path

from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.screen import ModalScreen
from textual.widgets import Input, Static

MAX_DELAY = 3600.0


def parse_delay(text: str) -> float | None:
    """Seconds between 0 (exclusive) and an hour, or None."""
    try:
        seconds = float(text.strip().removesuffix("s"))
    except ValueError:
        return None
    return seconds if 0 < seconds <= MAX_DELAY else None


class DelayScreen(ModalScreen[float | None]):
    """Asks for N seconds; dismisses with the number, or None when cancelled."""

    BINDINGS = [Binding("escape", "cancel", "Cancel")]

    def __init__(self, flow_name: str, default: float = 5.0) -> None:
        super().__init__()
        self.flow_name = flow_name
        self.default = default

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog"):
            yield Static(f"Delay the next action of {self.flow_name} by how many seconds?", classes="question")
            yield Input(f"{self.default:g}", id="seconds", placeholder="seconds, e.g. 5")
            yield Static("Enter to arm · Esc to cancel", classes="hint", id="delay-hint")

    def on_input_submitted(self, event: Input.Submitted) -> None:
        event.stop()
        seconds = parse_delay(event.value)
        if seconds is None:
            self.query_one("#delay-hint", Static).update(f"not a number of seconds in (0, {MAX_DELAY:g}]")
            return
        self.dismiss(seconds)

    def action_cancel(self) -> None:
        self.dismiss(None)


class OpenScreen(ModalScreen[Path | None]):
    """Asks for a script to bundle and run; dismisses with its path, or None."""

    BINDINGS = [Binding("escape", "cancel", "Cancel")]

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog"):
            yield Static("Run which script? (it is bundled, uploaded and started)", classes="question")
            yield Input("", id="path", placeholder="path/to/main.flow")
            yield Static("Enter to run · Esc to cancel", classes="hint", id="open-hint")

    def on_input_submitted(self, event: Input.Submitted) -> None:
        event.stop()
        path = Path(event.value.strip()).expanduser()
        if not event.value.strip() or not path.is_file():
            self.query_one("#open-hint", Static).update(f"no such file: {event.value.strip() or '(empty)'}")
            return
        self.dismiss(path)

    def action_cancel(self) -> None:
        self.dismiss(None)
