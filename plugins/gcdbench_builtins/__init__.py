"""The plugins that ship with gcdbench, registered through the ``gcdbench`` entry points
like any third-party plugin (see pyproject.toml)."""
