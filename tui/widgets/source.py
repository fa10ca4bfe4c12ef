"""The source pane: a file of the flow's bundle, with the line that made the selected entry marked."""

from __future__ import annotations

from rich.syntax import Syntax
from rich.text import Text
from textual.containers import VerticalScroll
from textual.widgets import Static

MARK_STYLE = "bold on #4b3b00"


def render_source(code: str, line: int | None) -> Text:
    """Numbered, highlighted lines; the marked one gets ``▶`` (readable without colour) and a background."""
    highlighted = Syntax(code, "python", theme="ansi_dark").highlight(code)
    lines = list(highlighted.split("\n", allow_blank=True))
    if lines and not lines[-1].plain and code.endswith("\n"):
        lines = lines[:-1]
    width = len(str(len(lines)))
    out = Text(no_wrap=True, overflow="ellipsis")
    for number, text in enumerate(lines, start=1):
        marked = number == line
        gutter = Text(f"{'▶' if marked else ' '}{number:>{width}} ", style="bold yellow" if marked else "grey50")
        row = Text.assemble(gutter, text)
        if marked:
            row.stylize(MARK_STYLE)
            row.pad_right(200)
        out.append_text(row)
        out.append("\n")
    return out


class SourceView(VerticalScroll):
    """Shows ``path`` of ``files``; scrolls to keep the marked line in the middle."""

    def __init__(self, **kwargs: object) -> None:
        super().__init__(**kwargs)  # type: ignore[arg-type]
        self.shown_path: str | None = None
        self.shown_line: int | None = None
        self._files: dict[str, str] = {}
        self.text = Static("", id="source-text")

    def compose(self):  # type: ignore[no-untyped-def]
        yield self.text

    def show(self, files: dict[str, str], path: str | None, line: int | None) -> None:
        if files is self._files and path == self.shown_path and line == self.shown_line:
            return
        self._files, self.shown_path, self.shown_line = files, path, line
        text = self.text
        if path is None or path not in files:
            text.update(Text("(no source for this entry)" if files else "(bundle not loaded)", style="dim"))
            self.border_title = path or "source"
            return
        text.update(render_source(files[path], line))
        self.border_title = f"{path}:{line}" if line else path
        if line:
            self.call_after_refresh(self._centre, line)

    def _centre(self, line: int) -> None:
        self.scroll_to(y=max(line - 1 - self.size.height // 2, 0), animate=False)
