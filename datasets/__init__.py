"""Dataset definitions shipped with grefel (installed as ``grefel.definitions``).

One TOML file per dataset: canonical class order per protocol, raw label codes, layouts and
evaluation protocols. Read them with :func:`grefel.data.definitions.load_definition`.
"""
