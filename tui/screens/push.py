"""Choose the context to push a flow's bundle to, and the deployment name to register there."""

from __future__ import annotations

import re

from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.screen import ModalScreen
from textual.widgets import Input, OptionList, Static
from textual.widgets.option_list import Option

from tui.session import PushTarget

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,99}$")


def deployment_name(flow_name: str) -> str:
    """A deployment name from a flow's name: ``nightly.flow`` -> ``nightly``."""
    stem = flow_name.rsplit("/", 1)[-1].removesuffix(".flow").removesuffix(".star")
    cleaned = re.sub(r"[^A-Za-z0-9_.-]", "-", stem).strip("-.") or "flow"
    return cleaned[:100]


class PushScreen(ModalScreen[PushTarget | None]):
    """Lists the other contexts; Enter on one dismisses with a PushTarget, Esc with None."""

    BINDINGS = [Binding("escape", "cancel", "Cancel")]

    def __init__(self, flow_name: str, contexts: list[tuple[str, str]]) -> None:
        super().__init__()
        self.flow_name = flow_name
        self.contexts = contexts  # (name, description)

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog wide"):
            yield Static(f"Push the bundle of {self.flow_name} to:", classes="question")
            if self.contexts:
                yield OptionList(*[Option(f"{name}  {about}", id=name) for name, about in self.contexts], id="contexts")
            else:
                yield Static("no other context (add one: flowmetal context add NAME --url URL ...)", classes="hint")
            yield Static("as deployment:", classes="label")
            yield Input(deployment_name(self.flow_name), id="deployment")
            yield Static("Enter on a context to push · Esc to cancel", classes="hint", id="push-hint")

    def on_mount(self) -> None:
        if self.contexts:
            options = self.query_one("#contexts", OptionList)
            options.highlighted = 0
            options.focus()

    def on_option_list_option_selected(self, event: OptionList.OptionSelected) -> None:
        event.stop()
        self._push(str(event.option.id))

    def on_input_submitted(self, event: Input.Submitted) -> None:
        event.stop()
        if not self.contexts:
            return
        options = self.query_one("#contexts", OptionList)
        if options.highlighted is not None:
            self._push(str(options.get_option_at_index(options.highlighted).id))

    def _push(self, context: str) -> None:
        name = self.query_one("#deployment", Input).value.strip()
        if not _NAME.match(name):
            self.query_one("#push-hint", Static).update("deployment name: letters, digits, '.', '_' and '-'")
            return
        self.dismiss(PushTarget(context, name))

    def action_cancel(self) -> None:
        self.dismiss(None)
