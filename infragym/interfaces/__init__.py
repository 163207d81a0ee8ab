"""Other ways into infragym's environments, for language-model agents.

- :mod:`infragym.interfaces.session`: one episode driven by knob values in their own
  units, observed as text (the core both interfaces share).
- :mod:`infragym.interfaces.mcp_server`: ``infragym mcp ENV_ID``, a Model Context
  Protocol server over that session (needs the ``mcp`` extra).
- :mod:`infragym.interfaces.text`: a Gymnasium wrapper whose observation is the text and
  whose action is a JSON object of knob values, for RL trainers of language models.

Nothing here is imported by ``import infragym``; ``mcp`` is imported only when a server
is built.
"""
