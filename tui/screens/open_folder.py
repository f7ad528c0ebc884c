"""A modal that picks a folder: type a path (with completion) or walk a directory tree."""
from __future__ import annotations

from pathlib import Path

from textual import on
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.screen import ModalScreen
from textual.widgets import DirectoryTree, Input, Label, Static

from tuner.tui import folders
from tuner.tui.crash import Guarded
from tuner.tui.widgets.path_input import PathInput
from tuner.tui.widgets.fitted_footer import FittedFooter


class FoldersOnly(DirectoryTree):
    """A directory tree without files or hidden folders."""

    def filter_paths(self, paths):
        return [p for p in paths if p.is_dir() and not p.name.startswith(".")]


class OpenFolder(Guarded, ModalScreen[str | None]):
    """Returns the chosen folder's absolute path, or None when cancelled."""

    BINDINGS = [Binding("escape", "cancel", "Cancel"), Binding("ctrl+t", "tree", "Tree / path")]

    def __init__(self, title: str, start: str = ""):
        super().__init__()
        self.heading = title
        self.start = start

    def compose(self) -> ComposeResult:
        start = Path(self.start).expanduser().absolute() if self.start.strip() else None
        # With a folder to start from, the tree shows its neighbours too; without, where tuner-tui runs.
        here = folders.is_dir(start) if start is not None else False
        self.root = start.parent if here else Path.cwd()
        with Vertical(id="dialog"):
            yield Label(self.heading, classes="title")
            yield PathInput(str(start) if here else str(self.root) + "/", id="path")
            yield Static(f"Enter opens the typed folder (a relative one from {folders.short(self.root, 60)}); "
                         "Ctrl+T moves to the tree (Enter on a folder picks it)", classes="help")
            yield FoldersOnly(self.root, id="tree")
        yield FittedFooter()

    def on_mount(self) -> None:
        self.query_one("#path", PathInput).focus()

    @on(Input.Submitted, "#path")
    def typed(self, event: Input.Submitted) -> None:
        typed = event.value.strip()
        path = Path(typed).expanduser()
        # A relative path is read from the folder the dialog shows (where tuner-tui runs, unless it started elsewhere).
        for candidate in ([path] if path.is_absolute() else [self.root / path, Path.cwd() / path]):
            if folders.is_dir(candidate):
                self.dismiss(str(candidate.absolute()))
                return
        self.notify(f"{folders.short(typed or '(nothing typed)')} is not a folder", severity="error")

    @on(DirectoryTree.DirectorySelected)
    def picked(self, event: DirectoryTree.DirectorySelected) -> None:
        self.query_one("#path", PathInput).value = str(event.path) + "/"

    def action_tree(self) -> None:
        tree = self.query_one("#tree")
        (self.query_one("#path") if tree.has_focus else tree).focus()

    def action_cancel(self) -> None:
        self.dismiss(None)
