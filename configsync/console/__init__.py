"""The web console under /ui: server-rendered pages over the same queries, commands and
authorization as the API (nothing here decides who may do what)."""
