"""The CLI's commands, which :mod:`mvgraph.cli` mounts: one module per area (graph, refresh,
jobs, schedule, daemon, security, settings, embedded, sql), each with the rendering only it
uses; :mod:`~mvgraph.commands.options` (the shared options), :mod:`~mvgraph.commands.common`
(set-up: global options, DSN, consoles) and :mod:`~mvgraph.commands.render` (shared
rendering). Nothing here imports ``mvgraph.cli``."""
