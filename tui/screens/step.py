"""The wizard's step screen: a title, the step's form, its problems, and Back / Next keys."""
from __future__ import annotations

from typing import NamedTuple

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import VerticalScroll
from textual.screen import Screen
from textual.widgets import Header, Static

from tuner.engine.config import Issue
from tuner.engine.jobdir import CONFIG
from tuner.tui.crash import Guarded
from tuner.tui.widgets.field_row import FieldRow, brief
from tuner.tui.wizard_state import WizardState
from tuner.tui.widgets.fitted_footer import FittedFooter

STEP_TITLES = ("Hardware", "Model", "Preset", "Dataset", "Validation", "Training", "Review")


class Problem(NamedTuple):
    """What blocks leaving a step: the field it belongs to (its key; "" for the step as a whole) and what to do."""

    key: str
    message: str


class StepBody(VerticalScroll, can_focus=False):
    """A step's form: Tab goes from field to field (the fields scroll it into view), never to the form itself."""


class StepScreen(Guarded, Screen):
    """One wizard step; subclasses compose `body()` and implement `save()` returning problems."""

    BINDINGS = [
        Binding("ctrl+n", "next", "Next", priority=True),
        Binding("ctrl+b", "back", "Back", priority=True),
        Binding("escape", "back", "Back", show=False),
    ]
    INDEX = 0
    FILE = CONFIG   # the file whose keys this step's fields edit
    BODY = StepBody  # Review's is a VerticalScroll the keys scroll: its files are longer than a screen

    @classmethod
    def labels(cls) -> dict[str, str]:
        """The keys this step has a field for, with the field's label."""
        return {}

    def __init__(self, state: WizardState):
        super().__init__()
        self.state = state

    def compose(self) -> ComposeResult:
        yield Header()
        yield Static(self.crumbs(), id="crumbs")
        with self.BODY(id="step-body"):
            yield from self.body()
        yield Static("", id="step-problems")
        yield FittedFooter()

    def crumbs(self) -> str:
        parts = [f"[b reverse] {i + 1} {t} [/]" if i == self.INDEX else f" {i + 1} {t} "
                 for i, t in enumerate(STEP_TITLES)]
        return "".join(parts)

    def on_mount(self) -> None:
        self.call_after_refresh(self.focus_first)
        what = f"Editing {self.state.config_folder}" if self.state.config_folder else "New training"
        self.title = f"{what} — step {self.INDEX + 1} of {len(STEP_TITLES)}: {STEP_TITLES[self.INDEX]}"
        found = self.found_here()
        if found:
            self.show_problems([problem for _issue, problem in found])

    def on_screen_resume(self) -> None:
        # Back from Review: the errors it found at this step's fields are marked there.
        found = self.found_here()
        if found:
            problems = [problem for _issue, problem in found]
            self.show_problems(problems)
            self.call_after_refresh(self.focus_problem, problems)

    def field_key(self, issue: Issue) -> str | None:
        """The key of this step's field an opened folder's issue is about, or None."""
        if issue.file != self.FILE:
            return None
        key = issue.key.split(".")[0]
        return key if key in self.labels() else None

    def found_here(self) -> list[tuple[Issue, Problem]]:
        """The opened folder's errors that this step's fields fix, each with its problem at the field."""
        rows = {row.key for row in self.query(FieldRow)}
        return [(issue, Problem(key, issue.message)) for issue in self.state.found
                if issue.level == "error" and (key := self.field_key(issue)) in rows]

    def focus_first(self) -> None:
        """Put the cursor in the step's first input, so typing starts there."""
        for widget in self.query_one("#step-body").query("*"):
            if widget.focusable:
                widget.focus()
                return

    def body(self) -> ComposeResult:
        yield from ()

    def save(self) -> list[Problem]:
        """Write this step's inputs into the state; the problems that block moving on."""
        return []

    def show_problems(self, problems: list[Problem]) -> None:
        """Mark each problem at its field, and list them all under the form (by the fields' labels)."""
        rows = {row.key: row for row in self.query(FieldRow)}
        for key, row in rows.items():
            row.mark("; ".join(p.message for p in problems if p.key == key) or None)
        lines = [f"✗ {rows[p.key].label}: {brief(p.message)}" if p.key in rows else f"✗ {brief(p.message)}"
                 for p in problems]
        box = self.query_one("#step-problems", Static)
        box.update(Text("\n".join(lines)))
        box.set_class(bool(problems), "shown")

    def focus_problem(self, problems: list[Problem]) -> None:
        """Move the cursor to the first field with a problem, so fixing it starts there."""
        rows = {row.key: row for row in self.query(FieldRow)}
        first = next((rows[p.key] for p in problems if p.key in rows), None)
        if first is not None and first.field.focusable:
            first.field.focus()
            first.scroll_visible()

    def action_next(self) -> None:
        problems = self.save()
        self.show_problems(problems)
        if problems:
            self.focus_problem(problems)
            return
        # Checked again by this step's own save: the folder's findings for its fields are settled.
        settled = [issue for issue, _problem in self.found_here()]
        self.state.found = [issue for issue in self.state.found if issue not in settled]
        from tuner.tui.screens.wizard import next_step
        self.app.push_screen(next_step(self.INDEX, self.state))

    def keep(self) -> None:
        """Store what was entered, valid or not, so coming back shows it again."""
        self.save()

    def action_back(self) -> None:
        self.keep()
        self.app.pop_screen()
