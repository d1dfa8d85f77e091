"""Analysis: pure passes from a Recording to the ``Analysis``, every view the report shows.

Never imports TensorFlow, jinja2, capture, verify, session or the package root, and never
writes into the recording, so it runs on a saved recording anywhere and re-running it on
the saved form of its own output gives the same page.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

from ..recording import Recording
from . import agreement, alternatives, phases, retracing, training, views
from . import rules
from . import memory as memory_views
from .memory import max_growth as max_memory_growth  # noqa: F401  (--fail-on-memory-growth)
from . import processes as process_views
from .verdict import verdict_for


@dataclass
class Analysis:
    """Everything the page and the terminal summary show; templates read nothing else."""

    findings: list[dict]
    verdict: str
    retracing: list[dict] = field(default_factory=list)
    phase_rows: list[dict] = field(default_factory=list)
    training: list[dict] = field(default_factory=list)  # training call sites' steps (analysis/training.py)
    run: dict = field(default_factory=dict)  # how the code ended (views.run_view)
    environment: list = field(default_factory=list)  # (key, text) rows
    command: str = ""
    functions: list[dict] = field(default_factory=list)  # most tracing time first
    calls: list[dict] = field(default_factory=list)
    call_samples: list[dict] = field(default_factory=list)  # for the timeline chart
    # The TF Profiler cross-check's disagreements (agreement.warning_entries) first, then the capture's.
    warnings: list[dict] = field(default_factory=list)
    profilers: dict = field(default_factory=dict)  # "cprofile" / "tf_profiler": section read, or None
    verified: bool = False  # --verify ran (its tables are shown, possibly empty)
    alternatives: list[dict] = field(default_factory=list)  # Measured alternatives rows
    retrace_checks: list[dict] = field(default_factory=list)
    kernel_check: list[dict] = field(default_factory=list)  # the TF Profiler cross-check (analysis/agreement.py)
    schema_version: int = 0
    # recording.json's ``alternatives``: every measured entry as recorded, each with its ``recommended``
    # flag (None when --verify did not run). ``alternatives`` above is the page's rows of the same.
    alternative_entries: list[dict] | None = None
    processes: dict | None = None  # the child processes followed, and their merged call sites (processes.py)
    memory: dict = field(default_factory=dict)  # memory against calls per call site (memory.memory_view)

    def with_output(self, sections: dict[str, dict], warnings: list[dict]) -> "Analysis":
        """This analysis as the written files show it: what writing them added to each profiler's
        section (file names, the command that opens them) and any warnings it raised."""
        profilers = {name: (dict(section, **sections.get(name, {})) if section is not None else None)
                     for name, section in self.profilers.items()}
        return dataclasses.replace(self, profilers=profilers, warnings=[*self.warnings, *warnings])

    def recorded(self) -> dict:
        """The sections recording.json carries from the analysis, in place of the capture's own:
        the findings, the warnings (the TF Profiler cross-check's disagreements included), each
        profiler's section as read, the TF Profiler cross-check, which measured path is recommended.
        Re-analysing that file gives the same analysis."""
        out: dict = {"findings": self.findings, "warnings": self.warnings}
        out.update({name: section for name, section in self.profilers.items() if section is not None})
        if self.kernel_check:
            out["kernel_check"] = self.kernel_check
        if self.alternative_entries is not None:
            out["alternatives"] = self.alternative_entries
        return out


def analyze(recording: Recording) -> Analysis:
    explained = retracing.explain_all(recording.functions, recording.calls)
    found = rules.run_rules(recording, explained)
    chosen = alternatives.recommended(recording, found)
    entries = alternatives.entries(recording)
    kernel_check = agreement.kernel_rows(recording)
    return Analysis(
        findings=found,
        verdict=verdict_for(recording, found),
        retracing=views.retracing_view(recording, explained),
        phase_rows=phases.phase_rows(recording.calls),
        training=training.training_view(recording),
        run=views.run_view(recording),
        environment=views.environment_rows(recording),
        command=" ".join(recording.environment.get("command") or []),
        functions=views.functions_table(recording),
        calls=list(recording.calls),
        call_samples=list(recording.call_samples),
        warnings=agreement.warning_entries(kernel_check)
        + [w for w in recording.warnings if not agreement.is_derived(w)],
        profilers=views.profilers_view(recording),
        verified=alternatives.ran(recording),
        alternatives=alternatives.view(recording, chosen),
        retrace_checks=alternatives.checks_view(recording),
        kernel_check=kernel_check,
        schema_version=recording.schema_version,
        processes=process_views.processes_view(recording, found),
        memory=memory_views.memory_view(recording),
        alternative_entries=([dict(e, recommended=any(e is c for c in chosen)) for e in entries]
                             if "alternatives" in recording.extra else None),
    )


def max_user_traces(recording: Recording) -> tuple[int, str | None]:
    """The largest trace count of any user function, and its name (for --fail-on-retrace)."""
    best, name = 0, None
    for function in recording.user_functions():
        # A tf.function method traces once per instance by design: count per instance.
        traces = function.get("max_traces_per_instance") or function.get("trace_count", 0)
        # TensorFlow traces a function that creates variables twice on its first call (once with
        # variable creation allowed): one call, one trace as far as the user's code is concerned.
        traces -= min(1, sum(1 for t in function.get("traces", []) if t.get("variable_creation") is True))
        if traces > best:
            best, name = traces, function.get("name")
    return best, name
