"""Notebook views of attnkit's rich objects: self-contained HTML (inline style and script, no
CDN, nothing fetched), shown by ``_repr_html_`` in Jupyter, VS Code and exported notebooks.

- :func:`recording_view`: a :class:`~attnkit.recording.Recording` as model view and head view;
- :func:`explanation_view`: an :class:`~attnkit.interpret.Explanation`'s verdicts and
  token strips;
- :func:`trace_view`: a :class:`~attnkit.llm.generation.GenerationTrace`'s answer by lookback
  ratio and the context tokens each answer token leaned on;
- :func:`suite_view`: a :class:`~attnkit.llm.suite.SuiteResult`'s tables;
- :func:`attribution_view`: an :class:`~attnkit.llm.attribution.Attribution` of generated
  tokens.

Each returns a :class:`View` (``.html`` is the fragment). The objects' own ``_repr_html_`` calls
these with their defaults; call them directly for options (tokens' text, example, size budget).
"""

from attnkit.views.attribution import attribution_view
from attnkit.views.explanation import explanation_view
from attnkit.views.kit import View
from attnkit.views.recording import recording_view
from attnkit.views.suite import suite_view
from attnkit.views.trace import trace_view

__all__ = [
    "View",
    "attribution_view",
    "explanation_view",
    "recording_view",
    "suite_view",
    "trace_view",
]
